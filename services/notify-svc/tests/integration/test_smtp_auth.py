"""SMTP AUTH against a real aiosmtpd that requires it: the pooled connection logs in once and sends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr
from sqlalchemy import select

from ar_events.broker import free_port
from ar_events.events import ReminderRequested
from ar_events.testing import sample_event
from notify_svc.repository import notification

from .conftest import MailSink, dispatching, eventually, ingest, make_settings

# The test server takes AUTH over plain TCP (no certificate in tests); aiosmtpd warns about that.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


class _Authenticator:
    def __init__(self) -> None:
        self.logins: list[str] = []

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"ar",
            b"s3cret",
        )
        if ok:
            self.logins.append(mechanism)
        return AuthResult(success=ok)


@pytest.fixture
def auth_sink() -> Iterator[tuple[MailSink, _Authenticator]]:
    sink, auth = MailSink(free_port()), _Authenticator()
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=sink.port,
        authenticator=auth,
        auth_required=True,
        auth_require_tls=False,
    )
    controller.start()
    yield sink, auth
    controller.stop()


async def test_authenticated_submission(
    database_url: str, auth_sink: tuple[MailSink, _Authenticator]
) -> None:
    sink, auth = auth_sink
    settings = make_settings(database_url, smtp_port=sink.port)
    settings.smtp.username, settings.smtp.password = "ar", SecretStr("s3cret")
    settings.smtp.pool_size = 1
    async with dispatching(settings) as services:
        await ingest(
            services,
            sample_event(ReminderRequested),
            sample_event(ReminderRequested, notification_key="case_7f3a:1:3", template="overdue-1"),
        )
        await eventually(lambda: len(sink.messages) == 2)
    assert len(auth.logins) == 1  # one pooled connection, one login: the connection is reused


async def test_wrong_password_is_not_delivered_and_retried(
    database_url: str, auth_sink: tuple[MailSink, _Authenticator]
) -> None:
    sink, _ = auth_sink
    settings = make_settings(database_url, smtp_port=sink.port)
    settings.smtp.username, settings.smtp.password = "ar", SecretStr("wrong")
    async with dispatching(settings) as services:
        await ingest(services, sample_event(ReminderRequested))

        async def retried() -> bool:
            async with services.sessionmaker() as session:
                row = (await session.execute(select(notification))).one()
            return row.attempts >= 2 and row.status == "pending"

        await eventually(retried)
    assert sink.messages == []
