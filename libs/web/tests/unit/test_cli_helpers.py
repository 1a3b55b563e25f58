"""What the services' ``__main__`` share from ar_web.cli: stopping a worker on a signal, serving an app."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from typing import Any

import pytest

from ar_web.cli import serve, stop_on_signals


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
