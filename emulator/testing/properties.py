"""The properties every client integration must have, checked after one run against a
:class:`~emulator.testing.behaviours.Behaviour` from what the emulator recorded (its journal,
its contract violations, its jobs) and what the client returned.

Each property is a function ``(run: RunRecord, ...) -> list[Problem]``; an empty list means
it holds. :func:`check_all` runs the chosen ones.

* **terminates**: the client returned within ``deadline_s`` seconds (real time).
* **honours Retry-After**: no journal entry is marked ``early_retry`` (a request of the same
  vendor, operation and key before the ``Retry-After`` of an earlier 429 had passed, on the
  emulator's clock: :mod:`emulator.core.journal`).
* **polls politely**: at most ``max_polls_per_s`` status reads of one job (one status path) in
  any one second of the emulator's clock (default 5).
* **speaks the contract**: ``/_emulator/violations`` is empty (no request broke the vendor's
  OpenAPI contract).
* **never a false success**: a client that says it succeeded has written a PNG with an alpha
  channel, of the input's size, whose alpha is not zero everywhere; on a recoverable behaviour
  it succeeds; on an unrecoverable one it does not claim success.
* **pays once**: at most one job of the run succeeded (each is paid), and no job was
  submitted after one had succeeded.

Requires Pillow (a dependency of the emulator).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from emulator.testing.behaviours import Behaviour

__all__ = ["PROPERTIES", "Outcome", "Problem", "RunRecord", "check_all", "honours_retry_after",
           "never_false_success", "pays_once", "polls_politely", "speaks_contract",
           "terminates"]

#: Default real-time limit of one client run, seconds.
DEFAULT_DEADLINE_S = 30.0
#: Default most status reads of one job in one second.
DEFAULT_MAX_POLLS_PER_S = 5


@dataclass(frozen=True)
class Outcome:
    """What the client did.

    Attributes:
        success: what the client's function returned (``False`` when it raised).
        output_path: where it was asked to write the cut-out.
        input_size: ``(width, height)`` of the input image, pixels.
        elapsed_s: real seconds the call took (up to the deadline when it did not return).
        finished: False when the call had not returned by the deadline.
        error: ``"ExceptionType: message"`` when the call raised (command-line form: its
            exit status), else ``None``.
        output: what the client printed (command-line form: stdout and stderr), else ``""``.
    """

    success: bool
    output_path: Path
    input_size: tuple[int, int]
    elapsed_s: float
    finished: bool = True
    error: str | None = None
    output: str = ""


@dataclass(frozen=True)
class RunRecord:
    """Everything one run left: the behaviour, the emulator's journal entries
    (``GET /_emulator/journal``), violations (``GET /_emulator/violations``), jobs
    (``GET /_emulator/jobs``) and the client's :class:`Outcome`."""

    behaviour: Behaviour
    outcome: Outcome
    journal: Sequence[Mapping[str, Any]] = field(default_factory=list)
    violations: Sequence[Mapping[str, Any]] = field(default_factory=list)
    jobs: Sequence[Mapping[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Problem:
    """One broken property: its name (a key of :data:`PROPERTIES`) and what happened."""

    prop: str
    detail: str

    def __str__(self) -> str:
        return f"{self.prop}: {self.detail}"


def terminates(run: RunRecord, *, deadline_s: float = DEFAULT_DEADLINE_S) -> list[Problem]:
    """The client returned, within ``deadline_s`` seconds."""
    out = run.outcome
    if not out.finished:
        return [Problem("terminates", f"the client had not returned after {deadline_s:g} s")]
    if out.elapsed_s > deadline_s:
        return [Problem("terminates", f"the client took {out.elapsed_s:.1f} s, more than "
                                      f"{deadline_s:g} s")]
    return []


def honours_retry_after(run: RunRecord) -> list[Problem]:
    """No request came before the ``Retry-After`` of an earlier 429 had passed."""
    return [Problem("honours Retry-After",
                    f"request #{e['seq']} {e['method']} {e['path']} ({e.get('operation')}) came "
                    "before the Retry-After of the 429 before it had passed")
            for e in run.journal if e.get("early_retry")]


def polls_politely(run: RunRecord, *, max_polls_per_s: int = DEFAULT_MAX_POLLS_PER_S
                   ) -> list[Problem]:
    """At most ``max_polls_per_s`` status reads of one job (status path) in any one second
    of the emulator's clock."""
    reads: dict[str, list[float]] = defaultdict(list)
    for e in run.journal:
        if str(e.get("operation") or "").startswith("status"):
            reads[str(e["path"])].append(float(e["at"]))
    problems = []
    for path, times in reads.items():
        times.sort()
        start = 0
        for end, t in enumerate(times):
            while t - times[start] >= 1.0:
                start += 1
            if end - start + 1 > max_polls_per_s:
                problems.append(Problem(
                    "polls politely", f"{end - start + 1} status reads of {path} within one "
                                      f"second (at most {max_polls_per_s})"))
                break
    return problems


def speaks_contract(run: RunRecord) -> list[Problem]:
    """No request broke the vendor's contract."""
    return [Problem("speaks the contract",
                    f"{v.get('method', '')} {v.get('path', '')}: {v.get('location', '')} "
                    f"{v.get('field', '')}: {v.get('message', '')}")
            for v in run.violations]


def _cutout_problem(path: Path, size: tuple[int, int]) -> str | None:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        return f"no file at {path}"
    try:
        with Image.open(path) as img:
            img.load()
            if img.format != "PNG":
                return f"the output is {img.format}, not a PNG"
            if img.size != size:
                return f"the output is {img.size[0]}x{img.size[1]}, the input {size[0]}x{size[1]}"
            if "A" not in img.getbands():
                return f"the output PNG has no alpha channel (mode {img.mode})"
            _low, high = img.getchannel("A").getextrema()
            if high == 0:
                return "the output PNG's alpha is 0 everywhere (nothing kept)"
    except (OSError, UnidentifiedImageError, SyntaxError) as exc:
        return f"the output is not a readable PNG ({exc})"
    return None


def never_false_success(run: RunRecord) -> list[Problem]:
    """Success means a real cut-out; recoverable runs succeed; unrecoverable ones do not
    claim success."""
    out, name = run.outcome, "never a false success"
    if not out.finished:
        return []
    if out.success:
        problem = _cutout_problem(out.output_path, out.input_size)
        if problem is not None:
            return [Problem(name, f"the client claimed success but {problem}")]
        if not run.behaviour.recoverable:
            return [Problem(name, "the client claimed success on an unrecoverable behaviour")]
        return []
    if run.behaviour.recoverable:
        why = f" ({out.error})" if out.error else ""
        return [Problem(name, f"the client failed on a recoverable behaviour{why}")]
    return []


def pays_once(run: RunRecord) -> list[Problem]:
    """One image is paid for: at most one job of the run succeeded, and no job was created at
    or after the moment the first one succeeded (emulator clock; under a virtual clock that
    stands still, the same instant counts as after)."""
    done = sorted((j for j in run.jobs if j.get("status") == "succeeded"
                   and j.get("completed_at") is not None),
                  key=lambda j: float(j["completed_at"]))
    if not done:
        return []
    first = done[0]
    extra = [j for j in run.jobs if j is not first
             and float(j.get("created_at") or 0) >= float(first["completed_at"])]
    problems = [Problem("pays once", f"job {j['id']} was submitted after job {first['id']} "
                                     "had already succeeded") for j in extra]
    if len(done) > 1:
        problems.append(Problem("pays once", f"{len(done)} jobs succeeded (each one is paid): "
                                             f"{', '.join(str(j['id']) for j in done)}"))
    return problems


#: Every property by name (the names :func:`check_all` switches take).
PROPERTIES: dict[str, Callable[..., list[Problem]]] = {
    "terminates": terminates,
    "honours_retry_after": honours_retry_after,
    "polls_politely": polls_politely,
    "speaks_contract": speaks_contract,
    "never_false_success": never_false_success,
    "pays_once": pays_once,
}


def check_all(run: RunRecord, *, terminates: bool = True, honours_retry_after: bool = True,
              polls_politely: bool = True, speaks_contract: bool = True,
              never_false_success: bool = True, pays_once: bool = True,
              deadline_s: float = DEFAULT_DEADLINE_S,
              max_polls_per_s: int = DEFAULT_MAX_POLLS_PER_S) -> list[Problem]:
    """The problems of every property switched on, in :data:`PROPERTIES` order."""
    switches = {"terminates": terminates, "honours_retry_after": honours_retry_after,
                "polls_politely": polls_politely, "speaks_contract": speaks_contract,
                "never_false_success": never_false_success, "pays_once": pays_once}
    options: dict[str, dict[str, Any]] = {"terminates": {"deadline_s": deadline_s},
                                          "polls_politely": {"max_polls_per_s": max_polls_per_s}}
    problems: list[Problem] = []
    for name, check in PROPERTIES.items():
        if switches[name]:
            problems.extend(check(run, **options.get(name, {})))
    return problems
