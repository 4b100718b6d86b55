"""What one request gets, and where each of its effects acts.

A :class:`Plan` is made once per request that may meet a fault
(:meth:`emulator.core.faults.rules.FaultRules.plan`), stored on the request's context
(``RequestContext.plan``) and passed explicitly to where its effects act:

* the middleware calls :meth:`Plan.act_on_request` (request-stage effects: latency,
  connection, body, status);
* an adapter's submit hands it to ``JobEngine.submit(plan=...)``, which calls
  :meth:`Plan.act_on_job` on the new job (job-stage effects, and the output-stage ones the
  job carries into the worker pool);
* the journal reads :meth:`Plan.journal_json`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from emulator.core.faults.effects import RequestAct, effects_at

if TYPE_CHECKING:
    from emulator.core.faults.rules import FaultRule, FaultRules
    from emulator.core.jobs import Job


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
