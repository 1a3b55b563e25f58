"""Root conftest: shared infrastructure fixtures and folder-based markers."""

from __future__ import annotations

import pytest

pytest_plugins = ["ar_events.testing"]

_FOLDER_MARKERS = ("unit", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test by the folder it lives in (tests/unit -> unit, ...)."""
    for item in items:
        parts = item.path.parts
        for marker in _FOLDER_MARKERS:
            if marker in parts:
                item.add_marker(getattr(pytest.mark, marker))
