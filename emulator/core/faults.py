"""Fault rules as data: one rule type, its parser, the registry and the matching.

A rule is ``{vendor?, operation?, api_key?, status?, retry_after?, message?, latency?, job?,
connection?, body?, image?, webhook?, times?, probability?, seed?}``. The same rule objects come
from four places: the ``X-Emulator-Fault`` request header, an API key starting with ``fault.``,
the admin API (``/_emulator/faults``) and scenario files. Nothing here knows a vendor: the
middleware (:mod:`emulator.middleware`) resolves the request's vendor and operation, asks
:meth:`FaultRules.plan` what to do, and renders status faults through the matched adapter.

How a request picks its rule (see :meth:`FaultRules.plan`):

* rules are tried in order: the header rule, the key rule, then admin and scenario rules in the
  order they were added (so ordered steps with ``times`` make sequences);
* the first rule that matches ``(vendor, operation, api_key)``, has ``times`` left and passes
  its ``probability`` roll applies; the rules after it are not tried for that request;
* a rule whose only effects are ``job`` / ``image`` acts where a job is created (a submit):
  it is handed to the job engine (:func:`apply_to_job`) and does not stop request-level rules
  from being tried. A job takes the job/image effects of the rule applied to its request when
  that rule has some, else those of the first job/image-only rule that matches;
* ``webhook`` is parsed and kept but not applied here: webhook delivery asks
  :meth:`FaultRules.rules_for_webhook` / :meth:`FaultRules.take_webhook_fault`.
"""

from __future__ import annotations

import contextvars
import io
import itertools
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from emulator.core.jobs import JobStatus

if TYPE_CHECKING:
    from emulator.core.jobs import Job
    from emulator.core.tasks import Rendered

#: The values each enumerated attribute accepts.
JOB_FAULTS = ("failed", "error", "stuck", "expired")
CONNECTION_FAULTS = ("reset", "close")
BODY_FAULTS = ("truncated", "malformed", "empty")
IMAGE_FAULTS = ("truncated-png", "rgb-no-alpha", "empty-alpha")
WEBHOOK_FAULTS = ("drop", "delay", "duplicate", "reorder", "forged-signature",
                  "stale-timestamp")

MATCH_FIELDS = ("vendor", "operation", "api_key")
EFFECT_FIELDS = ("status", "latency", "job", "connection", "body", "image", "webhook")
FIELDS = (*MATCH_FIELDS, *EFFECT_FIELDS, "retry_after", "message", "times", "probability",
          "seed")

#: Longest latency a rule may add, seconds.
MAX_LATENCY_S = 1000.0
#: Operation every vendor has: downloading a result file from the vendor's storage.
FILE_OPERATION = "file"

#: Messages of status faults (the adapter renders them in the vendor's body).
STATUS_MESSAGES: dict[int, str] = {
    400: "bad request",
    401: "invalid or missing API key",
    402: "insufficient balance",
    403: "forbidden",
    404: "not found",
    408: "request timeout",
    409: "conflict",
    422: "validation error",
    429: "too many requests; retry after {retry_after:g} seconds",
    500: "internal server error",
    502: "bad gateway",
    503: "service temporarily unavailable",
    504: "gateway timeout",
}
STATUS_CODES: dict[int, str] = {
    401: "unauthorized", 402: "insufficient_balance", 404: "not_found", 429: "rate_limited",
    500: "internal_error", 503: "service_unavailable",
}


class RuleError(ValueError):
    """A rule (or its text form) that cannot be accepted; the message says what is wrong."""


@dataclass(frozen=True)
class Latency:
    """Added latency: ``fixed`` (``a`` seconds), ``uniform`` (``a``..``b`` s) or
    ``lognormal`` (median ``a`` s, sigma ``b``)."""

    kind: str
    a: float
    b: float = 0.0

    def sample(self, rng: random.Random) -> float:
        """Seconds to wait, capped at :data:`MAX_LATENCY_S`."""
        if self.kind == "fixed":
            value = self.a
        elif self.kind == "uniform":
            value = rng.uniform(self.a, self.b)
        else:
            value = self.a * math.exp(self.b * rng.gauss(0.0, 1.0))
        return min(MAX_LATENCY_S, max(0.0, value))

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


