"""Email: MIME multipart/alternative (plain text + HTML) and an SMTP sender with a small connection pool."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, formataddr

import aiosmtplib
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from notify_svc.domain.delivery import Outcome, Result, classify_smtp_reply
from notify_svc.rendering import Rendered
from notify_svc.settings import SmtpSettings


@dataclass(frozen=True, slots=True)
class Mail:
    """A message ready for the wire plus its SMTP envelope."""

    envelope_from: str
    recipient: str
    data: bytes
    message_id: str


def build_message(
    rendered: Rendered,
    *,
    from_name: str,
    from_address: str,
    to_name: str,
    to_address: str,
    message_id: str,
    date: datetime,
    mailbox_name: str,
    mailbox_address: str,
    extra_headers: Sequence[tuple[str, str]] = (),
) -> Mail:
    """multipart/alternative with text then HTML; From is the sender the event names, bounces go to the mailbox."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = formataddr((from_name, from_address))
    if from_address.lower() != mailbox_address.lower():
        msg["Sender"] = formataddr((mailbox_name, mailbox_address))
    msg["Reply-To"] = formataddr((from_name, from_address))
    msg["To"] = formataddr((to_name, to_address))
    msg["Subject"] = rendered.subject
    msg["Date"] = format_datetime(date)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"
    for name, value in extra_headers:
        msg[name] = value
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    # After the parts exist: making the message multipart moves Content-* headers into the first part.
    msg["Content-Language"] = rendered.language.replace("_", "-")
    return Mail(
        envelope_from=mailbox_address, recipient=to_address, data=msg.as_bytes(), message_id=message_id
    )


class _Transient(Exception):
    """Worth another quick try: the connection broke before the message was handed over, or a 4xx reply."""

    def __init__(self, result: Result) -> None:
        super().__init__(result.detail)
        self.result = result


_CONNECTION_ERRORS = (
    aiosmtplib.SMTPConnectError,
    aiosmtplib.SMTPServerDisconnected,
    aiosmtplib.SMTPTimeoutError,
    aiosmtplib.SMTPConnectTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)


class SmtpSender:
    """Sends mail over up to ``pool_size`` reused connections; built and closed by the lifespan."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._idle: asyncio.Queue[aiosmtplib.SMTP] = asyncio.Queue()
        for _ in range(settings.pool_size):
            self._idle.put_nowait(self._new_client())

    def _new_client(self) -> aiosmtplib.SMTP:
        s = self.settings
        return aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout_s,
            use_tls=s.use_tls,
            start_tls=s.starttls,
            validate_certs=s.validate_certs,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
        )

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[aiosmtplib.SMTP]:
        client = await self._idle.get()
        try:
            if not client.is_connected:
                await client.connect()
            yield client
        except BaseException:
            with contextlib.suppress(Exception):
                client.close()
            raise
        finally:
            self._idle.put_nowait(client)

    async def send(self, mail: Mail) -> Result:
        """Deliver one message; quick tenacity retries on broken connections and 4xx, then report the outcome."""
        s = self.settings
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.quick_retries),
                wait=wait_exponential_jitter(
                    multiplier=s.quick_retry_initial_s,
                    max=s.quick_retry_max_s,
                    jitter=s.quick_retry_initial_s,
                ),
                retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
                reraise=True,
            ):
                with attempt:
                    return await self._send_once(mail)
        except _Transient as exc:
            return exc.result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(self, mail: Mail) -> Result:
        try:
            async with self._connection() as smtp:
                try:
                    await smtp.mail(mail.envelope_from)
                    await smtp.rcpt(mail.recipient)
                except aiosmtplib.SMTPResponseException as exc:
                    # Refused before DATA: nothing was handed over, safe to classify and retry.
                    with contextlib.suppress(Exception):
                        await smtp.rset()
                    return self._reply(exc.code, exc.message, mail)
                try:
                    response = await smtp.data(mail.data)
                except aiosmtplib.SMTPResponseException as exc:
                    with contextlib.suppress(Exception):
                        await smtp.rset()
                    return self._reply(exc.code, exc.message, mail)
                return Result(
                    Outcome.SENT,
                    detail=response.message[:200],
                    code=str(response.code),
                    message_id=mail.message_id,
                )
        except _CONNECTION_ERRORS as exc:
            raise _Transient(Result(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}"[:500])) from exc

    def _reply(self, code: int, message: str, mail: Mail) -> Result:
        outcome = classify_smtp_reply(code)
        result = Result(outcome, detail=f"{code} {message}"[:500], code=str(code), message_id=mail.message_id)
        if outcome == Outcome.TRANSIENT:
            raise _Transient(result)
        return result

    async def close(self) -> None:
        clients = []
        while not self._idle.empty():
            clients.append(self._idle.get_nowait())
        for client in clients:
            if client.is_connected:
                with contextlib.suppress(Exception):
                    await client.quit()
            self._idle.put_nowait(client)
