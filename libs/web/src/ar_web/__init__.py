"""ar_web: the HTTP edge shared by every service (see libs/web/README.md)."""

from ar_web.app import create_service_app
from ar_web.auth import (
    ALL_SCOPES,
    ApiKeyStore,
    KeyVerifier,
    Principal,
    authenticated,
    create_api_key,
    generate_api_key,
    hash_api_key,
    require_scopes,
    revoke_api_key,
)
from ar_web.health import ReadinessCheck, database_check, kafka_check, tcp_check
from ar_web.idempotency import (
    IdempotencyGuard,
    IdempotencyKey,
    StoredResponse,
    begin_idempotent,
    fingerprint,
    idempotency_guard,
)
from ar_web.logs import configure_logging, correlation_id_var, correlation_scope, current_correlation_id
from ar_web.migrations import create_web_tables, drop_web_tables
from ar_web.pagination import Page, PageParams, decode_cursor, encode_cursor, make_page, page_params
from ar_web.problems import PROBLEM_MEDIA_TYPE, Problem, ProblemError, problem_response, problem_responses
from ar_web.tables import WebTables, add_web_tables

__all__ = [
    "ALL_SCOPES",
    "PROBLEM_MEDIA_TYPE",
    "ApiKeyStore",
    "IdempotencyGuard",
    "IdempotencyKey",
    "KeyVerifier",
    "Page",
    "PageParams",
    "Principal",
    "Problem",
    "ProblemError",
    "ReadinessCheck",
    "StoredResponse",
    "WebTables",
    "add_web_tables",
    "authenticated",
    "begin_idempotent",
    "configure_logging",
    "correlation_id_var",
    "correlation_scope",
    "create_api_key",
    "create_service_app",
    "create_web_tables",
    "current_correlation_id",
    "database_check",
    "decode_cursor",
    "drop_web_tables",
    "encode_cursor",
    "fingerprint",
    "generate_api_key",
    "hash_api_key",
    "idempotency_guard",
    "kafka_check",
    "make_page",
    "page_params",
    "problem_response",
    "problem_responses",
    "require_scopes",
    "revoke_api_key",
    "tcp_check",
]
