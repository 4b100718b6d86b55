"""The fault effects: one small registered class per kind, with the stage it acts at.

As toxiproxy registers its toxics (``toxics/toxic.go``), each effect kind is one
:class:`Effect` subclass decorated with :func:`register`, which puts one instance in
:data:`EFFECTS`. Everything that knows effect kinds reads that registry: rule parsing
(:func:`emulator.core.faults.rules.parse_rule`), the rule's text and JSON views, the plan
(:class:`emulator.core.faults.rules.Plan`, which acts at each stage), webhook delivery
(:meth:`emulator.core.faults.rules.FaultRules.act_on_delivery`) and the control-plane
contract's enums (:func:`emulator.contracts.fill_registry_enums`). A new effect is one class.

Stages (:data:`STAGES`), where an effect acts:

* ``request``: on the HTTP exchange, before the route runs (:meth:`Effect.act_on_request`,
  plain ASGI: :class:`RequestAct`); effects act in their :attr:`Effect.order`;
* ``job``: on the job created by the request, at submit (:meth:`Effect.act_on_job`);
* ``output``: on the job's rendered result files, in the worker pool
  (:meth:`Effect.act_on_output`), only for jobs that carry such an effect;
* ``webhook``: on a webhook delivery being queued (:meth:`Effect.act_on_delivery`).

The built-in kinds and their values (vendor-neutral; README "Faults, billing, journal"):
``status`` (400-599), ``latency`` (seconds or a distribution), ``connection`` (reset, close),
``body`` (truncated, malformed, empty), ``job`` (failed, error, stuck, expired), ``word`` (a
status word of the vendor's contract), ``polls`` (extra status reads), ``vary`` (a valid
but unexpected answer), ``image``
(truncated-png, rgb-no-alpha, empty-alpha) and ``webhook`` (drop, delay:S, duplicate,
reorder, forged-signature, stale-timestamp).
"""

from __future__ import annotations

import asyncio
import io
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

import numpy as np
from PIL import Image

from emulator.core.faults.asgi import BodyFault, Receive, Send, drop_connection
from emulator.core.faults.parsing import RuleError, choice, integer, number
from emulator.core.faults.variation import MIXES, VARIATION_KINDS, VariedBody
from emulator.core.jobs import JobStatus, OutputFault
from emulator.errors import EmulatorError, NotFound, PaymentRequired, RateLimited, Unauthorized

if TYPE_CHECKING:
    from emulator.core.faults.rules import FaultRule
    from emulator.core.jobs import Job
    from emulator.core.tasks import Rendered
    from emulator.core.webhooks import Delivery, WebhookOutbox

Stage = Literal["request", "job", "output", "webhook"]
#: Where effects act, in the order a request meets them.
STAGES: tuple[Stage, ...] = ("request", "job", "output", "webhook")

#: The values each enumerated effect accepts.
JOB_FAULTS = ("failed", "error", "stuck", "expired")
CONNECTION_FAULTS = ("reset", "close")
BODY_FAULTS = ("truncated", "malformed", "empty")
IMAGE_FAULTS = ("truncated-png", "rgb-no-alpha", "empty-alpha")
WEBHOOK_FAULTS = ("drop", "delay", "duplicate", "reorder", "forged-signature",
                  "stale-timestamp")

#: Longest latency a rule may add, seconds.
MAX_LATENCY_S = 1000.0
#: ``uniform:A:B`` (seconds, up to 999.999 each) and ``lognormal:MEDIAN:SIGMA`` (median in
#: seconds, sigma below 10): the exact strings accepted (the control-plane contract repeats them).
LATENCY_PATTERN = (r"^(uniform:[0-9]{1,3}(\.[0-9]{1,6})?:[0-9]{1,3}(\.[0-9]{1,6})?"
                   r"|lognormal:[0-9]{1,3}(\.[0-9]{1,6})?:[0-9](\.[0-9]{1,6})?)$")
#: ``delay:SECONDS`` for webhooks (up to 9999.999 s).
WEBHOOK_DELAY_PATTERN = r"^delay:[0-9]{1,4}(\.[0-9]{1,3})?$"

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
#: Messages of failed jobs (vendor-neutral; each adapter shows ``job.error``).
JOB_MESSAGES = {
    "failed": "the image could not be processed",
    "error": "internal error while processing the request; you have not been charged",
}


