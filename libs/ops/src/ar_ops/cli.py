"""``arctl``: the ops CLI (dev stack, topics, tail, lag, dead letters, outbox, case commands, clock, mail)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.json import JSON
from rich.table import Table

from ar_events.events import EscalateNow, PauseDunning, ResumeDunning
from ar_events.settings import KafkaSettings
from ar_ops import kafka_tools as kt
from ar_ops import mail as mailbox
from ar_ops import stack as devstack

app = typer.Typer(
    name="arctl",
    help="Ops CLI for the dunning platform: dev stack, Kafka topics, lag, dead letters, case commands, mail.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
stack_app = typer.Typer(help="The dev stack in the background (broker, SMTP catcher, four services).")
dlq_app = typer.Typer(help="Dead-letter topics: list and replay.")
outbox_app = typer.Typer(help="Transactional outbox: re-publish a time range.")
case_app = typer.Typer(help="Dunning case commands, produced to ar.dunning.commands.")
clock_app = typer.Typer(help="The simulated clock of dunning-svc (dev stack only).")
mail_app = typer.Typer(help="Mail captured by the dev SMTP catcher (var/mail).")
for sub, name in (
    (stack_app, "stack"),
    (dlq_app, "dlq"),
    (outbox_app, "outbox"),
    (case_app, "case"),
    (clock_app, "clock"),
    (mail_app, "mail"),
):
    app.add_typer(sub, name=name, no_args_is_help=True)

console = Console()
err = Console(stderr=True)


@dataclass
class Ctx:
    bootstrap: str
    prefix: str

    def kafka(self) -> KafkaSettings:
        return KafkaSettings(bootstrap_servers=self.bootstrap, topic_prefix=self.prefix, client_id="arctl")


def _default_bootstrap() -> str:
    return os.environ.get("KAFKA_BOOTSTRAP_SERVERS") or f"127.0.0.1:{os.environ.get('BROKER_PORT', '19092')}"


@app.callback()
def main(
    ctx: typer.Context,
    bootstrap: Annotated[
        str | None,
        typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers [env KAFKA_BOOTSTRAP_SERVERS]"),
    ] = None,
    prefix: Annotated[
        str, typer.Option("--prefix", envvar="KAFKA_TOPIC_PREFIX", help="Topic name prefix (test isolation)")
    ] = "",
) -> None:
    ctx.obj = Ctx(bootstrap=bootstrap or _default_bootstrap(), prefix=prefix)


def _ctx(ctx: typer.Context) -> Ctx:
    obj = ctx.find_root().obj
    assert isinstance(obj, Ctx)
    return obj


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {message}")
    return typer.Exit(code)


def _run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except (LookupError, ValueError) as exc:
        raise _fail(str(exc).strip("'\"")) from None
    except OSError as exc:
        raise _fail(f"{exc} (is the broker up? `arctl stack status`)") from None
    except Exception as exc:
        if type(exc).__module__.startswith("aiokafka"):
            raise _fail(f"Kafka: {exc} (is the broker up at the bootstrap address?)") from None
        raise


# ------------------------------------------------------------------------------------------ stack


def _config() -> devstack.StackConfig:
    return devstack.StackConfig.from_env()


@stack_app.command("up")
def stack_up(
    clock_speed: Annotated[
        float | None,
        typer.Option(help="Simulated seconds per real second for dunning-svc [env AR_CLOCK_SPEED]"),
    ] = None,
) -> None:
    """Start the stack in the background; returns once every service answers /readyz."""
    config = _config()
    if clock_speed is not None:
        config.clock_speed = clock_speed
    try:
        running = asyncio.run(
            devstack.start_stack(config, progress=lambda m: console.print(f"[dim]-[/dim] {m}"))
        )
    except devstack.StackError as exc:
        raise _fail(str(exc)) from None
    _print_started(running)


def _print_started(running: devstack.RunningStack) -> None:
    config = running.config
    table = Table(title="dev stack is up", show_lines=False)
    for column in ("component", "pid", "address", "docs"):
        table.add_column(column)
    for name in config.component_names():
        component = running.components[name]
        if name == "broker":
            address, docs = config.bootstrap_servers, ""
        elif name == "smtp":
            address, docs = f"127.0.0.1:{config.smtp_port}", f"mail in {config.mail_dir} (`arctl mail list`)"
        else:
            address, docs = config.base_url(name), f"{config.base_url(name)}/docs"
        table.add_row(name, str(component.pid), address, docs)
    console.print(table)
    console.print(f"API key (every scope): [bold]{running.credentials.api_key}[/bold]")
    for account, secret in running.credentials.webhook_secrets.items():
        console.print(f"webhook secret {account}: [bold]{secret}[/bold]")
    console.print(
        f"written to {config.credentials_file}; logs in {config.log_dir}; stop with `arctl stack down`"
    )


@stack_app.command("down")
def stack_down() -> None:
    """Stop the background stack (SIGTERM, then SIGKILL after a timeout)."""
    results = devstack.stop_stack(_config())
    if not results:
        console.print("nothing running")
        return
    for name, outcome in results.items():
        console.print(f"{name}: {outcome}")


@stack_app.command("logs")
def stack_logs(
    name: Annotated[str, typer.Argument(help="broker, smtp, invoice, payment, dunning or notify")],
    lines: Annotated[int, typer.Option("--lines", "-n", help="How many lines from the end")] = 40,
    grep: Annotated[
        str | None, typer.Option("--grep", help="Only lines containing this (e.g. a correlation id)")
    ] = None,
) -> None:
    """The end of a component's log (var/log/<name>.log)."""
    config = _config()
    path = config.log_file(name.removesuffix("-svc"))
    if not path.is_file():
        raise _fail(f"no log at {path}")
    text = path.read_text(errors="replace").splitlines()
    if grep:
        text = [line for line in text if grep in line]
    for line in text[-lines:] if lines > 0 else text:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


