"""REST through the real app (httpx ASGI transport): delivery log, preview, resend, and bad inputs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from ar_events.events import ClientRegistered, ManualTaskCreated, ReminderRequested
from ar_events.testing import sample_event
from ar_web import create_api_key
from notify_svc.api import create_app
from notify_svc.bootstrap import Services

from .conftest import MailSink, dispatching, eventually, ingest, make_settings


@pytest_asyncio.fixture
async def stack(
    database_url: str, mail_sink: MailSink
) -> AsyncIterator[tuple[Services, httpx.AsyncClient, dict[str, str]]]:
    settings = make_settings(database_url, smtp_port=mail_sink.port)
    async with dispatching(settings) as services:
        async with services.sessionmaker() as session, session.begin():
            writer = await create_api_key(session, "writer", ["collections:write"])
            reader = await create_api_key(session, "reader", ["reports:read"])
        app = create_app(settings, services=services)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://notify") as client:
            yield services, client, {"writer": writer, "reader": reader}


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def _settle(client: httpx.AsyncClient, key: str, path: str, n: int) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (
            await client.get(path, headers=_auth(key), params={"limit": 50})
        ).json()["items"]
        return items if len(items) >= n and all(i["status"] in ("sent", "failed") for i in items) else None

    result: list[dict[str, Any]] = await eventually(done)
    return result


async def test_delivery_log_by_client_and_case_with_cursor_pagination(
    stack: Any, mail_sink: MailSink
) -> None:
    services, client, keys = stack
    await ingest(
        services,
        sample_event(ClientRegistered),
        sample_event(ReminderRequested, template="overdue-1"),
        sample_event(ReminderRequested, notification_key="case_7f3a:1:3", template="overdue-2"),
        sample_event(ManualTaskCreated),
    )
    items = await _settle(client, keys["reader"], "/v1/clients/cli_01HQ3ZK8/notifications", 3)
    assert sorted(i["template"] for i in items) == ["overdue-1", "overdue-2", "task-assigned"]
    assert all(i["status"] == "sent" and i["attempt_log"][0]["outcome"] == "sent" for i in items)

    first = (
        await client.get(
            "/v1/cases/case_7f3a/notifications", headers=_auth(keys["reader"]), params={"limit": 2}
        )
    ).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = (
        await client.get(
            "/v1/cases/case_7f3a/notifications",
            headers=_auth(keys["reader"]),
            params={"limit": 2, "cursor": first["next_cursor"]},
        )
    ).json()
    seen = [i["id"] for i in first["items"] + second["items"]]
    assert len(seen) == len(set(seen)) == 3 and second["next_cursor"] is None

    bad = await client.get(
        "/v1/cases/case_7f3a/notifications", headers=_auth(keys["reader"]), params={"cursor": "not-a-cursor"}
    )
    assert bad.status_code == 400 and bad.json()["field"] == "cursor"
    assert (await client.get("/v1/cases/case_7f3a/notifications")).status_code == 401
    assert len(mail_sink.messages) == 3


async def test_preview_renders_for_the_client_and_needs_collections_write(
    stack: Any, mail_sink: MailSink
) -> None:
    services, client, keys = stack
    await ingest(services, sample_event(ClientRegistered), sample_event(ReminderRequested))
    body = {"template": "final-notice"}
    denied = await client.post("/v1/clients/cli_01HQ3ZK8/preview", json=body, headers=_auth(keys["reader"]))
    assert denied.status_code == 403 and denied.headers["content-type"].startswith("application/problem+json")
    ok = await client.post("/v1/clients/cli_01HQ3ZK8/preview", json=body, headers=_auth(keys["writer"]))
    assert ok.status_code == 200, ok.text
    preview = ok.json()
    assert preview["language"] == "fr" and preview["subject"].startswith("Mise en demeure")
    assert "F-2026-0017" in preview["text"] and "<table" in preview["html"]
    de = await client.post(
        "/v1/clients/cli_01HQ3ZK8/preview",
        json={"template": "overdue-1", "language": "de"},
        headers=_auth(keys["writer"]),
    )
    assert de.json()["subject"].startswith("Zahlungserinnerung")

    unknown_template = await client.post(
        "/v1/clients/cli_01HQ3ZK8/preview", json={"template": "nope"}, headers=_auth(keys["writer"])
    )
    assert unknown_template.status_code == 422 and unknown_template.json()["field"] == "template"
    bad_language = await client.post(
        "/v1/clients/cli_01HQ3ZK8/preview",
        json={"template": "overdue-1", "language": "{{7*7}}"},
        headers=_auth(keys["writer"]),
    )
    assert bad_language.status_code == 422 and bad_language.json()["field"] == "language"
    unknown_client = await client.post("/v1/clients/nobody/preview", json=body, headers=_auth(keys["writer"]))
    assert unknown_client.status_code == 404
    extra = await client.post(
        "/v1/clients/cli_01HQ3ZK8/preview", json={**body, "x": 1}, headers=_auth(keys["writer"])
    )
    assert extra.status_code == 422
    await eventually(lambda: len(mail_sink.messages) == 1)  # the reminder itself
    assert len(mail_sink.messages) == 1  # previews never send


async def test_resend_of_a_failed_notification(stack: Any, mail_sink: MailSink) -> None:
    services, client, keys = stack
    mail_sink.refuse.add("paul@boulangerie-martin.example")
    await ingest(services, sample_event(ReminderRequested))
    [item] = await _settle(client, keys["reader"], "/v1/cases/case_7f3a/notifications", 1)
    assert item["status"] == "failed" and item["permanent"] is True and item["error_code"] == "550"

    path = f"/v1/notifications/{item['id']}/resend"
    assert (await client.post(path, headers=_auth(keys["reader"]))).status_code == 403
    mail_sink.refuse.clear()  # the mailbox was fixed
    lax = await client.post(path, json={"clear_suppression": "true"}, headers=_auth(keys["writer"]))
    assert lax.status_code == 422 and lax.json()["field"] == "clear_suppression", (
        lax.text
    )  # JSON booleans only
    resent = await client.post(path, json={"clear_suppression": True}, headers=_auth(keys["writer"]))
    assert resent.status_code == 202, resent.text
    assert resent.json()["status"] == "pending" and resent.json()["generation"] == 1

    async def sent() -> bool:
        got = (await client.get(f"/v1/notifications/{item['id']}", headers=_auth(keys["reader"]))).json()
        return bool(got["status"] == "sent")

    await eventually(sent)
    assert len(mail_sink.messages) == 1
    again = await client.post(path, headers=_auth(keys["writer"]))
    assert again.status_code == 409 and again.json()["field"] == "notification_id"
    missing = await client.post("/v1/notifications/ntf_nope/resend", headers=_auth(keys["writer"]))
    assert missing.status_code == 404


@pytest.mark.parametrize("path", ["/healthz", "/openapi.json"])
async def test_edge_endpoints(stack: Any, path: str) -> None:
    _, client, _ = stack
    assert (await client.get(path)).status_code == 200