@dataclass
class RequestAct:
    """What request-stage effects act on (plain ASGI; the middleware makes one per request
    that has a rule with request effects).

    Attributes:
        receive: the request body's ``receive``.
        send: where the answer goes; an effect may wrap it (a broken body).
        raw_send: the server's own ``send`` (its transport is what a drop closes).
        record: journals the request now (before a drop, which a client may see first).
        refuse: the error to answer with instead of running the route (a status fault); the
            middleware hands it to the one error boundary, which renders it in the vendor's
            body.
        conforms: ``conforms(status, json_body)``: whether the vendor may send that answer
            to this request (its operation's response schema in the contract); ``None``
            where the middleware has no contract for the request (``vary`` then does
            nothing).
    """

    receive: Receive
    send: Send
    raw_send: Send
    record: Callable[[], None]
    refuse: EmulatorError | None = None
    conforms: Callable[[int, Any], bool] | None = None


class Effect:
    """One effect kind. Subclasses set :attr:`name` and :attr:`stage`, parse their value and
    implement the act method of their stage; :func:`register` puts one instance in
    :data:`EFFECTS`.

    Attributes:
        name: the rule attribute (``status``, ``latency``, ...).
        stage: one of :data:`STAGES`.
        order: request-stage effects act in ascending order (latency before a drop, a drop
            before a broken body, a broken body before a status answer).
        excludes: other effects that may not be in the same rule, with why (the 400 says).
    """

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "request"
    order: ClassVar[int] = 50
    excludes: ClassVar[dict[str, str]] = {}

    # -- the value ---------------------------------------------------------------------------
    def parse(self, value: Any) -> Any:
        """The checked value (JSON or YAML typed; see :meth:`from_text` for the text form).

        Raises:
            RuleError: a bad value (the message names the attribute and what it accepts).
        """
        raise NotImplementedError

    def from_text(self, text: str) -> Any:
        """The typed value of the ``name=value`` text form, before :meth:`parse` (a number
        for numeric effects; left a string when it is not one, so :meth:`parse` names it)."""
        return text

    def text(self, value: Any) -> str:
        """The value as rule text (``0.5``, ``uniform:0.1:0.5``, ``delay:30``)."""
        return str(value)

    def json_value(self, value: Any) -> Any:
        """The value in the rule's JSON view (``/_emulator/faults``): its text by default."""
        return self.text(value)

    def spec_schema(self) -> dict[str, Any]:
        """JSON Schema of the value a rule spec accepts (the control-plane contract's
        ``FaultRuleSpec`` property)."""
        return {"type": "string"}

    def view_schema(self) -> dict[str, Any]:
        """JSON Schema of :meth:`json_value` (the contract's ``FaultRule`` property)."""
        return {"type": "string"}

    # -- a request applying it ---------------------------------------------------------------
    def draw(self, value: Any, rng: random.Random) -> Any:
        """What this request gets of ``value`` (a latency samples its seconds), drawn once
        when the rule is applied."""
        return value

    def describe(self, drawn: Any) -> str:
        """The journal's text of what was applied (``status=429``, ``latency=0.120``)."""
        return f"{self.name}={self.text(drawn)}"

    # -- the stages --------------------------------------------------------------------------
    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        """Act on the HTTP exchange (``request`` stage). Returns ``True`` when the request
        is over (no answer is to be sent)."""
        return False

    def act_on_job(self, value: Any, rule: FaultRule, job: Job) -> None:
        """Act on a new job at submit (``job`` stage; ``output`` effects hook the job's
        :attr:`~emulator.core.jobs.Job.output_fault` here)."""
        if self.stage != "output":
            return
        step = partial(self.act_on_output, value)
        before = job.output_fault
        job.output_fault = step if before is None else _compose(before, step)

    def act_on_output(self, value: Any, outputs: list[Rendered]) -> list[Rendered]:
        """Break a job's rendered outputs (``output`` stage; runs in the worker pool)."""
        return outputs

    def act_on_delivery(self, value: Any, delivery: Delivery,
                        outbox: WebhookOutbox) -> list[Delivery]:
        """Act on a webhook delivery being queued (``webhook`` stage); returns the
        deliveries to keep in its place."""
        return [delivery]


def _compose(first: OutputFault, then: OutputFault) -> OutputFault:
    def both(outputs: list[Rendered]) -> list[Rendered]:
        return then(first(outputs))
    return both


#: The registry: effect name -> its one instance, in registration order (the order of a
#: rule's text and of the contract's properties).
EFFECTS: dict[str, Effect] = {}
#: Goes up with every :func:`register` / :func:`unregister` (what is derived from
#: :data:`EFFECTS` is kept until it moves: :func:`effects_at`, parsed per-request rules).
version = 0
_by_stage: dict[tuple[int, str], tuple[Effect, ...]] = {}

