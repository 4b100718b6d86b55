"""The control plane under ``/_emulator``.

Each module in this package that defines ``routes(emulator) -> list[BaseRoute]`` contributes
routes (health, reset, samples, jobs, clock and keys live in :mod:`emulator.admin.core`), so a
new control-plane feature is one new module.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TYPE_CHECKING

from starlette.routing import BaseRoute

from emulator.admin.core import file_route

if TYPE_CHECKING:
    from emulator.app import Emulator

PREFIX = "/_emulator"


def admin_routes(emulator: Emulator) -> list[BaseRoute]:
    """Routes of every module of this package, :mod:`emulator.admin.core` first."""
    found: list[BaseRoute] = []
    others = sorted(info.name for info in pkgutil.iter_modules(__path__) if info.name != "core")
    names = ["core", *others]
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        routes = getattr(module, "routes", None)
        if routes is not None:
            found.extend(routes(emulator))
    return found


__all__ = ["PREFIX", "admin_routes", "file_route"]
