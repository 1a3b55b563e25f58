"""End-to-end fixtures: one whole stack for the e2e session (free ports, its own var dir and databases).

Starting the stack (migrations, keys, four processes) is the slow part, so every e2e test shares it; each
test uses clients of its own and leaves their cases resolved, and the chaos test restarts what it kills.

The root conftest marks everything under tests/e2e with ``e2e``. When a test fails, the tail of every
component's log is attached to its report ("e2e service logs" section).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio

from ar_events.testing import PostgresServer

from .support import Api, E2EStack, drop_pg_databases, start_e2e_stack

_STACK_KEY = pytest.StashKey[E2EStack]()


def stack_env() -> dict[str, dict[str, str]]:
    """Per-service settings of the e2e stacks (on top of what the dev stack sets)."""
    return {
        # Short idle polls keep each hop quick; the scheduler is woken by clock moves anyway.
        # Small scheduler batches: with two dunning-svc processes both take part in each clock move.
        "dunning": {"DUNNING_SCHEDULER__POLL_INTERVAL_MS": "200", "DUNNING_SCHEDULER__BATCH_SIZE": "8"},
        # A notify-svc killed mid-send leaves rows in 'sending' until the lease runs out (120 s by default).
        "notify": {"NOTIFY_DELIVERY__LEASE_S": "8"},
    }


@pytest.fixture(scope="session")
def stack(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    postgres_server: PostgresServer | None,
) -> Iterator[E2EStack]:
    """Broker, SMTP catcher and the four services as processes (PostgreSQL when it answers, else SQLite)."""
    env = stack_env()
    var = tmp_path_factory.mktemp("e2e-var")
    s = start_e2e_stack(var, postgres_server, env)
    request.config.stash[_STACK_KEY] = s
    try:
        yield s
    finally:
        s.stop()
        if postgres_server is not None:
            asyncio.run(drop_pg_databases(postgres_server, s.databases.values()))


@pytest_asyncio.fixture
async def api(stack: E2EStack) -> AsyncIterator[Api]:
    async with httpx.AsyncClient(timeout=30) as http:
        yield Api(stack, http)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The chaos test kills and restarts the shared stack's services: run it after the others."""
    items.sort(key=lambda item: item.path.name == "test_chaos.py" and "e2e" in item.path.parts)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Generator[None, Any, Any]:
    report = yield
    if report.failed:
        s = item.config.stash.get(_STACK_KEY, None)
        if s is not None and "stack" in getattr(item, "fixturenames", ()):
            report.sections.append(("e2e service logs", s.logs()))
    return report
