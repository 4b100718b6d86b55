"""Property-based tests of a client integration: run the client against drawn
:class:`~emulator.testing.behaviours.Behaviour` values and check
:mod:`~emulator.testing.properties` after each run.

What the pytest plugin's ``client_properties`` fixture yields::

    def remove(base_url: str, api_key: str, image_url: str, output_path: Path) -> bool:
        ...  # your client: True when it wrote the cut-out to output_path

    def test_my_client(client_properties):
        client_properties.check("pixazo", remove, max_examples=15)

For each example: reset the emulator, load the behaviour's rules (``POST /_emulator/faults``,
in order), call the function (in a thread, so a client that hangs is reported rather than
hanging the test), read the journal, violations and jobs, and check the properties. A
failing example raises :class:`AssertionError` naming the broken properties and showing the
behaviour as scenario YAML; hypothesis shrinks it to a minimal one first. Runs are
derandomised (a fixed seed), so the same code gets the same examples.

Requires ``hypothesis`` (the ``test`` extra).
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from emulator.testing.behaviours import Behaviour, behaviours, operations_of
from emulator.testing.properties import (
    DEFAULT_DEADLINE_S,
    DEFAULT_MAX_POLLS_PER_S,
    Outcome,
    Problem,
    RunRecord,
    check_all,
)

if TYPE_CHECKING:
    from emulator.testing.handle import EmulatorHandle

__all__ = ["API_KEY", "DEFAULT_SHRINK_S", "INPUT_SIZE", "ClientFunction", "ClientPropertyRunner",
           "ClientResult", "Invoker", "PropertyBroken", "failure_message", "input_png"]

#: ``fn(base_url, api_key, image_url, output_path) -> bool``: True when the client wrote the
#: cut-out to ``output_path``.
ClientFunction = Callable[[str, str, str, Path], bool]
#: ``invoke(vendor, output_path, deadline_s) -> ClientResult``: run the client once (it writes
#: the cut-out to ``output_path``); the runner measures the time around it.
Invoker = Callable[[str, Path, float], "ClientResult"]
#: The API key the runs use (the emulator accepts any non-empty key).
API_KEY = "property-key"
#: ``(width, height)`` of the input image, pixels.
INPUT_SIZE = (64, 48)
#: Default real seconds shrinking may take after the first failure.
DEFAULT_SHRINK_S = 60.0


@dataclass(frozen=True)
class ClientResult:
    """What one client run returned to the runner.

    Attributes:
        success: the client claims success (the function returned True; the command exited 0).
        finished: False when it was still running at the deadline.
        error: what went wrong in the client's own words (exception, exit status), or None.
        output: what the client printed (command-line form), else ``""``.
    """

    success: bool
    finished: bool = True
    error: str | None = None
    output: str = ""


def input_png() -> bytes:
    """The input: a 64 x 48 PNG, a disc on a plain background (GrabCut cuts it in
    milliseconds)."""
    from PIL import Image, ImageDraw

    picture = Image.new("RGB", INPUT_SIZE, (40, 110, 190))
    ImageDraw.Draw(picture).ellipse((18, 10, 46, 38), fill=(235, 190, 40))
    buf = io.BytesIO()
    picture.save(buf, format="PNG")
    return buf.getvalue()


class ClientPropertyRunner:
    """Runs a client function against drawn behaviours on one emulator.

    Args:
        emulator: the running emulator (the ``rmbg_emulator`` fixture's handle).
        workdir: a directory for the runs' output files.
    """

    def __init__(self, emulator: EmulatorHandle, workdir: Path) -> None:
        import base64

        self.emulator = emulator
        self.workdir = workdir
        self.image_url = "data:image/png;base64," + base64.b64encode(input_png()).decode()
        self._runs = 0

    def base_url(self, vendor: str) -> str:
        """The vendor's API host on the emulator: the host whose prefix its submit operation
        is served under (fal: ``/queue``; the others: the root).

        Raises:
            KeyError: unknown vendor.
        """
        from emulator import contracts

        submit, _, _ = operations_of(vendor)
        prefix = contracts.load(vendor).operations[submit].prefixes[0]
        hosts = self.emulator.server.emulator.adapters[vendor].hosts
        host = max((h for h in hosts if prefix.startswith(h.prefix)),
                   key=lambda h: len(h.prefix), default=hosts[0])
        return self.emulator.url + host.prefix

    def run_once(self, behaviour: Behaviour, fn: ClientFunction, *,
                 deadline_s: float = DEFAULT_DEADLINE_S) -> RunRecord:
        """Reset the emulator, load ``behaviour``, call ``fn`` and collect the record.

        A call still running after ``deadline_s`` seconds is left behind (a daemon thread)
        and recorded as not finished.
        """
        return self.run_with(behaviour, self.function_invoker(fn), deadline_s=deadline_s)

    def function_invoker(self, fn: ClientFunction) -> Invoker:
        """``fn`` as an :data:`Invoker`: called in a daemon thread with the vendor's API host
        (:meth:`base_url`), :data:`API_KEY`, the input's ``data:`` URI and the output path;
        a call still running after the deadline is left behind."""
        def invoke(vendor: str, output: Path, deadline_s: float) -> ClientResult:
            result: dict[str, Any] = {}

            def call() -> None:
                try:
                    result["success"] = bool(fn(self.base_url(vendor), API_KEY,
                                                self.image_url, output))
                except Exception as exc:  # the client's own error is an outcome, not a crash
                    result["error"] = f"{type(exc).__name__}: {exc}"

            worker = threading.Thread(target=call, name="client-property-run", daemon=True)
            worker.start()
            worker.join(deadline_s)
            return ClientResult(success=bool(result.get("success", False)),
                                finished=not worker.is_alive(), error=result.get("error"))

        return invoke

    def run_with(self, behaviour: Behaviour, invoke: Invoker, *,
                 deadline_s: float = DEFAULT_DEADLINE_S) -> RunRecord:
        """Reset the emulator, load ``behaviour``'s rules (in order), run the client through
        ``invoke`` (output file ``workdir/run-N.png``) and collect the record (journal,
        violations, jobs)."""
        self.emulator.reset()
        for rule in behaviour.rules:
            self.emulator.inject(**rule)
        self._runs += 1
        output = self.workdir / f"run-{self._runs}.png"
        started = time.monotonic()
        result = invoke(behaviour.vendor, output, deadline_s)
        elapsed = time.monotonic() - started
        outcome = Outcome(success=result.success, output_path=output, input_size=INPUT_SIZE,
                          elapsed_s=elapsed, finished=result.finished, error=result.error,
                          output=result.output)
        return RunRecord(behaviour=behaviour, outcome=outcome,
                         journal=self.emulator.journal(), violations=self.emulator.violations(),
                         jobs=self.emulator.jobs())

    def check(self, vendor: str, fn: ClientFunction, *, max_examples: int = 15,
              retry_budget: int = 3, families: Iterable[str] | None = None,
              deadline_s: float = DEFAULT_DEADLINE_S,
              max_polls_per_s: int = DEFAULT_MAX_POLLS_PER_S,
              skip: Iterable[str] = (), shrink_s: float | None = DEFAULT_SHRINK_S) -> None:
        """Check ``fn`` against up to ``max_examples`` behaviours of ``vendor``.

        Args:
            retry_budget, families: passed to :func:`~emulator.testing.behaviours.behaviours`.
            deadline_s: real seconds one run may take (property *terminates*).
            max_polls_per_s: property *polls politely*.
            skip: property names (keys of :data:`~emulator.testing.properties.PROPERTIES`)
                not to check.
            shrink_s: the cap on shrinking (see :meth:`search`).

        Raises:
            AssertionError: a behaviour (shrunk by hypothesis) under which a property broke;
                the message names the properties and shows the behaviour's scenario YAML.
            ValueError: unknown family or property name.
        """
        self.search(vendor, self.function_invoker(fn), max_examples=max_examples,
                    retry_budget=retry_budget, families=families, deadline_s=deadline_s,
                    max_polls_per_s=max_polls_per_s, skip=skip, shrink_s=shrink_s)

    def search(self, vendor: str, invoke: Invoker, *, max_examples: int = 15,
               retry_budget: int = 3, families: Iterable[str] | None = None,
               deadline_s: float = DEFAULT_DEADLINE_S,
               max_polls_per_s: int = DEFAULT_MAX_POLLS_PER_S, skip: Iterable[str] = (),
               seed: int | None = None,
               on_run: Callable[[RunRecord, list[Problem]], None] | None = None,
               shrink_s: float | None = DEFAULT_SHRINK_S) -> None:
        """Draw up to ``max_examples`` behaviours of ``vendor``, run the client through
        ``invoke`` under each and check the properties; shrink a failure.

        Args:
            seed: hypothesis's random seed; ``None``: derandomised (a seed from the test's
                code, the same every run).
            on_run: called after every run, shrinking runs included, with the record and its
                problems (progress output).
            shrink_s: real seconds shrinking may take after the first failure (``None``: no
                cap). Past it no client is run: a behaviour that failed before fails again
                from memory and any other counts as passing, so hypothesis ends at once with
                the smallest failure it had found (each one a real run).
            The rest: as :meth:`check`.

        Raises:
            PropertyBroken: the shrunk behaviour under which a property broke (an
                :class:`AssertionError` carrying the run record and the problems).
            ValueError: unknown family or property name.
        """
        from hypothesis import HealthCheck, Phase, given, settings
        from hypothesis import seed as hypothesis_seed

        from emulator.testing.properties import PROPERTIES

        skipped = set(skip)
        unknown = sorted(skipped - set(PROPERTIES))
        if unknown:
            raise ValueError(f"unknown property {unknown[0]!r}; known: {', '.join(PROPERTIES)}")
        switches = {name: name not in skipped for name in PROPERTIES}
        strategy = behaviours(vendor, retry_budget=retry_budget, families=families)
        failures: dict[str, PropertyBroken] = {}
        first_failure: list[float] = []

        @settings(max_examples=max_examples, deadline=None, derandomize=seed is None,
                  database=None, report_multiple_bugs=False, print_blob=False,
                  suppress_health_check=list(HealthCheck),
                  # no "explain" phase: it runs the client again on random variations of the
                  # shrunk behaviour only to annotate the report
                  phases=[p for p in Phase if p.name != "explain"])
        @given(behaviour=strategy)
        def one(behaviour: Behaviour) -> None:
            key = f"{behaviour.recoverable}\n{behaviour.to_scenario_yaml()}"
            if key in failures:
                raise failures[key]
            if (shrink_s is not None and first_failure
                    and time.monotonic() - first_failure[0] > shrink_s):
                return  # the shrinking budget is spent: run no more clients
            run = self.run_with(behaviour, invoke, deadline_s=deadline_s)
            problems = check_all(run, deadline_s=deadline_s, max_polls_per_s=max_polls_per_s,
                                 **switches)
            if on_run is not None:
                on_run(run, problems)
            if problems:
                if not first_failure:
                    first_failure.append(time.monotonic())
                broken = failures[key] = PropertyBroken(run, problems)
                raise broken

        (one if seed is None else hypothesis_seed(seed)(one))()


class PropertyBroken(AssertionError):
    """A property broke: :attr:`run` (the record) and :attr:`problems`; the message is
    :func:`failure_message`."""

    def __init__(self, run: RunRecord, problems: list[Problem]) -> None:
        super().__init__(failure_message(run, problems))
        self.run = run
        self.problems = problems


def failure_message(run: RunRecord, problems: list[Problem]) -> str:
    """The failure report: the broken properties, the client's outcome and the behaviour as
    scenario YAML (replay with ``rmbg-emulator serve --scenario FILE``)."""
    out = run.outcome
    lines = [f"client property broken under {run.behaviour.describe()}"]
    lines += [f"  - {p}" for p in problems]
    lines.append(f"client returned {'success' if out.success else 'failure'}"
                 + (f" ({out.error})" if out.error else "") + f" after {out.elapsed_s:.2f} s")
    lines.append("behaviour (scenario YAML):")
    lines += ["  " + line for line in run.behaviour.to_scenario_yaml().splitlines()]
    return "\n".join(lines)
