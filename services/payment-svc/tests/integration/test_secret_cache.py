"""The account cache: requests that miss it together share one load, and a change made meanwhile is not lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payment_svc.accounts import Account, SecretStore
from payment_svc.settings import AccountKind

pytestmark = pytest.mark.integration


class CountingStore(SecretStore):
    """The real store on the real database, counting its loads; load k reads, then waits for ``release[k]``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loads = 0
        self.release = [asyncio.Event() for _ in range(5)]

    async def _load(self, name: str) -> Account | None:
        k = self.loads
        self.loads += 1
        account = await super()._load(name)
        await self.release[k].wait()
        return account


async def test_concurrent_misses_share_one_load_and_a_cancelled_caller_does_not_cancel_it(svc: Any) -> None:
    store = CountingStore(svc.container.sessionmaker, {}, ttl=60)
    callers = [asyncio.create_task(store.get("standard")) for _ in range(20)]
    await asyncio.sleep(0.05)
    callers[0].cancel()  # the request that started the load went away
    store.release[0].set()
    results = await asyncio.gather(*callers[1:])
    assert store.loads == 1
    assert all(r is not None and r.kind is AccountKind.STANDARD and len(r.secrets) == 1 for r in results)
    assert await store.get("standard") == results[0] and store.loads == 1  # cached


async def test_a_load_that_began_before_an_invalidation_is_not_cached(svc: Any) -> None:
    container = svc.container
    store = CountingStore(container.sessionmaker, {}, ttl=60)
    first = asyncio.create_task(store.get("standard"))  # reads the secrets as they are before the change
    await asyncio.sleep(0.1)
    secret = "whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo="
    await container.secrets.add_secret("standard", secret, svc.clock.now())  # the change ...
    store.invalidate()  # ... as this store learns of its own changes
    later = asyncio.create_task(store.get("standard"))  # does not wait for the stale load: a new one
    await asyncio.sleep(0.1)
    store.release[1].set()
    fresh = await later
    store.release[0].set()  # the stale load ends last
    stale = await first
    assert store.loads == 2
    assert stale is not None and len(stale.secrets) == 1
    assert fresh is not None and len(fresh.secrets) == 2
    assert await store.get("standard") == fresh and store.loads == 2  # cached: the fresh one, not the stale
