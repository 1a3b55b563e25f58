"""notify-svc: consolidated emails (10 open invoices each) delivered per second, on PostgreSQL, to a local aiosmtpd.

Our figure goes through the real delivery path: pending rows claimed (``sending`` committed), rendered
(Jinja2 sandbox + babel, text and HTML), MIME-built, sent over SMTP, and recorded (status, an attempt row
and a NotificationSent outbox row per email). The baseline, in the same run and against the same server, is
a raw aiosmtplib loop sending one prerendered copy of the same message over one connection.
The SMTP server runs in its own process so it does not share the client's interpreter lock.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

N = int(os.environ.get("BENCH_NOTIFY_N", "3000"))
INVOICES = 10

SERVER = r"""
import asyncio, signal, sys
from aiosmtpd.controller import Controller

class Sink:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Sink.count += 1
        return "250 2.0.0 Ok"

signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
c = Controller(Sink(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
c.stop()
print(Sink.count, flush=True)
"""


def _statement(i: int) -> dict[str, Any]:
    as_of = date(2026, 3, 2)
    lines = []
    for k in range(INVOICES):
        due = as_of - timedelta(days=40 - 4 * k)
        amount = 10_000 + 1_337 * k + i
        lines.append(
            {
                "invoice_id": f"inv_{i}_{k}",
                "number": f"F-2026-{i:05d}-{k}",
                "issue_date": (due - timedelta(30)).isoformat(),
                "due_date": due.isoformat(),
                "amount_due": {"amount_minor": amount, "currency": "EUR"},
                "total": {"amount_minor": amount, "currency": "EUR"},
                "days_overdue": (as_of - due).days,
            }
        )
    total = sum(line["amount_due"]["amount_minor"] for line in lines)
    overdue = sum(line["amount_due"]["amount_minor"] for line in lines if line["days_overdue"] > 0)
    return {
        "as_of": as_of.isoformat(),
        "invoices": lines,
        "totals": [{"amount_minor": total, "currency": "EUR"}],
        "overdue_totals": [{"amount_minor": overdue, "currency": "EUR"}],
        "oldest_overdue_invoice_id": lines[0]["invoice_id"],
        "pay_link": f"https://pay.example.com/c/cli_{i}",
    }


def _events(n: int) -> list[Any]:
    from ar_events.envelope import new_event
    from ar_events.events import ReminderRequested

    now = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    out = []
    for i in range(n):
        lang = ("en", "fr", "de")[i % 3]
        payload = ReminderRequested.model_validate(
            {
                "client_id": f"cli_{i}",
                "case_id": f"case_{i}",
                "cycle": 1,
                "notification_key": f"case_{i}:1:1",
                "step": 1,
                "level": 1,
                "template": "overdue-1",
                "language": lang,
                "sender": {"kind": "ar_mailbox", "name": "ACME Receivables", "email": "ar@seller.example"},
                "recipients": [{"name": f"Client {i}", "email": f"billing{i}@client.example"}],
                "statement": _statement(i),
                "requested_at": now.isoformat(),
            }
        )
        out.append(new_event(payload, source="bench", time=now))
    return out


async def _raw(port: int, data: bytes, n: int) -> tuple[float, float]:
    """The baseline: (seconds, CPU seconds) to send ``data`` n times over one connection."""
    import aiosmtplib

    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
    await smtp.connect()
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        await smtp.sendmail("ar@seller.example", ["billing0@client.example"], data)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await smtp.quit()
    return elapsed, cpu


async def _ours(database_url: str, port: int, n: int) -> dict[str, Any]:
    """Ingest n reminders, then deliver them; the raw baseline runs half before and half after, same message."""
    from sqlalchemy import func, select, text

    from ar_events.settings import DatabaseSettings
    from notify_svc.__main__ import migrate
    from notify_svc.bootstrap import build, outbound
    from notify_svc.dispatcher import Dispatcher
    from notify_svc.handlers import on_message_request
    from notify_svc.repository import delivery_attempt, notification
    from notify_svc.settings import DeliverySettings, Settings, SmtpSettings

    delivery = DeliverySettings()
    if os.environ.get("BENCH_NOTIFY_BATCH"):
        delivery = DeliverySettings(batch_size=int(os.environ["BENCH_NOTIFY_BATCH"]))
    settings = Settings(
        delivery=delivery,
        database=DatabaseSettings(url=database_url),
        smtp=SmtpSettings(
            port=port,
            from_address="ar@seller.example",
            pool_size=int(os.environ.get("BENCH_NOTIFY_POOL", "2")),  # NOTIFY_SMTP__POOL_SIZE=2
        ),
    )
    await asyncio.to_thread(migrate, settings)
    services = build(settings)
    try:
        events = _events(n)
        started = time.perf_counter()
        for start in range(0, n, 500):  # one transaction per consumer batch, as the ConsumerRunner does
            async with services.sessionmaker() as session, session.begin():
                for env in events[start : start + 500]:
                    await on_message_request(session, env, clock=services.clock)
        ingest_rate = n / (time.perf_counter() - started)
        async with services.sessionmaker() as session:
            await session.execute(text("ANALYZE notification"))
            plan = [
                r[0]
                for r in await session.execute(
                    text(
                        "EXPLAIN SELECT id FROM notification WHERE status = 'pending' AND next_attempt_at <= now()"
                        " ORDER BY next_attempt_at LIMIT 200 FOR UPDATE SKIP LOCKED"
                    )
                )
            ]

        async with outbound(settings) as (smtp, webhooks):
            d = Dispatcher(
                services.sessionmaker,
                settings,
                services.renderer,
                services.clock,
                smtp=smtp,
                webhooks=webhooks,
            )
            async with services.sessionmaker() as session:
                row = (await session.execute(select(notification).limit(1))).one()
            data = _prerendered(d, row)
            raw_before = await _raw(port, data, n // 2)
            started, cpu = time.perf_counter(), time.process_time()
            while await d.run_once():
                pass
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            raw_after = await _raw(port, data, n - n // 2)
        async with services.sessionmaker() as session:
            sent = (
                await session.execute(
                    select(func.count()).select_from(notification).where(notification.c.status == "sent")
                )
            ).scalar_one()
            attempts = (
                await session.execute(select(func.count()).select_from(delivery_attempt))
            ).scalar_one()
        return {
            "rate": sent / elapsed,
            "cpu_ms": 1000 * cpu / max(sent, 1),
            "sent": sent,
            "attempts": attempts,
            "ingest_rate": ingest_rate,
            "raw_rate": n / (raw_before[0] + raw_after[0]),
            "raw_cpu_ms": 1000 * (raw_before[1] + raw_after[1]) / n,
            "message_bytes": len(data),
            "plan": plan,
            "settings": settings,
        }
    finally:
        await services.close()


def _prerendered(d: Any, row: Any) -> bytes:
    """The same message our path builds for a row, rendered once (the baseline's payload)."""
    from notify_svc.channels.email import build_message
    from notify_svc.domain.notifications import message_id

    s = d.settings.smtp
    mail = build_message(
        d.render(row),
        from_name=s.from_name,
        from_address=s.from_address,
        to_name=row.recipient_name,
        to_address=row.recipient,
        message_id=message_id(row.id, 0, s.message_id_domain),
        date=datetime.now(UTC),
        mailbox_name=s.from_name,
        mailbox_address=s.from_address,
    )
    return mail.data


def _start_server(port: int) -> subprocess.Popen[str]:
    """aiosmtpd in its own process, so it does not share this interpreter's lock with the client."""
    proc = subprocess.Popen([sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _stop_server(proc: subprocess.Popen[str]) -> int:
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=30)[0] or "0"
    return int(out.strip().splitlines()[-1])


async def main() -> dict[str, Any]:
    from ar_events.broker import free_port
    from ar_events.testing import _pg_answers, create_database, drop_database, local_postgres_url

    server_url = os.environ.get("DATABASE_URL") or local_postgres_url()
    if not await _pg_answers(server_url):
        print("notify bench: no PostgreSQL server; skipped")
        return {"skipped": "no PostgreSQL"}
    port = free_port()
    proc = _start_server(port)
    database_url = await create_database(server_url, prefix="bench_notify")
    try:
        ours = await _ours(database_url, port, N)
    finally:
        await drop_database(database_url)
        received = _stop_server(proc)
    raw = ours["raw_rate"]
    ratio = ours["rate"] / raw
    pool = ours["settings"].smtp.pool_size
    print(f"consolidated emails ({INVOICES} invoices, en/fr/de), PostgreSQL, aiosmtpd in its own process:")
    print(
        f"  notify-svc : {ours['rate']:8.0f} emails/s  ({ours['sent']} sent; claim, render, MIME, SMTP over "
        f"{pool} pooled connection(s), status + attempt row + outbox event)"
    )
    print(
        f"  raw loop   : {raw:8.0f} emails/s  (aiosmtplib sendmail, one connection, one prerendered message; "
        "half before, half after)"
    )
    print(f"  ratio      : {ratio:8.0%}   target >= 500/s and >= 50% of raw")
    print(
        f"  cpu/email  : {ours['cpu_ms']:8.2f} ms ours vs {ours['raw_cpu_ms']:.2f} ms raw (this process; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)"
    )
    print(
        f"  ingest     : {ours['ingest_rate']:8.0f} events/s into pending rows (handler, 500 per transaction)"
    )
    print(f"  message    : {ours['message_bytes']} bytes; SMTP server received {received} messages in total")
    print("  claim plan : " + " / ".join(line.strip() for line in ours["plan"]))
    return {
        "figures": [
            {
                "name": "consolidated emails/s (10 invoices, PostgreSQL)",
                "value": round(ours["rate"], 1),
                "unit": "emails/s",
                "baseline_name": "raw aiosmtplib loop, prerendered",
                "baseline": round(raw, 1),
                "ratio": round(ratio, 3),
                "target": 0.5,
            }
        ],
        "emails_per_s": round(ours["rate"], 1),
        "raw_per_s": round(raw, 1),
        "ingest_events_per_s": round(ours["ingest_rate"], 1),
        "cpu_ms_per_email": round(ours["cpu_ms"], 3),
        "raw_cpu_ms_per_email": round(ours["raw_cpu_ms"], 3),
        "smtp_pool_size": pool,
        "load_average": round(os.getloadavg()[0], 1),
        "message_bytes": ours["message_bytes"],
        "claim_query_plan": ours["plan"],
        "n": N,
        "smtp_received": received,
        "meets_target": ours["rate"] >= 500 and ratio >= 0.5,
    }


if __name__ == "__main__":
    print(asyncio.run(main()))