E = TypeVar("E", bound=type[Effect])


def register(cls: E) -> E:
    """Class decorator: put one instance of ``cls`` in :data:`EFFECTS` under ``cls.name``.

    Raises:
        ValueError: no name, an unknown stage, or a name already registered.
    """
    if not cls.name or cls.stage not in STAGES:
        raise ValueError(f"{cls.__name__}: an effect needs a name and a stage in {STAGES}")
    if cls.name in EFFECTS:
        raise ValueError(f"effect {cls.name!r} is already registered")
    global version
    EFFECTS[cls.name] = cls()
    version += 1
    return cls


def unregister(name: str) -> None:
    """Remove effect ``name`` from :data:`EFFECTS` (for tests that register their own)."""
    global version
    EFFECTS.pop(name, None)
    version += 1


def effects_at(stage: Stage) -> Iterator[Effect]:
    """The registered effects of ``stage``, in the order they act (sorted once per
    registry :data:`version`)."""
    found = _by_stage.get((version, stage))
    if found is None:
        found = tuple(sorted((e for e in EFFECTS.values() if e.stage == stage),
                             key=lambda e: e.order))
        if len(_by_stage) > 4 * len(STAGES):
            _by_stage.clear()
        _by_stage[(version, stage)] = found
    return iter(found)


async def sleep_at_least(seconds: float) -> None:
    """Sleep ``seconds`` by ``time.perf_counter`` (the ``latency`` effect's wait): the event
    loop's timers may fire up to a millisecond early (uvloop rounds to milliseconds), and an
    injected latency must never be shorter than asked."""
    deadline = time.perf_counter() + seconds
    while (left := deadline - time.perf_counter()) > 0:
        await asyncio.sleep(left)


class IntegerEffect(Effect):
    """An effect whose value is an integer in ``[minimum, maximum]`` (a JSON number in the
    rule's view, the digits in its text form)."""

    minimum: ClassVar[int] = 0
    maximum: ClassVar[int] = 0

    def parse(self, value: Any) -> int:
        return integer(self.name, value, self.minimum, self.maximum)

    def from_text(self, text: str) -> Any:
        try:
            return int(text)
        except ValueError:
            return text

    def json_value(self, value: Any) -> Any:
        return value

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}

    def view_schema(self) -> dict[str, Any]:
        return {"type": "integer"}


# -- request stage ------------------------------------------------------------------------------
@register
class StatusEffect(IntegerEffect):
    """Answer with an HTTP status (400-599) in the vendor's own error body, with the rule's
    ``message`` (default per status: :data:`STATUS_MESSAGES`) and ``Retry-After`` (a 429
    always has one)."""

    name = "status"
    order = 90
    minimum = 400
    maximum = 599

    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        act.refuse = fault_error(rule)
        return False


def fault_error(rule: FaultRule) -> EmulatorError:
    """The :class:`EmulatorError` an adapter renders for ``rule``'s status fault (with the
    rule's ``Retry-After``, always present on a 429)."""
    status = rule.status
    assert status is not None
    message = rule.status_message()
    retry_after = rule.retry_after_s()
    kinds: dict[int, type[EmulatorError]] = {402: PaymentRequired, 429: RateLimited,
                                              401: Unauthorized, 404: NotFound}
    kind = kinds.get(status)
    if kind is not None:
        return kind(message, retry_after=retry_after)
    return EmulatorError(message, status=status, code=STATUS_CODES.get(status, "http_error"),
                         retry_after=retry_after)


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
    return Latency("fixed", number("latency", value, minimum=0.0, maximum=MAX_LATENCY_S))


@register
class LatencyEffect(Effect):
    """Wait before answering: seconds, ``uniform:A:B`` or ``lognormal:MEDIAN:SIGMA`` (drawn
    with the rule's seeded generator), never shorter than drawn (:func:`sleep_at_least`)."""

    name = "latency"
    order = 0

    def parse(self, value: Any) -> Latency:
        return parse_latency(value)

    def from_text(self, text: str) -> Any:
        try:
            return float(text)
        except ValueError:
            return text

    def spec_schema(self) -> dict[str, Any]:
        return {"oneOf": [{"type": "number", "minimum": 0, "maximum": int(MAX_LATENCY_S)},
                          {"type": "string", "pattern": LATENCY_PATTERN}]}

    def view_schema(self) -> dict[str, Any]:
        return {"type": "string",
                "description": "Seconds (`0.5`) or the distribution (`uniform:0.1:0.5`)."}

    def draw(self, value: Any, rng: random.Random) -> float:
        assert isinstance(value, Latency)
        return value.sample(rng)

    def describe(self, drawn: Any) -> str:
        return f"latency={drawn:.3f}"

    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        if drawn > 0:
            await sleep_at_least(drawn)
        return False


