"""``preserve_alpha``: an input's own transparency survives background removal (Bria's flag,
default true; the core ``remove`` task's ``preserve_alpha`` param)."""

from __future__ import annotations

import base64
import io

import httpx
import numpy as np
from PIL import Image

from emulator.core.tasks import TASKS, TaskContext
from tests.conftest import decode_png, small_photo


class _Opaque:
    """A matte engine that keeps every pixel (alpha 255 everywhere)."""

    name = "opaque"

    def alpha(self, rgb: np.ndarray) -> np.ndarray:
        return np.full(rgb.shape[:2], 255, np.uint8)


def _rgba_png() -> tuple[bytes, np.ndarray]:
    """A photograph whose left half is fully transparent and right half half-transparent."""
    rgb = small_photo(64)
    alpha = np.full(rgb.shape[:2], 128, np.uint8)
    alpha[:, :32] = 0
    buf = io.BytesIO()
    Image.fromarray(np.dstack([rgb, alpha])).save(buf, format="PNG")
    return buf.getvalue(), alpha


def _alpha_of(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).getchannel("A"))


def test_the_remove_task_multiplies_the_inputs_alpha_only_when_asked() -> None:
    data, alpha = _rgba_png()
    ctx = TaskContext(engine=_Opaque(), max_pixels=10**7, compress_level=1)
    [kept] = TASKS["remove"]([data], {"preserve_alpha": True}, ctx)
    assert np.array_equal(_alpha_of(kept.data), alpha)
    [matte_only] = TASKS["remove"]([data], {}, ctx)
    assert (_alpha_of(matte_only.data) == 255).all()
    # an input without alpha: the matte alone either way
    buf = io.BytesIO()
    Image.fromarray(small_photo(64)).save(buf, format="PNG")
    [opaque] = TASKS["remove"]([buf.getvalue()], {"preserve_alpha": True}, ctx)
    assert (_alpha_of(opaque.data) == 255).all()


def test_bria_keeps_an_inputs_transparency_by_default(client: httpx.Client) -> None:
    data, _ = _rgba_png()
    uri = "data:image/png;base64," + base64.b64encode(data).decode()
    outputs = {}
    for flag in (None, False):
        body: dict[str, object] = {"image": uri, "sync": True}
        if flag is not None:
            body["preserve_alpha"] = flag
        r = client.post("/v2/image/edit/remove_background", json=body,
                        headers={"api_token": "alpha-key"})
        assert r.status_code == 200, r.text
        png = client.get(r.json()["result"]["image_url"]).content
        outputs[flag] = np.asarray(decode_png(png).getchannel("A"))
    assert (outputs[None][:, :32] == 0).all()  # the transparent half stays transparent
    assert (outputs[None][:, 32:] <= 128).all()
    assert not np.array_equal(outputs[None], outputs[False])
