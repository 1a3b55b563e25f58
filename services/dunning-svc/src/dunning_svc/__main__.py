"""``python -m dunning_svc api|worker|all|migrate`` and ``api-key create|list|revoke``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker

from ar_events.db import is_sqlite, make_engine
from ar_events.loop import run as run_loop
from ar_web import configure_logging
from ar_web.cli import add_api_key_parser, run_api_key_command
from dunning_svc.bootstrap import CONSUMER, RELAY, SCHEDULER, build
from dunning_svc.policies import PolicyFileError, load_policy_file
from dunning_svc.settings import SERVICE, Settings

ROOT = Path(__file__).resolve().parents[2]  # services/dunning-svc (alembic.ini, migrations/)


def _ensure_sqlite_dir(url: str) -> None:
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


def migrate(settings: Settings) -> int:
    """Bring the database to the newest schema (same migrations on PostgreSQL and SQLite)."""
    from alembic import command
    from alembic.config import Config

    _ensure_sqlite_dir(settings.database.url)
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.attributes["database_url"] = settings.database.url
    command.upgrade(cfg, "head")
    return 0


async def _serve(settings: Settings, parts: tuple[str, ...]) -> None:
    import uvicorn

    from dunning_svc.api import create_app

    app = create_app(settings, background=parts)
    config = uvicorn.Config(app, host=settings.http.host, port=settings.http.port, log_config=None,
                            access_log=False, lifespan="on")  # fmt: skip
    await uvicorn.Server(config).serve()


async def _worker(settings: Settings) -> None:
    runtime = build(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, runtime.stop.set)
    async with runtime.running((RELAY, CONSUMER, SCHEDULER)):
        await runtime.stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dunning_svc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="REST API (+ outbox relay)")
    sub.add_parser("worker", help="consumer, scheduler and outbox relay")
    sub.add_parser("all", help="API, consumer, scheduler and relay in one process")
    sub.add_parser("migrate", help="apply database migrations")
    sub.add_parser("check-policies", help="validate the policy file and exit")
    add_api_key_parser(sub)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(SERVICE, settings.log_level)
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "api-key":
        _ensure_sqlite_dir(settings.database.url)
        return run_api_key_command(
            args, lambda: async_sessionmaker(make_engine(settings.database.url), expire_on_commit=False)
        )
    try:
        specs = load_policy_file(settings.policies_file)
    except PolicyFileError as exc:
        print(f"dunning-svc: cannot start: {exc}", file=sys.stderr)
        return 2
    if args.command == "check-policies":
        print(f"{len(specs)} policies OK: {', '.join(s.name for s in specs)}")
        return 0
    if args.command == "api":
        run_loop(_serve(settings, (RELAY,)))
    elif args.command == "all":
        run_loop(_serve(settings, (RELAY, CONSUMER, SCHEDULER)))
    elif args.command == "worker":
        run_loop(_worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