@stack_app.command("status")
def stack_status() -> None:
    """Each component: pid, address, health."""
    config = _config()
    statuses = asyncio.run(devstack.stack_status(config))
    table = Table(title=f"dev stack ({config.var})")
    for column in ("component", "pid", "running", "address", "health", "log"):
        table.add_column(column, overflow="fold")
    for s in statuses:
        table.add_row(
            s.name,
            str(s.pid or "-"),
            "[green]yes[/green]" if s.running else "[red]no[/red]",
            s.address,
            s.health,
            str(s.log),
        )
    console.print(table)
    if not any(s.running for s in statuses):
        raise typer.Exit(3)


# ------------------------------------------------------------------------------------------ topics


@app.command("topics")
def topics(
    ctx: typer.Context,
    all_topics: Annotated[bool, typer.Option("--all", help="Also topics outside the prefix")] = False,
) -> None:
    """Topics with their partition counts and record counts."""
    infos: list[kt.TopicInfo] = _run(kt.describe_topics(_ctx(ctx).kafka(), all_topics=all_topics))
    table = Table(title=f"topics on {_ctx(ctx).bootstrap}")
    table.add_column("topic", no_wrap=True)
    for column in ("partitions", "records", "end offsets"):
        table.add_column(column)
    for info in infos:
        ends = " ".join(f"{p}:{o}" for p, o in sorted(info.end_offsets.items()))
        table.add_row(info.name, str(info.partitions), str(info.records), ends)
    console.print(table)


@app.command("tail")
def tail(
    ctx: typer.Context,
    topic: Annotated[
        str,
        typer.Argument(
            help="Topic (ar.invoice.events) or alias: invoice, payment, dunning, commands, notify"
        ),
    ],
    client: Annotated[
        str | None, typer.Option("--client", help="Only this client id (the record key)")
    ] = None,
    event_type: Annotated[
        str | None, typer.Option("--type", help="Only this type: exact, glob (*paid*) or substring")
    ] = None,
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the oldest record")
    ] = False,
    exit_at_end: Annotated[
        bool, typer.Option("--exit", help="Stop at the current end instead of following")
    ] = False,
    raw: Annotated[bool, typer.Option("--raw", help="One compact JSON line per record (for jq)")] = False,
) -> None:
    """Print a topic's records as pretty JSON, following new ones until Ctrl-C."""

    async def go() -> None:
        async for record in kt.tail(
            _ctx(ctx).kafka(),
            topic,
            client_id=client,
            event_type=event_type,
            from_beginning=from_beginning,
            until_end=exit_at_end,
        ):
            if raw:
                print(json.dumps(record.to_json(), default=str), flush=True)
            else:
                console.rule(
                    f"{record.topic}[{record.partition}]@{record.offset} key={record.key}", style="dim"
                )
                console.print(JSON.from_data(record.to_json(), default=str))

    _run(go())


