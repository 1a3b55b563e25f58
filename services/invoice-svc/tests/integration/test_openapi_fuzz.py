"""schemathesis over the published OpenAPI, against invoice-svc as a real process: no 5xx, responses match."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from ar_events.broker import free_port
from ar_events.settings import KafkaSettings

from . import proc

KEY = "ar_fuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzfuzzf"


def _fuzz(operation: Any, headers: dict[str, str]) -> Callable[[], None]:
    @settings(max_examples=5, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def check(case: schemathesis.Case) -> None:
        # Schema-valid data may still break a business rule (an unknown client id is a 422): that check is off.
        case.call_and_validate(headers=headers, excluded_checks=[positive_data_acceptance], timeout=30)

    return check


def test_every_operation_conforms_to_its_openapi(postgres_url: str, kafka_settings: KafkaSettings) -> None:
    port = free_port()
    env = proc.service_env(postgres_url, port, kafka_settings)
    proc.cli(env, "migrate")
    proc.cli(env, "api-key", "create", "--name", "fuzz", "--scopes", "all", "--key", KEY)
    server = proc.start(env, port)
    try:
        schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{port}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 18
        for operation in operations:
            _fuzz(operation, {"Authorization": f"Bearer {KEY}"})()
    finally:
        proc.stop(server)
