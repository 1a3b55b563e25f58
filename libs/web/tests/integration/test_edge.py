"""The shared edge through a tiny service app: auth, body limit, malformed JSON, 422 shape, health, metrics."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator

import pytest

from ar_web import PROBLEM_MEDIA_TYPE, configure_logging

from ..conftest import Harness

GOOD = {"name": "widget", "lines": [{"sku": "a", "quantity": 2}, {"sku": "b", "quantity": 3}]}


def _w(h: Harness, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {h.write_key}", **extra}


async def test_valid_key_with_scope_creates(harness: Harness) -> None:
    r = await harness.client.post("/v1/things", json=GOOD, headers=_w(harness))
    assert r.status_code == 201, r.text
    assert r.json()["total"] == 5
    assert await harness.count_things() == 1


async def test_x_api_key_header_is_accepted(harness: Harness) -> None:
    r = await harness.client.get("/v1/things", headers={"X-API-Key": harness.read_key})
    assert r.status_code == 200
    assert r.json() == {"items": [], "next_cursor": None}


async def test_missing_key_is_401_problem_with_challenge(harness: Harness) -> None:
    r = await harness.client.post("/v1/things", json=GOOD)
    assert r.status_code == 401
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["status"] == 401
    assert await harness.count_things() == 0


async def test_unknown_key_is_401(harness: Harness) -> None:
    r = await harness.client.get("/v1/things", headers={"Authorization": "Bearer ar_" + "x" * 40})
    assert r.status_code == 401
    assert r.json()["title"] == "Invalid API key"


async def test_key_without_scope_is_403_and_changes_nothing(harness: Harness) -> None:
    r = await harness.client.post("/v1/things", json=GOOD, headers={"X-API-Key": harness.read_key})
    assert r.status_code == 403
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "things:write" in r.json()["detail"]
    assert await harness.count_things() == 0


async def test_declared_oversized_body_is_413(harness: Harness) -> None:
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    r = await harness.client.post(
        "/v1/things", content=big, headers=_w(harness, **{"Content-Type": "application/json"})
    )
    assert r.status_code == 413
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.json()["status"] == 413


async def test_chunked_oversized_body_is_413(harness: Harness) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"name": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    r = await harness.client.post(
        "/v1/things", content=chunks(), headers=_w(harness, **{"Content-Type": "application/json"})
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413
    assert await harness.count_things() == 0


async def test_body_just_under_limit_passes_the_limit(harness: Harness) -> None:
    body = json.dumps({"name": "n", "lines": [{"sku": "a", "quantity": 1}], "pad": "x" * 1_000_000})
    r = await harness.client.post(
        "/v1/things", content=body, headers=_w(harness, **{"Content-Type": "application/json"})
    )
    assert r.status_code == 201


async def test_malformed_json_is_400_with_reason(harness: Harness) -> None:
    r = await harness.client.post(
        "/v1/things", content=b'{"name": "x", ', headers=_w(harness, **{"Content-Type": "application/json"})
    )
    assert r.status_code == 400
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem = r.json()
    assert problem["field"] == "body"
    assert "not valid JSON" in problem["detail"]


async def test_invalid_field_is_422_with_dotted_path(harness: Harness) -> None:
    bad = {"name": "w", "lines": [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 0}]}
    r = await harness.client.post("/v1/things", json=bad, headers=_w(harness))
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    problem = r.json()
    assert problem["field"] == "lines[1].quantity"
    assert problem["errors"][0]["field"] == "lines[1].quantity"
    assert "greater than 0" in problem["errors"][0]["reason"]
    assert await harness.count_things() == 0


async def test_query_parameter_out_of_range_is_422(harness: Harness) -> None:
    r = await harness.client.get("/v1/things?limit=501", headers={"X-API-Key": harness.read_key})
    assert r.status_code == 422
    assert r.json()["field"] == "limit"


async def test_problem_error_keeps_field(harness: Harness) -> None:
    r = await harness.client.post("/v1/things", json={**GOOD, "name": "forbidden"}, headers=_w(harness))
    assert r.status_code == 409
    assert r.json()["field"] == "name"
    assert await harness.count_things() == 0


async def test_unknown_route_is_404_problem(harness: Harness) -> None:
    r = await harness.client.get("/v1/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE


async def test_unhandled_error_is_500_problem_without_internals(harness: Harness) -> None:
    r = await harness.client.get("/boom", headers={"X-Correlation-Id": "corr-500"})
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "secret" not in r.text
    assert r.headers["x-correlation-id"] == "corr-500"


async def test_correlation_id_is_echoed_or_generated(harness: Harness) -> None:
    given = await harness.client.get("/healthz", headers={"X-Correlation-Id": "abc-123"})
    assert given.headers["x-correlation-id"] == "abc-123"
    generated = await harness.client.get("/healthz")
    assert len(generated.headers["x-correlation-id"]) == 36


async def test_readyz_is_200_then_503_naming_the_failed_check(harness: Harness) -> None:
    ok = await harness.client.get("/readyz")
    assert ok.status_code == 200
    assert ok.json()["checks"] == {"database": "ok", "broker": "ok"}
    harness.state["ready"]["broker"] = False
    down = await harness.client.get("/readyz")
    assert down.status_code == 503
    assert down.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert down.json()["failed"] == ["broker"]
    assert (await harness.client.get("/healthz")).status_code == 200


async def test_metrics_count_requests_by_route_and_status(harness: Harness) -> None:
    await harness.client.get("/v1/things", headers={"X-API-Key": harness.read_key})
    await harness.client.get("/v1/things")
    text = (await harness.client.get("/metrics")).text
    assert 'http_requests_total{method="GET",route="/v1/things",status="200"}' in text
    assert 'http_requests_total{method="GET",route="/v1/things",status="401"}' in text
    assert "http_request_duration_seconds_bucket" in text


async def test_pagination_walks_all_items(harness: Harness) -> None:
    for i in range(5):
        body = {"name": f"t{i}", "lines": [{"sku": "a", "quantity": 1}]}
        assert (await harness.client.post("/v1/things", json=body, headers=_w(harness))).status_code == 201
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = (
            await harness.client.get("/v1/things", params=params, headers={"X-API-Key": harness.read_key})
        ).json()
        seen += [item["name"] for item in page["items"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"t{i}" for i in range(5)]
    assert pages == 3


async def test_garbage_cursor_is_400_on_cursor(harness: Harness) -> None:
    r = await harness.client.get("/v1/things?cursor=%%%%", headers={"X-API-Key": harness.read_key})
    assert r.status_code == 400
    assert r.json()["field"] == "cursor"


async def test_openapi_documents_problems_and_security(harness: Harness) -> None:
    doc = (await harness.client.get("/openapi.json")).json()
    post = doc["paths"]["/v1/things"]["post"]
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert {"401", "403", "409", "413"} <= set(post["responses"])
    assert "Problem" in doc["components"]["schemas"]
    assert {"400", "401", "403", "422"} <= set(doc["paths"]["/v1/things"]["get"]["responses"])
    assert {"HTTPBearer", "APIKeyHeader"} <= set(doc["components"]["securitySchemes"])
    assert (await harness.client.get("/docs")).status_code == 200


@pytest.mark.parametrize("header", ["Bearer", "Basic abc", ""])
async def test_malformed_authorization_is_401(harness: Harness, header: str) -> None:
    r = await harness.client.get("/v1/things", headers={"Authorization": header})
    assert r.status_code == 401


async def test_logs_carry_the_correlation_id_of_the_request(harness: Harness) -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    configure_logging("thing-svc", "INFO", stream=stream)
    try:
        await harness.client.get("/v1/things", headers={"X-Correlation-Id": "trace-1"})
        await harness.client.get("/boom", headers={"X-Correlation-Id": "trace-2"})
        await harness.client.get("/healthz", headers={"X-Correlation-Id": "trace-3"})
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    access = [line for line in lines if line["logger"] == "ar_web.access"]
    assert [(a["correlation_id"], a["route"], a["status"]) for a in access] == [
        ("trace-1", "/v1/things", 401),
        ("trace-2", "/boom", 500),
    ]
    assert all(a["service"] == "thing-svc" and a["duration_ms"] >= 0 for a in access)
    [error] = [line for line in lines if line["level"] == "ERROR"]
    assert error["correlation_id"] == "trace-2"
    assert "secret internal detail" in error["exc_info"]


async def test_readiness_checks_added_after_creation_are_run(harness: Harness) -> None:
    async def consumers() -> None:
        raise RuntimeError("consumer group not joined")

    harness.app.state.readiness["consumers"] = consumers
    r = await harness.client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["failed"] == ["consumers"]
    assert "not joined" in r.json()["checks"]["consumers"]


async def test_method_not_allowed_is_405_problem_with_allow(harness: Harness) -> None:
    r = await harness.client.delete("/v1/things")
    assert r.status_code == 405
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.headers["allow"]


async def test_lone_surrogate_in_json_is_400_and_changes_nothing(harness: Harness) -> None:
    body = b'{"name": "bad \\udb6a", "lines": [{"sku": "a", "quantity": 1}]}'
    r = await harness.client.post(
        "/v1/things", content=body, headers=_w(harness, **{"Content-Type": "application/json"})
    )
    assert r.status_code == 400
    assert "\\udb6a" in r.json()["detail"]
    assert await harness.count_things() == 0
    emoji = '{"name": "ok \\ud83d\\ude00", "lines": [{"sku": "a", "quantity": 1}]}'
    ok = await harness.client.post(
        "/v1/things", content=emoji, headers=_w(harness, **{"Content-Type": "application/json"})
    )
    assert ok.status_code == 201
    assert ok.json()["name"] == "ok \U0001f600"
