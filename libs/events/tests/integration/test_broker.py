"""The embedded broker launcher: context manager and CLI."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from ar_events.broker import EmbeddedBroker, free_port, kafka_answers


def test_embedded_broker_answers_kafka_while_running_and_not_after_stop() -> None:
    with EmbeddedBroker(0) as broker:
        assert kafka_answers(broker.host, broker.port)
        with pytest.raises(RuntimeError, match="already answers"):
            EmbeddedBroker(broker.port).start()
    assert not kafka_answers(broker.host, broker.port, timeout=0.3)
    broker.stop()  # twice is fine


async def test_embedded_broker_is_an_async_context_manager() -> None:
    async with EmbeddedBroker(0) as broker:
        assert kafka_answers(broker.host, broker.port)
    assert broker.process is None


def test_cli_starts_on_the_given_port_and_stops_cleanly_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ar_events.broker", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert f"127.0.0.1:{port}" in line and "ready" in line
        assert kafka_answers("127.0.0.1", port)
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(10)
    assert code == 0
    deadline = time.monotonic() + 5
    while kafka_answers("127.0.0.1", port, timeout=0.2) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not kafka_answers("127.0.0.1", port, timeout=0.2)
