"""``python -m dunning_svc api|worker|all|migrate`` and ``api-key create|list|revoke``."""

from __future__ import annotations

import sys
from pathlib import Path

from ar_events.loop import run as run_loop
from ar_events.migrations import upgrade
from ar_web import configure_logging
from ar_web.cli import run_common_command, run_until_stopped, serve, service_parser
from dunning_svc.bootstrap import CONSUMER, RELAY, SCHEDULER, build
from dunning_svc.policies import PolicyFileError, load_policy_file
from dunning_svc.settings import SERVICE, Settings

ROOT = Path(__file__).resolve().parents[2]  # services/dunning-svc (alembic.ini, migrations/)
COMMANDS = {
    "api": "REST API (+ outbox relay)",
    "worker": "consumer, scheduler and outbox relay",
    "all": "API, consumer, scheduler and relay in one process",
    "migrate": "apply database migrations",
    "check-policies": "validate the policy file and exit",
}


def migrate(settings: Settings) -> int:
    """Bring the database to the newest schema (same migrations on PostgreSQL and SQLite)."""
    upgrade(ROOT, settings.database.url)
    return 0


async def _serve(settings: Settings, parts: tuple[str, ...]) -> None:
    from dunning_svc.api import create_app

    await serve(create_app(settings, background=parts), settings.http.host, settings.http.port)


async def _worker(settings: Settings) -> None:
    await run_until_stopped(build(settings), (RELAY, CONSUMER, SCHEDULER))


def main(argv: list[str] | None = None) -> int:
    args = service_parser("dunning_svc", __doc__, COMMANDS)[0].parse_args(argv)
    settings = Settings()
    configure_logging(SERVICE, settings.log_level)
    done = run_common_command(args, lambda: migrate(settings), settings.database.url)
    if done is not None:
        return done
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
