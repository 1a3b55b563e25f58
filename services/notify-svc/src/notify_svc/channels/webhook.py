"""Signed outgoing webhooks (Standard Webhooks: webhook-id, webhook-timestamp, webhook-signature)."""

from __future__ import annotations

import base64
import hashlib
import hmac

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from notify_svc.channels.ssrf import TargetRefused, resolve_target
from notify_svc.domain.delivery import Outcome, Result, classify_http_status
from notify_svc.settings import WebhookSettings


def secret_bytes(secret: str) -> bytes:
    """A ``whsec_<base64>`` secret as the key bytes (the prefix is optional)."""
    raw = secret.removeprefix("whsec_")
    return base64.b64decode(raw)


def sign(secret: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` as the Standard Webhooks spec defines it."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


class WebhookSender:
    """POSTs signed JSON to client endpoints through the SSRF guard; one httpx client per process."""

    def __init__(self, settings: WebhookSettings, client: httpx.AsyncClient) -> None:
        self.settings = settings
        self.client = client
        self._key = secret_bytes(settings.secret.get_secret_value())

    async def send(self, url: str, msg_id: str, timestamp: int, body: bytes) -> Result:
        """One delivery attempt: the HTTP status decides the outcome (see classify_http_status)."""
        s = self.settings
        try:
            target = await resolve_target(url, allow_loopback=s.allow_loopback, allow_private=s.allow_private)
        except TargetRefused as exc:
            return Result(Outcome.PERMANENT, detail=f"refused by SSRF guard: {exc}", code="ssrf")
        headers = {
            "content-type": "application/json",
            "host": target.host_header(),
            "user-agent": "ar-notify-svc/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, msg_id, timestamp, body),
        }
        extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(s.connect_retries),
                wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
                retry=retry_if_exception_type((httpx.ConnectError, httpx.ConnectTimeout)),
                reraise=True,
            ):
                with attempt:
                    response = await self.client.post(
                        target.pinned_url(),
                        content=body,
                        headers=headers,
                        extensions=extensions,
                        timeout=s.timeout_s,
                        follow_redirects=False,
                    )
        except httpx.HTTPError as exc:
            return Result(Outcome.TRANSIENT, detail=f"{type(exc).__name__}: {exc}"[:500])
        outcome = classify_http_status(response.status_code)
        return Result(
            outcome,
            detail=f"HTTP {response.status_code} {response.text[:200]}",
            code=str(response.status_code),
            message_id=msg_id,
        )
