"""Timers on PostgreSQL: replicas share due cases without ever firing a step twice; policy files; versions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import date, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import async_sessionmaker

from ar_events.db import make_engine
from ar_events.tables import TABLES
from dunning_svc import repository as repo
from dunning_svc.bootstrap import build
from dunning_svc.policies import PolicyFileError, load_policy_file
from dunning_svc.scheduler import Scheduler
from dunning_svc.settings import SchedulerSettings

from .support import T0, Svc, client, invoice, settings_for, start_service

N_CLIENTS = 300


async def test_two_schedulers_never_fire_the_same_step(postgres_url: str) -> None:
    svc: Svc = await start_service(postgres_url)
    try:
        # every client's invoice falls due in 4 days: nothing is due now
        for n in range(0, N_CLIENTS, 100):
            payloads = []
            for i in range(n, n + 100):
                payloads += [client(f"c{i}"), invoice(f"c{i}", f"i{i}", date(2026, 3, 6), 50_000)]
            await svc.feed(*payloads)
        svc.clock.set(T0 + timedelta(days=5))  # Saturday 7 March: no message; Monday 9: step "overdue-1"
        svc.clock.set(T0 + timedelta(days=7))
        assert svc.runtime.work is not None
        engines = [make_engine(postgres_url) for _ in range(2)]
        schedulers = [
            Scheduler(
                async_sessionmaker(e, expire_on_commit=False),
                svc.runtime.work,
                svc.clock,
                SchedulerSettings(batch_size=25),
            )
            for e in engines
        ]

        async def drain(s: Scheduler) -> None:
            while await s.run_once():
                await asyncio.sleep(0)

        await asyncio.gather(*(drain(s) for s in schedulers))
        handled = [s.cases_processed for s in schedulers]
        assert all(h > 0 for h in handled), f"both replicas should take a share: {handled}"
        assert sum(s.steps_fired for s in schedulers) == N_CLIENTS
        async with svc.runtime.sessionmaker() as session:
            rows = (await session.execute(sa.select(TABLES.outbox.c.type, TABLES.outbox.c.value))).all()
        reminders = [r for r in rows if r.type == "ar.dunning.reminder_requested.v1"]
        import json

        keys = Counter(json.loads(r.value)["data"]["notification_key"] for r in reminders)
        assert len(keys) == N_CLIENTS and set(keys.values()) == {1}
        for e in engines:
            await e.dispose()
    finally:
        await svc.http.aclose()
        await svc.runtime.close()


async def test_due_query_uses_the_index(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SET enable_seqscan = off"))
            stmt = (
                sa.select(repo.case_table.c.case_id)
                .where(repo.case_table.c.next_action_at.is_not(None), repo.case_table.c.next_action_at <= T0)
                .order_by(repo.case_table.c.next_action_at)
                .limit(500)
            )
            sql = str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
            plan = "\n".join(r[0] for r in (await conn.execute(sa.text("EXPLAIN " + sql))).all())
            assert "ix_dunning_case_next_action" in plan, plan
            # the scheduler's own claim: the same due query, joined to the claimed clients' projection
            claim = sa.text("EXPLAIN " + repo.PG_CLAIM_WITH_PROJECTION_SQL)
            plan = "\n".join(r[0] for r in (await conn.execute(claim, {"now": T0, "limit": 500})).all())
        assert "ix_dunning_case_next_action" in plan, plan
        assert "LockRows" in plan, plan
    finally:
        await engine.dispose()


BAD_POLICY = """
policies:
  - name: smb
    match: {segment: smb}
    steps:
      - {at: 1d, action: reminder, template: overdue-1}
      - {at: 8d, action: remind, template: overdue-2}
  - name: default
    steps:
      - {at: 1d, action: reminder, template: overdue-1}
"""


def test_bad_policy_file_is_rejected_naming_file_policy_and_field(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(BAD_POLICY)
    with pytest.raises(PolicyFileError) as err:
        load_policy_file(path)
    message = str(err.value)
    assert str(path) in message and "'smb'" in message and "steps.1.action" in message
    with pytest.raises(PolicyFileError):
        build(settings_for(f"sqlite+aiosqlite:///{tmp_path}/x.db", policies_file=path))
    # and the process refuses to start, saying why
    proc = subprocess.run(
        [sys.executable, "-m", "dunning_svc", "all"],
        env={"DUNNING_POLICIES_FILE": str(path), "DUNNING_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/x.db",
             "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "steps.1.action" in proc.stderr and str(path) in proc.stderr


def test_a_file_without_default_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        "policies:\n  - name: smb\n    match: {segment: smb}\n    steps: [{at: 1d, action: agency_handoff}]\n"
    )
    with pytest.raises(PolicyFileError, match="no default policy"):
        load_policy_file(path)


async def test_new_policy_version_applies_to_new_cycles_only(sqlite_url: str, tmp_path: Path) -> None:
    svc = await start_service(sqlite_url)
    try:
        await svc.feed(client("c1"), invoice("c1", "i1", date(2026, 2, 20), 50_000))
        case = (await svc.http.get("/v1/cases/c1")).json()
        assert (case["policy"], case["policy_version"]) == ("smb", 1)
    finally:
        await svc.http.aclose()
        await svc.runtime.close()
    edited = load_policy_file()
    path = tmp_path / "policies.yaml"
    import yaml

    raw = {"policies": [s.model_dump(mode="json", exclude_defaults=True) for s in edited]}
    for p in raw["policies"]:
        if p["name"] == "smb":
            p["contact_gap"] = "5d"
    path.write_text(yaml.safe_dump(raw))
    svc = await start_service(sqlite_url, policies_file=path)
    try:
        assert svc.runtime.work is not None
        assert [(p.name, p.version) for p in svc.runtime.work.policies.current if p.name == "smb"] == [
            ("smb", 2)
        ]
        svc.clock.set(T0 + timedelta(days=3))
        await svc.feed(client("c2"), invoice("c2", "i2", date(2026, 2, 20), 50_000))
        assert (await svc.http.get("/v1/cases/c1")).json()["policy_version"] == 1  # keeps its version
        assert (await svc.http.get("/v1/cases/c2")).json()["policy_version"] == 2
    finally:
        await svc.http.aclose()
        await svc.runtime.close()
