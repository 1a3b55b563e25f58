"""Chaos: the main scenario over several clients while each service is killed with SIGKILL once, at a random
moment, and started again with the very command and environment the stack gave it. Afterwards every client
has the same emails, tasks, balances and dunning events as in an undisturbed run, and nothing twice.

The seed is printed; set ``E2E_CHAOS_SEED`` to replay a run's schedule.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

from ar_events.topics import Topic

from .ladder import (
    PHASES,
    Limits,
    Party,
    collect_outcome,
    duplicates,
    new_tag,
    onboard,
    quiet_due_date,
    run_ladder,
)
from .support import Api, E2EStack, TopicReader, eventually, mail_for, quiet

SERVICES = ("invoice", "payment", "dunning", "notify")
KILL_PHASES = ("onboard", *PHASES[:-1])  # any phase but the last
CHAOS_CLIENTS = 4
BASELINE_CLIENTS = 2


@dataclass
class Monkey:
    """Kills each service once and restarts it. Each kill is scheduled in a random phase of the scenario
    (before its last one, so the kill lands while the scenario runs) at a random delay into that phase; the
    driver does not wait for it, so kills and restarts overlap the steps and each other."""

    stack: E2EStack
    rng: random.Random
    log: list[str] = field(default_factory=list)
    start: float = field(default_factory=time.monotonic)
    plan: dict[str, list[str]] = field(default_factory=dict)  # phase -> services to kill in it
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in SERVICES:
            self.plan.setdefault(self.rng.choice(KILL_PHASES), []).append(name)

    def say(self, what: str) -> None:
        self.log.append(f"{time.monotonic() - self.start:6.1f}s {what}")

    async def on_phase(self, phase: str) -> None:
        self.say(f"phase {phase}")
        for name in self.plan.get(phase, []):
            self.tasks.append(asyncio.create_task(self.kill_and_restart(name, self.rng.uniform(0.0, 3.0))))

    async def kill_and_restart(self, name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        command, env = await asyncio.to_thread(self.stack.kill, name)
        self.say(f"kill -9 {name}")
        await asyncio.sleep(self.rng.uniform(0.0, 1.5))
        comp = await asyncio.to_thread(self.stack.restart, name, command, env)
        self.say(f"restarted {name} (pid {comp.pid})")
        url = self.stack.urls()[name]
        async with httpx.AsyncClient(timeout=5) as http:

            async def ready() -> bool:
                assert self.stack.component(name).alive(), f"{name} exited after its restart"
                try:
                    return (await http.get(f"{url}/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await eventually(ready, timeout=120, what=f"{name} to answer /readyz after its restart")
        self.say(f"{name} ready")

    async def done(self) -> None:
        await asyncio.gather(*self.tasks)


async def test_chaos_each_service_killed_once_gives_the_same_outcome(stack: E2EStack) -> None:
    seed = int(os.environ.get("E2E_CHAOS_SEED") or random.randrange(1 << 30))
    print(f"chaos seed {seed} (E2E_CHAOS_SEED={seed} replays it)")
    rng = random.Random(seed)
    async with (
        httpx.AsyncClient(timeout=30) as http,
        TopicReader(stack.kafka(), Topic.DUNNING_EVENTS, Topic.INVOICE_EVENTS) as topics,
    ):
        api = Api(stack, http, retry_s=150)
        # the undisturbed run
        due = quiet_due_date((await api.sim_now()).date() + timedelta(days=1))
        base = await onboard(api, [new_tag("base") for _ in range(BASELINE_CLIENTS)], due)
        await run_ladder(stack, api, topics, base)
        expected = [await collect_outcome(stack, api, topics, p) for p in base]
        assert all(e == expected[0] for e in expected), expected
        # the same scenario while the services die one by one
        monkey = Monkey(stack, rng)
        print(f"kill plan: {monkey.plan}")
        try:
            await monkey.on_phase("onboard")
            due = quiet_due_date((await api.sim_now()).date() + timedelta(days=1))
            parties = await onboard(api, [new_tag("chaos") for _ in range(CHAOS_CLIENTS)], due)
            await run_ladder(
                stack, api, topics, parties, Limits(step=150.0, quiet=4.0), on_phase=monkey.on_phase
            )
            monkey.say("scenario done")
            await monkey.done()
        finally:
            for task in monkey.tasks:
                task.cancel()
            print("\n".join(monkey.log))
        assert len([line for line in monkey.log if "kill -9" in line]) == len(SERVICES), monkey.log
        # afterwards (the restarted services given a moment to redo anything they would redo): the same
        # emails, tasks, balances and events as the undisturbed run
        await quiet(4.0)
        for p in parties:
            got = await collect_outcome(stack, api, topics, p)
            assert got == expected[0], f"{p.tag} differs from the undisturbed run\n{monkey.log}"
        _assert_nothing_twice(stack, parties, monkey)


def _assert_nothing_twice(stack: E2EStack, parties: list[Party], monkey: Monkey) -> None:
    """No notification key was delivered under two Message-IDs (a real double send). One exact redelivery
    (same Message-ID) is notify-svc's documented answer to dying between the SMTP hand-over and recording it;
    it is reported, and tolerated only in a run where notify-svc was killed."""
    dups = duplicates(stack, parties)
    for p in parties:
        mails = mail_for(stack.mail_dir, [p.recipient])
        ids_per_key: dict[str, set[str]] = {}
        for m in mails:
            ids_per_key.setdefault(m.key, set()).add(m.message_id)
        double = {k: v for k, v in ids_per_key.items() if len(v) > 1}
        assert not double, f"{p.tag}: sent twice under different Message-IDs: {double}"
    if dups:
        print(f"exact redeliveries after a crash (same Message-ID): {dups}")
        assert any("kill -9 notify" in line for line in monkey.log), dups