@register
class JobEffect(Effect):
    """The request's job fails (``failed`` / ``error``: its image work is skipped, not
    charged), never leaves processing (``stuck``, until advanced or completed through the
    control plane) or has its files expired as soon as they are stored (``expired``)."""

    name = "job"
    stage = "job"

    def parse(self, value: Any) -> str:
        return choice("job", value, JOB_FAULTS)

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(JOB_FAULTS)}

    def act_on_job(self, value: Any, rule: FaultRule, job: Job) -> None:
        if value in ("failed", "error"):
            status = JobStatus.FAILED if value == "failed" else JobStatus.ERROR
            job.planned = (status, rule.message or JOB_MESSAGES[value],
                           "fault_failed" if value == "failed" else "system_error")
        elif value == "stuck":
            job.stuck = True
        elif value == "expired":
            job.output_ttl_s = 0.0


#: A status word a ``word`` rule may name (the vendor's contract says which it documents).
WORD_PATTERN = r"^[A-Za-z][A-Za-z_]{0,39}$"
#: Most extra status reads (or seconds) a ``polls`` rule adds to a job.
MAX_EXTRA_POLLS = 1000


@register
class WordEffect(Effect):
    """The job shows this status word of its vendor's contract where it means what the job is
    at (``VendorAdapter.status_word``): a word of a job in progress (GMI Cloud's
    ``dispatched``, Bria's ``UNKNOWN``) while it is queued or processing; a terminal word
    (Pixazo's ``ERROR``, Runflow's ``partial_succeeded`` or ``cancelled``) as its final status
    when the job ends that way (pair a failure word with ``job: failed``). A word the vendor
    does not document, or one that does not fit the job, leaves its usual word."""

    name = "word"
    stage = "job"

    def parse(self, value: Any) -> str:
        if not isinstance(value, str) or not re.fullmatch(WORD_PATTERN, value):
            raise RuleError(f"word must be a status word (letters and _, e.g. ERROR); "
                            f"got {value!r}")
        return value

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "pattern": WORD_PATTERN}

    def act_on_job(self, value: Any, rule: FaultRule, job: Job) -> None:
        job.word = value


@register
class PollsEffect(IntegerEffect):
    """The job takes N more status reads before its final status (``polls`` progression),
    N more seconds (``time`` progression); 1..:data:`MAX_EXTRA_POLLS`."""

    name = "polls"
    stage = "job"
    minimum = 1
    maximum = MAX_EXTRA_POLLS

    def act_on_job(self, value: Any, rule: FaultRule, job: Job) -> None:
        job.extra_polls = int(value)


@register
class ConnectionEffect(Effect):
    """Drop the connection without an HTTP answer: ``reset`` (TCP RST) or ``close`` (FIN);
    journaled before the drop (a client that sees it may read the journal at once)."""

    name = "connection"
    order = 10
    excludes = {"status": "a dropped connection has no status", "body": "no body is sent"}

    def parse(self, value: Any) -> str:
        return choice("connection", value, CONNECTION_FAULTS)

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(CONNECTION_FAULTS)}

    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        act.record()
        await drop_connection(act.raw_send, act.receive, reset=drawn == "reset")
        return True


@register
class BodyEffect(Effect):
    """Break the answer's body: ``truncated``, ``malformed`` or ``empty``
    (:class:`~emulator.core.faults.asgi.BodyFault`)."""

    name = "body"
    order = 20

    def parse(self, value: Any) -> str:
        return choice("body", value, BODY_FAULTS)

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(BODY_FAULTS)}

    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        act.send = BodyFault(drawn, act.send, act.raw_send, act.receive)
        return False


