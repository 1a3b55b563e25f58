"""What every service's ``__main__`` shares: its parser, ``migrate`` and ``api-key create|list|revoke``, serving
the app, and a worker that stops on SIGTERM or SIGINT::

    args = service_parser("invoice_svc", __doc__, COMMANDS)[0].parse_args(argv)
    settings = Settings()
    done = run_common_command(args, lambda: migrate(settings), settings.database.url)
    if done is not None:
        return done
    ...  # the service's own commands: run_loop(serve(...)), run_loop(run_until_stopped(runtime, parts))
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.db import ensure_sqlite_dir, make_engine, make_sessionmaker
from ar_web.auth import ALL_SCOPES, create_api_key, list_api_keys, parse_scopes, revoke_api_key

SessionmakerFactory = Callable[[], async_sessionmaker[AsyncSession]]


def add_api_key_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``api-key`` command (create/list/revoke) to an argparse subparsers object."""
    parser: argparse.ArgumentParser = subparsers.add_parser("api-key", help="manage API keys")
    actions = parser.add_subparsers(dest="api_key_action", required=True)
    create = actions.add_parser("create", help="create (or update) a key and print it")
    create.add_argument("--name", required=True)
    create.add_argument("--scopes", required=True, help="comma-separated scopes, or 'all'")
    create.add_argument("--key", default=None, help="explicit key value (ar_...); generated when absent")
    actions.add_parser("list", help="list keys (never their values)")
    revoke = actions.add_parser("revoke", help="revoke a key by value or id")
    revoke.add_argument("key_or_id")
    return parser


async def _run(args: argparse.Namespace, sessionmaker: async_sessionmaker[AsyncSession]) -> int:
    async with sessionmaker() as session:
        if args.api_key_action == "create":
            unknown = [scope for scope in parse_scopes(args.scopes) if scope not in ALL_SCOPES]
            if unknown:
                print(f"warning: scopes no service checks: {', '.join(unknown)}", file=sys.stderr)
            key = await create_api_key(session, args.name, args.scopes, key=args.key)
            await session.commit()
            print(key)
            return 0
        if args.api_key_action == "list":
            for row in await list_api_keys(session):
                print(json.dumps(row, default=str))
            return 0
        if args.api_key_action == "revoke":
            found = await revoke_api_key(session, args.key_or_id)
            await session.commit()
            if not found:
                print("no such key", file=sys.stderr)
                return 1
            return 0
    raise ValueError(f"unknown api-key action {args.api_key_action!r}")


def run_api_key_command(args: argparse.Namespace, make_sessionmaker: SessionmakerFactory) -> int:
    """Run a parsed ``api-key`` command; returns the exit code. Disposes the engine afterwards."""

    async def main() -> int:
        sessionmaker = make_sessionmaker()
        try:
            return await _run(args, sessionmaker)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        finally:
            bind = sessionmaker.kw.get("bind")
            if bind is not None:
                await bind.dispose()

    return asyncio.run(main())


def api_key_main(argv: list[str], make_sessionmaker: SessionmakerFactory, prog: str = "api-key") -> int:
    """Parse ``argv`` (the words after ``api-key``) and run it."""
    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="command", required=True)
    add_api_key_parser(sub)
    args = parser.parse_args(["api-key", *argv])
    return run_api_key_command(args, make_sessionmaker)


def run_api_key(args: argparse.Namespace, url: str, **engine_kwargs: Any) -> int:
    """Run a parsed ``api-key`` command on the database at ``url`` (its SQLite folder made first); the exit code."""
    ensure_sqlite_dir(url)
    return run_api_key_command(args, lambda: make_sessionmaker(make_engine(url, **engine_kwargs)))


async def serve(app: Any, host: str, port: int) -> None:
    """Serve an ASGI app with uvicorn until SIGTERM or SIGINT: our JSON logs, no access log, lifespan required."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
    await uvicorn.Server(config).serve()


def stop_on_signals(stop: asyncio.Event | None = None) -> asyncio.Event:
    """Inside the running loop: have SIGTERM and SIGINT set ``stop`` (a new event when None), which is returned."""
    stop = asyncio.Event() if stop is None else stop
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):  # no signal handlers on Windows' loop
            loop.add_signal_handler(sig, stop.set)
    return stop


class Runtime(Protocol):
    """A service's composition root: starts the named background parts, and is told to stop by ``stop``."""

    stop: asyncio.Event

    def running(self, parts: Collection[str]) -> AbstractAsyncContextManager[Any]: ...


async def run_until_stopped(runtime: Runtime, parts: Collection[str]) -> None:
    """``worker``: run ``parts`` of the runtime until SIGTERM or SIGINT sets its ``stop``."""
    stop_on_signals(runtime.stop)
    async with runtime.running(parts):
        await runtime.stop.wait()


def service_parser(
    prog: str, description: str | None, commands: Mapping[str, str]
) -> tuple[argparse.ArgumentParser, Any]:
    """A service's ``python -m`` parser: ``commands`` (name: help, in order), then ``api-key``; and its subparsers."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in commands.items():
        sub.add_parser(name, help=help_text)
    add_api_key_parser(sub)
    return parser, sub


def run_common_command(
    args: argparse.Namespace, migrate: Callable[[], object], database_url: str, **engine_kwargs: Any
) -> int | None:
    """Run ``migrate`` or ``api-key`` and return the exit code; None for a command the service runs itself."""
    if args.command == "migrate":
        migrate()
        return 0
    if args.command == "api-key":
        return run_api_key(args, database_url, **engine_kwargs)
    return None
