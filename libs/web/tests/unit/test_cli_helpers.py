"""What the services' ``__main__`` share from ar_web.cli: their parser, migrate/api-key, serving, stopping on a signal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import AsyncIterator, Collection
from typing import Any

import pytest

from ar_web.cli import run_common_command, run_until_stopped, serve, service_parser, stop_on_signals


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_stop_event(sig: signal.Signals) -> None:
    async def main() -> tuple[bool, bool]:
        given = asyncio.Event()
        stop = stop_on_signals(given)
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(stop.wait(), 5)
        fresh = stop_on_signals()
        os.kill(os.getpid(), sig)
        await asyncio.wait_for(fresh.wait(), 5)
        return stop is given, fresh is not given

    assert asyncio.run(main()) == (True, True)


def test_serve_gives_up_when_the_app_cannot_start() -> None:
    """lifespan="on": an app whose start-up fails exits 3, not served (uvicorn's "auto" would serve it anyway)."""

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise RuntimeError("cannot start")

    exits: list[object] = []

    def run() -> None:
        try:
            asyncio.run(serve(app, "127.0.0.1", 0))
        except SystemExit as exc:
            exits.append(exc.code)

    thread = threading.Thread(target=run, daemon=True)  # a daemon: if it did serve, it must not hold the test
    thread.start()
    thread.join(10)
    assert exits == [3]


def test_service_parser_lists_the_commands_in_order_then_api_key() -> None:
    parser, sub = service_parser("x_svc", "doc", {"api": "the API", "migrate": "migrations"})
    sub.add_parser("extra", help="added by the service")
    usage = parser.format_usage()
    assert "{api,migrate,api-key,extra}" in usage
    assert parser.parse_args(["api-key", "revoke", "k"]).api_key_action == "revoke"
    with pytest.raises(SystemExit) as exited:
        parser.parse_args([])
    assert exited.value.code == 2


def test_common_commands_are_run_and_the_others_left_to_the_service() -> None:
    parser, _ = service_parser("x_svc", None, {"api": "", "migrate": ""})
    migrated: list[bool] = []
    assert run_common_command(parser.parse_args(["migrate"]), lambda: migrated.append(True), "unused") == 0
    assert migrated == [True]
    assert run_common_command(parser.parse_args(["api"]), lambda: migrated.append(False), "unused") is None
    assert migrated == [True]


class _Runtime:
    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.log: list[str] = []

    @contextlib.asynccontextmanager
    async def running(self, parts: Collection[str]) -> AsyncIterator[_Runtime]:
        self.log.append("start " + ",".join(parts))
        yield self
        self.log.append("stopped")


def test_a_worker_runs_its_parts_until_sigterm() -> None:
    runtime = _Runtime()

    async def main() -> None:
        task = asyncio.create_task(run_until_stopped(runtime, ("relay", "consumer")))
        await asyncio.sleep(0.05)
        assert runtime.log == ["start relay,consumer"]
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 5)

    asyncio.run(main())
    assert runtime.log == ["start relay,consumer", "stopped"]
