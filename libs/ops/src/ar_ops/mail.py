"""The dev SMTP catcher: every message it receives becomes one ``.eml`` file under ``var/mail/``.

Run alone with ``python -m ar_ops.mail --port 1025 --dir var/mail``; the dev stack starts it for you.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import logging
import os
import signal
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)


class MailDirHandler:
    """aiosmtpd handler writing each accepted message atomically as ``<utc-time>-<id>.eml``."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or (
            envelope.content.encode() if isinstance(envelope.content, str) else envelope.content or b""
        )
        trace = (
            f"X-Envelope-From: <{envelope.mail_from or ''}>\r\n"
            f"X-Envelope-To: {', '.join(f'<{r}>' for r in envelope.rcpt_tos)}\r\n"
        ).encode()
        path = self.write(trace + content)
        log.info("stored %s for %s", path.name, envelope.rcpt_tos)
        return "250 Message accepted for delivery"

    def write(self, data: bytes) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
        name = f"{stamp}-{uuid.uuid4().hex[:8]}.eml"
        tmp = self.directory / f".{name}.tmp"
        tmp.write_bytes(data)
        final = self.directory / name
        os.replace(tmp, final)
        return final


@dataclass
class MailCatcher:
    """An SMTP server on ``host:port`` (0 = a free port) storing mail under ``directory``."""

    directory: Path
    host: str = "127.0.0.1"
    port: int = 1025
    _server: asyncio.Server | None = None

    async def start(self) -> MailCatcher:
        handler = MailDirHandler(self.directory)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: SMTP(handler, hostname="mail-catcher.local", data_size_limit=25 * 1024 * 1024),
            host=self.host,
            port=self.port,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> MailCatcher:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ------------------------------------------------------------------------------------------ reading


@dataclass(frozen=True, slots=True)
class MailSummary:
    number: int
    path: Path
    received: str
    sender: str
    to: str
    subject: str


def mail_files(directory: Path) -> list[Path]:
    """The stored messages, oldest first."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.glob("*.eml") if not p.name.startswith("."))


def parse_mail(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def list_mail(directory: Path) -> list[MailSummary]:
    """One summary per stored message (numbered from 1, oldest first)."""
    out = []
    for number, path in enumerate(mail_files(directory), start=1):
        msg = parse_mail(path)
        out.append(
            MailSummary(
                number=number,
                path=path,
                received=_received(path),
                sender=str(msg.get("From", "")),
                to=str(msg.get("To", "")),
                subject=str(msg.get("Subject", "")),
            )
        )
    return out


def _received(path: Path) -> str:
    stamp = path.name.split("-", 1)[0]
    with contextlib.suppress(ValueError):
        return datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=UTC).isoformat(timespec="seconds")
    return ""


def find_mail(directory: Path, ref: str) -> Path:
    """A message by number (1 = oldest, -1 = newest) or by file name."""
    files = mail_files(directory)
    try:
        index = int(ref)
    except ValueError:
        candidate = directory / ref
        if candidate.is_file():
            return candidate
        raise LookupError(f"no message named {ref!r} in {directory}") from None
    if index == 0 or abs(index) > len(files):
        raise LookupError(f"no message number {index}: {len(files)} stored in {directory}")
    return files[index - 1] if index > 0 else files[index]


def render_mail(path: Path) -> dict[str, Any]:
    """Headers and the text body (or the HTML when there is no text part) of one message."""
    msg = parse_mail(path)
    body = msg.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    attachments = [part.get_filename() for part in msg.iter_attachments()]
    return {
        "file": path.name,
        "headers": {k: str(v) for k, v in msg.items()},
        "body": text,
        "attachments": [a for a in attachments if a],
    }


# ------------------------------------------------------------------------------------------ process


async def _serve(directory: Path, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with MailCatcher(directory, host, port) as catcher:
        print(f"SMTP catcher on {host}:{catcher.port}, storing mail in {directory}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Run the SMTP catcher in the foreground until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(
        prog="python -m ar_ops.mail", description="Dev SMTP catcher (.eml files)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("SMTP_PORT", "1025")))
    parser.add_argument("--dir", type=Path, default=Path("var/mail"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    asyncio.run(_serve(args.dir, args.host, args.port))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
