"""Neural matte engines through onnxruntime.

Presets describe how a model wants its input and gives its output:

========  ==========  =====================================  ==========================
preset    input size  normalisation                          output -> alpha
========  ==========  =====================================  ==========================
u2netp    320 x 320   /max, ImageNet mean/std                min-max of output 0
isnet     1024x1024   /255, mean 0.5, std 1.0                min-max of output 0
birefnet  1024x1024   /255, ImageNet mean/std                sigmoid of the last output
rmbg2     1024x1024   /255, ImageNet mean/std (BiRefNet)     sigmoid of the last output
========  ==========  =====================================  ==========================

u2netp's I/O is from ``emulator/matte/weights/README.md`` (also rembg's ``U2netpSession``); ISNet's
from rembg's ``DisSession``; BiRefNet and RMBG-2.0 (a BiRefNet) from their model cards.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emulator.matte.engine import EngineUnavailable

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preset:
    """How to feed an ONNX segmentation model.

    Attributes:
        size: square input side in pixels.
        mean, std: per-channel normalisation after scaling to 0..1.
        scale_by_max: divide by the image's max (u2net) instead of by 255.
        output: ``"minmax"`` (saliency map) or ``"sigmoid"`` (logits).
        output_index: which output holds the matte (-1: the last).
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    scale_by_max: bool
    output: str
    output_index: int


PRESETS: dict[str, Preset] = {
    "u2netp": Preset(320, IMAGENET_MEAN, IMAGENET_STD, True, "minmax", 0),
    "isnet": Preset(1024, (0.5, 0.5, 0.5), (1.0, 1.0, 1.0), False, "minmax", 0),
    "birefnet": Preset(1024, IMAGENET_MEAN, IMAGENET_STD, False, "sigmoid", -1),
    "rmbg2": Preset(1024, IMAGENET_MEAN, IMAGENET_STD, False, "sigmoid", -1),
}


class OnnxMatteEngine:
    """An ONNX segmentation model run with onnxruntime on the CPU.

    The photograph is downscaled to the preset's input size, segmented, and the mask (not
    the image) is upsampled back, so cost is nearly independent of the input's size apart
    from the two resizes. ``onnxruntime.InferenceSession.run`` is thread-safe.

    Raises:
        EngineUnavailable: the file cannot be loaded by onnxruntime.
    """

    def __init__(self, path: Path, *, preset: str, threads: int = 0, name: str) -> None:
        import onnxruntime as ort

        # Telemetry is off through ORT_DISABLE_TELEMETRY, set when the package `emulator`
        # was imported (emulator/__init__.py); this call is harmless belt and braces.
        disable = getattr(ort, "disable_telemetry_events", None)
        if callable(disable):
            disable()
        self.name = name
        self.path = Path(path)
        self.preset = PRESETS[preset]
        options = ort.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
        options.log_severity_level = 3
        # Idle intra-op threads sleep instead of spinning: a spinning pool burns the cores
        # the event loop needs to answer polls while images are matted.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise EngineUnavailable(f"onnxruntime cannot load {self.path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        """``H x W x 3 uint8`` photograph -> ``H x W uint8`` alpha matte."""
        height, width = rgb.shape[:2]
        p = self.preset
        small = cv2.resize(rgb, (p.size, p.size), interpolation=cv2.INTER_AREA)
        x = small.astype(np.float32)
        x /= max(float(x.max()), 1e-6) if p.scale_by_max else 255.0
        x -= np.asarray(p.mean, dtype=np.float32)
        x /= np.asarray(p.std, dtype=np.float32)
        tensor = np.ascontiguousarray(x.transpose(2, 0, 1)[None])
        outputs = self._session.run(None, {self._input: tensor})
        pred = np.asarray(outputs[p.output_index], dtype=np.float32).reshape(
            outputs[p.output_index].shape[-2:]
        )
        if p.output == "sigmoid":
            pred = 1.0 / (1.0 + np.exp(-pred))
        else:
            lo, hi = float(pred.min()), float(pred.max())
            pred = (pred - lo) / (hi - lo) if hi > lo else np.zeros_like(pred)
        mask = np.asarray(cv2.resize(pred, (width, height), interpolation=cv2.INTER_LINEAR),
                          dtype=np.float32)
        out: np.ndarray = np.clip(mask * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return out
