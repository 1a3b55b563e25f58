"""Services run their main coroutine on uvloop (installed with uvicorn[standard])."""

from __future__ import annotations

import asyncio

import pytest

from ar_events.loop import run

pytestmark = pytest.mark.unit


def test_run_returns_the_result_on_a_uvloop_loop() -> None:
    async def main() -> str:
        await asyncio.sleep(0)
        return type(asyncio.get_running_loop()).__module__

    assert run(main()).startswith("uvloop")


def test_run_propagates_the_exception() -> None:
    async def main() -> None:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        run(main())