@app.command("lag")
def lag(
    ctx: typer.Context,
    group: Annotated[
        list[str] | None, typer.Option("--group", "-g", help="Consumer group (repeatable); default all")
    ] = None,
) -> None:
    """Consumer lag per group and partition: end offset minus committed offset."""
    rows: list[kt.PartitionLag] = _run(kt.consumer_lag(_ctx(ctx).kafka(), group or None))
    table = Table(title="consumer lag")
    for column in ("group", "topic", "partition", "committed", "end", "lag"):
        table.add_column(column, justify="left" if column in ("group", "topic") else "right", no_wrap=True)
    totals: dict[str, int] = {}
    for row in rows:
        totals[row.group] = totals.get(row.group, 0) + row.lag
        style = "red" if row.lag > 0 else ""
        table.add_row(
            row.group,
            row.topic,
            str(row.partition),
            str(row.committed),
            str(row.end),
            f"[{style}]{row.lag}[/{style}]" if style else "0",
        )
    console.print(table)
    for name, total in sorted(totals.items()):
        console.print(f"{name}: total lag {total}")
    if not rows:
        console.print("no committed offsets found" + (f" for {', '.join(group)}" if group else ""))
    kafka = _ctx(ctx).kafka()
    names = group or sorted(
        {*_run(kt.list_groups(kafka)), *(kafka.topic_prefix + g for g in kt.KNOWN_GROUPS)}
    )
    for info in _run(kt.describe_groups(kafka, names)):
        committed = "" if info.group in totals else ", no committed offsets yet"
        console.print(f"group {info.group}: {info.state}, {info.members} member(s){committed}")


# ------------------------------------------------------------------------------------------ DLQ


@dlq_app.command("list")
def dlq_list(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Source topic (or its .dlq), or an alias")],
    show_values: Annotated[bool, typer.Option("--values", help="Also print each record's value")] = False,
) -> None:
    """Dead letters of a topic with the error, the consumer and the source position."""
    letters: list[kt.Record] = _run(kt.dlq_list(_ctx(ctx).kafka(), topic))
    table = Table(title=f"dead letters of {kt.dlq_topic(_ctx(ctx).kafka(), topic)}")
    for column in ("partition", "offset", "key", "type", "consumer", "source", "attempts", "error"):
        table.add_column(column)
    for r in letters:
        h = r.headers
        source = f"{h.get('dlq.topic', '?')}[{h.get('dlq.partition', '?')}]@{h.get('dlq.offset', '?')}"
        table.add_row(
            str(r.partition),
            str(r.offset),
            r.key or "",
            r.event_type or "",
            h.get("dlq.consumer", ""),
            source,
            h.get("dlq.attempts", ""),
            h.get("dlq.error", ""),
        )
    console.print(table)
    if show_values:
        for r in letters:
            console.rule(f"{r.partition}@{r.offset}", style="dim")
            console.print(JSON.from_data(r.value, default=str))
    console.print(
        f"{len(letters)} dead letter(s); replay with `arctl dlq replay {topic} --offset N` or `--all`"
    )


