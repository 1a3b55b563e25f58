"""REST over the case work: tasks, outcomes, holds, promises, plans, queries and bad input (PostgreSQL and SQLite)."""

from __future__ import annotations

from datetime import date, timedelta

from .support import T0, Svc, client, invoice, paid, start_service


async def ladder_to_manual(svc: Svc, cid: str) -> None:
    """An smb client 16 days late: the reminders fired and the manual task at 15d is open."""
    await svc.feed(client(cid), invoice(cid, f"{cid}-1", date(2026, 2, 14), 120_000))
    svc.clock.set(T0 + timedelta(days=1))
    rt = svc.runtime
    assert rt.scheduler is not None
    while await rt.scheduler.run_once():
        pass


async def test_case_view_shows_timeline_and_the_manual_task(svc: Svc) -> None:
    await ladder_to_manual(svc, "c1")
    case = (await svc.http.get("/v1/cases/c1")).json()
    assert case["state"] == "manual_followup" and case["policy"] == "smb" and case["cycle"] == 1
    kinds = [(e["kind"], e["type"]) for e in case["timeline"]]
    assert ("event_in", "ar.invoice.issued.v1") in kinds
    assert ("decision_out", "ar.dunning.case_opened.v1") in kinds
    assert ("task", "ar.dunning.manual_task_created.v1") in kinds
    assert len(case["tasks"]) == 1 and case["tasks"][0]["assignee"]["email"] == "claire@example.com"
    assert case["balances"]["overdue"] == [{"amount_minor": 120_000, "currency": "EUR"}]
    assert case["balances"]["invoices"][0]["days_overdue"] == 17


