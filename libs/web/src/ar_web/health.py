"""Liveness and readiness: ``/healthz`` says the process answers, ``/readyz`` runs the readiness checks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ar_web.problems import problem_response

ReadinessCheck = Callable[[], Awaitable[None]]

logger = logging.getLogger("ar_web.health")


async def run_checks(checks: Mapping[str, ReadinessCheck], limit_s: float) -> dict[str, str]:
    """Run every check concurrently; ``{"name": "ok" | "failed: reason"}``."""

    async def one(check: ReadinessCheck) -> str:
        try:
            await asyncio.wait_for(check(), limit_s)
        except TimeoutError:
            return f"failed: timed out after {limit_s:g}s"
        except Exception as exc:
            return f"failed: {type(exc).__name__}: {exc}"[:300]
        return "ok"

    names = list(checks)
    results = await asyncio.gather(*(one(checks[name]) for name in names))
    return dict(zip(names, results, strict=True))


def healthz_endpoint() -> Callable[[Request], Awaitable[Response]]:
    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "alive"})

    return healthz


def readyz_endpoint(
    checks: Mapping[str, ReadinessCheck], timeout: float
) -> Callable[[Request], Awaitable[Response]]:
    async def readyz(request: Request) -> Response:
        results = await run_checks(checks, timeout)
        failed = [name for name, result in results.items() if result != "ok"]
        if failed:
            logger.warning("not ready", extra={"checks": results})
            extra: dict[str, Any] = {"checks": results, "failed": failed}
            return problem_response(
                503, "Not ready", f"Failed readiness checks: {', '.join(failed)}", extra=extra
            )
        return JSONResponse({"status": "ready", "checks": results})

    return readyz


def database_check(engine: AsyncEngine) -> ReadinessCheck:
    """Readiness: the database answers ``SELECT 1``."""

    async def check() -> None:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))

    return check


def tcp_check(bootstrap_servers: str) -> ReadinessCheck:
    """Readiness: at least one of ``host:port,host:port`` accepts a TCP connection (e.g. the Kafka bootstrap)."""
    targets = []
    for item in bootstrap_servers.split(","):
        host, _, port = item.strip().rpartition(":")
        targets.append((host.strip("[]") or "127.0.0.1", int(port)))

    async def check() -> None:
        errors = []
        for host, port in targets:
            try:
                _, writer = await asyncio.open_connection(host, port)
            except OSError as exc:
                errors.append(f"{host}:{port} {exc.strerror or exc}")
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise ConnectionError("; ".join(errors))

    return check


kafka_check = tcp_check
