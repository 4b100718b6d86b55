"""rmbg-emulator: an offline stand-in for hosted Bria RMBG 2.0 background-removal APIs."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
