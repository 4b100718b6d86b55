"""Photographs with an exact foreground mask, for measuring matte quality (IoU, MAE).

An object photographed on its own background (the coffee cup on its saucer) is cut along a
known shape and laid onto another photographed background (grass, brick, gravel, the rocket
photograph). The shape is the ground truth, exactly, by construction.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from emulator.samples import load_rgb

BACKGROUNDS = ("grass", "brick", "gravel", "rocket")


@dataclass(frozen=True)
class Composite:
    """A composite photograph and its exact mask.

    Attributes:
        name: ``"coffee-on-grass"``, ...
        rgb: ``H x W x 3 uint8``.
        mask: ``H x W bool``, True on the object.
    """

    name: str
    rgb: np.ndarray
    mask: np.ndarray

    def jpeg(self, quality: int = 95) -> bytes:
        """The composite as JPEG bytes."""
        buf = io.BytesIO()
        Image.fromarray(self.rgb).save(buf, format="JPEG", quality=quality)
        return buf.getvalue()

    def png(self) -> bytes:
        """The composite as PNG bytes (lossless)."""
        buf = io.BytesIO()
        Image.fromarray(self.rgb).save(buf, format="PNG", compress_level=1)
        return buf.getvalue()


def coffee_mask(height: int = 400, width: int = 600) -> np.ndarray:
    """The cup and saucer of the ``coffee`` sample as two ellipses: ``H x W bool``."""
    mask = np.zeros((height, width), np.uint8)
    cv2.ellipse(mask, (278, 230), (196, 152), 0, 0, 360, 255, -1)
    cv2.ellipse(mask, (290, 112), (113, 90), 0, 0, 360, 255, -1)
    return mask > 0


def make(background: str, *, scale: float = 1.0) -> Composite:
    """The coffee cup laid on ``background`` (a sample name), optionally scaled.

    Raises:
        KeyError: unknown background sample.
    """
    coffee = load_rgb("coffee")
    h, w = coffee.shape[:2]
    mask = coffee_mask(h, w)
    bg = cv2.resize(load_rgb(background), (w, h), interpolation=cv2.INTER_AREA)
    rgb = np.where(mask[:, :, None], coffee, bg)
    if scale != 1.0:
        size = (round(w * scale), round(h * scale))
        rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0
    return Composite(f"coffee-on-{background}", np.ascontiguousarray(rgb), mask)


def all_composites(scale: float = 1.0) -> list[Composite]:
    """One composite per background in :data:`BACKGROUNDS`."""
    return [make(bg, scale=scale) for bg in BACKGROUNDS]


def iou(alpha: np.ndarray, mask: np.ndarray, threshold: int = 128) -> float:
    """Intersection over union of ``alpha >= threshold`` (``H x W uint8``) and ``mask``."""
    pred = alpha >= threshold
    union = np.logical_or(pred, mask).sum()
    return float(np.logical_and(pred, mask).sum() / union) if union else 1.0


def mae(alpha: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute error between ``alpha / 255`` and the 0/1 mask."""
    return float(np.abs(alpha.astype(np.float32) / 255.0 - mask.astype(np.float32)).mean())
