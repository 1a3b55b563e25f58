"""``python -m invoice_svc api|worker|all|migrate`` and ``api-key create|list|revoke``."""

from __future__ import annotations

import sys
from pathlib import Path

from ar_events.loop import run as run_loop
from ar_events.migrations import upgrade
from ar_web import configure_logging
from ar_web.cli import run_common_command, run_until_stopped, serve, service_parser
from invoice_svc.bootstrap import CONSUMER, RELAY, build
from invoice_svc.settings import SERVICE, Settings

ROOT = Path(__file__).resolve().parents[2]  # services/invoice-svc (alembic.ini, migrations/)
COMMANDS = {
    "api": "REST API (+ outbox relay)",
    "worker": "payment consumer + outbox relay",
    "all": "API, consumer and relay in one process",
    "migrate": "apply database migrations",
}


def migrate(settings: Settings) -> int:
    """Bring the database to the newest schema (same migrations on PostgreSQL and SQLite)."""
    upgrade(ROOT, settings.database.url)
    return 0


async def _serve(settings: Settings, parts: tuple[str, ...]) -> None:
    from invoice_svc.api import create_app

    await serve(create_app(settings, background=parts), settings.http.host, settings.http.port)


async def _worker(settings: Settings) -> None:
    await run_until_stopped(build(settings), (RELAY, CONSUMER))


def main(argv: list[str] | None = None) -> int:
    args = service_parser("invoice_svc", __doc__, COMMANDS)[0].parse_args(argv)
    settings = Settings()
    configure_logging(SERVICE, settings.log_level)
    done = run_common_command(args, lambda: migrate(settings), settings.database.url)
    if done is not None:
        return done
    if args.command == "api":
        run_loop(_serve(settings, (RELAY,)))
    elif args.command == "all":
        run_loop(_serve(settings, (RELAY, CONSUMER)))
    elif args.command == "worker":
        run_loop(_worker(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
