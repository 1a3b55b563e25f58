"""``python -m notify_svc api|worker|all|migrate|api-key ...``."""

from __future__ import annotations

from pathlib import Path

from ar_events.loop import run as run_loop
from ar_events.migrations import upgrade
from ar_web import configure_logging
from ar_web.cli import run_common_command, service_parser, stop_on_signals
from notify_svc.bootstrap import build, run_worker
from notify_svc.settings import Settings

SERVICE_ROOT = Path(__file__).resolve().parents[2]
COMMANDS = {
    "api": "HTTP API only",
    "worker": "consumers, outbox relay and dispatcher",
    "all": "API + worker in one process (the dev stack)",
    "migrate": "apply database migrations",
}


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
    args = service_parser("python -m notify_svc", __doc__, COMMANDS)[0].parse_args(argv)
    settings = Settings()
    configure_logging(settings.service_name, "INFO")
    done = run_common_command(args, lambda: migrate(settings), settings.database.url)
    if done is not None:
        return done
    if args.command == "worker":
        run_loop(work(settings))
        return 0
    serve(settings, with_worker=args.command == "all")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
