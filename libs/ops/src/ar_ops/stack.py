"""The dev stack: embedded broker, SMTP catcher and the four services as processes.

``start_stack(config)`` starts everything and returns a :class:`RunningStack` (handles, URLs, credentials);
``arctl stack up`` calls it and leaves the processes running in the background, the demo keeps the handles
and stops them itself. ``stop_stack(config)`` stops whatever the pid files under ``var/run/`` name.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy.engine import make_url

from ar_events.broker import kafka_answers
from ar_events.clock import SharedSimulatedClock, SystemClock
from ar_events.kafka import ensure_topics
from ar_events.settings import KafkaSettings

ALL_SCOPES = (
    "invoices:write",
    "reports:read",
    "payments:write",
    "payments:admin",
    "collections:write",
    "ops",
)
PROCESSOR_ACCOUNTS = {"stripe": "stripe", "standard": "standard"}  # account name -> kind


class StackError(RuntimeError):
    """The stack could not start (the message says what failed and which log to read)."""


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str  # "invoice"
    module: str  # "invoice_svc"
    env_prefix: str  # "INVOICE_"
    default_port: int
    database_name: str | None = None  # on PostgreSQL; default ar_<name>

    @property
    def dist(self) -> str:
        return f"{self.name}-svc"

    @property
    def database(self) -> str:
        return self.database_name or f"ar_{self.name}"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("invoice", "invoice_svc", "INVOICE_", 8001),
    ServiceSpec("payment", "payment_svc", "PAYMENT_", 8002),
    ServiceSpec("dunning", "dunning_svc", "DUNNING_", 8003),
    ServiceSpec("notify", "notify_svc", "NOTIFY_", 8004),
)
SERVICE_BY_NAME = {s.name: s for s in SERVICES}


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = env.get(name)
    return int(value) if value else default


@dataclass
class StackConfig:
    """Where the stack lives and which ports it uses (each overridable by environment)."""

    root: Path
    var: Path
    broker_port: int = 19092
    smtp_port: int = 1025
    ports: dict[str, int] = field(default_factory=lambda: {s.name: s.default_port for s in SERVICES})
    database_url: str | None = None  # PostgreSQL server (DATABASE_URL); None = SQLite files under var/
    kafka_bootstrap: str | None = None  # external Kafka (KAFKA_BOOTSTRAP_SERVERS); None = embedded broker
    clock_speed: float = 1.0  # simulated seconds per real second for dunning-svc
    ready_timeout: float = 180.0
    stop_timeout: float = 15.0
    python: str = sys.executable
    service_env: dict[str, dict[str, str]] = field(default_factory=dict)  # extra env per service (demo)
    services: tuple[ServiceSpec, ...] = SERVICES

    @classmethod
    def from_env(cls, root: Path | None = None, env: Mapping[str, str] | None = None) -> StackConfig:
        env = os.environ if env is None else env
        base = (root or Path.cwd()).resolve()
        var = Path(env.get("AR_VAR_DIR", str(base / "var"))).resolve()
        return cls(
            root=base,
            var=var,
            broker_port=_env_int(env, "BROKER_PORT", 19092),
            smtp_port=_env_int(env, "SMTP_PORT", 1025),
            ports={s.name: _env_int(env, f"{s.env_prefix}HTTP__PORT", s.default_port) for s in SERVICES},
            database_url=env.get("DATABASE_URL") or None,
            kafka_bootstrap=env.get("KAFKA_BOOTSTRAP_SERVERS") or None,
            clock_speed=float(env.get("AR_CLOCK_SPEED", "1")),
            ready_timeout=float(env.get("AR_READY_TIMEOUT", "180")),
        )

    # paths
    @property
    def log_dir(self) -> Path:
        return self.var / "log"

    @property
    def run_dir(self) -> Path:
        return self.var / "run"

    @property
    def mail_dir(self) -> Path:
        return self.var / "mail"

    @property
    def credentials_file(self) -> Path:
        return self.var / "dev-credentials.json"

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def pid_file(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_bootstrap or f"127.0.0.1:{self.broker_port}"

    def base_url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service]}"

    def database_for(self, spec: ServiceSpec) -> str:
        """SQLAlchemy URL of a service's database: ``var/<svc>.db`` or ``ar_<svc>`` on the PostgreSQL server."""
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{self.var / f'{spec.dist}.db'}"
        url = make_url(self.database_url)
        return url.set(drivername="postgresql+asyncpg", database=spec.database).render_as_string(
            hide_password=False
        )

    def component_names(self) -> list[str]:
        names = [] if self.kafka_bootstrap else ["broker"]
        return [*names, "smtp", *(s.name for s in self.services)]


