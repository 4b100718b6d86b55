"""Task functions: the blocking image work of a job, run in the worker pool.

Each takes the input images' bytes, the task's params and a :class:`TaskContext`, and returns
the output files. Decode, matte and encode happen in one pool call, so a job costs one hop off
the event loop.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from emulator.core.inputs import decode_image, decode_image_alpha
from emulator.matte.compose import composite, cutout, encode_png
from emulator.matte.engine import MatteEngine, bounded_alpha


@dataclass(frozen=True)
class TaskContext:
    """What a task function may use.

    Attributes:
        engine: the matte engine.
        max_pixels: input pixel limit.
        compress_level: PNG compression level (1 by default: 2-3x faster than 6, +12% size).
    """

    engine: MatteEngine
    max_pixels: int
    compress_level: int


@dataclass(frozen=True)
class Rendered:
    """One output file: bytes, MIME type, pixel size and file-name suffix."""

    data: bytes
    content_type: str
    width: int
    height: int
    suffix: str = ".png"


TaskFn = Callable[[list[bytes], dict[str, Any], TaskContext], list[Rendered]]


def remove_background(payloads: list[bytes], params: dict[str, Any],
                      ctx: TaskContext) -> list[Rendered]:
    """Background removal: one RGBA PNG, the input's width and height, RGB kept where alpha > 0.

    Params: ``preserve_alpha`` (bool, default false): an input with its own alpha channel keeps
    its transparency: the output alpha is the matte times the input's alpha / 255 (Bria's
    ``preserve_alpha``, docs.bria.ai).

    Raises:
        InputImageError: the input cannot be decoded (see :func:`decode_image`).
    """
    rgb, own = decode_image_alpha(payloads[0], max_pixels=ctx.max_pixels,
                                  keep_alpha=bool(params.get("preserve_alpha", False)))
    height, width = rgb.shape[:2]
    alpha = bounded_alpha(ctx.engine, rgb)
    if own is not None:
        alpha = cv2.multiply(alpha, own, scale=1.0 / 255.0)
        del own
    rgba = cutout(rgb, alpha)
    del rgb, alpha  # only the cut-out is held while the PNG is encoded
    png = encode_png(rgba, compress_level=ctx.compress_level)
    return [Rendered(png, "image/png", width, height)]


def prompt_background(prompt: str, seed: int, width: int, height: int) -> np.ndarray:
    """A background made deterministically from ``prompt`` and ``seed``: ``H x W x 3 uint8``.

    A vertical gradient between two colours drawn from sha256(prompt, seed), with a soft
    noise texture from the same seed. Stands in for a generated scene.
    """
    digest = hashlib.sha256(f"{seed}\x00{prompt}".encode()).digest()
    top = np.frombuffer(digest[0:3], dtype=np.uint8).astype(np.float32)
    bottom = np.frombuffer(digest[3:6], dtype=np.uint8).astype(np.float32)
    t = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    rng = np.random.default_rng(int.from_bytes(digest[6:14], "little"))
    out = np.empty((height, width, 3), dtype=np.uint8)
    # In bands of rows (the generator draws the same numbers in pieces as at once), so the
    # float32 temporaries stay about 16 MB whatever the size.
    step = max(1, (1024 * 1024) // max(1, width))
    for y0 in range(0, height, step):
        y1 = min(height, y0 + step)
        band = top * (1.0 - t[y0:y1]) + bottom * t[y0:y1]
        noise = rng.normal(0.0, 6.0, size=(y1 - y0, width, 1)).astype(np.float32)
        out[y0:y1] = np.clip(np.broadcast_to(band, (y1 - y0, width, 3)) + noise, 0, 255)
    return out


def replace_background(payloads: list[bytes], params: dict[str, Any],
                       ctx: TaskContext) -> list[Rendered]:
    """Background replacement: the cut-out over a reference image or a prompt background.

    ``payloads[0]`` is the photograph; ``payloads[1]``, when present, the reference image.
    Params: ``prompt`` (str), ``seed`` (int), ``num_images`` (1-4). Image ``i`` uses seed
    ``seed + i``. Outputs are RGB PNGs of the photograph's size.

    Raises:
        InputImageError: an input cannot be decoded.
    """
    rgb = decode_image(payloads[0], max_pixels=ctx.max_pixels)
    alpha = bounded_alpha(ctx.engine, rgb)
    height, width = alpha.shape
    reference = (decode_image(payloads[1], max_pixels=ctx.max_pixels)
                 if len(payloads) > 1 else None)
    count = int(params.get("num_images", 1))
    seed = int(params.get("seed", 0))
    prompt = str(params.get("prompt", ""))
    out = []
    for i in range(count):
        background = (reference if reference is not None
                      else prompt_background(prompt, seed + i, width, height))
        png = encode_png(composite(rgb, alpha, background), compress_level=ctx.compress_level)
        out.append(Rendered(png, "image/png", width, height))
    return out


#: Task kinds by name.
TASKS: dict[str, TaskFn] = {
    "remove": remove_background,
    "replace": replace_background,
}
