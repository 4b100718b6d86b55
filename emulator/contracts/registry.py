"""The control plane contract's enums, filled from the registries (adapters, fault effects).

``contracts/emulator.yaml`` lists no vendor, operation or fault effect: what a fault rule may
name is decided by the adapter registry and the fault-effect registry, and filled in here when
the contract is loaded (:meth:`~emulator.contracts.document.Contract.from_file`) or served
(:func:`~emulator.contracts.loading.text`), so a new vendor or effect needs no edit of it.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

#: The control plane's contract (``x-vendor: emulator``).
CONTROL_PLANE = "emulator"


def registry_catalog() -> dict[str, frozenset[str]]:
    """Vendor slug -> its operation names (the ``file`` download included), from the adapter
    registry (:func:`emulator.vendors.load_all`): what fault rules may name, as
    ``FaultRules.catalog`` of an emulator built now has it."""
    from emulator.core.faults import FILE_OPERATION
    from emulator.vendors import load_all

    return {slug: frozenset(cls(None).operations()) | {FILE_OPERATION}  # type: ignore[arg-type]
            for slug, cls in sorted(load_all().items())}


def fill_registry_enums(document: dict[str, Any],
                        catalog: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """A copy of the control-plane contract with what the registries decide filled in.

    In ``components.schemas``: ``FaultRuleSpec``'s ``vendor`` and ``operation`` enums (from
    ``catalog``: vendor slug -> operation names, dotted prefixes added as rules allow them;
    default :func:`registry_catalog`), one property per registered fault effect (its
    ``spec_schema``), ``anyOf`` (at least one effect) and ``allOf`` (effects that exclude each
    other); ``FaultRule`` (the rule's JSON view) gets each effect's ``view_schema``. Property
    order is the rule's: match fields, effects, options. A document without those schemas is
    returned as it is. The running emulator serves it with its own ``FaultRules.catalog``
    (``GET /_emulator/contracts/emulator.yaml``); loading it (:func:`load`) fills it from the
    registries, so the guard, the property tests and ``contracts check`` see the same enums.
    """
    from emulator.core.faults import EFFECTS, MATCH_FIELDS, operation_names

    schemas = (document.get("components") or {}).get("schemas") or {}
    if "FaultRuleSpec" not in schemas or "FaultRule" not in schemas:
        return document
    catalog = registry_catalog() if catalog is None else catalog
    doc = copy.deepcopy(document)
    schemas = doc["components"]["schemas"]
    spec = schemas["FaultRuleSpec"]
    given: dict[str, Any] = spec.get("properties") or {}
    filled = {
        "vendor": {**given.get("vendor", {}), "type": "string", "enum": sorted(catalog)},
        "operation": {**given.get("operation", {}), "type": "string", "enum": sorted(
            operation_names(op for ops in catalog.values() for op in ops))},
    }
    props = {name: filled.get(name, given.get(name)) for name in MATCH_FIELDS
             if name in filled or name in given}
    props.update({name: effect.spec_schema() for name, effect in EFFECTS.items()})
    props.update({k: v for k, v in given.items() if k not in props})
    spec["properties"] = props
    spec["anyOf"] = [{"required": [name]} for name in EFFECTS]
    pairs = []
    order = list(EFFECTS)
    for name, effect in EFFECTS.items():
        for other in effect.excludes:
            if other in EFFECTS:
                pairs.append(sorted((name, other), key=order.index))
    if pairs:
        spec["allOf"] = [{"not": {"required": pair}} for pair in pairs]
    else:
        spec.pop("allOf", None)
    view = schemas["FaultRule"]
    seen: dict[str, Any] = view.get("properties") or {}
    head = {k: v for k, v in seen.items() if k in ("id", *MATCH_FIELDS)}
    head.update({name: effect.view_schema() for name, effect in EFFECTS.items()})
    head.update({k: v for k, v in seen.items() if k not in head})
    view["properties"] = head
    return doc
