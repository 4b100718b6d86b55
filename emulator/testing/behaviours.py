"""What a vendor does to one client run, as data: :class:`Behaviour` and the hypothesis strategy
:func:`behaviours` that draws them from the vendor's contract.

A behaviour is an ordered tuple of fault rules in the emulator's own rule grammar (README
"Faults, billing, journal"), so it replays anywhere rules load: ``POST /_emulator/faults``,
``POST /_emulator/scenarios`` or ``rmbg-emulator serve --scenario`` with
:meth:`Behaviour.to_scenario_yaml`. It is labelled:

* *recoverable*: only transient faults, each family at most ``retry_budget`` times per
  operation in all, then the vendor succeeds. A correct client ends with the cut-out.
* *unrecoverable*: one permanent fault besides the transient ones. A correct client ends with
  a clear error and must not claim success.

Families (``families=`` picks some; default all):

=============== ====================================================== =====================
family          rule                                                   label
=============== ====================================================== =====================
``rate-limit``  ``status: 429`` with ``retry_after`` 1..N s, ``times``  recoverable
``server-error`` a documented 5xx of the operation, ``times``           recoverable
``connection``  ``connection: reset | close``, ``times``               recoverable
``body``        ``body: truncated | malformed | empty`` on the status  recoverable
                operation, ``times``
``latency``     ``latency: uniform:0:0.2`` (seconds), ``times``         recoverable
``job-path``    the first job shows a documented in-progress word       recoverable
                (``word``: GMI ``dispatched``, Bria ``UNKNOWN``) and/or
                takes ``polls: 1..5`` more status reads, or ends with a
                documented success word (Runflow ``partial_succeeded``);
                ``times: 1``
``variation``   ``vary: extra-field | drop-optional | null-optional |   recoverable
                reorder | rare-value | all`` (seeded), ``times``: a
                valid but unexpected answer (only where the contract
                allows it); ``all`` half the time
``webhook``     ``webhook: drop | delay:1 | duplicate | reorder |       recoverable
                forged-signature | stale-timestamp``, ``times`` (only
                when named: it acts on clients that ask for webhooks)
``payment``     ``status: 402`` on submit, every time                  unrecoverable
``job-failure`` ``job: failed | error``, every job                     unrecoverable
``job-end``     every job ends with a documented failure word           unrecoverable
                (``job: failed | error`` + ``word``: Pixazo ``ERROR``,
                Runflow ``cancelled``, ...), or is ``stuck`` (never
                finishes, maybe showing an in-progress word), or its
                result files are ``expired`` as soon as stored
``image``       ``image: truncated-png | rgb-no-alpha | empty-alpha``,  unrecoverable
                every job
=============== ====================================================== =====================

Decisions, and why:

* Only statuses the contract documents for the operation are drawn (``429`` and ``5xx`` of
  ``responses``; ``402`` of the submit). A vendor whose contract has no 429 on an operation
  gets none there.
* ``body`` faults act on the status operation only: a submit whose answer arrives broken has
  already created (and will charge) a job, and the vendors document no idempotency key, so
  whether a client should resubmit is a trade-off, not a property (left for a later slice).
  ``connection`` faults drop the request before the vendor runs, so they are safe on submit.
* Permanent faults carry no ``times``: every job fails, every result file is broken, the
  wallet stays empty. Then "unrecoverable" holds whatever the client does (a client that
  resubmits after a broken PNG could otherwise get a good one, at a second price).
* A broken result image (truncated, RGB without alpha, alpha 0 everywhere) is
  *unrecoverable*: a client cannot make a correct cut-out from it, so "never a false success"
  means it must report failure rather than hand the broken file on.
* The sum of ``times`` of the transient rules on one operation is at most ``retry_budget``,
  so "recoverable" means "within the budget" even when rules stack (rules are tried in order,
  each until its ``times`` are spent).
* Rule order: transient rules, then the permanent one, then ``latency`` and ``vary`` rules.
  Such a rule that applies lets its request through and stops the rules after it for that
  request, so after it a ``402`` would miss a submit and "unrecoverable" would be false.
* ``job-path`` and ``job-end`` read the words from the contract's status enum (the schema
  marked ``x-status-words``) and what each means from the adapter registry
  (``VendorAdapter.word_meaning``: its ``status_words`` and ``other_words``), so no vendor is
  named here. A word means what the vendor's clients must do with it: Runflow's
  ``partial_succeeded`` is a success (the run has its output: the one image a removal makes)
  and is recoverable; Bria's ``UNKNOWN`` is in progress (Bria's SDK keeps polling on it).
* ``stuck`` is unrecoverable: the job never finishes, so a correct client gives up with an
  error before the deadline (property *terminates*) rather than polling on. ``expired``
  results (gone as soon as stored: the emulator expires a job's files with ``job:
  expired``) are unrecoverable too: a client must report failure, not an empty file.
* ``webhook`` is recoverable: the job is there to poll whatever happens to its callback. A
  correct client that asks for a webhook checks its signature (refusing a forged or stale
  one), handles a delivery once, and falls back to polling when none comes in time. It is
  not in the default families: a client that asks for no webhook gets nothing from it.
  (Accepting a forged delivery is not observable by the properties yet: the forged one
  carries the same, real result.)
* A job takes the job-stage effects of one rule only (the first job-only rule that matches),
  so a behaviour has at most one job-level rule: a ``job-path`` rule is left out when the
  permanent fault acts on jobs.
* Shrinking: the rule list has ``min_size=0`` and ``times`` is ``integers(1, budget)``, the
  permanent fault is ``none() | ...``, so hypothesis shrinks towards one rule, ``times: 1``.

Requires ``hypothesis`` (the ``test`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml
from hypothesis import strategies as st

from emulator import contracts
from emulator.core.faults.variation import VARIATION_KINDS
from emulator.core.jobs.model import JobStatus

__all__ = ["FAMILIES", "KNOWN_FAMILIES", "OPTIONAL_FAMILIES", "PERMANENT_FAMILIES",
           "TRANSIENT_FAMILIES", "WEBHOOK_KINDS", "Behaviour", "behaviours",
           "operations_of", "status_words"]

#: Families whose faults a correct client rides out (within the retry budget).
TRANSIENT_FAMILIES = ("rate-limit", "server-error", "connection", "body", "latency",
                      "job-path", "variation")
#: Families whose fault is permanent: a correct client ends with an error.
PERMANENT_FAMILIES = ("payment", "job-failure", "job-end", "image")
#: The families drawn when none are named.
FAMILIES = (*TRANSIENT_FAMILIES, *PERMANENT_FAMILIES)
#: Families drawn only when named (``families=`` / ``fuzz-client --family``): they act only on
#: clients that ask for webhooks, so by default they would only dilute the examples.
OPTIONAL_FAMILIES = ("webhook",)
#: Every family a caller may name.
KNOWN_FAMILIES = (*FAMILIES, *OPTIONAL_FAMILIES)
#: What the ``webhook`` family does to a delivery (``delay`` seconds on the emulator's clock).
WEBHOOK_KINDS = ("drop", "delay:1", "duplicate", "reorder", "forged-signature",
                 "stale-timestamp")
#: Latency drawn by the ``latency`` family (seconds, seeded by the behaviour's seed).
LATENCY = "uniform:0:0.2"
#: Most extra status reads the ``job-path`` family adds to a job.
MAX_EXTRA_POLLS = 5
#: Rule attributes that act on the job a submit creates.
JOB_FIELDS = ("job", "word", "polls", "image")
#: Request-level effects that let their request through (the vendor still answers it).
PASS_THROUGH_FIELDS = ("latency", "vary")
#: What the ``variation`` family draws for ``vary``: each kind, or ``all`` of them at once,
#: ``all`` half the time (a client that trips over any one kind is met early), listed last so
#: that shrinking moves from ``all`` to the first single kind that still breaks the client.
VARY_DRAWS = (*VARIATION_KINDS, *("all",) * len(VARIATION_KINDS))


@dataclass(frozen=True)
class Behaviour:
    """What the vendor does to one client run.

    Attributes:
        vendor: the vendor slug (``pixazo``, ...).
        seed: seed of the rules' random draws (latency), so a replay draws the same.
        rules: fault rules as plain dicts in the rule grammar, tried in this order.
        recoverable: True when a correct client must end with the cut-out; False when it
            must end with an error (see the module docstring for the labels).
    """

    vendor: str
    seed: int
    rules: tuple[Mapping[str, Any], ...]
    recoverable: bool

    def describe(self) -> str:
        """One line: the label and each rule's effect, e.g.
        ``recoverable: submit status=429 retry_after=1 x1``."""
        label = "recoverable" if self.recoverable else "unrecoverable"
        if not self.rules:
            return f"{label}: no faults"
        parts = []
        for rule in self.rules:
            fields = [f"{k}={v}" for k, v in rule.items()
                      if k not in ("vendor", "operation", "times", "seed")]
            times = f" x{rule['times']}" if "times" in rule else " always"
            parts.append(f"{rule.get('operation', '*')} {' '.join(fields)}{times}")
        return f"{label}: " + "; ".join(parts)

    def to_scenario(self) -> dict[str, Any]:
        """The scenario mapping (``name``, ``description``, ``faults``) of
        :mod:`emulator.core.scenarios`."""
        return {"name": f"behaviour-{self.vendor}-{self.seed}",
                "description": self.describe(),
                "faults": [dict(rule) for rule in self.rules]}

    def to_scenario_yaml(self) -> str:
        """:meth:`to_scenario` as YAML, for ``rmbg-emulator serve --scenario FILE``."""
        return yaml.safe_dump(self.to_scenario(), sort_keys=False, default_flow_style=None)


def operations_of(vendor: str) -> tuple[str, str, dict[str, list[int]]]:
    """``(submit, status, documented)`` of a vendor's contract: the operation ids of its
    submit (the first ``submit*`` operation: fal's ``submit.remove``) and its status read, and
    each one's documented error statuses (>= 400).

    Raises:
        KeyError: the contract has no ``submit*`` or no ``status`` operation.
        emulator.contracts.ContractError: the contract cannot be loaded.
    """
    contract = contracts.load(vendor)
    submit = next((op for op in contract.operations if op.startswith("submit")), None)
    if submit is None or "status" not in contract.operations:
        raise KeyError(f"{vendor}: its contract needs a submit* and a status operation")
    documented = {op: sorted(int(s) for s in contract.operations[op].responses
                             if s.isdigit() and int(s) >= 400)
                  for op in (submit, "status")}
    return submit, "status", documented


def _transient(vendor: str, seed: int, families: frozenset[str], budget: int,
               max_retry_after: int) -> st.SearchStrategy[dict[str, Any]]:
    submit, status, documented = operations_of(vendor)
    options: list[st.SearchStrategy[dict[str, Any]]] = []
    times = st.integers(1, budget)
    for op in (submit, status):
        codes = documented[op]
        base = {"vendor": vendor, "operation": op}
        if "rate-limit" in families and 429 in codes:
            options.append(st.fixed_dictionaries({
                **{k: st.just(v) for k, v in base.items()}, "status": st.just(429),
                "retry_after": st.integers(1, max_retry_after), "times": times}))
        server = [c for c in codes if c >= 500]
        if "server-error" in families and server:
            options.append(st.fixed_dictionaries({
                **{k: st.just(v) for k, v in base.items()}, "status": st.sampled_from(server),
                "times": times}))
        if "connection" in families:
            options.append(st.fixed_dictionaries({
                **{k: st.just(v) for k, v in base.items()},
                "connection": st.sampled_from(("reset", "close")), "times": times}))
        if "body" in families and op == status:
            options.append(st.fixed_dictionaries({
                **{k: st.just(v) for k, v in base.items()},
                "body": st.sampled_from(("truncated", "malformed", "empty")), "times": times}))
        if "variation" in families:
            options.append(st.fixed_dictionaries({
                **{k: st.just(v) for k, v in base.items()},
                "vary": st.sampled_from(VARY_DRAWS), "seed": st.just(seed),
                "times": times}))
        if "latency" in families:
            options.append(st.fixed_dictionaries({
                **{k: st.just(v) for k, v in base.items()}, "latency": st.just(LATENCY),
                "seed": st.just(seed), "times": times}))
    if "job-path" in families:
        options.extend(_job_path(vendor, submit))
    if "webhook" in families:
        # Webhook rules match the job's vendor (a delivery has no operation of its own).
        options.append(st.fixed_dictionaries({
            "vendor": st.just(vendor), "webhook": st.sampled_from(WEBHOOK_KINDS),
            "times": times}))
    return st.one_of(options) if options else st.nothing()


def status_words(vendor: str) -> dict[str, JobStatus]:
    """Each status word of ``vendor``'s contract (its ``x-status-words`` enum) and the core
    status it means (the adapter's ``word_meaning``), in the contract's order; words the
    adapter cannot place are left out.

    Raises:
        KeyError: no adapter is registered for ``vendor``.
    """
    from emulator.vendors import load_all

    adapter = load_all()[vendor]
    out: dict[str, JobStatus] = {}
    for word in contracts.load(vendor).status_words:
        meaning = adapter.word_meaning(word)
        if meaning is not None:
            out[word] = meaning
    return out


def _job_path(vendor: str, submit: str) -> list[st.SearchStrategy[dict[str, Any]]]:
    from emulator.vendors import load_all

    shown = set(load_all()[vendor].status_words.values())
    words = status_words(vendor)
    pending = sorted(w for w, m in words.items() if not m.terminal)
    # A success word the emulator does not show on its own (a plain success is no news).
    success = sorted(w for w, m in words.items() if m is JobStatus.SUCCEEDED and w not in shown)
    base = {"vendor": vendor, "operation": submit, "times": 1}
    drawn = st.tuples(st.none() | st.sampled_from(pending),
                      st.none() | st.integers(1, MAX_EXTRA_POLLS))
    out = [drawn.filter(lambda wp: wp != (None, None)).map(
        lambda wp: _without_none({**base, "word": wp[0], "polls": wp[1]}))]
    if success:
        out.append(st.sampled_from(success).map(lambda w: {**base, "word": w}))
    return out


def _without_none(rule: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in rule.items() if v is not None}


def _job_end(vendor: str, submit: str) -> list[st.SearchStrategy[dict[str, Any]]]:
    words = status_words(vendor)
    base = {"vendor": vendor, "operation": submit}
    failures = sorted(w for w, m in words.items() if m.terminal and m is not JobStatus.SUCCEEDED)
    pending = sorted(w for w, m in words.items() if not m.terminal)
    out: list[st.SearchStrategy[dict[str, Any]]] = []
    if failures:
        out.append(st.sampled_from(failures).map(lambda w: {
            **base, "job": "error" if words[w] is JobStatus.ERROR else "failed", "word": w}))
    out.append(st.sampled_from([None, *pending]).map(
        lambda w: _without_none({**base, "job": "stuck", "word": w})))
    out.append(st.just({**base, "job": "expired"}))
    return out


def _permanent(vendor: str, families: frozenset[str]) -> list[st.SearchStrategy[dict[str, Any]]]:
    submit, _, documented = operations_of(vendor)
    base = {"vendor": vendor, "operation": submit}
    out: list[st.SearchStrategy[dict[str, Any]]] = []
    if "payment" in families and 402 in documented[submit]:
        out.append(st.just({**base, "status": 402}))
    if "job-failure" in families:
        out.append(st.sampled_from(("failed", "error")).map(lambda j: {**base, "job": j}))
    if "job-end" in families:
        out.extend(_job_end(vendor, submit))
    if "image" in families:
        out.append(st.sampled_from(("truncated-png", "rgb-no-alpha", "empty-alpha")).map(
            lambda i: {**base, "image": i}))
    return out


#: Key order of a drawn rule (match fields, effects, options), so YAML and repr read alike.
KEY_ORDER = ("vendor", "operation", "status", "retry_after", "connection", "body", "vary",
             "latency", "job", "word", "polls", "image", "webhook", "seed", "times")


def _canonical(rule: Mapping[str, Any]) -> dict[str, Any]:
    return {k: rule[k] for k in sorted(rule, key=lambda k: (
        KEY_ORDER.index(k) if k in KEY_ORDER else len(KEY_ORDER), k))}


def _within_budget(rules: list[dict[str, Any]], budget: int) -> bool:
    spent: dict[str, int] = {}
    for rule in rules:
        where = rule.get("operation", "webhook")
        spent[where] = spent.get(where, 0) + int(rule["times"])
    return all(n <= budget for n in spent.values())


def behaviours(vendor: str, *, retry_budget: int = 3, families: Iterable[str] | None = None,
               max_retry_after: int = 1, max_rules: int = 3) -> st.SearchStrategy[Behaviour]:
    """A hypothesis strategy of :class:`Behaviour` for ``vendor``, from its contract.

    Args:
        retry_budget: the most transient faults in a row one operation gets (sum of ``times``
            per operation), >= 1.
        families: the families to draw from (:data:`FAMILIES`; default all).
        max_retry_after: the longest ``Retry-After`` drawn, whole seconds (>= 1; keep it
            small so runs are fast).
        max_rules: the most transient rules in one behaviour.

    Raises:
        ValueError: an unknown family, a budget or ``max_retry_after`` below 1, or no family
            that applies to this vendor.
        KeyError: the vendor's contract has no submit/status operation.
    """
    chosen = frozenset(FAMILIES if families is None else families)
    unknown = sorted(chosen - set(KNOWN_FAMILIES))
    if unknown:
        raise ValueError(f"unknown behaviour family {unknown[0]!r}; known: "
                         f"{', '.join(KNOWN_FAMILIES)}")
    if retry_budget < 1 or max_retry_after < 1 or max_rules < 0:
        raise ValueError("retry_budget and max_retry_after must be >= 1, max_rules >= 0")
    permanent = _permanent(vendor, chosen)
    transient_families = chosen & {*TRANSIENT_FAMILIES, *OPTIONAL_FAMILIES}
    if not permanent and not transient_families:
        raise ValueError(f"no family of {sorted(chosen)} applies to {vendor}")

    # Most examples focus on one family (drawn evenly), so a narrow family (one kind of answer
    # variation among eleven families) is met every few examples rather than every few dozen:
    # a transient focus draws one or more rules of that family alone; a permanent focus draws
    # its permanent fault with transient rules of every family beside it; no focus draws as
    # if unfocused (any mix, "no faults" included).
    focuses = [f for f in KNOWN_FAMILIES if f in chosen and (
        f in transient_families or _permanent(vendor, frozenset({f})))]

    @st.composite
    def draw(data: st.DrawFn) -> Behaviour:
        seed = data(st.integers(0, 2**16))
        # None first: the simplest example (and where shrinking heads) is the mixed draw, whose
        # smallest is "no faults"
        focus = data(st.sampled_from([None, *focuses])) if len(focuses) > 1 else None
        fatal_options = permanent
        rule_families = transient_families
        if focus is not None and focus in transient_families:
            fatal_options, rule_families = [], frozenset({focus})
        elif focus is not None:
            fatal_options = _permanent(vendor, frozenset({focus}))
        rules: list[dict[str, Any]] = []
        if rule_families:
            # a transient focus has at least one rule of its family
            least = 1 if fatal_options == [] and focus is not None and max_rules else 0
            rules = data(st.lists(_transient(vendor, seed, rule_families, retry_budget,
                                             max_retry_after), min_size=least,
                                  max_size=max_rules)
                         .filter(lambda rs: _within_budget(rs, retry_budget)))
        fatal: dict[str, Any] | None = None
        if fatal_options:
            fatal = data(st.one_of(*fatal_options) if focus is not None or not rule_families
                         else st.one_of(st.none(), *fatal_options))
        jobbed = [r for r in rules if any(f in r for f in JOB_FIELDS)]
        if fatal is not None and any(f in fatal for f in JOB_FIELDS):
            jobbed = []  # the permanent fault is the one job-level rule
        rules = [r for r in rules if not any(f in r for f in JOB_FIELDS)] + jobbed[:1]
        if fatal is not None:
            # A request-level rule that lets its request through (``latency``, ``vary``) still
            # stops the request-level rules after it for that request, so the permanent fault
            # goes before them: a 402 then answers every submit.
            passing = [r for r in rules if any(f in r for f in PASS_THROUGH_FIELDS)]
            rules = [r for r in rules if not any(f in r for f in PASS_THROUGH_FIELDS)] + [
                fatal] + passing
        return Behaviour(vendor=vendor, seed=seed, rules=tuple(_canonical(r) for r in rules),
                         recoverable=fatal is None)

    return draw()
