"""`arctl outbox republish` sends again the outbox rows of a time range (after a broker lost its data)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from sqlalchemy import MetaData
from typer.testing import CliRunner

from ar_events.db import make_engine, make_sessionmaker
from ar_events.envelope import decode, new_event
from ar_events.events import ClientRegistered, InvoiceIssued
from ar_events.outbox import enqueue
from ar_events.samples import sample_payload
from ar_events.settings import KafkaSettings
from ar_events.tables import add_plumbing_tables
from ar_ops import kafka_tools as kt
from ar_ops.cli import app


async def test_republish_sends_only_the_rows_in_the_range(
    kafka_settings: KafkaSettings, database_url: str
) -> None:
    engine = make_engine(database_url)
    metadata = MetaData()
    add_plumbing_tables(metadata)
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)
    now = datetime.now(UTC)
    old = new_event(ClientRegistered.model_validate(sample_payload(ClientRegistered)), source="t", time=now)
    recent = [
        new_event(InvoiceIssued.model_validate(sample_payload(InvoiceIssued)), source="t", time=now)
        for _ in range(2)
    ]
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker() as session, session.begin():
        await enqueue(session, old, now=now - timedelta(days=2))
        await enqueue(session, *recent, now=now - timedelta(minutes=5))
    await engine.dispose()

    argv = [
        "--bootstrap", kafka_settings.bootstrap_servers, "--prefix", kafka_settings.topic_prefix,
        "outbox", "republish", "--service", "invoice", "--since", "-1h", "--until", "now",
        "--database-url", database_url,
    ]  # fmt: skip
    result = await asyncio.to_thread(CliRunner().invoke, app, argv)
    assert result.exit_code == 0, result.output
    assert "re-published 2 outbox row(s)" in result.output
    records = await kt.read_all(kafka_settings, "invoice")
    assert sorted(decode(r.raw_value).id for r in records) == sorted(e.id for e in recent)
    assert {r.key for r in records} == {recent[0].subject}


async def test_republish_refuses_an_empty_range(kafka_settings: KafkaSettings) -> None:
    argv = ["outbox", "republish", "--service", "invoice", "--since", "now", "--until", "-1h"]
    result = await asyncio.to_thread(CliRunner().invoke, app, argv)
    assert result.exit_code == 2
    assert "--until must be after --since" in result.output