@dlq_app.command("replay")
def dlq_replay(
    ctx: typer.Context,
    topic: Annotated[str, typer.Argument(help="Source topic (or its .dlq), or an alias")],
    offset: Annotated[
        int | None, typer.Option("--offset", help="The dead letter's offset in the DLQ")
    ] = None,
    partition: Annotated[
        int | None, typer.Option("--partition", help="DLQ partition, when the offset is ambiguous")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter")] = False,
) -> None:
    """Re-produce dead letters to their source topic (from the dlq.topic header), same key and value."""
    if (offset is None) == (not replay_all):
        raise _fail("give exactly one of --offset N or --all", 2)
    done: list[kt.Replayed] = _run(
        kt.dlq_replay(_ctx(ctx).kafka(), topic, offset=offset, partition=partition, replay_all=replay_all)
    )
    for r in done:
        console.print(f"replayed dlq {r.dlq_partition}@{r.dlq_offset} -> {r.topic}[{r.partition}]@{r.offset}")
    console.print(f"{len(done)} record(s) replayed")


# ------------------------------------------------------------------------------------------ outbox


def _parse_when(text: str) -> datetime:
    """ISO date or datetime (naive = UTC), or relative: ``-2h``, ``-3d``, ``now``."""
    text = text.strip()
    if text == "now":
        return datetime.now(UTC)
    if text.startswith("-"):
        return datetime.now(UTC) - parse_duration(text[1:])
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise typer.BadParameter(
            f"{text!r}: use ISO 8601 (2026-11-22T08:00Z), a date, 'now' or -2h/-3d"
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@outbox_app.command("republish")
def outbox_republish(
    ctx: typer.Context,
    service: Annotated[str, typer.Option("--service", "-s", help="invoice, payment, dunning or notify")],
    since: Annotated[str, typer.Option("--since", help="Start (inclusive): ISO time, date, or -2h")],
    until: Annotated[str, typer.Option("--until", help="End (exclusive): ISO time, date, 'now'")] = "now",
    database_url: Annotated[
        str | None, typer.Option("--database-url", help="The service's database (default: the dev stack's)")
    ] = None,
) -> None:
    """Send again every outbox row created in [since, until) (after the broker lost its data)."""
    spec = devstack.SERVICE_BY_NAME.get(service.removesuffix("-svc"))
    if spec is None:
        raise _fail(f"unknown service {service!r}: invoice, payment, dunning or notify", 2)
    start, end = _parse_when(since), _parse_when(until)
    if end <= start:
        raise _fail("--until must be after --since", 2)
    url = database_url or _config().database_for(spec)

    async def go() -> int:
        from ar_events.db import make_engine, make_sessionmaker
        from ar_events.kafka import make_producer
        from ar_events.relay import republish

        engine = make_engine(url)
        producer = make_producer(_ctx(ctx).kafka())
        await producer.start()
        try:
            return await republish(make_sessionmaker(engine), producer, start, end, kafka=_ctx(ctx).kafka())
        finally:
            await producer.stop()
            await engine.dispose()

    sent = _run(go())
    console.print(
        f"{spec.dist}: re-published {sent} outbox row(s) created in [{start.isoformat()}, {end.isoformat()})"
    )


# ------------------------------------------------------------------------------------------ cases


def _send(ctx: typer.Context, command: Any) -> None:
    topic, partition, offset = _run(kt.send_command(_ctx(ctx).kafka(), command))
    console.print(f"{command.TYPE} for {command.client_id} -> {topic}[{partition}]@{offset}")


_NOTE = Annotated[str | None, typer.Option("--note", help="Free text for the case timeline")]


def _who(by: str | None) -> str:
    return by or f"arctl:{os.environ.get('USER', 'ops')}"


@case_app.command("pause")
def case_pause(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(help="Client id")],
    until: Annotated[
        str | None, typer.Option("--until", help="Resume by itself after this date (YYYY-MM-DD)")
    ] = None,
    note: _NOTE = None,
    by: Annotated[str | None, typer.Option("--by", help="Who asks (case timeline)")] = None,
) -> None:
    """Put a client's case on hold (optionally until a date)."""
    until_date = None
    if until is not None:
        try:
            until_date = date.fromisoformat(until)
        except ValueError:
            raise _fail(f"--until {until!r}: use YYYY-MM-DD", 2) from None
    _send(ctx, PauseDunning(client_id=client, until=until_date, note=note, requested_by=_who(by)))


@case_app.command("resume")
def case_resume(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(help="Client id")],
    note: _NOTE = None,
    by: Annotated[str | None, typer.Option("--by", help="Who asks (case timeline)")] = None,
) -> None:
    """Resume a paused case."""
    _send(ctx, ResumeDunning(client_id=client, note=note, requested_by=_who(by)))


@case_app.command("escalate")
def case_escalate(
    ctx: typer.Context,
    client: Annotated[str, typer.Argument(help="Client id")],
    note: _NOTE = None,
    by: Annotated[str | None, typer.Option("--by", help="Who asks (case timeline)")] = None,
) -> None:
    """Move a case to its next step now."""
    _send(ctx, EscalateNow(client_id=client, note=note, requested_by=_who(by)))


# ------------------------------------------------------------------------------------------ clock

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)", re.IGNORECASE)
_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> timedelta:
    """``3d``, ``12h``, ``1d12h``, ``90m``, ``1w`` -> timedelta."""
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not parts or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise typer.BadParameter(f"{text!r}: use e.g. 3d, 12h, 1d12h, 90m, 1w")
    return timedelta(seconds=sum(float(n) * _UNITS[u.lower()] for n, u in parts))


def _dev_api_key() -> str:
    key = os.environ.get("AR_API_KEY")
    if key:
        return key
    path = _config().credentials_file
    try:
        return str(json.loads(path.read_text())["api_key"])
    except (OSError, ValueError, KeyError) as exc:
        raise _fail(
            f"no API key: set AR_API_KEY or start the stack (`arctl stack up` writes {path})"
        ) from exc


