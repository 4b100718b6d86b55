"""Scenario files: keys, balances, limits and ordered fault steps, in one YAML document.

```yaml
name: flaky-submits                # optional; defaults to the file's stem
description: the first two submits answer 429, then all succeed
defaults:                          # optional: every key first seen afterwards
  balance_usd: 1.0
keys:                              # optional: per key
  low-balance-key: {balance_usd: 0.036}
  throttled-key: {rps: 1, burst: 2, concurrent: 2}
faults:                            # optional: rules, tried in this order (alias: steps)
  - {operation: submit, status: 429, retry_after: 2, times: 2}
```

A scenario is checked whole before anything is applied, so a bad one changes nothing. Its
rules are :class:`~emulator.core.faults.FaultRule` objects like the admin API's, with source
``scenario:NAME``. Loaded by ``rmbg-emulator serve --scenario FILE`` and
``POST /_emulator/scenarios``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from emulator.core.billing import Billing, KeySettings, parse_key_settings
from emulator.core.faults import FaultRule, FaultRules, RuleError, is_blank

TOP_LEVEL = ("name", "description", "defaults", "keys", "faults", "steps")


class ScenarioError(ValueError):
    """A scenario that cannot be loaded; the message says where and what."""


@dataclass
class Scenario:
    """A parsed, validated scenario (rules not yet stored)."""

    name: str
    description: str = ""
    defaults: KeySettings | None = None
    keys: dict[str, KeySettings] = field(default_factory=dict)
    rules: list[Mapping[str, Any]] = field(default_factory=list)


def read_text(text: str) -> Any:
    """YAML (or JSON, which is YAML) into Python values.

    Raises:
        ScenarioError: not parseable.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError(f"not valid YAML: {exc}") from None


def parse(data: Any, faults: FaultRules, *, default_name: str = "scenario") -> Scenario:
    """Validate a scenario document (its rules against ``faults``' vendor catalog).

    Raises:
        ScenarioError: unknown top-level field, bad key settings, or a bad rule (with its
            position).
    """
    if not isinstance(data, Mapping):
        raise ScenarioError("a scenario must be a mapping with keys, defaults and faults")
    unknown = sorted(str(k) for k in data if k not in TOP_LEVEL)
    if unknown:
        raise ScenarioError(f"unknown scenario field {unknown[0]!r}; known: "
                            f"{', '.join(TOP_LEVEL)}")
    if "faults" in data and "steps" in data:
        raise ScenarioError("give either faults or steps, not both")
    name = data.get("name", default_name)
    if not isinstance(name, str):
        raise ScenarioError(f"name must be a string, got {name!r}")
    description = data.get("description", "")
    if description is not None and not isinstance(description, str):
        raise ScenarioError(f"description must be a string, got {description!r}")
    scenario = Scenario(name=name.strip() or default_name, description=description or "")
    defaults = data.get("defaults")
    if defaults is not None:
        scenario.defaults = _key_settings("defaults", defaults)
    keys = data.get("keys")
    keys = {} if keys is None else keys
    if not isinstance(keys, Mapping):
        raise ScenarioError("keys must map each API key to its settings")
    for key, settings in keys.items():
        if not isinstance(key, str) or is_blank(key):
            raise ScenarioError(f"keys: {key!r} is not an API key")
        scenario.keys[key] = _key_settings(f"keys.{key}", {} if settings is None else settings)
    rules = data.get("faults", data.get("steps"))
    rules = [] if rules is None else rules
    if not isinstance(rules, list):
        raise ScenarioError("faults must be a list of rules")
    for i, rule in enumerate(rules):
        try:
            faults.parse(rule, source=f"scenario:{name}")
        except RuleError as exc:
            raise ScenarioError(f"faults[{i}]: {exc}") from None
        scenario.rules.append(rule)
    return scenario


def _key_settings(where: str, body: Any) -> KeySettings:
    if not isinstance(body, Mapping):
        raise ScenarioError(f"{where} must be a mapping of balance_usd, rps, burst, concurrent")
    try:
        return parse_key_settings(body)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def apply(scenario: Scenario, faults: FaultRules, billing: Billing, now: float
          ) -> list[FaultRule]:
    """Set defaults and keys, then store the rules after the ones already there.

    Returns:
        The stored rules, with their ids.
    """
    if scenario.defaults is not None:
        billing.set_defaults(scenario.defaults)
    for key, settings in scenario.keys.items():
        billing.configure(key, settings, now)
    return faults.add_all(scenario.rules, source=f"scenario:{scenario.name}")


def summary(scenario: Scenario, rules: list[FaultRule]) -> dict[str, Any]:
    """JSON view of a loaded scenario."""
    return {
        "name": scenario.name,
        "description": scenario.description,
        "keys": sorted(scenario.keys),
        "rules": [r.to_json() for r in rules],
    }


def load_file(path: str | Path, faults: FaultRules) -> Scenario:
    """Read and validate a scenario file (its stem is the default name).

    Raises:
        ScenarioError: unreadable or invalid, with the file name in the message.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"scenario {path}: {exc.strerror or exc}") from None
    try:
        return parse(read_text(text), faults, default_name=path.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"scenario {path}: {exc}") from None