# ------------------------------------------------------------------------------------------ credentials


@dataclass(frozen=True, slots=True)
class DevCredentials:
    api_key: str
    webhook_secrets: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"api_key": self.api_key, "webhook_secrets": dict(self.webhook_secrets)}


def _new_webhook_secret() -> str:
    # whsec_ + base64 of 24 random bytes: valid for the Stripe scheme and the Standard Webhooks scheme.
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def load_or_create_credentials(path: Path) -> DevCredentials:
    """Reuse the credentials of an earlier run (the SQLite files keep the key), else make new ones."""
    if path.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(path.read_text())
            found = DevCredentials(
                str(data["api_key"]), {k: str(v) for k, v in data["webhook_secrets"].items()}
            )
            if found.api_key.startswith("ar_") and set(PROCESSOR_ACCOUNTS) <= set(found.webhook_secrets):
                return found
    return DevCredentials(
        api_key="ar_" + secrets.token_urlsafe(32),
        webhook_secrets={name: _new_webhook_secret() for name in PROCESSOR_ACCOUNTS},
    )


def write_credentials(path: Path, creds: DevCredentials) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(creds.to_json(), indent=2) + "\n")
    tmp.chmod(0o600)
    os.replace(tmp, path)


# ------------------------------------------------------------------------------------------ processes


@dataclass
class Component:
    """One process of the stack."""

    name: str
    pid: int
    log: Path
    process: subprocess.Popen[bytes] | None = None  # present when this process started it
    url: str | None = None
    command: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        return pid_alive(self.pid)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child of ours is not alive.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _start_ticks(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def write_pid_file(path: Path, component: Component, command: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "pid": component.pid,
        "start": _start_ticks(component.pid),
        "command": command,
        "url": component.url,
    }
    path.write_text(json.dumps(record) + "\n")


def read_pid_file(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("pid"), int) else None


def _same_process(record: Mapping[str, Any]) -> bool:
    """The pid still names the process we started (not a recycled pid)."""
    pid = int(record["pid"])
    if not pid_alive(pid):
        return False
    started = record.get("start")
    return started is None or _start_ticks(pid) == started


def spawn(name: str, command: list[str], env: Mapping[str, str], log: Path, cwd: Path) -> Component:
    """Start a process in its own session (it survives the CLI), stdout and stderr appended to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} starting: {' '.join(command)}\n".encode())
        out.flush()
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    return Component(
        name=name, pid=process.pid, log=log, process=process, command=list(command), env=dict(env)
    )


def terminate(pid: int, timeout: float, process: subprocess.Popen[bytes] | None = None) -> str:
    """SIGTERM, wait up to ``timeout``, then SIGKILL the whole process group. Returns what happened."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None:
            if process.poll() is not None:
                return "stopped"
        elif not pid_alive(pid):
            return "stopped"
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)
    return "killed"


