"""``create_service_app``: a FastAPI app with the whole shared edge installed."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_web.auth import AUTH_MARK, SECURITY_SCHEMES, ApiKeyStore, KeyVerifier
from ar_web.health import ReadinessCheck, healthz_endpoint, readyz_endpoint
from ar_web.metrics import metrics_endpoint
from ar_web.middleware import DEFAULT_BODY_LIMIT, EdgeMiddleware
from ar_web.problems import PROBLEM_MEDIA_TYPE, Problem, install_problem_handlers, problem_schema_ref

_BODY_METHODS = {"post", "put", "patch"}


def create_service_app(
    title: str,
    version: str,
    *,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    lifespan: Any = None,
    sessionmaker: async_sessionmaker[AsyncSession] | None = None,
    api_keys: KeyVerifier | None = None,
    body_limit: int = DEFAULT_BODY_LIMIT,
    readiness_timeout: float = 3.0,
    access_log: bool = True,
    description: str = "",
    **fastapi_kwargs: Any,
) -> FastAPI:
    """A FastAPI app with problem+json errors, body limit, correlation ids, /healthz, /readyz, /metrics.

    Give ``sessionmaker=`` (or a ready ``api_keys=`` store) to enable API-key auth; it may also be set later
    as ``app.state.api_keys = ApiKeyStore(sessionmaker)`` (for example inside the lifespan).
    """
    app = FastAPI(title=title, version=version, description=description, lifespan=lifespan, **fastapi_kwargs)
    if api_keys is None and sessionmaker is not None:
        api_keys = ApiKeyStore(sessionmaker)
    app.state.api_keys = api_keys
    install_problem_handlers(app)
    app.add_middleware(EdgeMiddleware, body_limit=body_limit, access_log=access_log)
    checks = dict(readiness or {})
    app.state.readiness = checks  # add checks later (e.g. in the lifespan): app.state.readiness["x"] = check
    app.add_api_route("/healthz", healthz_endpoint(), methods=["GET"], tags=["ops"], summary="Liveness")
    app.add_api_route(
        "/readyz",
        readyz_endpoint(checks, readiness_timeout),
        methods=["GET"],
        tags=["ops"],
        summary="Readiness (200, or 503 naming the failed checks)",
        responses={503: problem_schema_ref(503)},
    )
    app.add_api_route("/metrics", metrics_endpoint(), methods=["GET"], include_in_schema=False)  # type: ignore[arg-type]
    app.openapi = _problem_openapi(app)  # type: ignore[method-assign]
    return app


def _problem_openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """OpenAPI with Problem schemas, 422s as problem+json, and the edge's answers on every operation."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
            servers=app.servers,
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, sub in problem.pop("$defs", {}).items():
            components.setdefault(name, sub)
        components["Problem"] = problem
        components["ValidationProblem"] = {
            "allOf": [{"$ref": "#/components/schemas/Problem"}],
            "description": "422: `errors` lists every invalid field (`lines[0].quantity`) with the reason",
        }
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        secured = _authenticated_operations(app.routes)
        if secured:
            schema["components"].setdefault("securitySchemes", {}).update(SECURITY_SCHEMES)
        for path, path_item in schema.get("paths", {}).items():
            for method, operation in path_item.items():
                if not isinstance(operation, dict) or "responses" not in operation:
                    continue
                if (path, method) in secured:
                    operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
                responses = operation["responses"]
                if "422" in responses:
                    responses["422"] = problem_schema_ref(422)
                if method in _BODY_METHODS:
                    responses.setdefault("400", problem_schema_ref(400))
                    responses.setdefault("413", problem_schema_ref(413))
                if any(p.get("name") == "cursor" for p in operation.get("parameters", [])):
                    responses.setdefault("400", problem_schema_ref(400))  # a tampered cursor
                if operation.get("security"):
                    responses.setdefault("401", problem_schema_ref(401))
                    responses.setdefault("403", problem_schema_ref(403))
                responses.setdefault("500", problem_schema_ref(500))
        app.openapi_schema = schema
        return schema

    return openapi


def _authenticated_operations(routes: Any) -> set[tuple[str, str]]:
    """(path, method) of every operation that takes an API key: its dependencies include one marked with
    ``AUTH_MARK`` (``ar_web.auth``'s dependencies read the headers themselves, so FastAPI sees no security
    scheme to document; this puts back what ``HTTPBearer``/``APIKeyHeader`` dependencies used to produce)."""
    from fastapi import routing

    def needs_key(dependant: Any) -> bool:
        return any(getattr(d.call, AUTH_MARK, False) or needs_key(d) for d in dependant.dependencies)

    found: set[tuple[str, str]] = set()
    for context in routing.iter_route_contexts(routes):
        route = context.original_route
        if not isinstance(route, routing.APIRoute) or not route.include_in_schema:
            continue
        if needs_key(getattr(context, "dependant", route.dependant)):
            path = getattr(context, "path_format", route.path_format)
            found.update((path, method.lower()) for method in route.methods or ())
    return found


__all__ = ["PROBLEM_MEDIA_TYPE", "create_service_app"]
