"""Fault rules as data: one rule type, its parser, the store of rules, and the plan one request
gets of them.

A rule is ``{vendor?, operation?, api_key?, <effects>, retry_after?, message?, times?,
probability?, seed?}``, the effects being the registered kinds
(:data:`emulator.core.faults.effects.EFFECTS`: ``status``, ``latency``, ``job``,
``connection``, ``body``, ``image``, ``webhook``). The same rule objects come from every way
in: the ``X-Emulator-Fault`` request header, an API key starting with ``fault.``, the admin
API (``/_emulator/faults``) and scenario files. Nothing here knows a vendor: the middleware
(:mod:`emulator.middleware`) resolves the request's vendor and operation and asks
:meth:`FaultRules.plan` what to do; the :class:`Plan` acts.

How a request picks its rule (see :meth:`FaultRules.plan`):

* rules are tried in order: the header rule, the key rule, then admin and scenario rules in the
  order they were added (so ordered steps with ``times`` make sequences);
* the first rule that matches ``(vendor, operation, api_key)``, has ``times`` left, has a
  request-stage effect and passes its ``probability`` roll applies; the rules after it are not
  tried for that request;
* a rule whose only effects act on jobs (``job`` / ``image``) acts where a job is created (a
  submit, which is handed the plan): it does not stop request-level rules from being tried. A
  job takes the job effects of the rule applied to its request when that rule has some, else
  those of the first job-only rule that matches;
* webhook-stage effects act when a finished job's webhook is queued
  (:meth:`FaultRules.act_on_delivery`).

A :class:`Plan` is made once per request that may meet a fault (:meth:`FaultRules.plan`),
stored on the request's context (``RequestContext.plan``) and passed explicitly to where its
effects act:

* the middleware calls :meth:`Plan.act_on_request` (request-stage effects: latency,
  connection, body, status);
* an adapter's submit hands it to ``JobEngine.submit(plan=...)``, which calls
  :meth:`Plan.act_on_job` on the new job (job-stage effects, and the output-stage ones the
  job carries into the worker pool);
* the journal reads :meth:`Plan.journal_json`.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from emulator.core.faults import effects
from emulator.core.faults.effects import (
    EFFECTS,
    STAGES,
    STATUS_MESSAGES,
    Effect,
    RequestAct,
    Stage,
    effects_at,
)
from emulator.core.faults.parsing import RuleError, integer, name_text, number

if TYPE_CHECKING:
    from emulator.core.jobs import Job
    from emulator.core.webhooks import Delivery, WebhookOutbox

MATCH_FIELDS = ("vendor", "operation", "api_key")
#: Attributes that tune effects or the rule (not effects themselves).
OPTION_FIELDS = ("retry_after", "message", "times", "probability", "seed")
#: Operation every vendor has: downloading a result file from the vendor's storage.
FILE_OPERATION = "file"

#: Integer fields and their bounds; ``None``: unbounded.
INTEGER_FIELDS: dict[str, tuple[int | None, int | None]] = {"times": (1, None),
                                                            "seed": (None, None)}
#: Number fields and their bounds.
NUMBER_FIELDS: dict[str, tuple[float, float]] = {
    "retry_after": (0.0, 86400.0), "probability": (0.0, 1.0)}
#: Stages whose effects act on the request's job (at submit and in the worker).
JOB_STAGES: tuple[Stage, ...] = ("job", "output")


def effect_fields() -> tuple[str, ...]:
    """The effect attributes, in registration order (from the registry)."""
    return tuple(EFFECTS)


def fields() -> tuple[str, ...]:
    """Every attribute a rule may have: match fields, effects, options."""
    return (*MATCH_FIELDS, *EFFECTS, *OPTION_FIELDS)


def __getattr__(name: str) -> Any:
    # EFFECT_FIELDS and FIELDS follow the registry (an effect registered later is in them).
    if name == "EFFECT_FIELDS":
        return effect_fields()
    if name == "FIELDS":
        return fields()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclass(eq=False)
class FaultRule:
    """One rule. Match fields left ``None`` match anything.

    Each effect's parsed value is in :attr:`values` (effect name -> value) and reads as an
    attribute too (``rule.status``, ``rule.latency``; ``None`` when absent).

    Attributes:
        id: ``f1``, ``f2``, ... for stored rules; ``header`` / ``key`` for per-request ones.
        values: the rule's effects, by registered name
            (:data:`~emulator.core.faults.effects.EFFECTS`).
        retry_after: seconds for the ``Retry-After`` header of a status answer (a 429 always
            has one: 1 s unless set).
        message: error message for ``status`` and failed jobs (a default per status).
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
    values: dict[str, Any] = field(default_factory=dict)
    retry_after: float | None = None
    message: str | None = None
    times: int | None = None
    probability: float = 1.0
    seed: int | None = None
    source: str = "admin"
    hits: int = 0
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __getattr__(self, name: str) -> Any:
        # Only called for names that are not fields: an effect's value (None when unset).
        if name in EFFECTS:
            return self.__dict__.get("values", {}).get(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def fresh(self) -> FaultRule:
        """A copy that has not been applied yet: no hits, a generator of its own from
        :attr:`seed` (as :func:`parse_rule` makes it), its own :attr:`values`."""
        return replace(self, values=dict(self.values), hits=0, rng=random.Random(self.seed))

    # -- what the rule does -----------------------------------------------------------------
    def effects_of(self, *stages: Stage) -> list[tuple[Effect, Any]]:
        """``(effect, value)`` of the rule's effects at ``stages``, in registration order."""
        return [(effect, value) for name, value in self.values.items()
                if (effect := EFFECTS.get(name)) is not None and effect.stage in stages]

    def has_stage(self, *stages: Stage) -> bool:
        """True when one of the rule's effects acts at one of ``stages``."""
        return any(EFFECTS[name].stage in stages for name in self.values if name in EFFECTS)

    @property
    def request_level(self) -> bool:
        """True when it acts on the HTTP answer (a ``request``-stage effect)."""
        return self.has_stage("request")

    @property
    def job_level(self) -> bool:
        """True when it acts on a job created by the request (``job`` / ``output``)."""
        return self.has_stage(*JOB_STAGES)

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

    def consume(self, store: FaultRules | None) -> None:
        """Count one application (``hits``); tell ``store`` when it is used up."""
        self.hits += 1
        if store is not None and self.exhausted:
            store.refresh()

    def status_message(self) -> str:
        """The message for a status fault: ``message``, else a default for the status."""
        if self.message:
            return self.message
        status = self.values.get("status")
        assert status is not None
        text = STATUS_MESSAGES.get(status, "error")
        return text.format(retry_after=self.retry_after_s())

    def retry_after_s(self) -> float | None:
        """``Retry-After`` seconds of the status answer: ``retry_after``, else 1 for a 429,
        else ``None`` (no header)."""
        if self.retry_after is not None:
            return self.retry_after
        return 1.0 if self.values.get("status") == 429 else None

    def effects(self) -> str:
        """The effects as rule text (``status=429,latency=0.5``), for the journal."""
        return ",".join(f"{e.name}={e.text(v)}" for e, v in self.effects_of(*STAGES))

    def to_text(self) -> str:
        """The whole rule on one line in the rule grammar (``name=value,...``: the header and
        ``fault.`` key form), match fields first, then effects, then options:
        ``operation=submit,status=429,retry_after=2,times=2``. It parses back to the same rule
        (:func:`parse_text`) unless its ``message`` holds a comma."""
        items = [f"{name}={getattr(self, name)}" for name in MATCH_FIELDS
                 if getattr(self, name) is not None]
        items += [f"{e.name}={e.text(v)}" for e, v in self.effects_of(*STAGES)]
        for name in OPTION_FIELDS:
            value = getattr(self, name)
            if value is None or (name == "probability" and value == 1.0):
                continue
            if isinstance(value, float):
                value = int(value) if value.is_integer() else repr(value)
            items.append(f"{name}={value}")
        return ",".join(items)

    def to_json(self) -> dict[str, Any]:
        """JSON view for ``/_emulator/faults``: the spec, ``hits``, ``remaining``, ``source``."""
        out: dict[str, Any] = {"id": self.id}
        for name in MATCH_FIELDS:
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for effect, value in self.effects_of(*STAGES):
            out[effect.name] = effect.json_value(value)
        for name in OPTION_FIELDS:
            value = getattr(self, name)
            if name == "probability" and value == 1.0:
                continue
            if value is not None:
                out[name] = value
        out.update(source=self.source, hits=self.hits, remaining=self.remaining)
        return out


# -- parsing -------------------------------------------------------------------------------
def parse_text(text: str) -> dict[str, Any]:
    """Split ``name=value,name=value`` (the header and ``fault.`` key form) into a dict, with
    numbers turned into numbers (``status=429`` -> ``{"status": 429}``; each effect types its
    own value: :meth:`Effect.from_text`).

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
    effect = EFFECTS.get(name)
    if effect is not None:
        return effect.from_text(value)
    if name in INTEGER_FIELDS:
        try:
            return int(value)
        except ValueError:
            return value
    if name in NUMBER_FIELDS:
        try:
            return float(value)
        except ValueError:
            return value
    return value


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
    form) into a rule; each effect's value is checked by its registered class.

    Args:
        catalog: vendor slug -> its operation names; a rule naming a vendor, or an operation
            that vendor does not have (a name or a dotted prefix of one: ``submit`` covers
            fal's ``submit.remove``), is refused.

    Raises:
        RuleError: unknown attribute, bad value, unknown vendor or operation, effects that
            exclude each other, or no effect.
    """
    if not isinstance(spec, Mapping):
        raise RuleError(f"a rule must be an object of attributes, got {type(spec).__name__}")
    known = fields()
    unknown = sorted(str(k) for k in spec if k not in known)
    if unknown:
        raise RuleError(f"unknown rule attribute {unknown[0]!r}; known: {', '.join(known)}")
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
        rule.api_key = name_text("api_key", get("api_key"))
    if "message" in spec:
        rule.message = name_text("message", get("message"))
    for name, (low, high) in INTEGER_FIELDS.items():
        if name in spec:
            setattr(rule, name, integer(name, get(name), low, high))
    for name, (lowf, highf) in NUMBER_FIELDS.items():
        if name in spec:
            setattr(rule, name, number(name, get(name), minimum=lowf, maximum=highf))
    for name, effect in EFFECTS.items():
        if name in spec:
            rule.values[name] = effect.parse(get(name))
    rule.rng = random.Random(rule.seed)
    for name, effect in EFFECTS.items():
        if name not in rule.values:
            continue
        for other, why in effect.excludes.items():
            if other in rule.values:
                first, second = sorted((name, other), key=list(EFFECTS).index)
                raise RuleError(f"{first} and {second} exclude each other ({why})")
    if not rule.values:
        raise RuleError(f"a rule needs at least one effect: {', '.join(EFFECTS)}")
    return rule



@dataclass
class Plan:
    """What one request gets: the request-level rule, and job rules for its job.

    Attributes:
        rule: the request-level rule applied (``None``: none).
        drawn: what the request gets of each of ``rule``'s request-stage effects (a latency's
            seconds are drawn once, here), by effect name.
        pending: job-only rules that matched, in order, tried when a job is created.
        applied: ``(rule, effects text)`` of every rule applied, for the journal.
        registry: the store whose rules these are (told when one is used up).
        decided: the job rule was chosen ahead, its hit taken (:meth:`decide_job_rule`: a
            shared store takes the hits of rules with ``times`` atomically, before the
            request is served); ``claimed`` is that rule (``None``: none applies).
    """

    rule: FaultRule | None = None
    drawn: dict[str, Any] = field(default_factory=dict)
    pending: list[FaultRule] = field(default_factory=list)
    applied: list[tuple[FaultRule, str]] = field(default_factory=list)
    registry: FaultRules | None = None
    decided: bool = False
    claimed: FaultRule | None = None
    _taken: bool = False

    @property
    def empty(self) -> bool:
        """True when nothing applies to the request and no job rule waits."""
        return self.rule is None and not self.pending

    @property
    def latency_s(self) -> float:
        """Seconds the request waits before its answer (0 without a latency effect)."""
        value = self.drawn.get("latency", 0.0)
        return float(value) if isinstance(value, (int, float)) else 0.0

    def take_request_rule(self, rule: FaultRule) -> None:
        """Make ``rule`` the request's rule: draw its request-stage effects and note them
        for the journal (the caller has rolled and consumed it)."""
        self.rule = rule
        parts = []
        for effect, value in rule.effects_of("request"):
            drawn = self.drawn[effect.name] = effect.draw(value, rule.rng)
            parts.append(effect.describe(drawn))
        self.applied.append((rule, ",".join(parts)))

    async def act_on_request(self, act: RequestAct) -> bool:
        """Let the request rule's request-stage effects act, in their order (latency, drop,
        broken body, status answer).

        Returns:
            ``True`` when the request is over (the connection was dropped); else the caller
            serves it with ``act.send`` and ``act.refuse``.
        """
        rule = self.rule
        if rule is None:
            return False
        for effect in effects_at("request"):
            if effect.name in self.drawn and await effect.act_on_request(
                    self.drawn[effect.name], rule, act):
                return True
        return False

    @property
    def job_rule_taken(self) -> bool:
        """Whether a job took the plan's job rule (:meth:`take_job_rule` ran)."""
        return self._taken

    def decide_job_rule(self, rule: FaultRule | None) -> None:
        """The job rule is ``rule`` (its hit already taken), or none: :meth:`take_job_rule`
        neither rolls nor consumes again."""
        self.decided, self.claimed = True, rule

    def take_job_rule(self) -> FaultRule | None:
        """The rule whose job effects the request's job gets (once per request)."""
        if self._taken:
            return None
        self._taken = True
        if self.decided:
            if self.claimed is not None:
                self.applied.append((self.claimed, _job_effects(self.claimed)))
            return self.claimed
        if self.rule is not None and self.rule.job_level:
            self.applied.append((self.rule, _job_effects(self.rule)))
            return self.rule
        for rule in self.pending:
            if rule.exhausted or not rule.roll():
                continue
            rule.consume(self.registry)
            self.applied.append((rule, _job_effects(rule)))
            return rule
        return None

    def act_on_job(self, job: Job) -> None:
        """``JobEngine.submit(plan=...)``: give a new job the job effects of its request.

        Sets ``job.faults`` (``{"rule": id, <effect>: text}``, shown by the control plane) and
        lets each job/output-stage effect act on the job (see
        :class:`~emulator.core.faults.effects.JobEffect`,
        :class:`~emulator.core.faults.effects.ImageEffect`).
        """
        if self.empty:
            return
        rule = self.take_job_rule()
        if rule is None:
            return
        job.faults = {"rule": rule.id}
        for effect, value in rule.effects_of("job", "output"):
            job.faults[effect.name] = effect.text(value)
            effect.act_on_job(value, rule, job)

    def journal_json(self) -> list[dict[str, str]]:
        """``[{"rule", "source", "applied"}]`` for the journal."""
        return [{"rule": r.id, "source": r.source, "applied": text} for r, text in self.applied]


def _job_effects(rule: FaultRule) -> str:
    return ",".join(f"{e.name}={e.text(v)}" for e, v in rule.effects_of("job", "output"))


#: Rule texts (header, ``fault.`` key) kept parsed by :meth:`FaultRules.parse_text`.
PARSED_TEXTS = 1024


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
        #: Rules parsed from text, by (text, source, effect registry version).
        self._parsed: dict[tuple[str, str, int], FaultRule] = {}
        #: Webhook rules chosen ahead by job id, their hits taken (a shared store takes the
        #: hits of rules with ``times`` atomically before the delivery is queued;
        #: ``emulator.core.state.hits``); ``None``: none applies. Read once by
        #: :meth:`act_on_delivery`.
        self.decided_webhook: dict[str, tuple[FaultRule, Any] | None] = {}

    def refresh(self) -> None:
        """Recompute :attr:`live` (after rules are added, removed or used up)."""
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
        """Parse the ``name=value,...`` form (header, ``fault.`` key): a fresh rule (no hits,
        its own generator from its ``seed``) each call. A text parsed before is not parsed
        again (a client sends the same header on every request): the rule is copied from
        the one kept for ``(text, source)`` (at most :data:`PARSED_TEXTS`, while the effect
        registry does not change).

        Raises:
            RuleError: bad text or rule.
        """
        memo = (text, source, effects.version)
        kept = self._parsed.get(memo)
        if kept is None:
            kept = self.parse(parse_text(text), source=source)
            if len(self._parsed) >= PARSED_TEXTS:
                self._parsed.clear()
            self._parsed[memo] = kept
        return kept.fresh()

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
        self.refresh()
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
        self.refresh()
        return len(self._rules) != before

    def dump(self) -> dict[str, Any]:
        """The stored rules as JSON values, for a state store: ``{"next_id": N, "rules":
        [{"spec": <the rule as the control plane shows it>, "id", "source", "hits"}],
        "hidden_keys": bool}`` (:meth:`expect_hidden_keys`: tokens standing for ``fault.``
        keys outlive a restart with a durable store)."""
        next_id = next(self._ids)
        self._ids = itertools.count(next_id)
        rules = []
        for rule in self._rules:
            spec = rule.to_json()
            for name in ("id", "source", "hits", "remaining"):
                spec.pop(name, None)
            rules.append({"spec": spec, "id": rule.id, "source": rule.source,
                          "hits": rule.hits})
        return {"next_id": next_id, "rules": rules, "hidden_keys": self.hidden_keys}

    def load(self, doc: Mapping[str, Any]) -> None:
        """Replace the stored rules with those of :meth:`dump`'s ``doc`` (their ids, hits and
        so ``times`` left; a ``probability`` rule draws again from its ``seed``).

        Raises:
            RuleError: a saved rule no longer parses (an effect or vendor since removed).
        """
        rules = []
        for saved in doc["rules"]:
            rule = self.parse(saved["spec"], source=saved["source"], rule_id=saved["id"])
            rule.hits = int(saved["hits"])
            rules.append(rule)
        self._rules = rules
        self._ids = itertools.count(int(doc["next_id"]))
        self.hidden_keys = self.hidden_keys or bool(doc.get("hidden_keys"))
        self.refresh()

    def clear(self) -> None:
        """Delete every rule (ids keep counting up)."""
        self._rules.clear()
        self.decided_webhook.clear()
        self.refresh()

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
            rule.consume(self)
            plan.take_request_rule(rule)
        return plan

    # -- webhook delivery ---------------------------------------------------------------------
    def rules_for_webhook(self, vendor: str, api_key: str | None,
                          operation: str | None = None) -> list[FaultRule]:
        """Stored rules with a ``webhook``-stage effect that match and have ``times`` left,
        in order.

        For the webhook outbox: a finished job's ``(vendor, api_key, operation)`` picks the
        rules that may act on its callback. Does not roll or consume; see
        :meth:`take_webhook_fault`.
        """
        return [r for r in self._rules
                if not r.exhausted and r.has_stage("webhook")
                and r.matches(vendor, operation, api_key)]

    def take_webhook_fault(self, vendor: str, api_key: str | None,
                           operation: str | None = None) -> tuple[FaultRule, Any] | None:
        """The first matching webhook rule that passes its probability roll, consumed
        (its ``hits`` go up, counting against ``times``), with its ``webhook`` value (a
        :class:`~emulator.core.faults.effects.WebhookFault`); ``None`` when none applies."""
        for rule in self.rules_for_webhook(vendor, api_key, operation):
            if rule.roll():
                rule.consume(self)
                return rule, rule.values.get("webhook")
        return None

    def act_on_delivery(self, delivery: Delivery, outbox: WebhookOutbox) -> list[Delivery]:
        """The outbox hook (``WebhookOutbox.hooks``): apply the webhook-stage effects of the
        first matching webhook rule (:meth:`take_webhook_fault`) to a delivery being queued.

        Returns:
            The deliveries to queue in its place (itself when no rule applies; two for a
            duplicate); each applied effect is noted in ``delivery.faults``.
        """
        if delivery.job_id in self.decided_webhook:  # chosen ahead (a shared store)
            taken = self.decided_webhook.pop(delivery.job_id)
        else:
            taken = self.take_webhook_fault(delivery.vendor, delivery.api_key)
        if taken is None:
            return [delivery]
        rule, _ = taken
        batch = [delivery]
        for effect, value in rule.effects_of("webhook"):
            delivery.faults.append(effect.text(value))
            batch = [out for d in batch for out in (
                effect.act_on_delivery(value, d, outbox) if d is delivery else [d])]
        return batch
