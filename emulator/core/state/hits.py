"""Job- and webhook-stage fault rule hits taken across every ``serve`` process on one Redis
(``--store redis://``).

A stored rule with ``times`` counts its hits in Redis (``SharedJobs.take_hit``, one Lua
script). Request-stage hits are taken by the middleware; this module takes the others the
same way, **before** the synchronous code that applies them runs:

* a request's job rule (:func:`claim_job_rule`, the fault middleware, before the request is
  served): the first pending job rule that rolls and whose hit Redis grants becomes the
  plan's (:meth:`Plan.decide_job_rule`); when the request made no job (a status read, a
  refused submit), :func:`give_back_job_rule` returns the hit;
* a job's webhook rule (:func:`claim_webhook_rule`, before its final webhook is queued):
  stored in ``FaultRules.decided_webhook`` for the outbox hook.

Rules without ``times`` and per-request rules (header, key) are not counted in Redis.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

from emulator.core.state.shared import HITS_KEY
from emulator.errors import EmulatorError

if TYPE_CHECKING:
    from emulator.core.faults.rules import FaultRule, FaultRules, Plan
    from emulator.core.jobs.model import Job
    from emulator.core.state.shared import SharedJobs


def counted(rule: FaultRule) -> bool:
    """Whether ``rule``'s hits are counted in Redis (a stored rule with ``times``)."""
    return rule.times is not None and rule.source not in ("header", "key")


async def _take(shared: SharedJobs, faults: FaultRules | None, rule: FaultRule) -> bool:
    """One hit of ``rule``: on Redis when :func:`counted`, else here."""
    if not counted(rule):
        rule.consume(faults)
        return True
    taken = await shared.take_hit(rule)
    if faults is not None:
        faults.refresh()
    return taken


async def claim_job_rule(shared: SharedJobs, plan: Plan) -> None:
    """Choose ``plan``'s job rule now, taking its hit (see the module). Does nothing when the
    request rule is itself a job rule, or no pending rule is :func:`counted`.

    Raises:
        StoreUnavailable: Redis cannot be reached.
    """
    if plan.decided or (plan.rule is not None and plan.rule.job_level) or not any(
            counted(r) for r in plan.pending):
        return
    chosen = None
    for rule in plan.pending:
        if rule.exhausted or not rule.roll():
            continue
        if await _take(shared, plan.registry, rule):
            chosen = rule
            break
    plan.decide_job_rule(chosen)


async def give_back_job_rule(shared: SharedJobs, plan: Plan) -> None:
    """Return the hit :func:`claim_job_rule` took when no job used it (best effort: Redis
    errors are ignored, the hit then stays taken)."""
    rule = plan.claimed
    if rule is None or plan.job_rule_taken:
        return
    plan.claimed = None
    if counted(rule):
        try:
            rule.hits = int(await shared.client.hincrby(HITS_KEY, rule.id, -1))
        except (RedisError, OSError):
            return
    else:
        rule.hits -= 1
    if plan.registry is not None:
        plan.registry.refresh()


async def claim_webhook_rule(shared: SharedJobs, faults: FaultRules, job: Job) -> None:
    """Choose the webhook rule for ``job``'s callback now, taking its hit, for the outbox
    hook (``FaultRules.decided_webhook``); only when a matching rule is :func:`counted`.
    Redis unreachable: the hook decides alone (this process's counts)."""
    rules = faults.rules_for_webhook(job.vendor, job.api_key)
    if not any(counted(r) for r in rules):
        return
    chosen: tuple[FaultRule, Any] | None = None
    try:
        for rule in rules:
            if rule.roll() and await _take(shared, faults, rule):
                chosen = rule, rule.values.get("webhook")
                break
    except EmulatorError:  # StoreUnavailable
        return
    faults.decided_webhook[job.id] = chosen


__all__ = ["claim_job_rule", "claim_webhook_rule", "counted", "give_back_job_rule"]
