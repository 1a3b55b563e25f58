"""Idempotency-Key: replay, conflict, and concurrent duplicates resolved by the primary key."""

from __future__ import annotations

import asyncio

from ..conftest import Harness

BODY = {"name": "widget", "lines": [{"sku": "a", "quantity": 2}]}


def _h(h: Harness, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {h.write_key}", "Idempotency-Key": key}


async def test_same_key_same_body_replays_the_stored_response(harness: Harness) -> None:
    first = await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-1"))
    second = await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-1"))
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second.headers["location"] == first.headers["location"]
    assert second.headers["idempotent-replayed"] == "true"
    assert await harness.count_things() == 1


async def test_same_key_other_body_is_409(harness: Harness) -> None:
    assert (await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-2"))).status_code == 201
    other = {**BODY, "name": "other"}
    r = await harness.client.post("/v1/things", json=other, headers=_h(harness, "k-2"))
    assert r.status_code == 409
    assert r.json()["field"] == "Idempotency-Key"
    assert await harness.count_things() == 1


async def test_different_keys_create_twice(harness: Harness) -> None:
    await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-3"))
    await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-4"))
    assert await harness.count_things() == 2


async def test_failed_request_does_not_burn_the_key(harness: Harness) -> None:
    bad = {**BODY, "name": "forbidden"}
    assert (await harness.client.post("/v1/things", json=bad, headers=_h(harness, "k-5"))).status_code == 409
    assert (await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-5"))).status_code == 201


async def test_concurrent_duplicates_create_once(harness: Harness) -> None:
    harness.state["hold"] = 0.2
    results = await asyncio.gather(
        *(harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-c")) for _ in range(4))
    )
    assert [r.status_code for r in results] == [201] * 4, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert await harness.count_things() == 1


async def test_concurrent_duplicates_with_other_bodies_conflict(harness: Harness) -> None:
    harness.state["hold"] = 0.2
    a, b = await asyncio.gather(
        harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-d")),
        harness.client.post("/v1/things", json={**BODY, "name": "zzz"}, headers=_h(harness, "k-d")),
    )
    assert sorted([a.status_code, b.status_code]) == [201, 409]
    assert await harness.count_things() == 1


async def test_duplicate_takes_over_when_the_first_request_rolls_back(harness: Harness) -> None:
    harness.state["hold"] = 0.3
    harness.state["fail_once"] = True
    first = asyncio.create_task(harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-r")))
    await asyncio.sleep(0.1)  # the first holds the reservation, uncommitted, when the second arrives
    second = await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-r"))
    assert (await first).status_code == 503
    assert second.status_code == 201, second.text
    assert "idempotent-replayed" not in second.headers
    assert await harness.count_things() == 1
    third = await harness.client.post("/v1/things", json=BODY, headers=_h(harness, "k-r"))
    assert third.json() == second.json()
