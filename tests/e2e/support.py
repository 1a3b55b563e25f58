"""End-to-end support: a whole stack as processes, and the public interfaces to drive and observe it.

Everything here talks to the system the way its users do: REST with the dev API key, Stripe-signed webhooks,
the Kafka topics (read only), and the SMTP catcher's mail folder. Nothing reads a service's database.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import hashlib
import hmac
import json
import math
import os
import signal
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import httpx
from sqlalchemy.engine import make_url

from ar_events.envelope import decode
from ar_events.kafka import make_consumer
from ar_events.settings import KafkaSettings
from ar_events.testing import PostgresServer, asyncpg_dsn
from ar_events.topics import Topic
from ar_ops.mail import mail_files
from ar_ops.stack import SERVICES, Component, RunningStack, StackConfig, spawn, start_stack, terminate

T = TypeVar("T")
REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------------------------------ the stack


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together so the kernel cannot hand out one twice)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class E2EStack:
    """A running stack on free ports, in its own var dir, with databases nobody else uses."""

    running: RunningStack
    var: Path
    databases: dict[str, str]  # service name -> SQLAlchemy URL
    postgres: bool
    extra: dict[str, Component] = field(default_factory=dict)  # processes a test added (second dunning-svc)

    @property
    def config(self) -> StackConfig:
        return self.running.config

    @property
    def mail_dir(self) -> Path:
        return self.config.mail_dir

    @property
    def api_key(self) -> str:
        return self.running.credentials.api_key

    @property
    def stripe_secret(self) -> str:
        return self.running.credentials.webhook_secrets["stripe"]

    def urls(self) -> dict[str, str]:
        return self.running.urls()

    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.config.bootstrap_servers)

    def logs(self, lines: int = 60) -> str:
        """The last lines of every component's log (for failure reports)."""
        parts = [f"whole logs under {self.config.log_dir}, mail under {self.mail_dir}"]
        for path in sorted(self.config.log_dir.glob("*.log")):
            try:
                text = path.read_bytes()[-60_000:].decode("utf-8", errors="replace")
            except OSError:
                continue
            tail = "\n".join(text.splitlines()[-lines:])
            parts.append(f"----- {path.name} (last {lines} lines) -----\n{tail}")
        return "\n".join(parts)

    # processes ---------------------------------------------------------------------------------------

    def component(self, name: str) -> Component:
        return self.running.components[name]

    def kill(self, name: str) -> tuple[list[str], dict[str, str]]:
        """kill -9 a service's process group; return the command line and environment it ran with."""
        comp = self.component(name)
        command, env = process_command_env(comp.pid)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(comp.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.kill(comp.pid, signal.SIGKILL)
        if comp.process is not None:
            comp.process.wait(10)
        return command, env

    def restart(self, name: str, command: list[str], env: dict[str, str]) -> Component:
        """Start a service again with the very command and environment it had (as the stack started it)."""
        comp = spawn(name, command, env, self.config.log_file(name), self.config.root)
        comp.url = self.config.base_url(name) if name in self.config.ports else None
        self.running.components[name] = comp
        return comp

    def spawn_extra(self, name: str, service: str, env_overrides: dict[str, str]) -> Component:
        """Another process of ``service`` with the stack's environment plus ``env_overrides``."""
        command, env = process_command_env(self.component(service).pid)
        env.update(env_overrides)
        comp = spawn(name, command, env, self.config.log_file(name), self.config.root)
        self.extra[name] = comp
        return comp

    def stop(self) -> None:
        for comp in self.extra.values():
            terminate(comp.pid, self.config.stop_timeout, comp.process)
        self.extra.clear()
        self.running.stop()


def process_command_env(pid: int) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of a live process (Linux /proc)."""
    raw_cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    raw_env = Path(f"/proc/{pid}/environ").read_bytes()
    command = [part.decode() for part in raw_cmd.split(b"\0") if part]
    env = {}
    for item in raw_env.split(b"\0"):
        if b"=" in item:
            k, v = item.split(b"=", 1)
            env[k.decode()] = v.decode()
    return command, env


async def _create_pg_databases(server: PostgresServer, prefix: str) -> dict[str, str]:
    import asyncpg  # type: ignore[import-untyped]

    base = make_url(server.url).set(drivername="postgresql+asyncpg")
    conn = await asyncpg.connect(asyncpg_dsn(base.set(database="postgres")), timeout=10)
    out = {}
    try:
        for spec in SERVICES:
            name = f"{prefix}_{spec.name}"
            await conn.execute(f'CREATE DATABASE "{name}"')
            out[spec.name] = base.set(database=name).render_as_string(hide_password=False)
    finally:
        await conn.close()
    return out


async def drop_pg_databases(server: PostgresServer, urls: Iterable[str]) -> None:
    import asyncpg

    base = make_url(server.url)
    conn = await asyncpg.connect(asyncpg_dsn(base.set(database="postgres")), timeout=10)
    try:
        for url in urls:
            name = make_url(url).database
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def start_e2e_stack(
    var: Path, postgres: PostgresServer | None, service_env: dict[str, dict[str, str]] | None = None
) -> E2EStack:
    """Broker, SMTP catcher and the four services on free ports; PostgreSQL databases of our own (named
    ``e2e_<random>_<service>``) when a server answers, SQLite files under ``var`` otherwise."""
    ports = free_ports(2 + len(SERVICES))
    if postgres is not None:
        databases = asyncio.run(_create_pg_databases(postgres, f"e2e_{uuid.uuid4().hex[:10]}"))
    else:
        databases = {s.name: f"sqlite+aiosqlite:///{var / f'{s.dist}.db'}" for s in SERVICES}
    env: dict[str, dict[str, str]] = {}
    for spec in SERVICES:
        # service_env wins over what the stack derives, so the databases are ours whatever the stack's
        # own naming (it would use ar_<svc> on a PostgreSQL server).
        env[spec.name] = {
            f"{spec.env_prefix}DATABASE__URL": databases[spec.name],
            **(service_env or {}).get(spec.name, {}),
        }
    config = StackConfig(
        root=REPO_ROOT,
        var=var,
        broker_port=ports[0],
        smtp_port=ports[1],
        ports={s.name: p for s, p in zip(SERVICES, ports[2:], strict=True)},
        database_url=None,
        kafka_bootstrap=os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or None,
        clock_speed=1.0,
        ready_timeout=90.0,
        stop_timeout=10.0,
        service_env=env,
    )
    try:
        running = asyncio.run(start_stack(config))
    except BaseException:
        if postgres is not None:
            asyncio.run(drop_pg_databases(postgres, databases.values()))
        raise
    return E2EStack(running, var, databases, postgres is not None)


# ------------------------------------------------------------------------------------------ waiting


async def eventually(
    check: Callable[[], Awaitable[T | None]], *, timeout: float = 20.0, every: float = 0.2, what: str = ""
) -> T:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what or check}")
        await asyncio.sleep(every)


# ------------------------------------------------------------------------------------------ mail


@dataclass(frozen=True)
class Mail:
    path: Path
    message: EmailMessage

    def header(self, name: str) -> str:
        return str(self.message.get(name, ""))

    @property
    def to(self) -> str:
        return self.header("To")

    @property
    def recipient(self) -> str:
        return self.header("X-Envelope-To").strip("<>").lower()

    @property
    def subject(self) -> str:
        return self.header("Subject")

    @property
    def key(self) -> str:
        return self.header("X-AR-Notification-Key")

    @property
    def message_id(self) -> str:
        return self.header("Message-ID")

    @property
    def client_id(self) -> str:
        return self.header("X-AR-Client-Id")

    def text(self) -> str:
        part = self.message.get_body(preferencelist=("plain",))
        return str(part.get_content()) if part is not None else ""

    def html(self) -> str:
        part = self.message.get_body(preferencelist=("html",))
        return str(part.get_content()) if part is not None else ""


_PARSED: dict[Path, Mail] = {}  # the catcher writes each file once (atomically): parse it once


def read_mail(directory: Path) -> list[Mail]:
    """Every stored message, oldest first."""
    out = []
    for path in mail_files(directory):
        mail = _PARSED.get(path)
        if mail is None:
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            assert isinstance(msg, EmailMessage)
            mail = _PARSED[path] = Mail(path, msg)
        out.append(mail)
    return out


def mail_for(directory: Path, recipients: Iterable[str]) -> list[Mail]:
    wanted = {r.lower() for r in recipients}
    return [m for m in read_mail(directory) if m.recipient in wanted]


def is_dunning_key(key: str) -> bool:
    """Reminders and warnings carry ``<case>:<cycle>:<step>``; invoice notices ``invoice:...``, receipts
    ``payment:...``, task mails ``task...``."""
    return key.startswith("case_")


# ------------------------------------------------------------------------------------------ topics


class TopicReader:
    """Reads topics from the beginning (no group) and keeps every decoded envelope."""

    def __init__(self, kafka: KafkaSettings, *topics: Topic) -> None:
        self.kafka = kafka
        self.topics = [kafka.topic(t) for t in topics]
        self.consumer = make_consumer(kafka, None, auto_offset_reset="earliest")
        self.events: list[Any] = []

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        self.consumer.subscribe(self.topics)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self) -> None:
        batch = await self.consumer.getmany(timeout_ms=100)
        for records in batch.values():
            for r in records:
                with contextlib.suppress(Exception):
                    self.events.append(decode(r.value))

    def of(self, client_id: str, *types: str) -> list[Any]:
        """Envelopes of one client, optionally of some types: ``ar.dunning.resolved.v1``, or a suffix of it
        (``dunning.resolved``, ``reminder_requested``)."""
        out = []
        for e in self.events:
            if e.subject != client_id:
                continue
            if types and not any(e.type == t or e.type.endswith(f".{t}.v1") for t in types):
                continue
            out.append(e)
        return out

    def short_types(self, client_id: str, topic_kind: str = "dunning") -> list[str]:
        return [
            e.type.split(".")[-2]
            for e in self.events
            if e.subject == client_id and e.type.startswith(f"ar.{topic_kind}.")
        ]

    async def until(self, predicate: Callable[[], bool], timeout: float = 20.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while True:
            await self.poll()
            if predicate():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g}s waiting for {what or 'topic events'}")


# ------------------------------------------------------------------------------------------ REST


class Api:
    """The public REST interfaces of the four services with the dev key, and Stripe-signed webhooks."""

    def __init__(self, stack: E2EStack, http: httpx.AsyncClient, retry_s: float = 90.0) -> None:
        self.stack = stack
        self.retry_s = retry_s
        self.urls = stack.urls()
        self.http = http
        self.auth = {"Authorization": f"Bearer {stack.api_key}"}

    async def call(
        self,
        method: str,
        service: str,
        path: str,
        body: Any = None,
        *,
        ok: Iterable[int] = (),
        **headers: str,
    ) -> httpx.Response:
        """One request; while a service is down or starting (connection refused, 502-504) it is retried for
        up to ``retry_s`` seconds: the chaos test kills services under the driver's feet. Only calls that are
        safe to repeat go through here (GETs, POSTs with an Idempotency-Key or naturally idempotent)."""
        deadline = time.monotonic() + self.retry_s
        while True:
            try:
                response = await self.http.request(
                    method, self.urls[service] + path, json=body, headers={**self.auth, **headers}
                )
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.3)
                continue
            if response.status_code in (502, 503, 504) and time.monotonic() < deadline:
                await asyncio.sleep(0.3)
                continue
            break
        if response.status_code >= 400 and response.status_code not in set(ok):
            raise AssertionError(f"{method} {service}{path} -> {response.status_code}: {response.text[:500]}")
        return response

    async def json(self, method: str, service: str, path: str, body: Any = None, **headers: str) -> Any:
        return (await self.call(method, service, path, body, ok=(), **headers)).json()

    # invoice-svc -------------------------------------------------------------------------------------

    async def create_client(
        self, tag: str, *, segment: str = "high_risk", time_zone: str = "UTC", country: str = "GB"
    ) -> dict[str, Any]:
        body = {
            "external_id": f"e2e-{tag}",
            "name": f"Client {tag}",
            "segment": segment,
            "tags": ["e2e"],
            "account_manager": {"name": "Alice Manager", "email": f"am-{tag}@seller.example.com"},
            "contacts": [{"name": f"Accounts {tag}", "email": f"billing-{tag}@client.example.com",
                          "role": "billing"}],
            "language": "en",
            "time_zone": time_zone,
            "country": country,
            "payment_terms_days": 30,
        }  # fmt: skip
        out: dict[str, Any] = await self.json(
            "POST", "invoice", "/v1/clients", body, **{"Idempotency-Key": tag}
        )
        return out

    async def issue_invoice(
        self, client_id: str, number: str, due: date, amount_minor: int, currency: str = "EUR",
        issue: date | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        body = {
            "client_id": client_id,
            "number": number,
            "currency": currency,
            "issue_date": (issue or due - timedelta(days=30)).isoformat(),
            "due_date": due.isoformat(),
            "lines": [{"description": f"Services {number}", "quantity": 1,
                       "unit_price": {"amount_minor": amount_minor, "currency": currency}, "tax_rate_bp": 0}],
        }  # fmt: skip
        out: dict[str, Any] = await self.json(
            "POST", "invoice", "/v1/invoices", body, **{"Idempotency-Key": number}
        )
        return out

    async def statement(self, client_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.json("GET", "invoice", f"/v1/clients/{client_id}/statement")
        return out

    async def invoice(self, invoice_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.json("GET", "invoice", f"/v1/invoices/{invoice_id}")
        return out

    async def open_dispute(self, invoice_id: str) -> dict[str, Any]:
        body = {"reason": "billing_error", "note": "e2e: quantity disputed"}
        out: dict[str, Any] = await self.json(
            "POST", "invoice", f"/v1/invoices/{invoice_id}/disputes", body,
            **{"Idempotency-Key": f"dispute-{invoice_id}"},
        )  # fmt: skip
        return out

    async def reject_dispute(self, dispute_id: str) -> dict[str, Any]:
        out: dict[str, Any] = await self.json(
            "POST", "invoice", f"/v1/disputes/{dispute_id}/resolve", {"outcome": "rejected"}
        )
        return out

    # payment-svc -------------------------------------------------------------------------------------

    async def pay_stripe(
        self, client_id: str, amount_minor: int, currency: str, invoice_ids: Iterable[str] = (),
        event_id: str | None = None, correlation_id: str | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        """A Stripe ``payment_intent.succeeded`` webhook, signed with the stack's ``stripe`` secret."""
        event = {
            "id": event_id or "evt_" + uuid.uuid4().hex[:24],
            "object": "event",
            "type": "payment_intent.succeeded",
            "created": int(time.time()),
            "data": {"object": {
                "id": "pi_" + uuid.uuid4().hex[:24],
                "object": "payment_intent",
                "amount": amount_minor,
                "amount_received": amount_minor,
                "currency": currency.lower(),
                "payment_method_types": ["card"],
                "metadata": {"client_id": client_id, "invoice_ids": ",".join(invoice_ids)},
            }},
        }  # fmt: skip
        raw = json.dumps(event).encode()
        secret = self.stack.stripe_secret.encode()
        deadline = time.monotonic() + self.retry_s
        while True:  # as Stripe does: the same event again until it is acknowledged
            ts = int(time.time())
            sig = hmac.new(secret, f"{ts}.".encode() + raw, hashlib.sha256).hexdigest()
            try:
                response = await self.http.post(
                    self.urls["payment"] + "/v1/webhooks/stripe",
                    content=raw,
                    headers={
                        "Stripe-Signature": f"t={ts},v1={sig}",
                        "Content-Type": "application/json",
                        **({"X-Correlation-Id": correlation_id} if correlation_id else {}),
                    },
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code < 500:
                break
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"stripe webhook not accepted: {response.text if response else 'no answer'}"
                )
            await asyncio.sleep(0.3)
        assert response.status_code < 300, f"stripe webhook -> {response.status_code}: {response.text[:300]}"
        out: dict[str, Any] = response.json()
        return out

    # dunning-svc -------------------------------------------------------------------------------------

    async def sim_now(self) -> datetime:
        out = await self.json("GET", "dunning", "/v1/admin/clock")
        return datetime.fromisoformat(out["now"])

    async def advance_to(self, target: datetime) -> datetime:
        """Move the shared simulated clock forward to ``target`` (never twice: a request whose answer was
        lost is not repeated blindly, the clock is read again first)."""
        deadline = time.monotonic() + self.retry_s
        while True:
            now = await self.sim_now()
            if now >= target:
                return now
            seconds = max(1, math.ceil((target - now).total_seconds()))
            try:
                response = await self.http.post(
                    self.urls["dunning"] + "/v1/admin/clock/advance",
                    json={"seconds": seconds},
                    headers=self.auth,
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code == 200:
                return datetime.fromisoformat(response.json()["now"])
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"could not move the clock: {response.text if response else 'no answer'}"
                )
            await asyncio.sleep(0.3)

    async def advance(self, delta: timedelta) -> datetime:
        return await self.advance_to(await self.sim_now() + delta)

    async def cases(self, client_ids: Iterable[str]) -> list[dict[str, Any] | None]:
        """The case views of several clients (a few requests at a time)."""
        gate = asyncio.Semaphore(8)

        async def one(client_id: str) -> dict[str, Any] | None:
            async with gate:
                return await self.case(client_id)

        return list(await asyncio.gather(*(one(c) for c in client_ids)))

    async def case(self, client_id: str) -> dict[str, Any] | None:
        response = await self.call("GET", "dunning", f"/v1/cases/{client_id}", ok=(404,))
        if response.status_code == 404:
            return None
        out: dict[str, Any] = response.json()
        return out

    async def tasks(self, status: str | None = None) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {
                "limit": "200",
                **({"status": status} if status else {}),
                **({"cursor": cursor} if cursor else {}),
            }
            response = await self.http.get(
                self.urls["dunning"] + "/v1/tasks", params=params, headers=self.auth
            )
            assert response.status_code == 200, response.text
            page = response.json()
            items.extend(page["items"])
            cursor = page.get("next_cursor")
            if not cursor:
                return items

    async def complete_task_with_promise(
        self, task_id: str, promised: date, amount_minor: int, currency: str
    ) -> dict[str, Any]:
        body = {
            "outcome": "promise_to_pay",
            "note": "e2e: promised on the phone",
            "promise_to_pay": {"date": promised.isoformat(),
                               "amount": {"amount_minor": amount_minor, "currency": currency}},
        }  # fmt: skip
        out: dict[str, Any] = await self.json(
            "POST",
            "dunning",
            f"/v1/tasks/{task_id}/complete",
            body,
            **{"Idempotency-Key": f"complete-{task_id}"},
        )
        return out

    # notify-svc --------------------------------------------------------------------------------------

    async def notifications(self, client_id: str) -> list[dict[str, Any]]:
        out = await self.json("GET", "notify", f"/v1/clients/{client_id}/notifications?limit=200")
        items: list[dict[str, Any]] = out["items"]
        return items


def as_dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


async def advance_to_next_action(
    api: Api, client_ids: Iterable[str], *, slack_s: int = 60
) -> datetime | None:
    """Move the simulated clock just past the earliest pending timer of these clients' cases; return the
    new simulated time (None when no case has a timer)."""
    cases = await api.cases(client_ids)
    times = [t for t in (as_dt(c["next_action_at"]) for c in cases if c) if t is not None]
    if not times:
        return None
    return await api.advance_to(min(times) + timedelta(seconds=slack_s))


async def quiet(seconds: float) -> None:
    """A short, bounded wait for something NOT to happen (negative checks only)."""
    await asyncio.sleep(seconds)
