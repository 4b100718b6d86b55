"""Fault injection: rules as data, effects as registered kinds, plans passed explicitly.

* :mod:`~emulator.core.faults.rules`: the rule type, its parser, the store of rules, and the
  :class:`Plan` one request gets of them, passed to where it acts;
* :mod:`~emulator.core.faults.effects`: the registry of effect kinds (:data:`EFFECTS`), one
  small class each, with the stage it acts at (request, job, output, webhook);
* :mod:`~emulator.core.faults.asgi`: the plain-ASGI tools of the request-stage effects;
* :mod:`~emulator.core.faults.parsing`: the value checks they share.

Every name importers use is re-exported here.
"""

from __future__ import annotations

from typing import Any

from emulator.core.faults import rules
from emulator.core.faults.asgi import drop_connection, malformed
from emulator.core.faults.effects import (
    BODY_FAULTS,
    CONNECTION_FAULTS,
    EFFECTS,
    IMAGE_FAULTS,
    JOB_FAULTS,
    JOB_MESSAGES,
    LATENCY_PATTERN,
    MAX_LATENCY_S,
    STAGES,
    STATUS_CODES,
    STATUS_MESSAGES,
    WEBHOOK_DELAY_PATTERN,
    WEBHOOK_FAULTS,
    Effect,
    Latency,
    RequestAct,
    Stage,
    WebhookFault,
    corrupt_png,
    effects_at,
    fault_error,
    parse_latency,
    parse_webhook,
    register,
    sleep_at_least,
    unregister,
)
from emulator.core.faults.parsing import BLANK, NON_BLANK_PATTERN, RuleError, is_blank
from emulator.core.faults.rules import (
    FILE_OPERATION,
    MATCH_FIELDS,
    FaultRule,
    FaultRules,
    Plan,
    effect_fields,
    fields,
    operation_names,
    parse_rule,
    parse_text,
)


def __getattr__(name: str) -> Any:
    # EFFECT_FIELDS and FIELDS follow the registry: asked of emulator.core.faults.rules.
    if name in ("EFFECT_FIELDS", "FIELDS"):
        return getattr(rules, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BLANK", "BODY_FAULTS", "CONNECTION_FAULTS", "EFFECTS", "FILE_OPERATION", "IMAGE_FAULTS",
    "JOB_FAULTS", "JOB_MESSAGES", "LATENCY_PATTERN", "MATCH_FIELDS", "MAX_LATENCY_S",
    "NON_BLANK_PATTERN", "STAGES", "STATUS_CODES", "STATUS_MESSAGES", "WEBHOOK_DELAY_PATTERN",
    "WEBHOOK_FAULTS", "Effect", "FaultRule", "FaultRules", "Latency", "Plan", "RequestAct",
    "RuleError", "Stage", "WebhookFault", "corrupt_png", "drop_connection", "effect_fields",
    "effects_at", "fault_error", "fields", "is_blank", "malformed", "operation_names",
    "parse_latency", "parse_rule", "parse_text", "parse_webhook", "register",
    "sleep_at_least", "unregister",
]