@dataclass(frozen=True)
class WebhookFault:
    """What to do to a webhook delivery: ``kind`` in :data:`WEBHOOK_FAULTS`; ``delay_s`` for
    ``delay``."""

    kind: str
    delay_s: float = 0.0

    def __str__(self) -> str:
        return f"delay:{self.delay_s:g}" if self.kind == "delay" else self.kind


@dataclass(eq=False)
class FaultRule:
    """One rule. Match fields left ``None`` match anything.

    Attributes:
        id: ``f1``, ``f2``, ... for stored rules; ``header`` / ``key`` for per-request ones.
        status: HTTP status to answer with (400-599), in the vendor's error body.
        retry_after: seconds for the ``Retry-After`` header of the status answer (a 429 always
            has one: 1 s unless set).
        message: error message for ``status`` and failed jobs (a default per status).
        latency: seconds added before answering.
        job: one of :data:`JOB_FAULTS`.
        connection: one of :data:`CONNECTION_FAULTS` (drop without an HTTP answer).
        body: one of :data:`BODY_FAULTS` (the answer's body is broken).
        image: one of :data:`IMAGE_FAULTS` (the result file is broken).
        webhook: kept for webhook delivery, not applied by the middleware.
        times: apply to the next N matching requests only; ``None``: always.
        probability: chance (0..1) that a matching request gets the fault.
        seed: seed of the rule's own random generator (probability and latency draws), so
            the same seed gives the same outcomes.
        source: ``admin``, ``header``, ``key`` or ``scenario:NAME``.
        hits: how many times the rule has been applied.
    """

    id: str
    vendor: str | None = None
    operation: str | None = None
    api_key: str | None = None
    status: int | None = None
    retry_after: float | None = None
    message: str | None = None
    latency: Latency | None = None
    job: str | None = None
    connection: str | None = None
    body: str | None = None
    image: str | None = None
    webhook: WebhookFault | None = None
    times: int | None = None
    probability: float = 1.0
    seed: int | None = None
    source: str = "admin"
    hits: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    # -- what the rule does -----------------------------------------------------------------
    @property
    def request_level(self) -> bool:
        """True when it acts on the HTTP answer (status, latency, connection or body)."""
        return (self.status is not None or self.latency is not None
                or self.connection is not None or self.body is not None)

    @property
    def job_level(self) -> bool:
        """True when it acts on a job created by the request (job or image)."""
        return self.job is not None or self.image is not None

    @property
    def remaining(self) -> int | None:
        """Applications left; ``None``: unlimited."""
        return None if self.times is None else max(0, self.times - self.hits)

    @property
    def exhausted(self) -> bool:
        """True once applied ``times`` times."""
        return self.times is not None and self.hits >= self.times

    def matches(self, vendor: str | None, operation: str | None, api_key: str | None) -> bool:
        """True when every match field set on the rule equals the request's; ``operation``
        also matches its dotted sub-operations (``submit`` matches ``submit.remove``)."""
        if self.vendor is not None and self.vendor != vendor:
            return False
        if self.api_key is not None and self.api_key != api_key:
            return False
        want = self.operation
        return want is None or (operation is not None and (
            operation == want or operation.startswith(want + ".")))

    def roll(self) -> bool:
        """Draw against ``probability`` (no draw at 1.0, so the sequence stays stable)."""
        if self.probability >= 1.0:
            return True
        return self.rng.random() < self.probability

    def status_message(self) -> str:
        """The message for a status fault: ``message``, else a default for the status."""
        if self.message:
            return self.message
        assert self.status is not None
        text = STATUS_MESSAGES.get(self.status, "error")
        return text.format(retry_after=self.retry_after_s())

    def retry_after_s(self) -> float | None:
        """``Retry-After`` seconds of the status answer: ``retry_after``, else 1 for a 429,
        else ``None`` (no header)."""
        if self.retry_after is not None:
            return self.retry_after
        return 1.0 if self.status == 429 else None

    def effects(self) -> str:
        """The effects as rule text (``status=429,latency=0.5``), for the journal."""
        parts = []
        for name in EFFECT_FIELDS:
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name}={value}")
        return ",".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON view for ``/_emulator/faults``: the spec, ``hits``, ``remaining``, ``source``."""
        out: dict[str, Any] = {"id": self.id}
        for name in FIELDS:
            value = getattr(self, name)
            if name == "probability" and value == 1.0:
                continue
            if value is not None:
                out[name] = str(value) if isinstance(value, (Latency, WebhookFault)) else value
        out.update(source=self.source, hits=self.hits, remaining=self.remaining)
        return out


# -- parsing -------------------------------------------------------------------------------
#: ``uniform:A:B`` (seconds, up to 999.999 each) and ``lognormal:MEDIAN:SIGMA`` (median in
#: seconds, sigma below 10): the exact strings accepted (the control-plane contract repeats them).
LATENCY_PATTERN = (r"^(uniform:[0-9]{1,3}(\.[0-9]{1,6})?:[0-9]{1,3}(\.[0-9]{1,6})?"
                   r"|lognormal:[0-9]{1,3}(\.[0-9]{1,6})?:[0-9](\.[0-9]{1,6})?)$")
#: ``delay:SECONDS`` for webhooks (up to 9999.999 s).
WEBHOOK_DELAY_PATTERN = r"^delay:[0-9]{1,4}(\.[0-9]{1,3})?$"
#: The white space a name (key, message, ...) may not consist of alone, stripped from its
#: ends: ASCII's. Every regex dialect's ``\\s`` has these and disagrees on the rest (Python's
#: adds ``\\x1c``-``\\x1f`` and ``\\x85``, ECMA's U+FEFF, Rust's neither), so any other
#: character, a control character included, counts as something.
BLANK = " \t\n\r\f\v"
#: Matches a name that is not blank; the control-plane contract's ``NonBlank`` pattern
#: (contracts/emulator.yaml; a test keeps them equal).
NON_BLANK_PATTERN = r"[^ \t\n\r\f\v]"
NON_BLANK = re.compile(NON_BLANK_PATTERN)


def is_blank(text: str) -> bool:
    """Whether ``text`` is empty or only :data:`BLANK` white space."""
    return NON_BLANK.search(text) is None
#: Integer fields and their bounds; ``None``: unbounded.
INTEGER_FIELDS: dict[str, tuple[int | None, int | None]] = {
    "status": (400, 599), "times": (1, None), "seed": (None, None)}
#: Number fields and their bounds.
NUMBER_FIELDS: dict[str, tuple[float, float]] = {
    "retry_after": (0.0, 86400.0), "probability": (0.0, 1.0)}


def parse_text(text: str) -> dict[str, Any]:
    """Split ``name=value,name=value`` (the header and ``fault.`` key form) into a dict, with
    numbers turned into numbers (``status=429`` -> ``{"status": 429}``).

    Raises:
        RuleError: an item without ``=``, an empty name, or a name given twice.
    """
    out: dict[str, Any] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, value = item.partition("=")
        name = name.strip().lower().replace("-", "_")
        if not sep or not name:
            raise RuleError(f"{item!r} is not name=value (expected e.g. status=429,latency=0.5)")
        if name in out:
            raise RuleError(f"{name} is given twice")
        out[name] = _text_value(name, value.strip())
    if not out:
        raise RuleError("empty rule (expected e.g. status=429,latency=0.5)")
    return out


def _text_value(name: str, value: str) -> Any:
    if name in INTEGER_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value
    if name in NUMBER_FIELDS or name == "latency":
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _number(name: str, value: Any, *, minimum: float | None = None,
            maximum: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RuleError(f"{name} must be a number, got {value!r}")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float
        finite = False
    if not finite:
        raise RuleError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise RuleError(f"{name} must be >= {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise RuleError(f"{name} must be <= {maximum:g}, got {value!r}")
    return float(value)


def _integer(name: str, value: Any) -> int:
    low, high = INTEGER_FIELDS[name]
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RuleError(f"{name} must be an integer, got {value!r}")
    if low is not None and value < low:
        raise RuleError(f"{name} must be >= {low}, got {value!r}")
    if high is not None and value > high:
        raise RuleError(f"{name} must be <= {high}, got {value!r}")
    return value


def _choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise RuleError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def parse_latency(value: Any) -> Latency:
    """A number of seconds (0 to :data:`MAX_LATENCY_S`), or a string matching
    :data:`LATENCY_PATTERN`: ``uniform:A:B`` (A and B in either order) or
    ``lognormal:MEDIAN:SIGMA``.

    Raises:
        RuleError: anything else.
    """
    if isinstance(value, str):
        if not re.fullmatch(LATENCY_PATTERN, value):
            raise RuleError(f"latency {value!r}: expected SECONDS, uniform:A:B or "
                            "lognormal:MEDIAN:SIGMA (e.g. uniform:0.1:0.5)")
        kind, a, b = value.split(":")
        low, high = float(a), float(b)
        if kind == "uniform" and high < low:
            low, high = high, low
        return Latency(kind, low, high)
    return Latency("fixed", _number("latency", value, minimum=0.0, maximum=MAX_LATENCY_S))


def parse_webhook(value: Any) -> WebhookFault:
    """``drop``, ``delay:SECONDS`` (:data:`WEBHOOK_DELAY_PATTERN`), ``duplicate``,
    ``reorder``, ``forged-signature`` or ``stale-timestamp``.

    Raises:
        RuleError: anything else.
    """
    if isinstance(value, str) and re.fullmatch(WEBHOOK_DELAY_PATTERN, value):
        return WebhookFault("delay", float(value[6:]))
    allowed = [w for w in WEBHOOK_FAULTS if w != "delay"]
    if not isinstance(value, str) or value not in allowed:
        raise RuleError(f"webhook must be one of {', '.join(allowed)} or delay:SECONDS "
                        f"(e.g. delay:30); got {value!r}")
    return WebhookFault(value)


def _name(name: str, value: Any) -> str:
    if not isinstance(value, str) or is_blank(value):
        raise RuleError(f"{name} must be a string with more than white space, got {value!r}")
    return value.strip(BLANK)


def operation_names(operations: Iterable[str]) -> set[str]:
    """The operation names a rule may use for these operations: each name and its dotted
    prefixes (``submit.remove`` gives ``submit.remove`` and ``submit``)."""
    out: set[str] = set()
    for operation in operations:
        parts = operation.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return out


def parse_rule(spec: Mapping[str, Any], catalog: Mapping[str, Iterable[str]], *,
               rule_id: str, source: str) -> FaultRule:
    """Validate ``spec`` (JSON or YAML values, typed; see :func:`parse_text` for the text
    form) into a rule.

    Args:
        catalog: vendor slug -> its operation names; a rule naming a vendor, or an operation
            that vendor does not have (a name or a dotted prefix of one: ``submit`` covers
            fal's ``submit.remove``), is refused.

    Raises:
        RuleError: unknown attribute, bad value, unknown vendor or operation, or no effect.
    """
    if not isinstance(spec, Mapping):
        raise RuleError(f"a rule must be an object of attributes, got {type(spec).__name__}")
    unknown = sorted(str(k) for k in spec if k not in FIELDS)
    if unknown:
        raise RuleError(f"unknown rule attribute {unknown[0]!r}; known: {', '.join(FIELDS)}")
    rule = FaultRule(id=rule_id, source=source)
    get = spec.get
    if "vendor" in spec:
        vendor = get("vendor")
        if not isinstance(vendor, str) or vendor not in catalog:
            raise RuleError(f"unknown vendor {vendor!r}; known: {', '.join(sorted(catalog))}")
        rule.vendor = vendor
    if "operation" in spec:
        operation = get("operation")
        if rule.vendor is not None:
            ops = sorted(operation_names(catalog[rule.vendor]))
            if not isinstance(operation, str) or operation not in ops:
                raise RuleError(f"vendor {rule.vendor!r} has no operation {operation!r}; "
                                f"its operations are: {', '.join(ops)}")
        else:
            every = sorted(operation_names(op for ops in catalog.values() for op in ops))
            if not isinstance(operation, str) or operation not in every:
                raise RuleError(f"no vendor has an operation {operation!r}; operations: "
                                f"{', '.join(every)}")
        rule.operation = operation
    if "api_key" in spec:
        rule.api_key = _name("api_key", get("api_key"))
    if "message" in spec:
        rule.message = _name("message", get("message"))
    if "status" in spec:
        rule.status = _integer("status", get("status"))
    if "times" in spec:
        rule.times = _integer("times", get("times"))
    if "seed" in spec:
        rule.seed = _integer("seed", get("seed"))
    if "retry_after" in spec:
        low, high = NUMBER_FIELDS["retry_after"]
        rule.retry_after = _number("retry_after", get("retry_after"), minimum=low, maximum=high)
    if "probability" in spec:
        low, high = NUMBER_FIELDS["probability"]
        rule.probability = _number("probability", get("probability"), minimum=low,
                                   maximum=high)
    if "latency" in spec:
        rule.latency = parse_latency(get("latency"))
    if "job" in spec:
        rule.job = _choice("job", get("job"), JOB_FAULTS)
    if "connection" in spec:
        rule.connection = _choice("connection", get("connection"), CONNECTION_FAULTS)
    if "body" in spec:
        rule.body = _choice("body", get("body"), BODY_FAULTS)
    if "image" in spec:
        rule.image = _choice("image", get("image"), IMAGE_FAULTS)
    if "webhook" in spec:
        rule.webhook = parse_webhook(get("webhook"))
    rule.rng = random.Random(rule.seed)
    if rule.status is not None and rule.connection is not None:
        raise RuleError("status and connection exclude each other (a dropped connection has "
                        "no status)")
    if rule.connection is not None and rule.body is not None:
        raise RuleError("connection and body exclude each other (no body is sent)")
    if all(getattr(rule, name) is None for name in EFFECT_FIELDS):
        raise RuleError(f"a rule needs at least one effect: {', '.join(EFFECT_FIELDS)}")
    return rule


# -- applying ------------------------------------------------------------------------------
@dataclass
class Plan:
    """What one request gets: the request-level rule, and job/image rules for its job.

    Attributes:
        rule: the request-level rule applied (``None``: none).
        latency_s: seconds to wait before answering.
        pending: job/image-only rules that matched, in order, tried when a job is created.
        applied: ``(rule, effects text)`` of every rule applied, for the journal.
    """

    rule: FaultRule | None = None
    latency_s: float = 0.0
    pending: list[FaultRule] = field(default_factory=list)
    applied: list[tuple[FaultRule, str]] = field(default_factory=list)
    registry: FaultRules | None = None
    _taken: bool = False

    @property
    def empty(self) -> bool:
        """True when nothing applies to the request and no job rule waits."""
        return self.rule is None and not self.pending

    def take_job_rule(self) -> FaultRule | None:
        """The rule whose job/image effects the request's job gets (once per request)."""
        if self._taken:
            return None
        self._taken = True
        if self.rule is not None and self.rule.job_level:
            self.applied.append((self.rule, _job_effects(self.rule)))
            return self.rule
        for rule in self.pending:
            if rule.exhausted or not rule.roll():
                continue
            _consume(rule, self.registry)
            self.applied.append((rule, _job_effects(rule)))
            return rule
        return None

    def journal_json(self) -> list[dict[str, str]]:
        """``[{"rule", "source", "applied"}]`` for the journal."""
        return [{"rule": r.id, "source": r.source, "applied": text} for r, text in self.applied]


def _job_effects(rule: FaultRule) -> str:
    return ",".join(f"{n}={getattr(rule, n)}" for n in ("job", "image")
                    if getattr(rule, n) is not None)


def _request_effects(rule: FaultRule, latency_s: float) -> str:
    parts = []
    if rule.status is not None:
        parts.append(f"status={rule.status}")
    if rule.latency is not None:
        parts.append(f"latency={latency_s:.3f}")
    if rule.connection is not None:
        parts.append(f"connection={rule.connection}")
    if rule.body is not None:
        parts.append(f"body={rule.body}")
    return ",".join(parts)


def _consume(rule: FaultRule, registry: FaultRules | None) -> None:
    rule.hits += 1
    if registry is not None and rule.exhausted:
        registry._refresh()


class FaultRules:
    """The stored rules (admin API and scenarios), in the order they were added.

    Event-loop only (no locking): the middleware and the admin routes run on the loop.
    """

    def __init__(self, catalog: Mapping[str, Iterable[str]]) -> None:
        self.catalog: dict[str, frozenset[str]] = {
            vendor: frozenset(ops) | {FILE_OPERATION} for vendor, ops in catalog.items()}
        self._rules: list[FaultRule] = []
        self._ids = itertools.count(1)
        #: True while some stored rule can still act on a request or a job, or once a
        #: credential that hides its ``fault.`` key exists (hot-path check).
        self.live = False
        #: Set for good by :meth:`expect_hidden_keys` (not cleared by :meth:`clear`).
        self.hidden_keys = False

    def _refresh(self) -> None:
        self.live = self.hidden_keys or any((r.request_level or r.job_level)
                                            and not r.exhausted for r in self._rules)

    def expect_hidden_keys(self) -> None:
        """Note that some credential now stands for a ``fault.`` key without showing the
        bytes ``fault.`` on the wire (a GMI Cloud access token for an account whose password
        is ``fault.<rule>``): the middleware's hot-path hint cannot see it, so from now on
        every request takes the fault path, where the adapter's ``api_key`` reveals the key.
        Kept for the life of the process (tokens outlive :meth:`clear` and resets)."""
        self.hidden_keys = True
        self.live = True

    def vendors(self) -> list[str]:
        """The vendor slugs a rule may name, sorted."""
        return sorted(self.catalog)

    def operation_names(self) -> list[str]:
        """Every operation name a rule may use (of some vendor, dotted prefixes included)."""
        return sorted(operation_names(op for ops in self.catalog.values() for op in ops))

    def parse(self, spec: Mapping[str, Any], *, source: str, rule_id: str = "") -> FaultRule:
        """Validate a rule without storing it (``rule_id`` defaults to ``source``).

        Raises:
            RuleError: see :func:`parse_rule`.
        """
        return parse_rule(spec, self.catalog, rule_id=rule_id or source, source=source)

    def parse_text(self, text: str, *, source: str) -> FaultRule:
        """Parse the ``name=value,...`` form (header, ``fault.`` key).

        Raises:
            RuleError: bad text or rule.
        """
        return self.parse(parse_text(text), source=source)

    def add(self, spec: Mapping[str, Any], *, source: str = "admin") -> FaultRule:
        """Validate and store one rule (it gets the next ``f<N>`` id).

        Raises:
            RuleError: see :func:`parse_rule`.
        """
        return self.add_all([spec], source=source)[0]

    def add_all(self, specs: Sequence[Mapping[str, Any]], *, source: str = "admin"
                ) -> list[FaultRule]:
        """Validate every rule first, then store them all, in order (all or none).

        Raises:
            RuleError: the first invalid rule, with its index when there are several.
        """
        parsed = []
        for i, spec in enumerate(specs):
            try:
                parsed.append(self.parse(spec, source=source, rule_id="pending"))
            except RuleError as exc:
                raise RuleError(f"rule {i + 1}: {exc}" if len(specs) > 1 else str(exc)) from None
        for rule in parsed:
            rule.id = f"f{next(self._ids)}"
            self._rules.append(rule)
        self._refresh()
        return parsed

    def rules(self) -> list[FaultRule]:
        """Every stored rule, in order (exhausted ones included, with their hits)."""
        return list(self._rules)

    def get(self, rule_id: str) -> FaultRule | None:
        """The stored rule with ``rule_id``, or ``None``."""
        return next((r for r in self._rules if r.id == rule_id), None)

    def remove(self, rule_id: str) -> bool:
        """Delete one rule; ``False`` if there is none with that id."""
        before = len(self._rules)
        self._rules = [r for r in self._rules if r.id != rule_id]
        self._refresh()
        return len(self._rules) != before

    def clear(self) -> None:
        """Delete every rule (ids keep counting up)."""
        self._rules.clear()
        self._refresh()

    def plan(self, vendor: str | None, operation: str | None, api_key: str | None,
             first: Sequence[FaultRule] = ()) -> Plan:
        """Decide what a request gets; consumes the applied request-level rule.

        Args:
            first: per-request rules (header, key) tried before the stored ones.
        """
        plan = Plan(registry=self)
        for rule in itertools.chain(first, self._rules):
            if rule.exhausted or not rule.matches(vendor, operation, api_key):
                continue
            if not rule.request_level:
                if rule.job_level:
                    plan.pending.append(rule)
                continue
            if plan.rule is not None or not rule.roll():
                continue
            _consume(rule, self)
            plan.rule = rule
            if rule.latency is not None:
                plan.latency_s = rule.latency.sample(rule.rng)
            plan.applied.append((rule, _request_effects(rule, plan.latency_s)))
        return plan

    # -- for webhook delivery (a later issue) ----------------------------------------------
    def rules_for_webhook(self, vendor: str, api_key: str | None,
                          operation: str | None = None) -> list[FaultRule]:
        """Stored rules with a ``webhook`` effect that match and have ``times`` left, in order.

        For the webhook outbox: a finished job's ``(vendor, api_key, operation)`` picks the
        rules that may act on its callback. Does not roll or consume; see
        :meth:`take_webhook_fault`.
        """
        return [r for r in self._rules
                if r.webhook is not None and not r.exhausted
                and r.matches(vendor, operation, api_key)]

    def take_webhook_fault(self, vendor: str, api_key: str | None,
                           operation: str | None = None) -> tuple[FaultRule, WebhookFault] | None:
        """The first matching webhook rule that passes its probability roll, consumed
        (its ``hits`` go up, counting against ``times``); ``None`` when none applies."""
        for rule in self.rules_for_webhook(vendor, api_key, operation):
            if rule.roll():
                _consume(rule, self)
                assert rule.webhook is not None
                return rule, rule.webhook
        return None


# -- jobs: the engine's hooks --------------------------------------------------------------
#: The plan of the request being served (set by the middleware around the app call).
CURRENT_PLAN: contextvars.ContextVar[Plan | None] = contextvars.ContextVar(
    "rmbg_fault_plan", default=None)

#: Messages of failed jobs (vendor-neutral; each adapter shows ``job.error``).
JOB_MESSAGES = {
    "failed": "the image could not be processed",
    "error": "internal error while processing the request; you have not been charged",
}


def apply_to_job(job: Job) -> None:
    """``JobEngine.submit_hooks`` entry: give a new job the job/image faults of its request.

    ``failed`` / ``error``: the job skips its image work and ends in that status (not
    charged); ``stuck``: it never leaves processing (until advanced or completed through the
    control plane); ``expired``: its result files are expired as soon as they are stored;
    ``image``: the result file is corrupted (see :func:`corrupt_outputs`).
    """
    plan = CURRENT_PLAN.get()
    if plan is None or plan.empty:
        return
    rule = plan.take_job_rule()
    if rule is None:
        return
    job.faults = {"rule": rule.id}
    if rule.job is not None:
        job.faults["job"] = rule.job
    if rule.image is not None:
        job.faults["image"] = rule.image
    if rule.job in ("failed", "error"):
        status = JobStatus.FAILED if rule.job == "failed" else JobStatus.ERROR
        job.planned = (status, rule.message or JOB_MESSAGES[rule.job],
                       "fault_failed" if rule.job == "failed" else "system_error")
    elif rule.job == "stuck":
        job.stuck = True
    elif rule.job == "expired":
        job.output_ttl_s = 0.0


def corrupt_outputs(job: Job, outputs: list[Rendered]) -> list[Rendered]:
    """``JobEngine.output_hooks`` entry: break the result files of a job with an image fault.

    Runs in the worker pool. ``truncated-png``: the first half of the PNG bytes (signature and
    header intact, image data cut); ``rgb-no-alpha``: the same pixels re-encoded as an RGB PNG
    (transparent areas turn black); ``empty-alpha``: RGBA with alpha 0 everywhere. Sizes
    (``width x height``) are kept.
    """
    kind = job.faults.get("image")
    if kind is None:
        return outputs
    return [corrupt_png(out, kind) for out in outputs]


def corrupt_png(out: Rendered, kind: str) -> Rendered:
    """One output broken as ``kind`` (one of :data:`IMAGE_FAULTS`).

    Raises:
        ValueError: unknown kind.
    """
    if kind == "truncated-png":
        return replace(out, data=out.data[:max(41, len(out.data) // 2)])
    if kind not in ("rgb-no-alpha", "empty-alpha"):
        raise ValueError(f"unknown image fault {kind!r}")
    with Image.open(io.BytesIO(out.data)) as img:
        rgba = np.array(img.convert("RGBA"))
    if kind == "rgb-no-alpha":
        image = Image.fromarray(np.ascontiguousarray(rgba[:, :, :3]), mode="RGB")
    else:
        rgba[:, :, 3] = 0
        image = Image.fromarray(rgba, mode="RGBA")
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return replace(out, data=buf.getvalue())


__all__ = [
    "BODY_FAULTS", "CONNECTION_FAULTS", "CURRENT_PLAN", "FILE_OPERATION", "IMAGE_FAULTS",
    "JOB_FAULTS", "WEBHOOK_FAULTS", "FaultRule", "FaultRules", "Latency", "Plan", "RuleError",
    "WebhookFault", "apply_to_job", "corrupt_outputs", "corrupt_png", "parse_latency",
    "parse_rule", "parse_text", "parse_webhook",
]
