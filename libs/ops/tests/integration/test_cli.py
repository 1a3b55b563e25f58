"""`arctl` end to end through its command line (typer's runner) against the real broker."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from ar_events.envelope import decode
from ar_events.events import EscalateNow, PauseDunning, ResumeDunning
from ar_events.settings import KafkaSettings
from ar_ops import kafka_tools as kt
from ar_ops.cli import app
from ar_ops.mail import MailDirHandler

runner = CliRunner()


async def arctl(kafka: KafkaSettings, *args: str) -> tuple[int, str]:
    argv = ["--bootstrap", kafka.bootstrap_servers, "--prefix", kafka.topic_prefix, *args]
    result = await asyncio.to_thread(runner.invoke, app, argv)
    return result.exit_code, result.output


async def test_case_commands_produce_typed_commands(kafka_settings: KafkaSettings) -> None:
    code, out = await arctl(
        kafka_settings, "case", "pause", "c-7", "--until", "2026-12-24", "--note", "holiday"
    )
    assert code == 0, out
    assert "ar.dunning.command.pause.v1" in out
    assert (await arctl(kafka_settings, "case", "resume", "c-7"))[0] == 0
    assert (await arctl(kafka_settings, "case", "escalate", "c-7", "--by", "alice"))[0] == 0
    records = sorted(await kt.read_all(kafka_settings, "commands"), key=lambda r: r.offset)
    payloads = [decode(r.raw_value).data for r in records]
    assert [type(p) for p in payloads] == [PauseDunning, ResumeDunning, EscalateNow]
    pause = payloads[0]
    assert isinstance(pause, PauseDunning)
    assert str(pause.until) == "2026-12-24" and pause.note == "holiday"
    assert payloads[2].requested_by == "alice"
    assert {r.key for r in records} == {"c-7"}


async def test_bad_pause_date_is_a_usage_error_and_sends_nothing(kafka_settings: KafkaSettings) -> None:
    code, out = await arctl(kafka_settings, "case", "pause", "c-1", "--until", "next week")
    assert code == 2
    assert "YYYY-MM-DD" in out
    assert await kt.read_all(kafka_settings, "commands") == []


async def test_tail_prints_filtered_json_lines(kafka_settings: KafkaSettings) -> None:
    await kt.send_command(kafka_settings, PauseDunning(client_id="c-1"))
    await kt.send_command(kafka_settings, ResumeDunning(client_id="c-2"))
    code, out = await arctl(
        kafka_settings, "tail", "commands", "--from-beginning", "--exit", "--raw", "--client", "c-2"
    )
    assert code == 0, out
    lines = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [line["value"]["type"] for line in lines] == [ResumeDunning.TYPE]


async def test_topics_and_lag_commands_render(kafka_settings: KafkaSettings) -> None:
    code, out = await arctl(kafka_settings, "topics")
    assert code == 0, out
    assert "ar.dunning.commands" in out
    code, out = await arctl(kafka_settings, "lag", "--group", f"{kafka_settings.topic_prefix}nobody")
    assert code == 0, out
    assert "no committed offsets" in out


async def test_dlq_replay_requires_offset_or_all(kafka_settings: KafkaSettings) -> None:
    code, out = await arctl(kafka_settings, "dlq", "replay", "invoice")
    assert code == 2
    code, out = await arctl(kafka_settings, "dlq", "replay", "invoice", "--offset", "5")
    assert code == 1
    assert "no dead letter at offset 5" in out
    code, out = await arctl(kafka_settings, "dlq", "list", "invoice")
    assert code == 0 and "0 dead letter(s)" in out


async def test_mail_list_and_show(tmp_path: Path) -> None:
    handler = MailDirHandler(tmp_path)
    handler.write(
        b"From: ar@example.com\r\nTo: c@example.org\r\nSubject: Reminder\r\n\r\nPlease pay 10 EUR.\r\n"
    )
    result = await asyncio.to_thread(runner.invoke, app, ["mail", "list", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "Reminder" in result.output
    result = await asyncio.to_thread(runner.invoke, app, ["mail", "show", "1", "--dir", str(tmp_path)])
    assert result.exit_code == 0 and "Please pay 10 EUR." in result.output
    result = await asyncio.to_thread(runner.invoke, app, ["mail", "show", "2", "--dir", str(tmp_path)])
    assert result.exit_code == 1 and "no message number 2" in result.output
