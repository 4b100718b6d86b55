"""Vendor adapters: each translates one vendor's wire format to the core and back.

Importing this package imports every adapter module, so each registers itself.
"""

from __future__ import annotations

import importlib
import pkgutil

from emulator.vendors.base import VendorAdapter


def load_all() -> dict[str, type[VendorAdapter]]:
    """Import every module in this package and return the registry (slug -> class)."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(VendorAdapter.registry)


__all__ = ["VendorAdapter", "load_all"]
