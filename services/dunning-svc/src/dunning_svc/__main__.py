"""``python -m dunning_svc api|worker|all|migrate`` and ``api-key create|list|revoke``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ar_events.loop import run as run_loop
from ar_events.migrations import upgrade
from ar_web import configure_logging
from ar_web.cli import add_api_key_parser, run_api_key, serve, stop_on_signals
from dunning_svc.bootstrap import CONSUMER, RELAY, SCHEDULER, build
from dunning_svc.policies import PolicyFileError, load_policy_file
from dunning_svc.settings import SERVICE, Settings

ROOT = Path(__file__).resolve().parents[2]  # services/dunning-svc (alembic.ini, migrations/)


def migrate(settings: Settings) -> int:
    """Bring the database to the newest schema (same migrations on PostgreSQL and SQLite)."""
    upgrade(ROOT, settings.database.url)
    return 0


async def _serve(settings: Settings, parts: tuple[str, ...]) -> None:
    from dunning_svc.api import create_app

    await serve(create_app(settings, background=parts), settings.http.host, settings.http.port)


async def _worker(settings: Settings) -> None:
    runtime = build(settings)
    stop_on_signals(runtime.stop)
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
        return run_api_key(args, settings.database.url)
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
