"""The way a request takes through the emulator stays short (issue 13, "One way through"):
``benchmarks/trace_request.py`` counts the emulator files a request's calls cross; a status
poll of a final job is answered by the error boundary from kept bytes."""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import emulator_settings

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _trace_request(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # it imports its sibling, inproc.py
    spec = importlib.util.spec_from_file_location("trace_request",
                                                  BENCHMARKS / "trace_request.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_final_poll_and_a_faulted_submit_cross_few_files(
        monkeypatch: pytest.MonkeyPatch) -> None:
    trace = _trace_request(monkeypatch)
    found = asyncio.run(trace.measure(emulator_settings(engine="grabcut",
                                                         matte_pool="threads")))
    poll = trace.files_of(found[trace.POLL].own)
    # the middleware with its error boundary, the route table, the lane, the journal: no
    # guard, no Starlette route wrapper, no adapter, no job lookup, no clock frame (11 files
    # at issue 13's baseline aeaf424).
    assert poll == ["context.py", "core/journal.py", "middleware.py",
                    "vendors/finalreads.py"], poll
    submit = trace.files_of(found[trace.SUBMIT].own)
    # 15 files at issue 13's baseline aeaf424 (this same script). The header's rule is
    # parsed once (no core/faults/parsing.py), the latency effect sleeps in its own module
    # (no core/faults/asgi.py), the runner does not ask the app for its engine (no app.py),
    # fal's key is data read by vendors/base.py (no vendors/fal/__init__.py), a real clock
    # never advanced is time.time itself (no core/clock.py frame).
    for gone in ("core/faults/parsing.py", "core/faults/asgi.py", "app.py",
                 "vendors/fal/__init__.py", "core/clock.py"):
        assert gone not in submit, submit
    assert len(submit) <= 14, submit
