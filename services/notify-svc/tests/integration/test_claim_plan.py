"""The dispatcher's claim stays an index range however PostgreSQL plans it.

asyncpg prepares every statement, and after five executions PostgreSQL may switch a prepared statement to its
generic plan, planned without the parameter values. A status compared with a bound parameter cannot be matched
to the partial index ``ix_notification_due`` (``WHERE status = 'pending'``) in that plan, which then read and
sorted every notification ever sent on each claim.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect

from ar_events.testing import asyncpg_dsn
from notify_svc.repository import claim_due_statement, expired_leases_statement

from .conftest import make_settings, migrated

pytestmark = pytest.mark.asyncio

NOW = datetime(2026, 3, 16, 9, 0, tzinfo=UTC)


def _literal(value: Any) -> str:
    if isinstance(value, datetime):
        return f"'{value.isoformat()}'::timestamptz"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _arguments(stmt: Any) -> str:
    compiled = stmt.compile(dialect=asyncpg_dialect())
    return ", ".join(_literal(compiled.params[key]) for key in compiled.positiontup or ())


async def _generic_plan(conn: asyncpg.Connection, name: str, stmt: Any) -> str:
    await conn.execute(f"PREPARE {name} AS {stmt.compile(dialect=asyncpg_dialect())}")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    rows = await conn.fetch(f"EXPLAIN EXECUTE {name}({_arguments(stmt)})")
    return "\n".join(r[0] for r in rows)


async def test_the_claims_generic_plans_use_the_partial_indexes(postgres_url: str) -> None:
    await migrated(make_settings(postgres_url))
    conn = await asyncpg.connect(asyncpg_dsn(postgres_url))
    try:
        # 5,000 sent notifications and 3 pending ones, with fresh statistics: the index is clearly cheaper
        await conn.execute(
            """INSERT INTO notification (id, notification_key, channel, recipient, recipient_name, client_id,
                client_name, kind, template, language, sender_kind, payload, source_event_id, source_event_type,
                status, attempts, generation, recoveries, next_attempt_at, created_at, updated_at, sent_at)
            SELECT 'n' || g, 'k' || g, 'email', 'ap@example.com', 'AP', 'cli_' || (g % 100), 'Client', 'reminder',
                'overdue-1', 'en', 'ar_mailbox', $1::json, 'evt' || g, 'ar.dunning.reminder_requested.v1',
                CASE WHEN g <= 3 THEN 'pending' ELSE 'sent' END, 1, 0, 0, $2::timestamptz - interval '1 day',
                $2, $2, CASE WHEN g <= 3 THEN NULL ELSE $2::timestamptz END
            FROM generate_series(1, 5000) AS g""",
            json.dumps({}),
            NOW,
        )
        await conn.execute("ANALYZE notification")
        plan = await _generic_plan(conn, "claim", claim_due_statement(NOW, NOW + timedelta(minutes=5), 50))
        assert "ix_notification_due" in plan, plan
        assert "Seq Scan on notification" not in plan, plan
        plan = await _generic_plan(conn, "expired", expired_leases_statement(NOW, 500))
        assert "ix_notification_lease" in plan, plan
        assert "Seq Scan on notification" not in plan, plan
        # and it claims exactly the pending rows
        await conn.execute("RESET plan_cache_mode")
        claimed = await conn.fetch(
            f"EXECUTE claim({_arguments(claim_due_statement(NOW, NOW + timedelta(minutes=5), 50))})"
        )
        assert sorted(r["id"] for r in claimed) == ["n1", "n2", "n3"]
        assert {r["status"] for r in claimed} == {"sending"}
    finally:
        await conn.close()
