"""Rules of the house that code review alone would let slip."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "emulator"


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
        assert cls.slug == slug and cls.hosts and cls.source == f"docs/vendors/{slug}.md"


def test_every_vendor_cites_its_page_in_the_repository() -> None:
    """An adapter's ``source`` is its page in ``docs/vendors/``, which names the vendor's public
    documentation by URL; the adapter's module docstring cites the page too."""
    import sys

    from emulator.vendors import load_all

    for cls in load_all().values():
        page = REPO / cls.source
        assert page.is_file(), cls.source
        assert "## Public documentation" in page.read_text(encoding="utf-8"), cls.source
        assert re.search(r"https://\S+", page.read_text(encoding="utf-8")), cls.source
        doc = sys.modules[cls.__module__].__doc__ or ""
        assert cls.source in doc, f"{cls.__module__} does not cite {cls.source}"


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its ``__init__``)."""
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports, by any import statement anywhere in it
    (``TYPE_CHECKING`` blocks and function bodies included: a cycle there is still a cycle
    of the design, and mypy follows it)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges |= {a.name for a in node.names if a.name in modules}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in modules:
                        edges.add(full)
                    elif node.module in modules:
                        edges.add(node.module)
        edges.discard(name)
        graph[name] = edges
    return graph


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


#: Modules that wire or serve the application: a vendor adapter reaches none of them.
_ABOVE_VENDORS = ("emulator.app", "emulator.admin", "emulator.middleware", "emulator.cli",
                  "emulator.testing", "emulator.admingate")


def test_vendors_import_nothing_above_them() -> None:
    """Adapters see the core through their narrow port (``VendorPort`` in vendors/base.py):
    no module of ``emulator/vendors`` imports the app, the control plane or the middleware,
    not even under ``TYPE_CHECKING``."""
    modules = _modules()
    offenders = []
    for name in modules:
        if not name.startswith("emulator.vendors"):
            continue
        tree = ast.parse(modules[name].read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            hits = [n for n in names if n.startswith(_ABOVE_VENDORS)]
            if hits:
                offenders.append(f"{name}: {hits}")
    assert offenders == []


def test_no_import_cycle_runs_through_the_vendor_adapters() -> None:
    """Nothing a vendor module imports, directly or not, imports the app, the control plane
    or the middleware: the cycle app -> admin -> middleware -> guard -> vendors ->
    vendors.base -> app is gone, and no other runs through an adapter."""
    graph = _import_graph()
    assert "emulator.vendors.fal" in graph  # fal is a package, and found as one
    for name in graph:
        if name.startswith("emulator.vendors"):
            above = sorted(m for m in _reachable(graph, name) if m.startswith(_ABOVE_VENDORS))
            assert above == [], f"{name} reaches {above}"
