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


#: Fault rules the suite posts (``/_emulator/faults``, ``/_emulator/scenarios``) match only
#: this key, which no request of the run uses, so they never act on the run itself.
INERT_KEY = "rmbg-contract-check-inert"
_RULE_PATHS = {("POST", "/_emulator/faults"), ("POST", "/_emulator/scenarios")}
_FAULT_CATALOG: dict[str, set[str]] | None = None


def _fault_catalog() -> dict[str, set[str]]:
    """Vendor -> the operation names its rules may use (what the contract cannot express)."""
    global _FAULT_CATALOG
    if _FAULT_CATALOG is None:
        from emulator.app import Emulator
        from emulator.core.faults import operation_names
        from emulator.settings import Settings

        rules = Emulator(Settings(engine="grabcut")).faults
        _FAULT_CATALOG = {vendor: operation_names(ops) for vendor, ops in rules.catalog.items()}
    return _FAULT_CATALOG


def inert_rule(rule: Any) -> None:
    """Make a well-formed fault rule inert, in place: its ``api_key`` becomes
    :data:`INERT_KEY`, and an ``operation`` its ``vendor`` lacks (a pairing the contract's
    schema cannot state) is dropped. Ill-formed values are left alone, so negative data stays
    negative."""
    if not isinstance(rule, dict):
        return
    key = rule.get("api_key")
    if "api_key" not in rule or (isinstance(key, str) and key.strip()):
        rule["api_key"] = INERT_KEY
    vendor, operation = rule.get("vendor"), rule.get("operation")
    catalog = _fault_catalog()
    every = set().union(*catalog.values())
    if (isinstance(vendor, str) and vendor in catalog and isinstance(operation, str)
            and operation in every and operation not in catalog[vendor]):
        del rule["operation"]


def _inert_rules(path: tuple[str, str], body: Any) -> None:
    if path == ("POST", "/_emulator/faults"):
        for rule in body if isinstance(body, list) else [body]:
            inert_rule(rule)
    elif isinstance(body, dict):
        for name in ("faults", "steps"):
            if isinstance(body.get(name), list):
                for rule in body[name]:
                    inert_rule(rule)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """Rewrite image and webhook fields of ``case`` to safe values, and fault rules to inert
    ones, in place."""
    from schemathesis.core import NOT_SET

    path = (str(case.method).upper(), case.path)
    if path in _RULE_PATHS and case.body is not NOT_SET:
        _inert_rules(path, case.body)
    op = _OPERATIONS.get(path)
    if op is None:
        return

    body = case.body if case.body is not NOT_SET else None
    headers = case.headers if case.headers is not None else {}
    query = case.query if case.query is not None else {}
    strategies.replace_fields(op, headers=headers, query=query, body=body,
                              fmt=contracts.IMAGE_URL, new=safe_image)
    strategies.replace_fields(op, headers=headers, query=query, body=body,
                              fmt=contracts.WEBHOOK_URL, new=safe_webhook)
