"""A stand-in service for the stack tests: the same command line as the real services, a tiny app.

``python -m standin_svc migrate | api-key ... | account add NAME --kind K --secret S | all``; settings come
from ``$STANDIN_PREFIX`` + ``DATABASE__URL`` / ``KAFKA__BOOTSTRAP_SERVERS`` / ``HTTP__PORT``, as the stack
passes them to the real services. ``STANDIN_FAIL=migrate`` makes migrate fail (start-up error tests).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import sys
from typing import Annotated

import uvicorn
from fastapi import Depends
from sqlalchemy import Column, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ar_events.db import make_engine, make_sessionmaker
from ar_web import Principal, add_web_tables, authenticated, create_service_app, database_check, kafka_check
from ar_web.cli import add_api_key_parser, run_api_key_command

PREFIX = os.environ.get("STANDIN_PREFIX", "STANDIN_")
metadata = MetaData()
add_web_tables(metadata)
account = Table(
    "account",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("kind", String(16)),
    Column("fp", String(64)),
)


def env(name: str, default: str = "") -> str:
    return os.environ.get(PREFIX + name, default)


def engine() -> AsyncEngine:
    return make_engine(env("DATABASE__URL"))


async def migrate() -> None:
    if os.environ.get("STANDIN_FAIL") == "migrate":
        raise SystemExit("migrate: refusing on purpose (STANDIN_FAIL=migrate)")
    eng = engine()
    async with eng.begin() as conn:
        await conn.run_sync(metadata.create_all)
    await eng.dispose()


async def add_account(name: str, kind: str, secret: str) -> None:
    eng = engine()
    async with eng.begin() as conn:
        await conn.execute(account.delete().where(account.c.name == name))
        await conn.execute(
            account.insert().values(name=name, kind=kind, fp=hashlib.sha256(secret.encode()).hexdigest())
        )
    await eng.dispose()


def serve() -> None:
    eng = engine()
    sessionmaker = make_sessionmaker(eng)
    app = create_service_app(
        "standin",
        "0",
        readiness={"database": database_check(eng), "kafka": kafka_check(env("KAFKA__BOOTSTRAP_SERVERS"))},
        sessionmaker=sessionmaker,
    )

    @app.get("/v1/accounts")
    async def accounts(principal: Annotated[Principal, Depends(authenticated())]) -> dict[str, str]:
        async with sessionmaker() as session:
            rows = (await session.execute(select(account))).all()
        return {r.name: r.fp for r in rows}

    uvicorn.run(app, host="127.0.0.1", port=int(env("HTTP__PORT")), log_level="warning")


def main() -> int:
    parser = argparse.ArgumentParser(prog="standin_svc")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("migrate")
    sub.add_parser("all")
    add_api_key_parser(sub)
    acc = sub.add_parser("account").add_subparsers(dest="action", required=True).add_parser("add")
    acc.add_argument("name")
    acc.add_argument("--kind", required=True)
    acc.add_argument("--secret", required=True)
    args = parser.parse_args()
    if args.command == "migrate":
        asyncio.run(migrate())
    elif args.command == "api-key":
        return run_api_key_command(args, lambda: make_sessionmaker(engine()))
    elif args.command == "account":
        asyncio.run(add_account(args.name, args.kind, args.secret))
    else:
        serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
