"""Rules of the house that code review alone would let slip."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "emulator"


def test_core_and_matte_never_import_vendors() -> None:
    offenders = []
    for sub in ("core", "matte"):
        for path in (PACKAGE / sub).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                names: list[str] = []
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module]
                if any(n.startswith(("emulator.vendors", "emulator.app")) for n in names):
                    offenders.append(f"{path.relative_to(PACKAGE)}: {names}")
    assert offenders == []


def test_every_vendor_registers_itself() -> None:
    from emulator.vendors import load_all

    registry = load_all()
    assert {"pixazo", "apiframe"} <= set(registry)
    for slug, cls in registry.items():
        assert cls.slug == slug and cls.hosts and cls.source.startswith("../shared/vendor-docs/")