@register
class VaryEffect(Effect):
    """Send the answer valid but unexpected: one variation of its JSON body
    (:mod:`emulator.core.faults.variation`: ``extra-field``, ``drop-optional``,
    ``null-optional``, ``reorder``, ``rare-value``; ``any`` of them, or ``all`` at once),
    drawn with the rule's seeded generator and kept only when the operation's response schema
    allows it (else the answer is sent as it is). The one response-variation step: it acts on
    the route's answer."""

    name = "vary"
    order = 30

    def parse(self, value: Any) -> str:
        return choice("vary", value, (*MIXES, *VARIATION_KINDS))

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": [*MIXES, *VARIATION_KINDS]}

    def draw(self, value: Any, rng: random.Random) -> tuple[str, int]:
        return value, rng.getrandbits(32)

    def describe(self, drawn: Any) -> str:
        return f"vary={drawn[0]}"

    async def act_on_request(self, drawn: Any, rule: FaultRule, act: RequestAct) -> bool:
        kind, seed = drawn
        act.send = VariedBody(kind, seed, act.send, act.conforms)
        return False


# -- output stage -------------------------------------------------------------------------------
@register
class ImageEffect(Effect):
    """Break the job's result files (:func:`corrupt_png`)."""

    name = "image"
    stage = "output"

    def parse(self, value: Any) -> str:
        return choice("image", value, IMAGE_FAULTS)

    def spec_schema(self) -> dict[str, Any]:
        return {"type": "string", "enum": list(IMAGE_FAULTS)}

    def act_on_output(self, value: Any, outputs: list[Rendered]) -> list[Rendered]:
        return [corrupt_png(out, value) for out in outputs]


def corrupt_png(out: Rendered, kind: str) -> Rendered:
    """One output broken as ``kind`` (one of :data:`IMAGE_FAULTS`). ``truncated-png``: the
    first half of the PNG bytes (signature and header intact, image data cut);
    ``rgb-no-alpha``: the same pixels re-encoded as an RGB PNG (transparent areas turn
    black); ``empty-alpha``: RGBA with alpha 0 everywhere. Sizes are kept.

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


# -- webhook stage ------------------------------------------------------------------------------
@dataclass(frozen=True)
class WebhookFault:
    """What to do to a webhook delivery: ``kind`` in :data:`WEBHOOK_FAULTS`; ``delay_s`` for
    ``delay``."""

    kind: str
    delay_s: float = 0.0

    def __str__(self) -> str:
        return f"delay:{self.delay_s:g}" if self.kind == "delay" else self.kind


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


@register
class WebhookEffect(Effect):
    """Act on the job's webhook delivery: ``drop`` (journaled as dropped, never sent),
    ``delay:S`` (S seconds later on the emulator's clock), ``duplicate`` (sent twice),
    ``reorder`` (held until the next delivery is queued, then sent after it),
    ``forged-signature`` (signature headers replaced by random hex of the same length),
    ``stale-timestamp`` (timestamp and its signature made one hour old: the signature still
    verifies)."""

    name = "webhook"
    stage = "webhook"

    def parse(self, value: Any) -> WebhookFault:
        return parse_webhook(value)

    def spec_schema(self) -> dict[str, Any]:
        return {"oneOf": [
            {"type": "string", "enum": [w for w in WEBHOOK_FAULTS if w != "delay"]},
            {"type": "string", "pattern": WEBHOOK_DELAY_PATTERN}]}

    def act_on_delivery(self, value: Any, delivery: Delivery,
                        outbox: WebhookOutbox) -> list[Delivery]:
        fault: WebhookFault = value
        if fault.kind == "drop":
            delivery.state, delivery.next_at = "dropped", None
        elif fault.kind == "delay":
            delivery.next_at = (delivery.next_at or outbox.clock.now()) + fault.delay_s
        elif fault.kind == "duplicate":
            return [delivery, outbox.copy(delivery)]
        elif fault.kind == "reorder":
            outbox.hold(delivery)
        elif fault.kind == "forged-signature":
            delivery.forge_signature = True
        elif fault.kind == "stale-timestamp":
            delivery.time_shift_s = -3600.0
        return [delivery]


__all__ = [
    "BODY_FAULTS", "CONNECTION_FAULTS", "EFFECTS", "IMAGE_FAULTS", "JOB_FAULTS",
    "JOB_MESSAGES", "LATENCY_PATTERN", "MAX_EXTRA_POLLS", "MAX_LATENCY_S", "STAGES",
    "STATUS_CODES", "STATUS_MESSAGES", "WEBHOOK_DELAY_PATTERN", "WEBHOOK_FAULTS",
    "WORD_PATTERN", "Effect", "Latency",
    "OutputFault", "RequestAct", "Stage", "WebhookFault", "corrupt_png", "effects_at",
    "fault_error", "parse_latency", "parse_webhook", "register", "unregister",
]
