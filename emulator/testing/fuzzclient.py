"""``rmbg-emulator fuzz-client``: the property-based client checks
(:mod:`emulator.testing.clientcheck`) for a client in any language, run as a command.

It starts its own emulator (in-process uvicorn on 127.0.0.1, a free port, real clock,
``progression=polls:1``, GrabCut engine) and, for each behaviour drawn, runs ``COMMAND`` with:

* ``EMULATOR_URL``: the emulator's base URL (fal's queue host is ``$EMULATOR_URL/queue``);
* ``EMULATOR_VENDOR``: the vendor slug; ``EMULATOR_API_KEY``: a key the emulator accepts;
* ``EMULATOR_IMAGE_URL``: the input (a ``data:`` URI of a 64 x 48 PNG);
* ``EMULATOR_OUTPUT``: where the client writes the cut-out PNG when it succeeds;
* ``EMULATOR_DEADLINE``: seconds the run may take (default 30), so the client can size its
  own timeout. Past it the command (its whole process group) is killed: *terminates* breaks.

Exit status 0 of the command means the client claims success. Recoverable behaviours have at
most ``retry_budget`` (3) transient faults per operation and ``Retry-After`` of 1 s, so a
correct client has ample time inside the deadline.

Exit status of the sub-command: 0 when every property held, 1 when one broke (the shrunk
behaviour, the broken properties, the client's output and the journal are printed; ``--report
DIR`` writes ``behaviour.yaml``, ``journal.json`` and ``replay.sh``), 2 on a usage error.

Requires ``hypothesis`` (the ``test`` extra).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from emulator.testing.clientcheck import (
    DEFAULT_SHRINK_S,
    ClientResult,
    Invoker,
    PropertyBroken,
)
from emulator.testing.properties import DEFAULT_DEADLINE_S, PROPERTIES, Problem, RunRecord

__all__ = ["FuzzOptions", "UsageError", "command_invoker", "fuzz_client", "write_report"]

#: The most characters of a client's output kept per run (its tail).
OUTPUT_TAIL = 8000


class UsageError(ValueError):
    """A bad argument (unknown vendor or property, a deadline or count out of range, a command
    that is not found)."""


@dataclass(frozen=True)
class FuzzOptions:
    """The sub-command's options.

    Attributes:
        examples: behaviours drawn (>= 1; shrinking runs come on top).
        seed: hypothesis's seed; ``None``: derandomised (same examples every time).
        report: directory for ``behaviour.yaml``, ``journal.json`` and ``replay.sh`` on a
            failure, or ``None``.
        deadline_s: real seconds one run of the command may take (> 0).
        only: properties to check (names of :data:`PROPERTIES`); empty: all.
        skip: properties not to check.
        families: behaviour families to draw (:data:`~emulator.testing.behaviours.FAMILIES`);
            empty: all.
        shrink_s: real seconds shrinking may take after the first failure (``None``: no
            cap; :meth:`~emulator.testing.clientcheck.ClientPropertyRunner.search`).
    """

    examples: int = 15
    seed: int | None = None
    report: Path | None = None
    deadline_s: float = DEFAULT_DEADLINE_S
    only: Sequence[str] = field(default_factory=tuple)
    skip: Sequence[str] = field(default_factory=tuple)
    families: Sequence[str] = field(default_factory=tuple)
    shrink_s: float | None = DEFAULT_SHRINK_S

    def skipped(self) -> list[str]:
        """The property names not to check.

        Raises:
            UsageError: an unknown property name.
        """
        for name in (*self.only, *self.skip):
            if name not in PROPERTIES:
                raise UsageError(f"unknown property {name!r}; known: {', '.join(PROPERTIES)}")
        return [name for name in PROPERTIES
                if name in self.skip or (self.only and name not in self.only)]


def client_env(base_url: str, vendor: str, api_key: str, image_url: str, output: Path,
               deadline_s: float) -> dict[str, str]:
    """The ``EMULATOR_*`` variables of one run (added to this process's environment)."""
    return {"EMULATOR_URL": base_url, "EMULATOR_VENDOR": vendor, "EMULATOR_API_KEY": api_key,
            "EMULATOR_IMAGE_URL": image_url, "EMULATOR_OUTPUT": str(output),
            "EMULATOR_DEADLINE": f"{deadline_s:g}"}


def command_invoker(command: Sequence[str], base_url: str, api_key: str,
                    image_url: str) -> Invoker:
    """``command`` as a :data:`~emulator.testing.clientcheck.Invoker`: run it with the
    ``EMULATOR_*`` variables, stdout and stderr captured together, killed (its process group)
    past the deadline. Exit status 0 is a claimed success; a command that cannot be started
    is a failed run (its error says why)."""
    def invoke(vendor: str, output: Path, deadline_s: float) -> ClientResult:
        env = {**os.environ, **client_env(base_url, vendor, api_key, image_url, output,
                                          deadline_s)}
        try:
            proc = subprocess.Popen(list(command), env=env, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        except OSError as exc:
            return ClientResult(success=False, error=f"cannot run {command[0]!r}: {exc}")
        try:
            out, _ = proc.communicate(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            return ClientResult(success=False, finished=False,
                                error=f"killed after {deadline_s:g} s",
                                output=_tail(out))
        code = proc.returncode
        return ClientResult(success=code == 0, error=None if code == 0 else f"exit status {code}",
                            output=_tail(out))

    return invoke


def _tail(raw: bytes) -> str:
    text = raw.decode("utf-8", "replace")
    return text if len(text) <= OUTPUT_TAIL else "...\n" + text[-OUTPUT_TAIL:]


def journal_lines(journal: Sequence[Mapping[str, Any]], limit: int = 40) -> list[str]:
    """One line per journal entry, at most ``limit`` (then a line saying how many more):
    ``#seq +seconds METHOD path -> status [operation] early_retry``, seconds from the first
    entry on the emulator's clock."""
    start = float(journal[0].get("at") or 0) if journal else 0.0
    lines = []
    for e in journal[:limit]:
        flags = " early_retry" if e.get("early_retry") else ""
        lines.append(f"#{e.get('seq')} +{float(e.get('at') or 0) - start:.3f}s {e.get('method')} "
                     f"{e.get('path')} -> {e.get('status')} [{e.get('operation')}]{flags}")
    if len(journal) > limit:
        lines.append(f"... {len(journal) - limit} more (--report DIR writes journal.json)")
    return lines


def write_report(directory: Path, run: RunRecord, command: Sequence[str],
                 env: Mapping[str, str]) -> None:
    """Write ``behaviour.yaml`` (the scenario), ``journal.json`` (the run's journal entries)
    and an executable ``replay.sh`` (starts ``rmbg-emulator serve --scenario behaviour.yaml
    --port P`` in the background, runs ``command`` with ``env``'s variables pointed at it,
    stops the server; ``PORT`` and ``RMBG_EMULATOR`` override the port and the program).

    Raises:
        OSError: the directory cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "behaviour.yaml").write_text(run.behaviour.to_scenario_yaml())
    (directory / "journal.json").write_text(json.dumps(list(run.journal), indent=2) + "\n")
    from emulator.testing.server import free_port

    exports = "\n".join(
        f"export {k}={shlex.quote(v)}" for k, v in env.items()
        if k not in ("EMULATOR_URL", "EMULATOR_OUTPUT"))
    script = f"""#!/usr/bin/env bash
# Replay of a fuzz-client failure: {run.behaviour.describe()}
set -u
here="$(cd "$(dirname "$0")" && pwd)"
port="${{PORT:-{free_port()}}}"
${{RMBG_EMULATOR:-rmbg-emulator}} serve --scenario "$here/behaviour.yaml" --port "$port" \\
    --progression polls:1 --engine grabcut &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null' EXIT
for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.2
done
export EMULATOR_URL="http://127.0.0.1:$port"
export EMULATOR_OUTPUT="$here/output.png"
{exports}
cd {shlex.quote(os.getcwd())}
{shlex.join(command)}
status=$?
echo "client exit status: $status"
exit "$status"
"""
    replay = directory / "replay.sh"
    replay.write_text(script)
    replay.chmod(0o755)


def fuzz_client(vendor: str, command: Sequence[str], options: FuzzOptions,
                out: TextIO | None = None) -> int:
    """Run the property checks for ``command`` against ``vendor``; returns the exit status
    (0 every property held, 1 one broke, 2 usage error). Progress and the failure report go to
    ``out`` (default stdout), usage errors to stderr."""
    from emulator import contracts
    from emulator.settings import Settings
    from emulator.testing.behaviours import behaviours
    from emulator.testing.clientcheck import API_KEY, ClientPropertyRunner
    from emulator.testing.handle import EmulatorHandle
    from emulator.testing.server import EmulatorServer

    stream = out or sys.stdout
    try:
        if options.examples < 1 or not options.deadline_s > 0:
            raise UsageError("--examples must be >= 1 and --deadline > 0")
        if not command:
            raise UsageError("no COMMAND after --")
        if shutil.which(command[0]) is None:
            raise UsageError(f"command not found: {command[0]!r}")
        skip = options.skipped()
        if vendor == "emulator" or vendor not in contracts.names():
            raise UsageError(f"unknown vendor {vendor!r}; known: "
                             + ", ".join(n for n in contracts.names() if n != "emulator"))
        # the vendor's contract has a submit and a status operation; the families are known
        behaviours(vendor, families=options.families or None)
        if options.shrink_s is not None and options.shrink_s < 0:
            raise UsageError("--shrink-time must be >= 0")
    except (UsageError, KeyError, ValueError, contracts.ContractError) as exc:
        print(f"rmbg-emulator fuzz-client: {exc}", file=sys.stderr)
        return 2

    # Not from this process's RMBG_EMULATOR_* variables: a keys file or scenario there would
    # change what the behaviours mean.
    settings = Settings.from_env({}, host="127.0.0.1", port=0, progression="polls:1",
                                 engine="grabcut")
    count = 0

    def progress(run: RunRecord, problems: list[Problem]) -> None:
        nonlocal count
        count += 1
        verdict = "ok" if not problems else "BROKEN " + ", ".join(
            sorted({p.prop for p in problems}))
        print(f"[{count}] {run.behaviour.describe()} -> client "
              f"{'success' if run.outcome.success else 'failure'} in "
              f"{run.outcome.elapsed_s:.2f} s: {verdict}", file=stream, flush=True)

    with EmulatorServer(settings) as server, tempfile.TemporaryDirectory(
            prefix="rmbg-fuzz-") as work:
        handle = EmulatorHandle(server)
        try:
            runner = ClientPropertyRunner(handle, Path(work))
            invoke = command_invoker(command, server.url, API_KEY, runner.image_url)
            print(f"fuzz-client: {vendor} on {server.url}, up to {options.examples} examples, "
                  f"deadline {options.deadline_s:g} s: {shlex.join(command)}", file=stream,
                  flush=True)
            try:
                runner.search(vendor, invoke, max_examples=options.examples,
                              deadline_s=options.deadline_s, skip=skip, seed=options.seed,
                              on_run=progress, families=options.families or None,
                              shrink_s=options.shrink_s)
            except PropertyBroken as broken:
                _report_failure(broken, stream)
                if options.report is not None:
                    env = client_env(server.url, vendor, API_KEY, runner.image_url,
                                     broken.run.outcome.output_path, options.deadline_s)
                    write_report(options.report, broken.run, command, env)
                    print(f"report: {options.report}/behaviour.yaml, journal.json, replay.sh",
                          file=stream)
                return 1
        finally:
            handle.close()
    print(f"fuzz-client: every property held ({count} runs)", file=stream)
    return 0


def _report_failure(broken: PropertyBroken, stream: TextIO) -> None:
    run = broken.run
    print("", file=stream)
    print(str(broken), file=stream)
    print("client output:", file=stream)
    for line in (run.outcome.output.rstrip() or "(none)").splitlines():
        print("  " + line, file=stream)
    print("journal:", file=stream)
    for line in journal_lines(run.journal) or ["(empty)"]:
        print("  " + line, file=stream)
    stream.flush()