def tail_text(path: Path, lines: int = 25) -> str:
    try:
        data = path.read_bytes()[-20_000:]
    except OSError:
        return ""
    return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-lines:])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def tcp_answers(port: int, host: str = "127.0.0.1", timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------ the stack


@dataclass
class RunningStack:
    """Handles of a started stack: stop it with :meth:`stop` (the demo) or leave it running (``stack up``)."""

    config: StackConfig
    components: dict[str, Component]
    credentials: DevCredentials

    def urls(self) -> dict[str, str]:
        return {s.name: self.config.base_url(s.name) for s in self.config.services}

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to one component (fault injection: ``kill -9`` by default) and reap it."""
        component = self.components[name]
        with contextlib.suppress(ProcessLookupError):
            os.kill(component.pid, sig)
        if component.process is not None and sig in (signal.SIGKILL, signal.SIGTERM):
            with contextlib.suppress(subprocess.TimeoutExpired):
                component.process.wait(self.config.stop_timeout)

    async def restart(self, name: str, *, wait_ready: bool = True) -> Component:
        """Start a component again with the same command and environment (after a crash or a kill)."""
        old = self.components[name]
        if old.alive():
            raise StackError(f"{name} is still running (pid {old.pid}); kill or stop it first")
        component = spawn(name, old.command, old.env, old.log, self.config.root)
        component.url = old.url
        self.components[name] = component
        write_pid_file(self.config.pid_file(name), component, old.command)
        if wait_ready and component.url:
            await self.wait_ready(name)
        return component

    async def start_replica(self, service: str, port: int, *, name: str | None = None) -> Component:
        """One more process of ``service`` on ``port`` (same database and group), e.g. a second dunning-svc."""
        spec = next(s for s in self.config.services if s.name == service)
        replica = name or f"{service}-{port}"
        env = _service_env(self.config, spec, self.credentials)
        env[f"{spec.env_prefix}HTTP__PORT"] = str(port)
        command = [self.config.python, "-m", spec.module, "all"]
        component = spawn(replica, command, env, self.config.log_file(replica), self.config.root)
        component.url = f"http://127.0.0.1:{port}"
        self.components[replica] = component
        write_pid_file(self.config.pid_file(replica), component, command)
        await self.wait_ready(replica)
        return component

    async def wait_ready(self, name: str) -> None:
        """Return once the component answers ``/readyz`` (StackError naming its log otherwise)."""
        component = self.components[name]
        url = component.url
        if url is None:
            raise ValueError(f"{name} has no HTTP address")
        async with httpx.AsyncClient() as client:
            await _wait_until(
                lambda: _ready(client, url), component, self.config.ready_timeout, "answer /readyz"
            )

    def stop(self) -> dict[str, str]:
        """Stop every component, services first; remove the pid files."""
        results: dict[str, str] = {}
        for name in reversed(list(self.components)):
            component = self.components[name]
            results[name] = terminate(component.pid, self.config.stop_timeout, component.process)
            self.config.pid_file(name).unlink(missing_ok=True)
        return results


def _service_env(config: StackConfig, spec: ServiceSpec, creds: DevCredentials) -> dict[str, str]:
    p = spec.env_prefix
    env = dict(os.environ)  # the caller's own INVOICE_... settings pass through; ours below win
    env.update(
        {
            f"{p}DATABASE__URL": config.database_for(spec),
            f"{p}KAFKA__BOOTSTRAP_SERVERS": config.bootstrap_servers,
            f"{p}HTTP__PORT": str(config.ports[spec.name]),
            "PYTHONUNBUFFERED": "1",
        }
    )
    if spec.name == "dunning":
        env[f"{p}CLOCK__MODE"] = "simulated"
        env[f"{p}CLOCK__SPEED"] = repr(config.clock_speed)
        env[f"{p}CLOCK__STATE_FILE"] = str(config.var / "clock.json")
    elif spec.name == "notify":
        env[f"{p}SMTP__HOST"] = "127.0.0.1"
        env[f"{p}SMTP__PORT"] = str(config.smtp_port)
        env[f"{p}HTTP__PUBLIC_URL"] = config.base_url("notify")
    env.update(config.service_env.get(spec.name, {}))
    return env


def running_components(config: StackConfig) -> dict[str, dict[str, Any]]:
    """Components whose pid file names a live process started by the stack."""
    out = {}
    for name in config.component_names():
        record = read_pid_file(config.pid_file(name))
        if record is not None and _same_process(record):
            out[name] = record
    return out


async def _run_step(
    config: StackConfig, spec: ServiceSpec, args: list[str], env: Mapping[str, str], what: str
) -> str:
    log = config.log_file(spec.name)
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [config.python, "-m", spec.module, *args]
    with log.open("ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {what}: {spec.module} {args[0]}\n".encode())
        out.flush()
        proc = await asyncio.create_subprocess_exec(
            *command,
            stdout=asyncio.subprocess.PIPE,
            stderr=out,
            stdin=asyncio.subprocess.DEVNULL,
            env=dict(env),
            cwd=config.root,
        )
        try:
            stdout, _ = await asyncio.wait_for(proc.communicate(), timeout=config.ready_timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            raise StackError(f"{spec.dist}: `{what}` timed out; see {log}") from None
        except asyncio.CancelledError:
            # Another service failed: do not leave this step running behind us.
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise
        text = stdout.decode(errors="replace")
        secret = str(args[-1])
        out.write(text.replace(secret, "***").encode() if what in ("api key", "webhook secret") else stdout)
    if proc.returncode != 0:
        raise StackError(
            f"{spec.dist}: `python -m {spec.module} {args[0]}` ({what}) failed (exit {proc.returncode}); see {log}\n"
            + tail_text(log, 15)
        )
    return text


async def create_databases(config: StackConfig) -> list[str]:
    """Create each service's database on the PostgreSQL server of ``DATABASE_URL`` if missing; return those made."""
    import asyncpg  # type: ignore[import-untyped]

    assert config.database_url is not None
    admin = make_url(config.database_url).set(drivername="postgresql", database="postgres")
    conn = await asyncpg.connect(admin.render_as_string(hide_password=False), timeout=10)
    try:
        existing = {r["datname"] for r in await conn.fetch("SELECT datname FROM pg_database")}
        made = []
        for spec in config.services:
            if spec.database not in existing:
                await conn.execute(f'CREATE DATABASE "{spec.database}"')
                made.append(spec.database)
    finally:
        await conn.close()
    return made


async def _wait_until(check: Any, component: Component, limit_s: float, what: str) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if not component.alive():
            raise StackError(
                f"{component.name} exited during start-up; see {component.log}\n{tail_text(component.log)}"
            )
        if await check():
            return
        await asyncio.sleep(0.25)
    raise StackError(
        f"{component.name} did not {what} within {limit_s:g}s; see {component.log}\n{tail_text(component.log)}"
    )


async def _ready(client: httpx.AsyncClient, url: str) -> bool:
    try:
        response = await client.get(f"{url}/readyz", timeout=2.0)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


async def start_stack(config: StackConfig, *, progress: Any = None) -> RunningStack:
    """Start broker, SMTP catcher and the four services; return once every service answers ``/readyz``.

    On any failure, whatever was started is stopped again and :class:`StackError` names the log to read.
    ``progress(message)`` is called at each step (the CLI prints it).
    """
    say = progress or (lambda message: None)
    already = running_components(config)
    if already:
        raise StackError(f"the stack is already running ({', '.join(already)}); `arctl stack down` first")
    wanted = {"broker": config.broker_port} if not config.kafka_bootstrap else {}
    wanted |= {"SMTP catcher": config.smtp_port} | {
        f"{s.dist}": config.ports[s.name] for s in config.services
    }
    busy = [f"{name} port {port}" for name, port in wanted.items() if not port_free(port)]
    if busy:
        raise StackError(
            "ports in use: "
            + ", ".join(busy)
            + " (override with BROKER_PORT, SMTP_PORT, INVOICE_HTTP__PORT, ...)"
        )
    for d in (config.var, config.log_dir, config.run_dir, config.mail_dir):
        d.mkdir(parents=True, exist_ok=True)
    creds = load_or_create_credentials(config.credentials_file)
    stack = RunningStack(config, {}, creds)
    base_env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        if not config.kafka_bootstrap:
            say(f"starting the embedded broker on {config.bootstrap_servers}")
            command = [config.python, "-m", "ar_events.broker", "--port", str(config.broker_port)]
            broker = spawn("broker", command, base_env, config.log_file("broker"), config.root)
            stack.components["broker"] = broker
            write_pid_file(config.pid_file("broker"), broker, command)
            await _wait_until(
                lambda: asyncio.to_thread(kafka_answers, "127.0.0.1", config.broker_port, 0.5),
                broker,
                30,
                "answer the Kafka protocol",
            )
        await ensure_topics(KafkaSettings(bootstrap_servers=config.bootstrap_servers))

        say(f"starting the SMTP catcher on 127.0.0.1:{config.smtp_port} (mail in {config.mail_dir})")
        command = [
            config.python,
            "-m",
            "ar_ops.mail",
            "--port",
            str(config.smtp_port),
            "--dir",
            str(config.mail_dir),
        ]
        smtp = spawn("smtp", command, base_env, config.log_file("smtp"), config.root)
        stack.components["smtp"] = smtp
        write_pid_file(config.pid_file("smtp"), smtp, command)
        await _wait_until(
            lambda: asyncio.to_thread(tcp_answers, config.smtp_port), smtp, 15, "accept SMTP connections"
        )

        if config.database_url:
            say("creating the PostgreSQL databases " + ", ".join(s.database for s in config.services))
            made = await create_databases(config)
            if made:
                say("created " + ", ".join(made))

        async def prepare(spec: ServiceSpec) -> None:
            env = _service_env(config, spec, creds)
            await _run_step(config, spec, ["migrate"], env, "migrate")
            scopes = ",".join(ALL_SCOPES)
            await _run_step(
                config,
                spec,
                ["api-key", "create", "--name", "dev", "--scopes", scopes, "--key", creds.api_key],
                env,
                "api key",
            )
            if spec.name == "payment":
                # One webhook signing secret per processor account, through payment-svc's own CLI
                # (idempotent: re-adding the same secret is a no-op).
                await asyncio.gather(
                    *(
                        _run_step(
                            config,
                            spec,
                            [
                                "account",
                                "add",
                                account,
                                "--kind",
                                kind,
                                "--secret",
                                creds.webhook_secrets[account],
                            ],
                            env,
                            "webhook secret",
                        )
                        for account, kind in PROCESSOR_ACCOUNTS.items()
                    )
                )

        def start(spec: ServiceSpec) -> None:
            command = [config.python, "-m", spec.module, "all"]
            component = spawn(
                spec.name, command, _service_env(config, spec, creds), config.log_file(spec.name), config.root
            )
            component.url = config.base_url(spec.name)
            stack.components[spec.name] = component
            write_pid_file(config.pid_file(spec.name), component, command)

        async def prepare_and_start(spec: ServiceSpec) -> None:
            await prepare(spec)
            start(spec)  # at once: no need to wait for the other services' preparation

        # A fresh simulated clock for every stack start; processes restarted inside this stack resume it.
        SharedSimulatedClock.create(
            config.var / "clock.json", start=SystemClock().now(), speed=config.clock_speed, replace=True
        )
        say("migrating the databases, provisioning the dev API key and the webhook secrets, starting")
        try:
            async with asyncio.TaskGroup() as group:
                for spec in config.services:
                    group.create_task(prepare_and_start(spec))
        except* StackError as failures:
            raise failures.exceptions[0] from None
        say("waiting for every service to answer /readyz")
        async with httpx.AsyncClient() as client:
            await asyncio.gather(
                *(
                    _wait_until(
                        lambda url=component.url: _ready(client, url),
                        component,
                        config.ready_timeout,
                        "answer /readyz",
                    )
                    for name, component in stack.components.items()
                    if name in config.ports
                )
            )
        write_credentials(config.credentials_file, creds)
    except BaseException:
        await asyncio.to_thread(stack.stop)
        raise
    return stack


def stop_stack(config: StackConfig) -> dict[str, str]:
    """Stop the background stack named by the pid files (services first, then SMTP and broker)."""
    results: dict[str, str] = {}
    known = config.component_names()
    extra = sorted(p.stem for p in config.run_dir.glob("*.pid") if p.stem not in known)  # replicas
    for name in [*extra, *reversed(known)]:
        path = config.pid_file(name)
        record = read_pid_file(path)
        if record is None:
            continue
        if _same_process(record):
            results[name] = terminate(int(record["pid"]), config.stop_timeout)
        else:
            results[name] = "not running (stale pid file)"
        path.unlink(missing_ok=True)
    return results


@dataclass(frozen=True, slots=True)
class ComponentStatus:
    name: str
    pid: int | None
    running: bool
    address: str
    health: str
    log: Path


async def stack_status(config: StackConfig) -> list[ComponentStatus]:
    """Per component: pid, whether it runs, its address and what its health endpoint says."""
    out = []
    async with httpx.AsyncClient() as client:
        for name in config.component_names():
            record = read_pid_file(config.pid_file(name))
            running = record is not None and _same_process(record)
            pid = int(record["pid"]) if record else None
            if name == "broker":
                address = config.bootstrap_servers
                ok = await asyncio.to_thread(kafka_answers, "127.0.0.1", config.broker_port, 0.5)
                health = "kafka ok" if ok else "no answer"
            elif name == "smtp":
                address = f"127.0.0.1:{config.smtp_port}"
                health = "smtp ok" if await asyncio.to_thread(tcp_answers, config.smtp_port) else "no answer"
            else:
                address = config.base_url(name)
                health = await _readyz_summary(client, address)
            out.append(ComponentStatus(name, pid, running, address, health, config.log_file(name)))
    return out


async def _readyz_summary(client: httpx.AsyncClient, url: str) -> str:
    try:
        response = await client.get(f"{url}/readyz", timeout=2.0)
    except httpx.HTTPError:
        return "no answer"
    if response.status_code == 200:
        return "ready"
    try:
        failed = response.json().get("failed")
    except ValueError:
        failed = None
    return f"not ready ({', '.join(failed)})" if failed else f"HTTP {response.status_code}"
