"""Email: MIME multipart/alternative (plain text + HTML) and an SMTP sender with a small connection pool."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, formataddr
from typing import Any

import aiosmtplib
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from notify_svc.domain.delivery import Outcome, Result, classify_smtp_reply
from notify_svc.rendering import Rendered
from notify_svc.settings import SmtpSettings

#: Runs of ASCII whitespace (CR/LF included) only: amounts keep their no-break spaces.
_ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]+")


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
    """multipart/alternative with text then HTML; From is the sender the event names, bounces go to the mailbox.

    Written out directly (RFC 5322/2045/2047) rather than through ``email.message.EmailMessage``, whose header
    registry costs milliseconds per message; the tests parse the result back with the standard library.
    """
    headers = [
        ("From", _address(from_name, from_address)),
    ]
    if from_address.lower() != mailbox_address.lower():
        headers.append(("Sender", _address(mailbox_name, mailbox_address)))
    headers += [
        ("Reply-To", _address(from_name, from_address)),
        ("To", _address(to_name, to_address)),
        ("Subject", _header(rendered.subject, "Subject")),
        ("Date", format_datetime(date)),
        ("Message-ID", _clean(message_id)),
        ("Content-Language", rendered.language.replace("_", "-")),
        ("Auto-Submitted", "auto-generated"),
        ("MIME-Version", "1.0"),
    ]
    headers += [(name, _header(value, name)) for name, value in extra_headers]
    boundary = "=_ar_" + hashlib.sha256(message_id.encode()).hexdigest()[:24]
    headers.append(("Content-Type", f'multipart/alternative; boundary="{boundary}"'))
    out = [f"{name}: {value}" for name, value in headers]
    out += [
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _qp(rendered.text),
        f"--{boundary}",
        "Content-Type: text/html; charset=utf-8",
        "Content-Transfer-Encoding: quoted-printable",
        "",
        _qp(rendered.html),
        f"--{boundary}--",
        "",
    ]
    data = "\r\n".join(out).encode("ascii")
    return Mail(envelope_from=mailbox_address, recipient=to_address, data=data, message_id=message_id)


def _clean(value: str) -> str:
    """No CR/LF may reach a header: that would let data forge headers."""
    return _ASCII_SPACE.sub(" ", value).strip(" ")


def _header(value: str, name: str) -> str:
    value = _clean(value)
    if value.isascii() and len(name) + len(value) < 76:
        return value
    return _encoded_words(value, first=len(name) + 2)


def _encoded_words(value: str, first: int = 0) -> str:
    """RFC 2047 "B" encoded-words of at most 75 characters, folded, never splitting a UTF-8 sequence."""
    words: list[str] = []
    chunk: list[str] = []
    size = 0
    budget = max(12, (75 - 12 - first) // 4 * 3)  # bytes that fit the first encoded-word on its line
    for ch in value:
        n = len(ch.encode("utf-8"))
        if size + n > budget and chunk:
            words.append("".join(chunk))
            chunk, size, budget = [], 0, 45  # 45 bytes -> 60 base64 chars -> 72 with the =?utf-8?b? wrapper
        chunk.append(ch)
        size += n
    words.append("".join(chunk))
    encoded = ["=?utf-8?b?" + base64.b64encode(w.encode("utf-8")).decode("ascii") + "?=" for w in words]
    return "\r\n ".join(encoded)


def _address(name: str, address: str) -> str:
    name, address = _clean(name), _clean(address)
    if name.isascii():
        return formataddr((name, address))
    return f"{_encoded_words(name, first=10)} <{address}>"


def _qp(text: str) -> str:
    """Quoted-printable with soft line breaks at 76 characters and CRLF line ends."""
    body = text.replace("\r\n", "\n").replace("\r", "\n").encode("utf-8")
    return binascii.b2a_qp(body, istext=True).decode("ascii").replace("\n", "\r\n")


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


def _pause(seconds: float) -> Any:
    """tenacity ``before`` hook: the backoff before the first retry (the first try ran outside the loop)."""

    async def before(state: RetryCallState) -> None:
        if state.attempt_number == 1:
            await asyncio.sleep(seconds)

    return before


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
            timeout=None,  # one deadline per transaction instead (asyncio.timeout in _send_once): cheaper
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
        try:
            return await self._send_once(mail)  # the common case, without building a retry loop
        except _Transient as exc:
            if self.settings.quick_retries <= 1:
                return exc.result
        s = self.settings
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.quick_retries - 1),
                wait=wait_exponential_jitter(
                    multiplier=s.quick_retry_initial_s,
                    max=s.quick_retry_max_s,
                    jitter=s.quick_retry_initial_s,
                ),
                retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
                before=_pause(s.quick_retry_initial_s),
                reraise=True,
            ):
                with attempt:
                    return await self._send_once(mail)
        except _Transient as exc:
            return exc.result
        raise AssertionError("unreachable")  # pragma: no cover

    async def _send_once(self, mail: Mail) -> Result:
        handed_over = False  # True once the message content may have reached the server
        try:
            async with asyncio.timeout(self.settings.timeout_s), self._connection() as smtp:
                try:
                    await smtp.mail(mail.envelope_from)
                    await smtp.rcpt(mail.recipient)
                except aiosmtplib.SMTPResponseException as exc:
                    # Refused before DATA: nothing was handed over, safe to classify and retry.
                    with contextlib.suppress(Exception):
                        await smtp.rset()
                    return self._reply(exc.code, exc.message, mail)
                handed_over = True
                try:
                    response = await smtp.data(mail.data)
                except aiosmtplib.SMTPResponseException as exc:
                    handed_over = False  # the server answered: it did not take the message
                    with contextlib.suppress(Exception):
                        await smtp.rset()
                    return self._reply(exc.code, exc.message, mail)
                return Result(
                    Outcome.SENT,
                    detail=response.message[:200],
                    code=str(response.code),
                    message_id=mail.message_id,
                )
        except _CONNECTION_ERRORS as exc:  # includes the transaction deadline (TimeoutError)
            if handed_over:
                # The message may have been accepted and only the reply lost: not a plain retry.
                return Result(
                    Outcome.UNCERTAIN,
                    detail=f"connection lost during DATA: {type(exc).__name__}: {exc}"[:500],
                    code="uncertain",
                    message_id=mail.message_id,
                )
            raise _Transient(Result(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}"[:500])) from exc
        except aiosmtplib.SMTPException as exc:
            # Login, STARTTLS or greeting refused: our configuration or the relay, never the recipient's fault.
            code = getattr(exc, "code", None)
            detail = f"{type(exc).__name__}: {exc}"[:500]
            raise _Transient(
                Result(Outcome.TRANSIENT, detail=detail, code=str(code) if code else "smtp")
            ) from exc

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
