"""The matte-engine protocol and the factory that picks one from ``--engine``."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class MatteEngine(Protocol):
    """Computes an alpha matte.

    Implementations must be safe to call from several worker threads at once.
    """

    name: str

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """Alpha matte of a photograph.

        Args:
            rgb: ``H x W x 3 uint8``.

        Returns:
            ``H x W uint8``: 255 foreground, 0 background, soft values at edges.
        """
        ...


#: Most pixels a matte engine is given (4 Mpx, 2048 x 2048): larger photographs are downscaled
#: before matting and the alpha resized back. The engines work at 320-1024 px anyway, so this
#: costs no quality, and it bounds the engines' full-size float copies (a 49 Mpx input made
#: the u2netp and GrabCut engines allocate about 600 MB of float32 alone).
MATTE_MAX_PIXELS = 2048 * 2048


def bounded_alpha(engine: MatteEngine, rgb: np.ndarray, *,
                  max_pixels: int = MATTE_MAX_PIXELS) -> np.ndarray:
    """``engine``'s alpha of ``rgb``, the engine seeing at most ``max_pixels`` pixels.

    Args:
        rgb: ``H x W x 3 uint8``, any size.
        max_pixels: above it, ``rgb`` is downscaled (``INTER_AREA``, aspect kept) for the
            engine and the ``uint8`` alpha upscaled back (``INTER_LINEAR``).

    Returns:
        ``H x W uint8`` alpha: always the input's size.
    """
    import cv2

    height, width = rgb.shape[:2]
    if height * width <= max_pixels:
        return engine.alpha(rgb)
    scale = (max_pixels / (height * width)) ** 0.5
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
    alpha = engine.alpha(small)
    full: np.ndarray = cv2.resize(alpha, (width, height), interpolation=cv2.INTER_LINEAR)
    return full


class EngineUnavailable(RuntimeError):
    """The engine asked for cannot be built (weights missing, bad path, bad preset)."""


def create_engine(
    spec: str,
    *,
    preset: str | None = None,
    models_dir: str | None = None,
    threads: int = 0,
) -> MatteEngine:
    """Build the engine named by ``--engine``.

    Args:
        spec: ``auto`` or ``u2netp`` (the neural engine, with the weights that ship inside
            the package, :mod:`emulator.matte.models`), ``grabcut`` (OpenCV, only when asked
            for), or a path to an ``.onnx`` file (then ``preset`` says how to feed it).
        preset: for an ONNX path: ``u2netp``, ``isnet``, ``birefnet`` or ``rmbg2``
            (see :data:`emulator.matte.onnx.PRESETS`); default ``u2netp``-style I/O.
        models_dir: a directory searched first for weights (``RMBG_EMULATOR_MODELS``).
        threads: onnxruntime intra-op threads per call; 0 lets onnxruntime decide.

    Raises:
        EngineUnavailable: ``auto``/``u2netp`` but no verified weights found (the package's
            copy removed or damaged); a path that does
            not exist; an unknown preset or spec.
    """
    from emulator.matte import models
    from emulator.matte.grabcut import GrabCutEngine

    key = spec.strip()
    if key == "grabcut":
        return GrabCutEngine()
    if key in ("auto", "u2netp"):
        found = models.locate("u2netp", models_dir=models_dir)
        if found is None:
            searched = ", ".join(str(d) for d in models.search_dirs(models_dir))
            raise EngineUnavailable(
                f"u2netp weights not found (searched {searched}); the package ships them in "
                "emulator/matte/weights/u2netp.onnx, so reinstall it, or run `rmbg-emulator "
                "models install u2netp`, or choose --engine grabcut"
            )
        from emulator.matte.onnx import OnnxMatteEngine

        return OnnxMatteEngine(found, preset="u2netp", threads=threads, name="u2netp")
    path = Path(key).expanduser()
    if key.endswith(".onnx") or path.exists():
        if not path.is_file():
            raise EngineUnavailable(f"engine path {key!r} is not a file")
        from emulator.matte.onnx import PRESETS, OnnxMatteEngine

        chosen = preset or "u2netp"
        if chosen not in PRESETS:
            raise EngineUnavailable(f"unknown preset {chosen!r}; choose from {sorted(PRESETS)}")
        return OnnxMatteEngine(path, preset=chosen, threads=threads, name=f"onnx:{path.name}")
    raise EngineUnavailable(
        f"unknown engine {spec!r}; use auto, u2netp, grabcut or a path to an .onnx file"
    )
