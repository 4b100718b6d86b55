"""A built package carries the contracts and finds them without the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from emulator import contracts
from tests.conftest import REPO


def test_source_checkout_reads_the_repository_contracts() -> None:
    assert contracts.contracts_dir() == REPO / "contracts"


def test_build_py_ships_the_contracts_and_the_package_finds_them(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    build = tmp_path / "lib"
    env = {k: v for k, v in os.environ.items() if k != contracts.ENV_DIR}
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                    "build_py", "--build-lib", str(build)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    shipped = sorted(p.name for p in (build / "emulator" / "_contracts").glob("*.yaml"))
    assert shipped == sorted(p.name for p in (REPO / "contracts").glob("*.yaml"))
    probe = ("from emulator import contracts; "
             "print(contracts.contracts_dir()); print(','.join(contracts.names())); "
             "print(contracts.load('pixazo').title)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path,
                         env={**env, "PYTHONPATH": str(build)}, check=True,
                         capture_output=True, text=True).stdout.splitlines()
    assert out[0] == str(build / "emulator" / "_contracts")
    assert out[1].split(",") == contracts.names()
    assert out[2] == contracts.load("pixazo").title


def test_manifest_puts_the_contracts_in_the_sdist() -> None:
    assert "include contracts/*.yaml" in (REPO / "MANIFEST.in").read_text().splitlines()


def test_license_is_apache_2_and_ships(tmp_path: Path) -> None:
    """``LICENSE`` holds the Apache License 2.0 text and the built metadata names it as an SPDX
    expression (PEP 639), with the file attached."""
    pytest.importorskip("setuptools")
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License\n                           Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    env = {k: v for k, v in os.environ.items() if k != contracts.ENV_DIR}
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    metadata = next(tmp_path.glob("*.egg-info")) / "PKG-INFO"
    lines = metadata.read_text(encoding="utf-8").splitlines()
    assert "License-Expression: Apache-2.0" in lines
    assert "License-File: LICENSE" in lines
