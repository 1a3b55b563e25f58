"""The command examples in the README are exactly what the consumer accepts."""

from __future__ import annotations

import re
from pathlib import Path

from ar_events.envelope import decode
from ar_events.events import Command

README = Path(__file__).resolve().parents[2] / "README.md"


def test_every_command_example_decodes() -> None:
    text = README.read_text()
    block = text.split("<!-- commands:begin -->")[1].split("<!-- commands:end -->")[0]
    examples = re.findall(r"```json\n(.*?)\n```", block, re.S)
    types = set()
    for raw in examples:
        env = decode(raw.encode())
        assert isinstance(env.data, Command) and env.subject == env.data.client_id
        types.add(env.type)
    assert len(types) == 6
