"""The delivery loop: claim due notifications, render, send, record. Retries are rows, not sleeping tasks.

Per notification: ``sending`` is committed (with a lease) before any byte goes to the SMTP server or the
webhook endpoint; the outcome is committed right after, with NotificationSent/Failed in the same
transaction (outbox). A row still in ``sending`` when its lease runs out belonged to a process that died
mid-send; :meth:`Dispatcher.recover` resolves it (see the README's crash analysis).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import random
from collections.abc import Callable, Coroutine, Sequence
from datetime import timedelta
from typing import Any

from prometheus_client import Counter
from sqlalchemy import Row
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from tenacity import AsyncRetrying, retry_if_exception, stop_after_delay, wait_exponential_jitter

from ar_events.clock import Clock
from ar_events.db import is_transient
from ar_events.envelope import Envelope
from notify_svc.channels.email import Mail, SmtpSender, build_message
from notify_svc.channels.webhook import WebhookSender
from notify_svc.domain.delivery import Outcome, Result, Status, after_attempt, recover
from notify_svc.domain.notifications import message_id
from notify_svc.handlers import failed_event, sent_event
from notify_svc.rendering import Rendered, Renderer, RenderError, build_context, client_locale
from notify_svc.repository import UnitOfWork
from notify_svc.settings import Settings

log = logging.getLogger(__name__)

DELIVERIES = Counter(
    "notify_deliveries_total", "Delivery attempts by channel and outcome", ["channel", "outcome"]
)


class Dispatcher:
    """Sends what the handlers recorded. Several instances may run: rows are claimed with SKIP LOCKED."""

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        renderer: Renderer,
        clock: Clock,
        *,
        smtp: SmtpSender | None,
        webhooks: WebhookSender | None,
        rng: random.Random | None = None,
        on_commit: Callable[[], None] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.renderer = renderer
        self.clock = clock
        self.smtp = smtp
        self.webhooks = webhooks
        self.rng = rng or random.Random()
        self.on_commit = on_commit or (lambda: None)
        self._wake = asyncio.Event()
        self._webhook_slots = asyncio.Semaphore(settings.webhook.max_concurrency)
        self.sent = 0

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop``; resolve expired leases at start and then every quarter lease."""
        d = self.settings.delivery
        next_recovery = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                if loop.time() >= next_recovery:
                    await self.recover()
                    next_recovery = loop.time() + d.lease_s / 4
                done = await self.run_once()
            except Exception:
                log.exception("dispatcher: batch failed; retrying")
                done = 0
                await _sleep(stop, 1.0)
            if done == 0:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(_first(stop, self._wake), d.poll_interval_ms / 1000)

    async def run_once(self) -> int:
        """Claim one batch of due rows and deliver it; returns how many were attempted."""
        d = self.settings.delivery
        now = self.clock.now()
        async with UnitOfWork(self.sessionmaker) as uow:
            rows = await uow.repo.claim_due(now, now + timedelta(seconds=d.lease_s), d.batch_size)
            if not rows:
                return 0
            suppressed = await uow.repo.suppressed(r.recipient for r in rows if r.channel == "email")
            disabled = await uow.repo.disabled_endpoints(r.recipient for r in rows if r.channel == "webhook")
            await uow.commit()  # 'sending' is durable before anything leaves the process
        recorder = _Recorder(self._record, d.flush_every)
        emails = [r for r in rows if r.channel == "email"]
        hooks = [r for r in rows if r.channel != "email"]
        try:
            await asyncio.gather(
                self._email_pipeline(emails, suppressed, recorder),
                *(self._one_webhook(r, disabled, recorder) for r in hooks),
            )
        finally:
            await recorder.close()
        return len(rows)

    # ------------------------------------------------------------------ delivery

    async def _email_pipeline(
        self, rows: Sequence[Row[Any]], suppressed: dict[str, str], rec: _Recorder
    ) -> None:
        """Render a few messages ahead while the pooled connections wait for SMTP replies."""
        if not rows:
            return
        workers = self.smtp.settings.pool_size if self.smtp else 1
        queue: asyncio.Queue[tuple[Row[Any], Mail | Result] | None] = asyncio.Queue(maxsize=2 * workers)

        async def produce() -> None:
            for row in rows:
                await queue.put((row, self._prepare_email(row, suppressed)))
            for _ in range(workers):
                await queue.put(None)

        async def send() -> None:
            while (item := await queue.get()) is not None:
                row, prepared = item
                result = prepared if isinstance(prepared, Result) else await self._send_email(row, prepared)
                await rec.add(row, result)

        await asyncio.gather(produce(), *(send() for _ in range(workers)))

    def _prepare_email(self, row: Row[Any], suppressed: dict[str, str]) -> Mail | Result:
        """The wire message, or the outcome when there is nothing to send (suppressed, template error)."""
        if row.recipient in suppressed:
            return Result(
                Outcome.SUPPRESSED, f"address suppressed: {suppressed[row.recipient]}", code="suppressed"
            )
        if self.smtp is None:
            return Result(Outcome.TRANSIENT, "no SMTP sender in this process", code="config")
        try:
            return self._build_email(row)
        except RenderError as exc:
            log.warning("template error for %s: %s", row.id, exc)
            return Result(Outcome.TEMPLATE_ERROR, str(exc)[:1000], code="template")
        except Exception as exc:  # a bug: retried on the schedule, logged
            log.exception("building the message for %s failed", row.id)
            return Result(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}"[:500], code="error")

    async def _send_email(self, row: Row[Any], mail: Mail) -> Result:
        assert self.smtp is not None
        try:
            return await self.smtp.send(mail)
        except Exception as exc:  # an unexpected library error: retried on the schedule, logged
            log.exception("delivery of %s failed unexpectedly", row.id)
            return Result(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}"[:500], code="error")

    async def _one_webhook(self, row: Row[Any], disabled: dict[str, str], rec: _Recorder) -> None:
        if row.recipient in disabled:
            result = Result(
                Outcome.SUPPRESSED, f"endpoint disabled: {disabled[row.recipient]}", code="disabled"
            )
        else:
            try:
                result = await self._webhook(row)
            except RenderError as exc:
                log.warning("template error for %s: %s", row.id, exc)
                result = Result(Outcome.TEMPLATE_ERROR, str(exc)[:1000], code="template")
            except Exception as exc:
                log.exception("webhook delivery of %s failed unexpectedly", row.id)
                result = Result(Outcome.TRANSIENT, f"{type(exc).__name__}: {exc}"[:500], code="error")
        await rec.add(row, result)

    async def _deliver(self, row: Row[Any], suppressed: dict[str, str], disabled: dict[str, str]) -> Result:
        """Deliver one claimed row now (tests use it to stage crashes between send and record)."""
        if row.channel == "email":
            prepared = self._prepare_email(row, suppressed)
            return prepared if isinstance(prepared, Result) else await self._send_email(row, prepared)
        rec = _Recorder(_discard, 1_000_000)
        await self._one_webhook(row, disabled, rec)
        return rec.pending[0][1]

    def render(self, row: Row[Any]) -> Rendered:
        """Render a notification row (also used by the preview endpoint through the same context builder)."""
        smtp = self.settings.smtp
        locale = client_locale(row.language, row.country)
        ctx = build_context(
            kind=row.kind,
            payload=row.payload,
            client_name=row.client_name,
            client_id=row.client_id,
            recipient_name=row.recipient_name,
            recipient=row.recipient,
            sender_name=row.sender_name or smtp.from_name,
            sender_email=row.sender_email or smtp.from_address,
            sender_kind=row.sender_kind,
            company=smtp.from_name,
            locale=locale,
        )
        return self.renderer.render(row.template, row.language, ctx)

    def _build_email(self, row: Row[Any]) -> Mail:
        smtp = self.settings.smtp
        rendered = self.render(row)
        headers = [("X-AR-Notification-Key", row.notification_key), ("X-AR-Client-Id", row.client_id)]
        if row.case_id:
            headers.append(("X-AR-Case-Id", row.case_id))
        return build_message(
            rendered,
            from_name=row.sender_name or smtp.from_name,
            from_address=row.sender_email or smtp.from_address,
            to_name=row.recipient_name,
            to_address=row.recipient,
            message_id=message_id(row.id, row.generation, smtp.message_id_domain),
            date=self.clock.now(),
            mailbox_name=smtp.from_name,
            mailbox_address=smtp.from_address,
            extra_headers=headers,
        )

    async def _webhook(self, row: Row[Any]) -> Result:
        if self.webhooks is None:
            return Result(Outcome.TRANSIENT, "no webhook sender in this process", code="config")
        rendered = self.render(row)
        msg_id = f"{row.id}_{row.generation}"
        body = json.dumps(
            {
                "type": f"ar.notification.{row.kind}",
                "timestamp": row.created_at.isoformat(),
                "data": {
                    "notification_id": row.id,
                    "notification_key": row.notification_key,
                    "client_id": row.client_id,
                    "case_id": row.case_id,
                    "template": row.template,
                    "language": rendered.language,
                    "subject": rendered.subject,
                    "text": rendered.text,
                    "event": row.payload,
                },
            },
            ensure_ascii=False,
            separators=(",", ":"),
        ).encode()
        async with self._webhook_slots:
            return await self.webhooks.send(row.recipient, msg_id, int(self.clock.now().timestamp()), body)

    # ------------------------------------------------------------------ recording

    async def _record(self, results: Sequence[tuple[Row[Any], Result]]) -> None:
        """Record outcomes; a database blip is retried, because until this commits a sent message is at risk
        of the single crash-window resend (see the README)."""
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(30),
            wait=wait_exponential_jitter(multiplier=0.1, max=2.0, jitter=0.1),
            reraise=True,
        ):
            with attempt:
                await self._record_once(results)

    async def _record_once(self, results: Sequence[tuple[Row[Any], Result]]) -> None:
        d = self.settings.delivery
        counted: list[tuple[str, str]] = []
        now = self.clock.now()
        async with UnitOfWork(self.sessionmaker) as uow:
            owned = await uow.repo.owned((r.id, r.attempts, r.generation) for r, _ in results)
            updates: list[dict[str, Any]] = []
            attempts: list[dict[str, Any]] = []
            events: list[Envelope[Any]] = []
            for row, result in results:
                if row.id not in owned:
                    log.warning("notification %s changed hands during delivery (lease expired?)", row.id)
                    continue
                schedule = d.email_schedule_s if row.channel == "email" else d.webhook_schedule_s
                t = after_attempt(
                    result,
                    attempts=row.attempts,
                    schedule=schedule,
                    jitter=d.jitter,
                    now=now,
                    rng=self.rng,
                    recoveries=row.recoveries,
                )
                counted.append((row.channel, result.outcome.value))
                updates.append(
                    {
                        "b_id": row.id,
                        "status": t.status.value,
                        "next_attempt_at": t.next_attempt_at,
                        "message_id": result.message_id or row.message_id,
                        "last_error": None if t.status == Status.SENT else result.detail,
                        "error_code": None if t.status == Status.SENT else result.code,
                        "permanent": t.permanent if t.status in (Status.FAILED, Status.UNKNOWN) else None,
                        "sent_at": now if t.status == Status.SENT else None,
                        "updated_at": now,
                        "recoveries": row.recoveries + (1 if t.uses_recovery else 0),
                    }
                )
                attempts.append(
                    {
                        "notification_id": row.id,
                        "attempt": row.attempts,
                        "generation": row.generation,
                        "started_at": row.updated_at,
                        "finished_at": now,
                        "outcome": result.outcome.value,
                        "code": result.code,
                        "detail": result.detail[:2000],
                    }
                )
                if t.emit_sent:
                    events.append(sent_event(row, message_id=result.message_id, now=now))
                if t.emit_failed:
                    reason = result.detail or result.outcome.value
                    if result.outcome == Outcome.TRANSIENT:
                        reason = f"gave up after {row.attempts} attempts: {reason}"
                    events.append(
                        failed_event(
                            row,
                            reason=reason,
                            code=result.code or result.outcome.value,
                            permanent=t.permanent,
                            now=now,
                        )
                    )
                if t.suppress_recipient and row.channel == "email":
                    await uow.repo.suppress(row.recipient, result.detail, result.code, row.id, now)
                if t.disable_endpoint:
                    await uow.repo.disable_endpoint(row.recipient, row.client_id, result.detail, now)
            await uow.repo.record_results(updates, attempts)
            if events:
                await uow.repo.emit(*events, now=now)
            await uow.commit()
        for channel, outcome in counted:
            _counter(channel, outcome).inc()
            self.sent += outcome == Outcome.SENT.value
        if events:
            self.on_commit()

    async def recover(self) -> int:
        """Resolve rows left in ``sending`` past their lease: resend once (same Message-ID), else ``unknown``."""
        now = self.clock.now()
        async with UnitOfWork(self.sessionmaker) as uow:
            rows = await uow.repo.expired_leases(now)
            if not rows:
                return 0
            updates, attempts, events = [], [], []
            for row in rows:
                t = recover(row.recoveries, now)
                updates.append(
                    {
                        "b_id": row.id,
                        "status": t.status.value,
                        "next_attempt_at": t.next_attempt_at,
                        "message_id": row.message_id,
                        "last_error": "process stopped while sending; outcome unknown",
                        "error_code": "crashed",
                        "permanent": False if t.emit_failed else None,
                        "sent_at": None,
                        "updated_at": now,
                        "recoveries": row.recoveries + 1,
                    }
                )
                attempts.append(
                    {
                        "notification_id": row.id,
                        "attempt": row.attempts,
                        "generation": row.generation,
                        "started_at": row.updated_at,
                        "finished_at": now,
                        "outcome": Outcome.CRASHED.value,
                        "code": None,
                        "detail": f"lease expired in 'sending'; now {t.status.value}",
                    }
                )
                if t.emit_failed:
                    events.append(
                        failed_event(
                            row,
                            reason="delivery outcome unknown after a second crash while sending; check and resend",
                            code="unknown",
                            permanent=False,
                            now=now,
                        )
                    )
                log.warning("recovered notification %s from 'sending' -> %s", row.id, t.status.value)
            await uow.repo.record_results(updates, attempts)
            if events:
                await uow.repo.emit(*events, now=now)
            await uow.commit()
        if events:
            self.on_commit()
        return len(rows)


