"""Direction of dependencies (style.md section 2), checked on the source: fails loudly when broken.

- a service never imports another service; libs never import services;
- ``domain/`` imports only the standard library, ``ar_events`` (and pydantic, the type system of ``ar_events``)
  and its own package: no SQLAlchemy, FastAPI, aiokafka, httpx, settings or other I/O.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {
    p.name.replace("-", "_"): p / "src" / p.name.replace("-", "_")
    for p in (ROOT / "services").iterdir()
    if p.is_dir()
}
LIBS = {p.name: p for p in (ROOT / "libs").glob("*/src/*") if p.is_dir() and (p / "__init__.py").exists()}
STDLIB = set(sys.stdlib_module_names) | {"__future__"}


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def _violations(root: Path, allowed: set[str], forbidden: set[str]) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        for line, module in _imports(path):
            top = module.split(".")[0]
            if top in forbidden or (allowed and top not in allowed):
                found.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return found


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_a_service_never_imports_another_service(service: str) -> None:
    others = set(SERVICES) - {service}
    assert _violations(SERVICES[service], set(), others) == []


@pytest.mark.parametrize("lib", sorted(LIBS))
def test_libs_never_import_services(lib: str) -> None:
    assert _violations(LIBS[lib], set(), set(SERVICES)) == []


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_domain_is_pure(service: str) -> None:
    domain = SERVICES[service] / "domain"
    if not domain.exists():
        pytest.skip(f"{service} has no domain package")
    allowed = STDLIB | {"ar_events", "pydantic", service}
    bad = _violations(domain, allowed, set())
    io_modules = {"asyncio", "socket", "sqlite3", "subprocess", "http", "urllib", "logging"}
    bad += _violations(domain, set(), io_modules)
    assert bad == []


def test_the_check_catches_a_forbidden_import(tmp_path: Path) -> None:
    (tmp_path / "x.py").write_text("import sqlalchemy\nfrom invoice_svc import api\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(_violations(tmp_path, STDLIB | {"ar_events"}, set())) == 2
    finally:
        ROOT = saved
