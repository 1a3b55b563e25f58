"""Channel helpers: MIME structure, Standard Webhooks signature (checked by the reference package), SSRF rules."""

from __future__ import annotations

import email
import json
from datetime import UTC, datetime
from email import policy

import pytest
from standardwebhooks import Webhook

from notify_svc.channels.email import build_message
from notify_svc.channels.ssrf import TargetRefused, check_address, resolve_target
from notify_svc.channels.webhook import secret_bytes, sign
from notify_svc.rendering import Rendered

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def test_signature_verifies_with_the_standardwebhooks_package() -> None:
    body = json.dumps({"type": "x", "data": {"amount": "1 200,00 €"}}, ensure_ascii=False).encode()
    ts = int(datetime.now(UTC).timestamp())
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret_bytes(SECRET), "msg_1", ts, body),
    }
    assert Webhook(SECRET).verify(body, headers) == {"type": "x", "data": {"amount": "1 200,00 €"}}


def test_tampered_body_fails_verification() -> None:
    ts = int(datetime.now(UTC).timestamp())
    sig = sign(secret_bytes(SECRET), "msg_1", ts, b'{"a":1}')
    with pytest.raises(Exception, match=r"(?i)signature"):
        Webhook(SECRET).verify(
            b'{"a":2}', {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": sig}
        )


def test_message_is_multipart_alternative_with_text_then_html() -> None:
    rendered = Rendered(
        subject="Rappel : 1 200,00 €", text="Bonjour Zoë\n", html="<p>Bonjour Zoë</p>", language="fr"
    )
    mail = build_message(
        rendered,
        from_name="Claire Dubois",
        from_address="claire@x.example",
        to_name="Zoë Martin",
        to_address="zoe@y.example",
        message_id="<ntf_1.0@notify.example>",
        date=datetime(2026, 3, 2, 9, 30, tzinfo=UTC),
        mailbox_name="AR",
        mailbox_address="ar@x.example",
        extra_headers=[("X-AR-Case-Id", "case_1")],
    )
    msg = email.message_from_bytes(mail.data, policy=policy.default)
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    assert msg["Subject"] == "Rappel : 1 200,00 €"
    assert msg["Message-ID"] == "<ntf_1.0@notify.example>"
    assert msg["Sender"] == "AR <ar@x.example>"  # From is the account manager; the mailbox is the Sender
    assert msg["Content-Language"] == "fr"
    assert msg["X-AR-Case-Id"] == "case_1"
    assert mail.envelope_from == "ar@x.example"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == "Bonjour Zoë\n"
    assert msg.get_body(("html",)).get_content() == "<p>Bonjour Zoë</p>"
    assert all(len(line) <= 78 for line in mail.data.split(b"\r\n"))


@pytest.mark.parametrize(
    "addr",
    [
        "127.0.0.1",
        "::1",
        "10.1.2.3",
        "172.16.0.5",
        "192.168.1.1",
        "169.254.169.254",
        "fe80::1",
        "fc00::1",
        "0.0.0.0",
        "::ffff:127.0.0.1",
        "100.64.0.1",
        "224.0.0.1",
    ],
)
def test_internal_addresses_are_refused(addr: str) -> None:
    with pytest.raises(TargetRefused):
        check_address(addr, allow_loopback=False, allow_private=False)


def test_public_address_passes_and_loopback_can_be_allowed() -> None:
    check_address("93.184.216.34", allow_loopback=False, allow_private=False)
    check_address("127.0.0.1", allow_loopback=True, allow_private=False)
    with pytest.raises(TargetRefused):
        check_address("10.0.0.1", allow_loopback=True, allow_private=False)


async def test_names_are_checked_after_resolution() -> None:
    with pytest.raises(TargetRefused, match="loopback"):
        await resolve_target("http://localhost:8080/hook", allow_loopback=False, allow_private=False)
    with pytest.raises(TargetRefused, match="scheme"):
        await resolve_target("file:///etc/passwd", allow_loopback=True, allow_private=True)
    with pytest.raises(TargetRefused, match="credentials"):
        await resolve_target("http://u:p@example.com/", allow_loopback=True, allow_private=True)
    target = await resolve_target("http://127.0.0.1:9/x?y=1", allow_loopback=True, allow_private=False)
    assert target.pinned_url() == "http://127.0.0.1:9/x?y=1"


def test_header_injection_through_names_is_neutralised() -> None:
    rendered = Rendered(subject="Hi\r\nBcc: evil@x.example", text="t", html="<p>h</p>", language="en")
    mail = build_message(
        rendered,
        from_name="AR",
        from_address="ar@x.example",
        to_name="Eve\r\nBcc: evil@x.example",
        to_address="eve@y.example",
        message_id="<m@d>",
        date=datetime(2026, 3, 2, tzinfo=UTC),
        mailbox_name="AR",
        mailbox_address="ar@x.example",
    )
    msg = email.message_from_bytes(mail.data, policy=policy.default)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Hi Bcc: evil@x.example"


def test_long_lines_and_non_ascii_headers_are_encoded() -> None:
    text = "é" * 300 + "\n" + "x" * 500 + "\n"
    rendered = Rendered(
        subject="Überfällig: " + "ä" * 120, text=text, html="<p>" + "y" * 2000 + "</p>", language="de"
    )
    mail = build_message(
        rendered,
        from_name="Jürgen Müller",
        from_address="jm@x.example",
        to_name="Zoë",
        to_address="z@y.example",
        message_id="<m@d>",
        date=datetime(2026, 3, 2, tzinfo=UTC),
        mailbox_name="AR",
        mailbox_address="ar@x.example",
    )
    assert all(len(line) <= 78 for line in mail.data.split(b"\r\n"))
    msg = email.message_from_bytes(mail.data, policy=policy.default)
    assert msg["Subject"] == "Überfällig: " + "ä" * 120
    assert msg["From"] == "Jürgen Müller <jm@x.example>"
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n") == text
