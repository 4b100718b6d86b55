"""The matte engines on photographs with exact masks, and engine selection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emulator.matte import models
from emulator.matte.compose import composite, cutout, encode_png
from emulator.matte.engine import EngineUnavailable, MatteEngine, create_engine
from emulator.matte.grabcut import GrabCutEngine
from emulator.matte.onnx import OnnxMatteEngine
from emulator.testing.composites import all_composites, iou, mae
from tests.conftest import MODELS_DIR, decode_png


def test_u2netp_on_composites() -> None:
    engine = create_engine("u2netp", models_dir=MODELS_DIR)
    assert engine.name == "u2netp"
    for comp in all_composites():
        alpha = engine.alpha(comp.rgb)
        assert alpha.shape == comp.mask.shape and alpha.dtype == np.uint8
        assert iou(alpha, comp.mask) >= 0.9, comp.name
        assert mae(alpha, comp.mask) <= 0.05, comp.name


def test_grabcut_on_composites() -> None:
    engine = GrabCutEngine()
    scores = [iou(engine.alpha(c.rgb), c.mask) for c in all_composites(scale=0.6)]
    assert min(scores) >= 0.8, scores


def test_grabcut_on_tiny_images() -> None:
    assert GrabCutEngine().alpha(np.zeros((3, 5, 3), np.uint8)).shape == (3, 5)


def test_auto_is_u2netp_with_nothing_configured(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """``auto`` is the neural engine on a bare install: no ``RMBG_EMULATOR_MODELS``, no
    ``U2NET_HOME``, an empty home directory; GrabCut only when asked for."""
    monkeypatch.delenv("RMBG_EMULATOR_MODELS", raising=False)
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    engine = create_engine("auto")
    assert engine.name == "u2netp"
    assert isinstance(engine, OnnxMatteEngine)
    assert engine.path == models.BUNDLED_DIR / "u2netp.onnx"
    assert isinstance(create_engine("grabcut"), GrabCutEngine)


def test_auto_and_u2netp_refuse_when_no_weights_are_found(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Weights gone (the package's copy removed): an error that says what to do, never a
    silent switch to GrabCut."""
    monkeypatch.setenv("U2NET_HOME", str(tmp_path))
    monkeypatch.delenv("RMBG_EMULATOR_MODELS", raising=False)
    monkeypatch.setattr(models, "BUNDLED_DIR", tmp_path / "no-package-copy")
    for spec in ("auto", "u2netp"):
        with pytest.raises(EngineUnavailable, match="models install u2netp"):
            create_engine(spec, models_dir=str(tmp_path))


def test_onnx_path_with_preset() -> None:
    engine = create_engine(f"{MODELS_DIR}/u2netp.onnx", preset="u2netp")
    assert isinstance(engine, MatteEngine)
    comp = all_composites()[0]
    assert iou(engine.alpha(comp.rgb), comp.mask) >= 0.9
    with pytest.raises(EngineUnavailable, match="preset"):
        create_engine(f"{MODELS_DIR}/u2netp.onnx", preset="nope")


def test_bad_engine_specs() -> None:
    with pytest.raises(EngineUnavailable):
        create_engine("missing.onnx")
    with pytest.raises(EngineUnavailable):
        create_engine("superfast")


def test_cutout_zeroes_rgb_under_transparent_pixels() -> None:
    rgb = np.full((4, 4, 3), 77, np.uint8)
    alpha = np.zeros((4, 4), np.uint8)
    alpha[1:3, 1:3] = 255
    rgba = cutout(rgb, alpha)
    assert rgba.shape == (4, 4, 4)
    assert (rgba[alpha == 0, :3] == 0).all() and (rgba[alpha > 0, :3] == 77).all()
    img = decode_png(encode_png(rgba))
    assert img.mode == "RGBA" and np.array_equal(np.asarray(img), rgba)
    with pytest.raises(ValueError):
        cutout(rgb, np.zeros((3, 3), np.uint8))


def test_cutout_keeps_rgb_wherever_alpha_is_not_zero() -> None:
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, 256, (31, 45, 3), dtype=np.uint8)
    alpha = rng.choice(np.array([0, 1, 128, 255], np.uint8), size=(31, 45))
    expected = np.dstack([np.where(alpha[:, :, None] > 0, rgb, 0), alpha]).astype(np.uint8)
    assert np.array_equal(cutout(rgb, alpha), expected)
    # views that are not contiguous (a crop, a channel flip) work as well
    view = rgb[:, ::-1]
    assert np.array_equal(cutout(view, alpha), np.dstack(
        [np.where(alpha[:, :, None] > 0, view, 0), alpha]).astype(np.uint8))


def test_composite_blends_over_a_covering_background() -> None:
    rgb = np.full((10, 20, 3), 200, np.uint8)
    alpha = np.zeros((10, 20), np.uint8)
    alpha[:, :10] = 255
    bg = np.zeros((5, 5, 3), np.uint8)
    out = composite(rgb, alpha, bg)
    assert out.shape == (10, 20, 3)
    assert (out[:, :10] == 200).all() and (out[:, 10:] == 0).all()


def test_grabcut_gives_the_same_matte_whatever_ran_before() -> None:
    """OpenCV's RNG is per thread and moves with every GrabCut call: the engine seeds it, so
    the same photograph always gets the same matte (the result cache relies on it)."""
    import io

    from PIL import Image

    from emulator import samples
    from tests.conftest import small_photo

    engine = GrabCutEngine()
    # A photograph on which the unseeded engine gave 2.5% of its pixels another value.
    coffee = Image.open(io.BytesIO(samples.read_bytes("coffee.jpg"))).convert("RGB")
    photo = np.ascontiguousarray(np.asarray(coffee.resize((96, 64))))
    first = engine.alpha(photo)
    engine.alpha(small_photo(48))  # moves the thread's RNG
    engine.alpha(np.ascontiguousarray(photo[::-1]))
    assert np.array_equal(engine.alpha(photo), first)
