"""The timer loop: claims due cases in batches and applies their decisions with the outbox rows, atomically.

On PostgreSQL the claim is ``SELECT ... FOR UPDATE SKIP LOCKED`` so several replicas share the due cases and a
case is never handled by two at once; on SQLite (one process) writers are serialised by the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from prometheus_client import Counter, Gauge, Histogram
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from ar_events.clock import Clock
from ar_events.db import is_transient
from dunning_svc import repository as repo
from dunning_svc.casework import CaseWork
from dunning_svc.settings import SchedulerSettings

log = logging.getLogger(__name__)

TIMERS_DUE = Gauge("dunning_timers_due", "Case timers that have come due and wait for the scheduler")
STEPS_FIRED = Counter("dunning_scheduler_steps", "Policy steps the scheduler fired")
CASES_HANDLED = Counter("dunning_scheduler_cases", "Due cases the scheduler claimed and decided")
BATCH_SECONDS = Histogram(
    "dunning_scheduler_batch_seconds",
    "Claim, decide and commit one batch of due cases",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
#: how often an idle scheduler re-counts the due timers for the gauge
MEASURE_EVERY_S = 5.0

#: a case whose decision raised is looked at again after this long (the error is logged)
RETRY_LATER = timedelta(hours=1)

#: batches a lane runs back to back in one run_once while they come back full (PostgreSQL): the lanes stay busy
#: instead of all waiting for the slowest at the end of every round
ROUNDS = 8


class Scheduler:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        work: CaseWork,
        clock: Clock,
        settings: SchedulerSettings,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.work = work
        self.clock = clock
        self.settings = settings
        self.on_commit = on_commit
        self._wake = asyncio.Event()
        self.cases_processed = 0
        self.steps_fired = 0
        self._next_measure = 0.0

    def wake(self) -> None:
        """Look at the timers now (the clock moved, or a commit set a timer)."""
        self._wake.set()

    async def run_once(self, limit: int | None = None) -> int:
        """Claim due cases and apply their decisions; returns how many cases it handled.

        Without ``limit``, on PostgreSQL, up to ``settings.lanes`` lanes run at once, each batch in its own
        transaction (SKIP LOCKED keeps their claims apart, exactly as between replicas): a lane starts when
        the previous one claimed a full batch, and runs up to ``ROUNDS`` batches while they come
        back full, so while one batch's statements run in the database another is being decided. An idle
        poll stays one query.
        """
        now = self.clock.now()
        size = limit or self.settings.batch_size
        lanes = 1 if limit is not None else self._lanes()
        if lanes == 1:
            return await self._batch(now, size)
        tasks: list[asyncio.Task[int]] = []
        try:
            for _ in range(lanes):
                full = asyncio.Event()
                task = asyncio.create_task(self._lane(now, size, full))
                tasks.append(task)
                waiter = asyncio.create_task(full.wait())
                await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if not full.is_set():
                    break  # that lane found less than a batch: nothing more is due now
            results = await asyncio.gather(*tasks, return_exceptions=True)
        except BaseException:
            for t in tasks:
                t.cancel()
            raise
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise errors[0]
        return sum(r for r in results if isinstance(r, int))

    async def _lane(self, now: datetime, size: int, full: asyncio.Event) -> int:
        """Batches one after the other while they come back full, up to ``ROUNDS``: the lanes stay busy, so
        while one lane's statements run in the database another decides its batch."""
        handled = await self._batch(now, size, full)
        rounds = 1
        while handled == size * rounds and rounds < ROUNDS:
            n = await self._batch(now, size)
            handled += n
            rounds += 1
        return handled

    def _lanes(self) -> int:
        bind = self.sessionmaker.kw.get("bind")
        if bind is None or bind.dialect.name != "postgresql":
            return 1  # SQLite: one writer at a time anyway
        return self.settings.lanes

    async def _batch(self, now: datetime, size: int, full: asyncio.Event | None = None) -> int:
        """One batch in one transaction: claim (locked until commit), decide, write cases, timeline, outbox.
        ``full`` is set as soon as the claim returned a whole batch (more may be due: another lane can start)."""
        started = time.perf_counter()
        try:
            async with self.sessionmaker() as session, session.begin():
                batch = await repo.claim_due_batch(session, now, size)
                rows = batch.cases
                if full is not None and len(rows) >= size:
                    full.set()
                if not rows:
                    return 0
                outcome = await self.work.tick(session, batch, now)
            BATCH_SECONDS.observe(time.perf_counter() - started)
        except Exception as exc:
            if is_transient(exc) or size == 1:
                raise
            log.warning("scheduler: batch failed (%s); retrying case by case", exc)
            return await self._one_by_one(now, size)
        self._count(len(rows), outcome.steps, bool(outcome.envelopes))
        return len(rows)

    def _count(self, cases: int, steps: int, emitted: bool) -> None:
        self.cases_processed += cases
        self.steps_fired += steps
        CASES_HANDLED.inc(cases)
        STEPS_FIRED.inc(steps)
        if emitted:
            self.on_commit()

    async def _one_by_one(self, now: datetime, budget: int) -> int:
        """Isolate a case whose decision fails: the others go on; it is retried after RETRY_LATER."""
        handled = 0
        for _ in range(budget):
            try:
                async with self.sessionmaker() as session, session.begin():
                    rows = await repo.claim_due_cases(session, now, 1)
                    if not rows:
                        break
                    row = rows[0]
                    try:
                        async with session.begin_nested():
                            outcome = await self.work.apply(
                                session, {row.case.client_id: []}, now, claimed={row.case.client_id: row}
                            )
                    except Exception:
                        log.exception("scheduler: case %s failed; retrying it later", row.case.case_id)
                        await repo.postpone_case(session, row.case.case_id, now + RETRY_LATER)
                        outcome = None
                handled += 1
                if outcome is not None:
                    self._count(1, outcome.steps, bool(outcome.envelopes))
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("scheduler: giving up on this batch")
                break
        return handled

    async def run(self, stop: asyncio.Event) -> None:
        """Drain due cases, then sleep until the poll interval passes, ``wake()`` or ``stop``."""
        interval = self.settings.poll_interval_ms / 1000
        while not stop.is_set():
            self._wake.clear()
            try:
                handled = await self.run_once()
            except Exception as exc:
                if not is_transient(exc):
                    log.exception("scheduler batch failed")
                else:
                    log.warning("scheduler: database unavailable (%s); retrying", exc)
                handled = 0
                await self._sleep(stop, interval)
                continue
            if handled >= self.settings.batch_size:
                continue
            await self._measure()
            await self._sleep(stop, interval)

    async def _measure(self) -> None:
        """Refresh the due-timers gauge now and then (only when idle: a draining scheduler knows it is busy)."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._next_measure:
            return
        self._next_measure = loop.time() + MEASURE_EVERY_S
        with contextlib.suppress(Exception):  # a metric is never worth a failed loop
            async with self.sessionmaker() as session:
                TIMERS_DUE.set(await repo.count_due_cases(session, self.clock.now()))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await w
