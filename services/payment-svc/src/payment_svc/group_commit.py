"""Group commit: webhooks that arrive together share one transaction; each request still answers after it.

Under load most of a webhook's cost is the transaction around it (BEGIN, the outbox's key lock, the outbox
insert, COMMIT and its WAL flush), not its own two inserts. Requests therefore hand their verified job to a
small pool of writers; a writer takes every job waiting (up to ``max_batch``), applies them one after the
other in one unit of work, commits, and only then resolves each request. A quiet service sees batches of one
(no added wait: a writer starts as soon as a job arrives); a busy one, batches as large as the load.

If a batch fails for any reason, its jobs are run again one transaction each, so a job that fails alone
fails only its own request, and a duplicate in the same batch is seen as a duplicate by the unique keys.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

from payment_svc.repository import UnitOfWork

log = logging.getLogger(__name__)

J = TypeVar("J")
R = TypeVar("R")


@dataclass(slots=True)
class _Waiting(Generic[J, R]):
    job: J
    future: asyncio.Future[R]


class GroupCommit(Generic[J, R]):
    """Applies jobs with ``apply(uow, job)`` in shared transactions; ``submit`` returns the job's result."""

    def __init__(
        self,
        uow: Callable[[], UnitOfWork],
        apply: Callable[[UnitOfWork, J], Awaitable[R]],
        *,
        now: Callable[[], datetime],
        max_batch: int = 64,
        writers: int = 2,
        after_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self._uow = uow
        self._apply = apply
        self._now = now
        self.max_batch = max_batch
        self.writers = writers
        self._after_commit = after_commit
        self._queue: list[_Waiting[J, R]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        #: Sizes of the committed batches (the last 1,000), for tests and diagnostics.
        self.batch_sizes: list[int] = []

    async def submit(self, job: J) -> R:
        """Queue ``job``; returns its result once its transaction committed, or raises what it raised."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append(_Waiting(job, future))
        if len(self._tasks) < self.writers:
            # A fresh context: a writer serves many requests and must not carry the first one's context vars.
            task = asyncio.get_running_loop().create_task(self._write(), context=contextvars.Context())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    async def _write(self) -> None:
        while self._queue:
            batch = self._queue[: self.max_batch]
            del self._queue[: self.max_batch]
            try:
                await self._run(batch)
            except BaseException:
                for waiting in batch:  # cancelled (shutdown): nobody may wait forever
                    if not waiting.future.done():
                        waiting.future.cancel()
                raise

    async def _run(self, batch: list[_Waiting[J, R]]) -> None:
        try:
            async with self._uow() as uow:
                results = [await self._apply(uow, waiting.job) for waiting in batch]
                await uow.commit(self._now())
        except Exception as exc:
            if len(batch) == 1:
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            log.info("group commit: a batch of %d failed (%r); one transaction per job", len(batch), exc)
            for waiting in batch:
                await self._run([waiting])
            return
        self._after_commit()
        self.batch_sizes = [*self.batch_sizes[-999:], len(batch)]
        for waiting, result in zip(batch, results, strict=True):
            if not waiting.future.done():  # a client that hung up: its job is committed all the same
                waiting.future.set_result(result)
