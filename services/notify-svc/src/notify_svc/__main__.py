"""``python -m notify_svc api|worker|all|migrate|api-key ...``."""

from __future__ import annotations

import argparse
from pathlib import Path

from ar_events.loop import run as run_loop
from ar_events.migrations import upgrade
from ar_web import configure_logging
from ar_web.cli import add_api_key_parser, run_api_key, stop_on_signals
from notify_svc.bootstrap import build, run_worker
from notify_svc.settings import Settings

SERVICE_ROOT = Path(__file__).resolve().parents[2]


def migrate(settings: Settings) -> None:
    """Bring the database schema to the latest revision (PostgreSQL or SQLite)."""
    upgrade(SERVICE_ROOT, settings.database.url)


def serve(settings: Settings, *, with_worker: bool) -> None:
    import uvicorn

    from notify_svc.api import create_app

    app = create_app(settings, with_worker=with_worker)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_config=None, access_log=False)


async def work(settings: Settings) -> None:
    """Consumers, relay and dispatcher (no HTTP) until SIGTERM or SIGINT."""
    services = build(settings)
    stop = stop_on_signals()
    try:
        await run_worker(services, stop)
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notify_svc", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("api", help="HTTP API only")
    sub.add_parser("worker", help="consumers, outbox relay and dispatcher")
    sub.add_parser("all", help="API + worker in one process (the dev stack)")
    sub.add_parser("migrate", help="apply database migrations")
    add_api_key_parser(sub)
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.service_name, "INFO")
    if args.command == "migrate":
        migrate(settings)
        return 0
    if args.command == "api-key":
        return run_api_key(args, settings.database.url)
    if args.command == "worker":
        run_loop(work(settings))
        return 0
    serve(settings, with_worker=args.command == "all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
