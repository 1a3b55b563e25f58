"""``python -m invoice_svc api|worker|all|migrate`` and ``api-key create|list|revoke``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ar_events.loop import run as run_loop
from ar_events.migrations import upgrade
from ar_web import configure_logging
from ar_web.cli import add_api_key_parser, run_api_key, serve, stop_on_signals
from invoice_svc.bootstrap import CONSUMER, RELAY, build
from invoice_svc.settings import SERVICE, Settings

ROOT = Path(__file__).resolve().parents[2]  # services/invoice-svc (alembic.ini, migrations/)


def migrate(settings: Settings) -> int:
    """Bring the database to the newest schema (same migrations on PostgreSQL and SQLite)."""
    upgrade(ROOT, settings.database.url)
    return 0


async def _serve(settings: Settings, parts: tuple[str, ...]) -> None:
    from invoice_svc.api import create_app

    await serve(create_app(settings, background=parts), settings.http.host, settings.http.port)


async def _worker(settings: Settings) -> None:
    runtime = build(settings)
    stop_on_signals(runtime.stop)
    async with runtime.running((RELAY, CONSUMER)):
        await runtime.stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="invoice_svc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="REST API (+ outbox relay)")
    sub.add_parser("worker", help="payment consumer + outbox relay")
    sub.add_parser("all", help="API, consumer and relay in one process")
    sub.add_parser("migrate", help="apply database migrations")
    add_api_key_parser(sub)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(SERVICE, settings.log_level)
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "api-key":
        return run_api_key(args, settings.database.url)
    if args.command == "api":
        run_loop(_serve(settings, (RELAY,)))
    elif args.command == "all":
        run_loop(_serve(settings, (RELAY, CONSUMER)))
    elif args.command == "worker":
        run_loop(_worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
