"""``python -m notify_svc api|worker|all|migrate|api-key ...``."""

from __future__ import annotations

import argparse
import asyncio
import signal
from pathlib import Path

from ar_events.db import make_engine, make_sessionmaker
from ar_events.loop import run as run_loop
from ar_web import configure_logging
from ar_web.cli import add_api_key_parser, run_api_key_command
from notify_svc.bootstrap import build, run_worker
from notify_svc.settings import Settings

SERVICE_ROOT = Path(__file__).resolve().parents[2]


def migrate(settings: Settings) -> None:
    """Bring the database schema to the latest revision (PostgreSQL or SQLite)."""
    from alembic import command
    from alembic.config import Config

    if settings.database.url.startswith("sqlite"):
        path = settings.database.url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    cfg = Config(str(SERVICE_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(SERVICE_ROOT / "migrations"))
    cfg.attributes["url"] = settings.database.url
    command.upgrade(cfg, "head")


def serve(settings: Settings, *, with_worker: bool) -> None:
    import uvicorn

    from notify_svc.api import create_app

    app = create_app(settings, with_worker=with_worker)
    uvicorn.run(app, host=settings.http.host, port=settings.http.port, log_config=None, access_log=False)


async def work(settings: Settings) -> None:
    """Consumers, relay and dispatcher (no HTTP) until SIGTERM or SIGINT."""
    services = build(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
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
        return run_api_key_command(args, lambda: make_sessionmaker(make_engine(settings.database.url)))
    if args.command == "worker":
        run_loop(work(settings))
        return 0
    serve(settings, with_worker=args.command == "all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
