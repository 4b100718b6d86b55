"""Schemathesis hooks for ``rmbg-emulator contracts check`` (loaded via ``SCHEMATHESIS_HOOKS``).

They keep every run off the network: ``format: image-url`` fields are drawn from tiny
``data:`` URIs and ``format: webhook-url`` fields from loopback URLs nobody listens on
(:mod:`emulator.testing.strategies`). Explicit examples (the vendor pages' own, such as
Pixazo's ``https://storage.googleapis.com/.../cat.jpg``) and anything else drawn are rewritten
before each call the same way. Against a real vendor, ``--image-url`` and ``--webhook-url``
put your own public URLs in those fields instead.

Environment (set by :mod:`emulator.testing.contract_check`):

* ``RMBG_CHECK_CONTRACT``: the contract file the run uses (laid out for its base URL);
* ``RMBG_CHECK_IMAGE_URL``, ``RMBG_CHECK_WEBHOOK_URL``: optional fixed URLs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import strategies as st

from emulator import contracts
from emulator.testing import strategies

IMAGE_URL = os.environ.get("RMBG_CHECK_IMAGE_URL") or None
WEBHOOK_URL = os.environ.get("RMBG_CHECK_WEBHOOK_URL") or None

schemathesis.openapi.format(
    contracts.IMAGE_URL, st.just(IMAGE_URL) if IMAGE_URL else strategies.image_urls())
schemathesis.openapi.format(
    contracts.WEBHOOK_URL, st.just(WEBHOOK_URL) if WEBHOOK_URL else strategies.webhook_urls())

_CONTRACT_FILE = os.environ.get("RMBG_CHECK_CONTRACT")
_OPERATIONS: dict[tuple[str, str], contracts.Operation] = {}
if _CONTRACT_FILE:
    _contract = contracts.Contract.from_file(Path(_CONTRACT_FILE))
    _OPERATIONS = {(op.method, op.path): op for op in _contract.operations.values()}


def safe_image(old: str) -> str | None:
    """The value an image field gets instead of ``old`` (``None``: keep ``old``).

    Only well-formed references are replaced, so negative test data stays negative.
    """
    if not contracts.is_image_url(old):
        return None
    if IMAGE_URL:
        return IMAGE_URL
    if contracts.is_http_url(old):
        return strategies.stable_choice(strategies.tiny_images(), old)
    return None


def safe_webhook(old: str) -> str | None:
    """The value a webhook field gets instead of ``old`` (``None``: keep ``old``)."""
    if not contracts.is_http_url(old):
        return None
    if WEBHOOK_URL:
        return WEBHOOK_URL
    if old.startswith(strategies.WEBHOOK_BASE):
        return None
    return f"{strategies.WEBHOOK_BASE}/example"


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Rewrite image and webhook fields of ``case`` to safe values, in place."""
    op = _OPERATIONS.get((str(case.method).upper(), case.path))
    if op is None:
        return
    from schemathesis.core import NOT_SET

    body = case.body if case.body is not NOT_SET else None
    headers = case.headers if case.headers is not None else {}
    query = case.query if case.query is not None else {}
    strategies.replace_fields(op, headers=headers, query=query, body=body,
                              fmt=contracts.IMAGE_URL, new=safe_image)
    strategies.replace_fields(op, headers=headers, query=query, body=body,
                              fmt=contracts.WEBHOOK_URL, new=safe_webhook)
