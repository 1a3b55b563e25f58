"""Pure parts of the plumbing: error classification, datetime storage, record headers, broker probe."""

from __future__ import annotations

import gc
import socket
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError, RequestTimedOutError
from prometheus_client import CollectorRegistry, Histogram
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from ar_events.broker import free_port, kafka_answers
from ar_events.consumer import raise_gc_threshold
from ar_events.db import is_transient
from ar_events.metrics import observe_many
from ar_events.relay import record_headers
from ar_events.tables import UtcDateTime


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


@pytest.mark.parametrize(
    "exc",
    [
        ConnectionRefusedError(),
        TimeoutError(),
        OperationalError("SELECT 1", {}, Exception("database is locked")),
        ProgrammingError("SELECT 1", {}, _Orig("57P01")),  # pg_terminate_backend
        ProgrammingError("SELECT 1", {}, _Orig("40001")),  # serialization failure
        ProgrammingError("SELECT 1", {}, _Orig("08006")),  # connection failure
        KafkaConnectionError(),
        RequestTimedOutError(),
    ],
)
def test_unavailability_is_transient(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        ValueError("bad amount"),
        RuntimeError("handler bug"),
        IntegrityError("INSERT", {}, _Orig("23505")),
        ProgrammingError("SELECT 1", {}, _Orig("42P01")),
        MessageSizeTooLargeError(),
    ],
)
def test_errors_caused_by_the_record_or_the_code_are_not_transient(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_utc_datetime_stores_naive_utc_on_sqlite_and_reads_back_aware() -> None:
    col = UtcDateTime()
    paris = datetime(2026, 3, 2, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    stored = col.process_bind_param(paris, sqlite.dialect())
    assert stored == datetime(2026, 3, 2, 9, 30)
    assert col.process_result_value(stored, sqlite.dialect()) == datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
    assert col.process_bind_param(paris, postgresql.dialect()) == paris


def test_utc_datetime_refuses_naive_values() -> None:
    with pytest.raises(ValueError, match="naive"):
        UtcDateTime().process_bind_param(datetime(2026, 3, 2), sqlite.dialect())


def test_record_headers_carry_the_structured_content_type_and_stored_headers() -> None:
    row = SimpleNamespace(type="ar.invoice.issued.v1", headers={"tenant": "acme"})
    assert record_headers(row) == [("content-type", b"application/cloudevents+json"), ("tenant", b"acme")]
    bare = SimpleNamespace(type="ar.invoice.issued.v1", headers=None)
    assert record_headers(bare) == [("content-type", b"application/cloudevents+json")]
    assert not any(name.startswith("ce_") for name, _ in record_headers(row)), "ce_* headers mean binary mode"


def test_probe_says_no_when_nothing_listens() -> None:
    assert not kafka_answers("127.0.0.1", free_port(), timeout=0.2)


def test_probe_says_no_to_a_server_that_is_not_kafka() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert not kafka_answers("127.0.0.1", port, timeout=0.2)


def _exposition(histogram: Histogram) -> dict[str, float]:
    samples = (s for m in histogram.collect() for s in m.samples if not s.name.endswith("_created"))
    return {f"{s.name}{sorted(s.labels.items())}": s.value for s in samples}


@pytest.mark.parametrize("values", [[0.0004], [0.0005, 0.001, 0.0011, 0.3, 7.0, 0.0, 2.5, 2.5000001] * 50])
def test_observe_many_gives_the_histogram_that_observe_gives(values: list[float]) -> None:
    """observe_many updates the client's bucket counters directly: same buckets, count and sum as observe."""
    buckets = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
    one_by_one = Histogram("t_one", "t", ["x"], buckets=buckets, registry=CollectorRegistry())
    together = Histogram("t_one", "t", ["x"], buckets=buckets, registry=CollectorRegistry())
    for value in values:
        one_by_one.labels("a").observe(value)
    observe_many(together.labels("a"), values)
    expected, got = _exposition(one_by_one), _exposition(together)
    assert got.keys() == expected.keys()
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, rel=1e-12), name


def test_raise_gc_threshold_only_raises_generation_0() -> None:
    before = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        raise_gc_threshold(50_000)
        assert gc.get_threshold() == (50_000, 10, 10)
        raise_gc_threshold(1_000)  # never lowers
        assert gc.get_threshold() == (50_000, 10, 10)
        raise_gc_threshold(None)
        assert gc.get_threshold() == (50_000, 10, 10)
        gc.set_threshold(0, 10, 10)  # collector switched off by the application: stays off
        raise_gc_threshold(50_000)
        assert gc.get_threshold() == (0, 10, 10)
    finally:
        gc.set_threshold(*before)


@pytest.mark.parametrize(("field", "value"), [("pool_size", 0), ("max_overflow", -1)])
def test_pool_settings_refuse_impossible_sizes_naming_the_field(field: str, value: int) -> None:
    from pydantic import ValidationError

    from ar_events.settings import DatabaseSettings

    with pytest.raises(ValidationError) as caught:
        DatabaseSettings(url="postgresql+asyncpg://h/db", **{field: value})
    assert caught.value.errors()[0]["loc"] == (field,)
    assert DatabaseSettings(url="postgresql+asyncpg://h/db").max_overflow == 0
