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


def test_the_wheel_carries_u2netp_and_auto_uses_it_on_a_bare_machine(tmp_path: Path) -> None:
    """A wheel built from this tree holds ``emulator/matte/weights/u2netp.onnx`` (byte for byte
    the pinned file) and its notice; installed alone (the wheel unpacked, no repository, no
    ``RMBG_EMULATOR_MODELS``, no ``U2NET_HOME``, an empty home), ``auto`` is u2netp read from
    the package."""
    import zipfile

    from emulator.matte import models

    env = {k: v for k, v in os.environ.items()
           if k not in (contracts.ENV_DIR, "RMBG_EMULATOR_MODELS", "U2NET_HOME")}
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                    "build", "--build-base", str(tmp_path / "build"),
                    "bdist_wheel", "--dist-dir", str(dist), "--bdist-dir",
                    str(tmp_path / "bdist")],
                   cwd=REPO, env=env, check=True, capture_output=True)
    wheel = next(dist.glob("rmbg_emulator-*.whl"))
    installed = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        assert "emulator/matte/weights/README.md" in names
        assert any(n.endswith(".dist-info/licenses/NOTICE") for n in names), sorted(names)
        zf.extractall(installed)
    shipped = installed / "emulator" / "matte" / "weights" / "u2netp.onnx"
    assert models.sha256_of(shipped) == models.KNOWN["u2netp"].sha256
    home = tmp_path / "home"
    home.mkdir()
    probe = ("from emulator.matte.engine import create_engine; e = create_engine('auto'); "
             "print(e.name); print(e.path)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=home,
                         env={**env, "PYTHONPATH": str(installed), "HOME": str(home)},
                         check=True, capture_output=True, text=True).stdout.splitlines()
    assert out == ["u2netp", str(shipped)]


def test_the_sdist_carries_the_weights_and_their_notice(tmp_path: Path) -> None:
    """An sdist (what ``pip install`` of a source archive builds from) holds the weights, their
    README and ``NOTICE``, so a wheel built from it has them too."""
    import tarfile

    env = {k: v for k, v in os.environ.items() if k != contracts.ENV_DIR}
    subprocess.run([sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(tmp_path),
                    "sdist", "--dist-dir", str(tmp_path)],
                   cwd=REPO, env=env, check=True, capture_output=True)
    with tarfile.open(next(tmp_path.glob("rmbg_emulator-*.tar.gz"))) as tar:
        names = {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}
    assert {"emulator/matte/weights/u2netp.onnx", "emulator/matte/weights/README.md",
            "NOTICE"} <= names
