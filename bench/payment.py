"""payment-svc: verified Stripe-style webhooks accepted per second on one uvicorn worker, with PostgreSQL.

The service runs as a real process (``python -m payment_svc api``: one uvicorn worker, free port) on a fresh
PostgreSQL database. Each webhook is a distinct ``payment_intent.succeeded`` event, signed beforehand with the
Stripe scheme; accepting it means: verify the HMAC on the raw body, record the raw webhook, insert the payment
and its outbox row in one transaction, commit, answer 200. The baseline is a trivial JSON endpoint
(``GET /healthz``) on the same worker in the same run, driven by the same client. Target: >= 50% of it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

import asyncpg
import httpx

from ar_events.broker import free_port
from bench.procstat import cpu_seconds
from bench.rawhttp import RawHttp
from payment_svc.domain.signatures import sign_stripe

REQUESTS = int(os.environ.get("BENCH_PAYMENT_REQUESTS", "3000"))
CONCURRENCY = int(os.environ.get("BENCH_PAYMENT_CONCURRENCY", "16"))
WARMUP = 300
SECRET = "whsec_bench_secret_0123456789abcdef"
PG = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _body(i: int) -> bytes:
    doc = {
        "id": f"evt_{uuid.uuid4().hex}",
        "object": "event",
        "created": int(time.time()),
        "type": "payment_intent.succeeded",
        "data": {
            "object": {
                "id": f"pi_{uuid.uuid4().hex}",
                "object": "payment_intent",
                "amount": 1000 + i,
                "amount_received": 1000 + i,
                "currency": "eur",
                "metadata": {"client_id": f"cli_{i % 200}", "invoice_ids": f"inv_{i}"},
                "payment_method_types": ["card"],
            }
        },
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def _drive(
    client: RawHttp, requests: list[tuple[str, str, bytes | None, dict[str, str]]]
) -> dict[str, float]:
    latencies: list[float] = []
    queue = list(reversed(requests))

    async def worker() -> None:
        while queue:
            method, path, body, headers = queue.pop()
            t0 = time.perf_counter()
            status, content = await client.request(method, path, body, headers)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                raise RuntimeError(f"{method} {path}: {status} {content[:200]!r}")

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "rate": len(latencies) / elapsed,
        "p50_ms": 1000 * latencies[len(latencies) // 2],
        "p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
    }


_cpu_seconds = cpu_seconds  # the server's CPU per request


async def _measure(
    client: RawHttp, pid: int, requests: list[tuple[str, str, bytes | None, dict[str, str]]]
) -> dict[str, float]:
    before, own = _cpu_seconds(pid), time.process_time()
    out = await _drive(client, requests)
    out["cpu_ms"] = 1000 * (_cpu_seconds(pid) - before) / len(requests)
    out["loadgen_cpu_ms"] = 1000 * (time.process_time() - own) / len(requests)
    return out


def _webhooks(n: int) -> list[tuple[str, str, bytes | None, dict[str, str]]]:
    out = []
    for i in range(n):
        body = _body(i)
        headers = {
            "Stripe-Signature": sign_stripe(body, SECRET, int(time.time())),
            "Content-Type": "application/json",
        }
        out.append(("POST", "/v1/webhooks/stripe", body, headers))
    return out


async def main() -> dict[str, Any]:
    name = f"bench_payment_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(PG)
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = PG.replace("postgresql://", "postgresql+asyncpg://").rsplit("/", 1)[0] + f"/{name}"
    port = free_port()
    env = {
        **os.environ,
        "PAYMENT_DATABASE__URL": url,
        "PAYMENT_HTTP__PORT": str(port),
        "PAYMENT_ACCOUNTS": json.dumps({"stripe": {"kind": "stripe", "secrets": [SECRET]}}),
        "PAYMENT_LOG_LEVEL": "WARNING",
    }
    proc: subprocess.Popen[bytes] | None = None
    try:
        migrate = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "payment_svc", "migrate", env=env
        )
        if await migrate.wait() != 0:
            raise RuntimeError("migrate failed")
        # A long-lived server, stopped in the finally block below.
        proc = subprocess.Popen(  # noqa: ASYNC220
            [sys.executable, "-m", "payment_svc", "api"], env=env, stderr=subprocess.DEVNULL
        )
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}", timeout=30
        ) as ready:  # readiness only
            for _ in range(600):
                try:
                    if (await ready.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.1)
            else:
                raise RuntimeError("payment-svc did not start within 60 s")
        # The load goes through RawHttp: with httpx the load generator, not the server, set both rates.
        client = RawHttp(f"http://127.0.0.1:{port}")
        try:
            trivial = [("GET", "/healthz", None, {})]
            await _drive(client, trivial * WARMUP)
            await _drive(client, _webhooks(WARMUP))
            signed = _webhooks(REQUESTS)
            base = await _measure(client, proc.pid, trivial * REQUESTS)
            hooks = await _measure(client, proc.pid, signed)
            base2 = await _measure(client, proc.pid, trivial * REQUESTS)
        finally:
            await client.aclose()
        conn = await asyncpg.connect(PG.rsplit("/", 1)[0] + f"/{name}")
        stored = await conn.fetchval("SELECT count(*) FROM payment")
        queued = await conn.fetchval("SELECT count(*) FROM outbox")
        await conn.close()
        assert stored == queued == WARMUP + REQUESTS, (stored, queued)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        admin = await asyncpg.connect(PG)
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()
    if base2["rate"] > base["rate"]:
        base = base2
    baseline = base["rate"]
    figure = {
        "name": "verified Stripe webhooks accepted (1 uvicorn worker, PostgreSQL)",
        "value": round(hooks["rate"]),
        "unit": "req/s",
        "baseline_name": "GET /healthz (trivial JSON) on the same worker",
        "baseline": round(baseline),
        "ratio": round(hooks["rate"] / baseline, 2),
        "target": 0.5,
    }
    print(
        f"{figure['name']}: {figure['value']:,} req/s (p50 {hooks['p50_ms']:.1f} ms, p99 {hooks['p99_ms']:.1f} ms)\n"
        f"  vs {figure['baseline_name']}: {figure['baseline']:,} req/s "
        f"(p50 {base['p50_ms']:.1f} ms, p99 {base['p99_ms']:.1f} ms)  ratio {figure['ratio']} (target 0.5)\n"
        f"  server CPU per request: webhook {hooks['cpu_ms']:.2f} ms, trivial {base['cpu_ms']:.2f} ms "
        f"(CPU-bound ratio {base['cpu_ms'] / hooks['cpu_ms']:.2f}); load average {os.getloadavg()[0]:.1f}\n"
        f"  load generator CPU per request: webhook {hooks['loadgen_cpu_ms']:.2f} ms, trivial {base['loadgen_cpu_ms']:.2f} ms\n"
        f"  {REQUESTS} requests each, {CONCURRENCY} concurrent connections, every payment and outbox row stored"
    )
    return {
        "figures": [figure],
        "webhook_p50_ms": round(hooks["p50_ms"], 2),
        "webhook_p99_ms": round(hooks["p99_ms"], 2),
        "baseline_p50_ms": round(base["p50_ms"], 2),
        "baseline_p99_ms": round(base["p99_ms"], 2),
        "webhook_server_cpu_ms": round(hooks["cpu_ms"], 3),
        "baseline_server_cpu_ms": round(base["cpu_ms"], 3),
        "load_average": round(os.getloadavg()[0], 1),
        "requests": REQUESTS,
        "concurrency": CONCURRENCY,
    }


if __name__ == "__main__":
    asyncio.run(main())
