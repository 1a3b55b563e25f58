"""The README's configuration table lists every setting of every service, with its current default.

Regenerate the table with ``uv run python tests/contract/test_readme.py`` and paste it over the old one.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("invoice_svc", "payment_svc", "dunning_svc", "notify_svc")


def _settings(module: str) -> type[BaseModel]:
    cls: type[BaseModel] = importlib.import_module(f"{module}.settings").Settings
    return cls


def _default(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return None


def _rows(model: type[BaseModel], prefix: str, default_obj: Any = None) -> Iterator[tuple[str, str, str]]:
    for name, field in model.model_fields.items():
        value = getattr(default_obj, name) if default_obj is not None else _default(field)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _rows(annotation, f"{prefix}{name.upper()}__", value)
            continue
        if isinstance(value, SecretStr):
            shown = "(secret)"
        elif value is None or value == "":
            shown = "-"
        elif isinstance(value, (list, tuple, set, frozenset)):
            shown = ", ".join(str(v) for v in value) or "-"
        else:
            shown = str(value)
        yield f"{prefix}{name.upper()}", shown, (field.description or "").replace("|", "/")


def settings_rows() -> list[tuple[str, str, str]]:
    rows: list[tuple[str, str, str]] = []
    for module in SERVICES:
        cls = _settings(module)
        prefix = str(cls.model_config.get("env_prefix", ""))
        rows.extend(_rows(cls, prefix))
    return rows


def table() -> str:
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{name}` | `{default}` | {desc} |" for name, default, desc in settings_rows()]
    return "\n".join(lines)


README = (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize(("name", "default", "desc"), settings_rows(), ids=lambda v: str(v)[:60])
def test_every_setting_is_in_the_readme_with_its_default(name: str, default: str, desc: str) -> None:
    row = re.search(rf"^\| `{re.escape(name)}` \| `([^`]*)` \|", README, re.MULTILINE)
    assert row, f"{name} is missing from the README's configuration table (regenerate it)"
    assert row.group(1) == default, f"{name}: README says {row.group(1)!r}, the code says {default!r}"


def test_the_readme_names_no_setting_that_does_not_exist() -> None:
    known = {name for name, _, _ in settings_rows()}
    listed = set(
        re.findall(r"^\| `((?:INVOICE|PAYMENT|DUNNING|NOTIFY)_[A-Z0-9_]+)` \|", README, re.MULTILINE)
    )
    assert listed - known == set()


if __name__ == "__main__":
    print(table())
