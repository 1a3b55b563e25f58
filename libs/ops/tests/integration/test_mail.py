"""The SMTP catcher stores what a real SMTP client sends, one .eml per message, readable by `arctl mail`."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import aiosmtplib

from ar_ops.mail import MailCatcher, find_mail, list_mail, render_mail


def _message(n: int) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Accounts Receivable <ar@example.com>"
    msg["To"] = f"client{n}@example.org"
    msg["Subject"] = f"Reminder {n}: invoice overdue"
    msg.set_content(f"Dear client {n},\nplease pay 1.234,56 EUR.\n")
    msg.add_alternative(f"<p>Dear client {n}</p>", subtype="html")
    return msg


async def test_each_message_becomes_one_eml_file(tmp_path: Path) -> None:
    mail_dir = tmp_path / "mail"
    async with MailCatcher(mail_dir, port=0) as catcher:
        for n in (1, 2):
            await aiosmtplib.send(_message(n), hostname="127.0.0.1", port=catcher.port, timeout=10)
        await aiosmtplib.send(
            _message(3), hostname="127.0.0.1", port=catcher.port, recipients=["bcc@example.org"], timeout=10
        )
    files = sorted(mail_dir.glob("*.eml"))
    assert len(files) == 3
    assert not list(mail_dir.glob(".*"))  # no temporary files left behind
    summaries = list_mail(mail_dir)
    assert [s.subject for s in summaries] == [f"Reminder {n}: invoice overdue" for n in (1, 2, 3)]
    assert summaries[0].to == "client1@example.org"
    shown = render_mail(find_mail(mail_dir, "2"))
    assert "please pay 1.234,56 EUR" in shown["body"]
    assert shown["headers"]["X-Envelope-To"] == "<client2@example.org>"
    assert render_mail(find_mail(mail_dir, "-1"))["headers"]["X-Envelope-To"] == "<bcc@example.org>"


async def test_unknown_message_number_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "mail").mkdir()
    try:
        find_mail(tmp_path / "mail", "4")
    except LookupError as exc:
        assert "0 stored" in str(exc)
    else:
        raise AssertionError("expected LookupError")