async def test_task_list_claim_and_complete_with_promise(svc: Svc) -> None:
    await ladder_to_manual(svc, "c1")
    await ladder_to_manual(svc, "c2")
    page = (await svc.http.get("/v1/tasks", params={"status": "open", "limit": 1})).json()
    assert len(page["items"]) == 1 and page["next_cursor"]
    page2 = (await svc.http.get("/v1/tasks", params={"status": "open", "cursor": page["next_cursor"]})).json()
    assert len(page2["items"]) == 1 and page2["items"][0]["task_id"] != page["items"][0]["task_id"]
    task = page["items"][0]
    r = await svc.http.post(f"/v1/tasks/{task['task_id']}/claim", json={"collector": "anna@example.com"})
    assert r.status_code == 200 and r.json()["status"] == "claimed"
    r = await svc.http.post(f"/v1/tasks/{task['task_id']}/claim", json={"collector": "bob@example.com"})
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem+json")
    body = {"outcome": "promise_to_pay",
            "promise_to_pay": {"date": "2026-03-10", "amount": {"amount_minor": 120_000, "currency": "EUR"}}}  # fmt: skip
    r = await svc.http.post(
        f"/v1/tasks/{task['task_id']}/complete", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "done" and r.json()["outcome"] == "promise_to_pay"
    again = await svc.http.post(
        f"/v1/tasks/{task['task_id']}/complete", json=body, headers={"Idempotency-Key": "k1"}
    )
    assert again.status_code == 200 and again.headers.get("idempotent-replayed") == "true"
    case = (await svc.http.get(f"/v1/cases/{task['client_id']}")).json()
    assert case["state"] == "paused" and case["pause"]["reason"] == "promise_to_pay"
    assert case["promise"]["amount"] == 120_000
    counts = (await svc.http.get("/v1/cases/counts")).json()
    assert counts["by_state"] == {"paused": 1, "manual_followup": 1}
    listed = (await svc.http.get("/v1/cases", params={"state": "paused"})).json()
    assert [c["client_id"] for c in listed["items"]] == [task["client_id"]]


async def test_hold_resume_and_payment_resolution(svc: Svc) -> None:
    await ladder_to_manual(svc, "c1")
    r = await svc.http.post("/v1/cases/c1/hold", json={"until": "2026-04-01", "note": "legal"})
    assert r.status_code == 200 and r.json()["state"] == "paused"
    assert (await svc.http.post("/v1/cases/c1/hold", json={"until": "2020-01-01"})).status_code == 409
    r = await svc.http.post("/v1/cases/c1/resume", json={})
    assert r.status_code == 200 and r.json()["state"] == "manual_followup"
    assert (await svc.http.post("/v1/cases/c1/resume", json={})).status_code == 409
    await svc.feed(paid("c1", "c1-1", 120_000, 0, svc.clock.now()))
    case = (await svc.http.get("/v1/cases/c1")).json()
    assert case["state"] == "resolved"
    assert case["tasks"][0]["status"] == "cancelled"


async def test_payment_plan_and_escalate(svc: Svc) -> None:
    await ladder_to_manual(svc, "c1")
    plan = {"installments": [{"due_date": "2026-03-20", "amount": {"amount_minor": 60_000, "currency": "EUR"}},
                             {"due_date": "2026-04-20", "amount": {"amount_minor": 60_000, "currency": "EUR"}}]}  # fmt: skip
    r = await svc.http.post("/v1/cases/c1/payment-plan", json=plan)
    assert r.status_code == 201 and r.json()["pause"]["reason"] == "payment_plan"
    assert (await svc.http.post("/v1/cases/c1/escalate")).status_code == 409  # paused
    await svc.http.post("/v1/cases/c1/resume", json={})
    r = await svc.http.post("/v1/cases/c1/escalate")
    assert r.status_code == 200 and r.json()["reached_step"] == 4  # the agency warning


async def test_bad_input_is_a_problem_and_changes_nothing(svc: Svc) -> None:
    await ladder_to_manual(svc, "c1")
    task = (await svc.http.get("/v1/tasks")).json()["items"][0]
    r = await svc.http.post(f"/v1/tasks/{task['task_id']}/complete", json={"outcome": "promise_to_pay"})
    assert r.status_code == 422 and r.json()["field"] == "promise_to_pay"
    r = await svc.http.post(f"/v1/tasks/{task['task_id']}/complete", json={"outcome": "teleport"})
    assert r.status_code == 422 and r.headers["content-type"].startswith("application/problem+json")
    r = await svc.http.post(f"/v1/tasks/{task['task_id']}/complete",
                            json={"outcome": "dispute", "dispute": {"invoice_ids": ["nope"], "reason": "x"}})  # fmt: skip
    assert r.status_code == 409
    r = await svc.http.post("/v1/tasks/nope/complete", json={"outcome": "skip"})
    assert r.status_code == 404
    r = await svc.http.post("/v1/cases/c1/promise-to-pay",
                            json={"date": "2026-03-10", "amount": {"amount_minor": -5, "currency": "EUR"}})  # fmt: skip
    assert r.status_code == 422
    for body, field in [
        ({"date": 0, "amount": {"amount_minor": 500, "currency": "EUR"}}, "date"),
        ({"date": "2026-03-20", "amount": {"amount_minor": "500", "currency": "EUR"}}, "amount.amount_minor"),
        (
            {"date": "2026-03-20", "amount": {"amount_minor": 500, "currency": "EUR"}, "grace_days": "3"},
            "grace_days",
        ),
    ]:
        r = await svc.http.post("/v1/cases/c1/promise-to-pay", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = await svc.http.post("/v1/cases/c1/hold", json={"until": 1767225600})
    assert r.status_code == 422 and r.json()["field"] == "until", r.text
    r = await svc.http.post("/v1/cases/unknown/hold", json={})
    assert r.status_code == 404
    reader = {"Authorization": f"Bearer {svc.keys['read']}"}
    assert (await svc.http.post("/v1/cases/c1/hold", json={}, headers=reader)).status_code == 403
    assert (
        await svc.http.post("/v1/admin/clock/advance", json={"days": 1}, headers=reader)
    ).status_code == 403
    case = (await svc.http.get("/v1/cases/c1")).json()
    assert case["state"] == "manual_followup" and case["tasks"][0]["status"] == "open"


async def test_clock_advance_moves_time(svc: Svc) -> None:
    before = (await svc.http.get("/v1/admin/clock")).json()["now"]
    r = await svc.http.post("/v1/admin/clock/advance", json={"days": 2})
    assert r.status_code == 200 and r.json()["now"] > before
    assert (await svc.http.post("/v1/admin/clock/advance", json={})).status_code == 422


async def test_a_failing_case_does_not_block_the_others(svc: Svc, monkeypatch: object) -> None:
    import pytest

    from dunning_svc import domain

    for cid in ("c1", "c2", "c3"):
        await svc.feed(client(cid), invoice(cid, f"{cid}-1", date(2026, 3, 12), 120_000))
    real = domain.on_tick

    def boom(case, ctx, now):  # type: ignore[no-untyped-def]
        if case.client_id == "c2":
            raise RuntimeError("bug for c2")
        return real(case, ctx, now)

    mp = pytest.MonkeyPatch()
    mp.setattr(domain, "on_tick", boom)
    try:
        svc.clock.set(T0 + timedelta(days=7))  # Monday 9 March: the "upcoming" reminders are due
        rt = svc.runtime
        assert rt.scheduler is not None
        while await rt.scheduler.run_once():
            pass
    finally:
        mp.undo()
    states = {cid: (await svc.http.get(f"/v1/cases/{cid}")).json() for cid in ("c1", "c2", "c3")}
    assert states["c1"]["state"] == "reminding" and states["c3"]["state"] == "reminding"
    assert states["c2"]["state"] == "current"
    assert states["c2"]["next_action_at"].startswith("2026-03-09T10:00")  # retried an hour later


async def test_clock_advance_does_not_exist_on_the_system_clock(sqlite_url: str) -> None:
    from dunning_svc.settings import ClockSettings

    s = await start_service(sqlite_url, clock=ClockSettings(mode="system"))
    try:
        r = await s.http.post("/v1/admin/clock/advance", json={"days": 1})
        assert r.status_code == 404
        assert (await s.http.get("/v1/admin/clock")).json()["mode"] == "system"
    finally:
        await s.http.aclose()
        await s.runtime.close()