@functools.cache
def _counter(channel: str, outcome: str) -> Any:
    return DELIVERIES.labels(channel, outcome)


class _Recorder:
    """Collects outcomes and records them every ``every`` results, up to ``parallel`` transactions at a time.

    Chunks hold disjoint rows, so their transactions do not conflict; overlapping them keeps a slow database
    round trip from stalling the sends.
    """

    def __init__(
        self,
        record: Callable[[Sequence[tuple[Row[Any], Result]]], Coroutine[Any, Any, None]],
        every: int,
        parallel: int = 2,
    ) -> None:
        self.record = record
        self.every = every
        self.pending: list[tuple[Row[Any], Result]] = []
        self._slots = asyncio.Semaphore(parallel)
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors: list[BaseException] = []

    async def add(self, row: Row[Any], result: Result) -> None:
        self.pending.append((row, result))
        if len(self.pending) >= self.every:
            await self._flush()

    async def _flush(self) -> None:
        if not self.pending:
            return
        batch, self.pending = self.pending, []
        await self._slots.acquire()
        task = asyncio.create_task(self._run(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: Sequence[tuple[Row[Any], Result]]) -> None:
        try:
            await self.record(batch)
        except Exception as exc:  # reported by close(); the rows stay 'sending' and are recovered
            self._errors.append(exc)
        finally:
            self._slots.release()

    async def close(self) -> None:
        await self._flush()
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        if self._errors:
            raise self._errors[0]


async def _discard(results: Sequence[tuple[Row[Any], Result]]) -> None:
    return None


async def _first(stop: asyncio.Event, wake: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
