"""Sample photographs with licences that allow shipping them (see LICENSES.md here)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Sample:
    """A sample image: name, file, what it shows, licence, and size in pixels."""

    name: str
    path: Path
    title: str
    licence: str
    kind: str  # "photo" or "texture"


SAMPLES: dict[str, Sample] = {
    s.name: s
    for s in (
        Sample("astronaut", HERE / "astronaut.jpg", "Eileen Collins (NASA)", "public domain",
               "photo"),
        Sample("chelsea", HERE / "chelsea.jpg", "Chelsea the cat", "CC0", "photo"),
        Sample("coffee", HERE / "coffee.jpg", "Coffee cup", "CC0", "photo"),
        Sample("rocket", HERE / "rocket.jpg", "DSCOVR launch (SpaceX)", "public domain", "photo"),
        Sample("grass", HERE / "grass.jpg", "Grass texture", "CC0", "texture"),
        Sample("brick", HERE / "brick.jpg", "Brick wall texture", "CC0", "texture"),
        Sample("gravel", HERE / "gravel.jpg", "Gravel texture", "CC0", "texture"),
    )
}


def lookup(name: str) -> Sample | None:
    """The sample called ``name`` (``.jpg`` suffix allowed), or ``None``."""
    return SAMPLES.get(name.removesuffix(".jpg").removesuffix(".jpeg"))


@lru_cache(maxsize=16)
def read_bytes(name: str) -> bytes:
    """The sample's JPEG bytes.

    Raises:
        KeyError: no such sample.
    """
    sample = lookup(name)
    if sample is None:
        raise KeyError(name)
    return sample.path.read_bytes()


def load_rgb(name: str) -> np.ndarray:
    """The sample decoded: ``H x W x 3 uint8``.

    Raises:
        KeyError: no such sample.
    """
    sample = lookup(name)
    if sample is None:
        raise KeyError(name)
    with Image.open(sample.path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
