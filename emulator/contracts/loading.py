"""Finding and loading the contracts: the directory they are read from, their names and YAML
text, and the compiled :class:`~emulator.contracts.document.Contract` of each, cached.

Where they are found (first hit wins): ``$RMBG_EMULATOR_CONTRACTS``; ``contracts/`` at the
root of a source checkout (beside ``pyproject.toml``); ``emulator/_contracts/`` in an
installed package (``setup.py``'s ``build_py`` copies them there).
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from emulator.contracts.document import Contract
from emulator.contracts.errors import ContractError
from emulator.contracts.registry import CONTROL_PLANE, fill_registry_enums

ENV_DIR = "RMBG_EMULATOR_CONTRACTS"
#: The ``emulator`` package's directory (this module is ``emulator/contracts/loading.py``).
PACKAGE_DIR = Path(__file__).resolve().parents[1]
SOURCE_DIR = PACKAGE_DIR.parent / "contracts"
PACKAGED_DIR = PACKAGE_DIR / "_contracts"


def contracts_dir() -> Path:
    """The directory holding the ``*.yaml`` contracts (see the module docstring for the order).

    Raises:
        ContractError: none of the places holds a contract.
    """
    env = os.environ.get(ENV_DIR)
    if env:
        return Path(env)
    if (PACKAGE_DIR.parent / "pyproject.toml").is_file() and any(SOURCE_DIR.glob("*.yaml")):
        return SOURCE_DIR
    if any(PACKAGED_DIR.glob("*.yaml")):
        return PACKAGED_DIR
    raise ContractError(
        f"no contracts found in {SOURCE_DIR} or {PACKAGED_DIR} (set ${ENV_DIR} to a directory)")


def names() -> list[str]:
    """Names of every contract (file stems), sorted: ``["apiframe", "emulator", ...]``."""
    return sorted(p.stem for p in contracts_dir().glob("*.yaml"))


def path_of(name: str) -> Path:
    """The file of contract ``name``.

    Raises:
        ContractError: no such contract (the message lists the known ones).
    """
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]*", name):
        raise ContractError(f"no contract {name!r}")
    path = contracts_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ContractError(f"no contract {name!r}; known: {', '.join(names())}")
    return path


def text(name: str, catalog: Mapping[str, Iterable[str]] | None = None) -> str:
    """The YAML text of contract ``name``; the control plane's with the enums filled from the
    registries (:func:`~emulator.contracts.registry.fill_registry_enums`, with ``catalog``:
    see there).

    Raises:
        ContractError: no such contract.
    """
    raw = path_of(name).read_text(encoding="utf-8")
    if name != CONTROL_PLANE:
        return raw
    document = yaml.safe_load(raw)
    return yaml.safe_dump(fill_registry_enums(document, catalog), sort_keys=False,
                          allow_unicode=True, width=100)


def load(name: str) -> Contract:
    """Contract ``name``, parsed and compiled (cached per directory and name).

    Raises:
        ContractError: no such contract, or it does not parse.
    """
    return _load(str(contracts_dir()), name)


@functools.lru_cache(maxsize=64)
def _load(directory: str, name: str) -> Contract:
    return Contract.from_file(path_of(name))


def load_all() -> list[Contract]:
    """Every contract, sorted by name."""
    return [load(n) for n in names()]


def for_vendor(slug: str) -> Contract | None:
    """The contract whose ``x-vendor`` is ``slug``, or ``None``."""
    try:
        found = [c for c in load_all() if c.vendor == slug]
    except ContractError:
        return None
    return found[0] if found else None


__all__ = [
    "ENV_DIR", "PACKAGED_DIR", "PACKAGE_DIR", "SOURCE_DIR", "contracts_dir", "for_vendor",
    "load", "load_all", "names", "path_of", "text",
]