@clock_app.command("advance")
def clock_advance(
    duration: Annotated[str, typer.Argument(help="How far: 3d, 12h, 1d12h, 90m, 1w")],
    url: Annotated[str | None, typer.Option("--url", help="dunning-svc base URL")] = None,
) -> None:
    """Move dunning-svc's simulated clock forward (POST /v1/admin/clock/advance, scope ops)."""
    delta = parse_duration(duration)
    base = url or _config().base_url("dunning")
    days, seconds = divmod(int(delta.total_seconds()), 86400)
    body = {"days": days, "seconds": seconds}
    try:
        response = httpx.post(
            f"{base}/v1/admin/clock/advance",
            json=body,
            headers={"Authorization": f"Bearer {_dev_api_key()}"},
            timeout=30,
        )
    except httpx.HTTPError as exc:
        raise _fail(f"dunning-svc at {base}: {exc}") from None
    if response.status_code >= 400:
        raise _fail(f"dunning-svc answered {response.status_code}: {response.text}")
    with contextlib.suppress(ValueError):
        console.print(JSON.from_data(response.json()))
        return
    console.print(response.text)


@clock_app.command("show")
def clock_show(url: Annotated[str | None, typer.Option("--url", help="dunning-svc base URL")] = None) -> None:
    """Print dunning-svc's current (simulated) time (GET /v1/admin/clock)."""
    base = url or _config().base_url("dunning")
    try:
        response = httpx.get(
            f"{base}/v1/admin/clock", headers={"Authorization": f"Bearer {_dev_api_key()}"}, timeout=10
        )
    except httpx.HTTPError as exc:
        raise _fail(f"dunning-svc at {base}: {exc}") from None
    if response.status_code >= 400:
        raise _fail(f"dunning-svc answered {response.status_code}: {response.text}")
    console.print(JSON.from_data(response.json()))


# ------------------------------------------------------------------------------------------ mail


def _mail_dir(directory: Path | None) -> Path:
    return directory or _config().mail_dir


_DIR = Annotated[Path | None, typer.Option("--dir", help="Mail folder (default var/mail)")]


@mail_app.command("list")
def mail_list(
    directory: _DIR = None, last: Annotated[int, typer.Option("--last", "-n", help="Only the newest N")] = 0
) -> None:
    """Captured messages, oldest first (numbers for `arctl mail show N`)."""
    folder = _mail_dir(directory)
    items = mailbox.list_mail(folder)
    if last:
        items = items[-last:]
    table = Table(title=f"mail in {folder}")
    for column in ("#", "received", "from", "to", "subject"):
        table.add_column(column)
    for m in items:
        table.add_row(str(m.number), m.received, m.sender, m.to, m.subject)
    console.print(table)


@mail_app.command("show")
def mail_show(
    ref: Annotated[str, typer.Argument(help="Message number (1 = oldest, -1 = newest) or file name")],
    directory: _DIR = None,
    raw: Annotated[bool, typer.Option("--raw", help="The .eml file as stored")] = False,
) -> None:
    """Print one captured message: headers and text body."""
    folder = _mail_dir(directory)
    try:
        path = mailbox.find_mail(folder, ref)
    except LookupError as exc:
        raise _fail(str(exc)) from None
    if raw:
        console.print(path.read_text(errors="replace"), markup=False, highlight=False)
        return
    shown = mailbox.render_mail(path)
    for key in ("From", "To", "Cc", "Reply-To", "Subject", "Date", "Message-ID", "X-Envelope-To"):
        if key in shown["headers"]:
            console.print(f"[bold]{key}:[/bold] {shown['headers'][key]}", highlight=False)
    if shown["attachments"]:
        console.print(f"[bold]Attachments:[/bold] {', '.join(shown['attachments'])}")
    console.rule(style="dim")
    console.print(shown["body"], markup=False, highlight=False)


# ------------------------------------------------------------------------------------------ demo


@app.command("demo")
def demo(
    clients: Annotated[int, typer.Option(help="Clients in the demo portfolio")] = 200,
    invoices: Annotated[int, typer.Option(help="Invoices in the demo portfolio")] = 2000,
    days_per_second: Annotated[
        float, typer.Option(envvar="AR_DEMO_DAYS_PER_SECOND", help="Simulated days per real second")
    ] = 1.0,
    seed: Annotated[int, typer.Option(help="Portfolio seed (same seed, same portfolio)")] = 7,
) -> None:
    """The `make run` demo: the stack, a demo portfolio, an accelerated clock and a live status (Ctrl-C stops)."""
    from ar_ops.demo import run_demo

    config = devstack.StackConfig.from_env()
    # SIGTERM stops the demo like Ctrl-C does: the main task is cancelled and the stack is stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(
            run_demo(config, days_per_second=days_per_second, clients=clients, invoices=invoices, seed=seed)
        )


if __name__ == "__main__":
    app()
