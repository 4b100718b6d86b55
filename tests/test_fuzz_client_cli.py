"""``rmbg-emulator fuzz-client``: the property-based client checks for a client run as a
command (second slice of "Property-based tests of client integrations"). The naive example
client is caught, the worked client passes, usage errors exit 2."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from emulator import cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
#: The properties' names as failure messages print them (emulator.testing.properties).
PROPERTY_TITLES = ("terminates", "honours Retry-After", "polls politely", "speaks the contract",
                   "never a false success", "pays once")


def fuzz(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``python -m emulator.cli fuzz-client ARGS`` with this checkout on PYTHONPATH."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    return subprocess.run([sys.executable, "-m", "emulator.cli", "fuzz-client", *args],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


def shrunk_rules(output: str) -> list[dict[str, Any]]:
    """The fault rules of the behaviour YAML the failure report printed."""
    text = output.split("behaviour (scenario YAML):\n", 1)[1].split("client output:", 1)[0]
    rules: list[dict[str, Any]] = yaml.safe_load(textwrap.dedent(text))["faults"]
    return rules


def test_naive_client_command_is_caught_with_a_report(tmp_path: Path) -> None:
    report = tmp_path / "report"
    done = fuzz("pixazo", "--examples", "5", "--report", str(report), "--",
                sys.executable, str(EXAMPLES / "naive_client.py"))
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    assert "[1] recoverable: no faults -> client success" in out  # a progress line per run
    broken = out.split("client property broken under ", 1)[1].split("client returned", 1)[0]
    named = [line[4:].split(":", 1)[0] for line in broken.splitlines() if line.startswith("  - ")]
    assert named and set(named) <= set(PROPERTY_TITLES), out
    assert len(shrunk_rules(out)) == 1, out
    assert "journal:\n  #1 +0.000s POST /bria-rmbg-2-0-682/v1/bria-rmbg-2-0-request" in out
    # the report: the same behaviour, its journal, and an executable replay script
    scenario = yaml.safe_load((report / "behaviour.yaml").read_text())
    assert scenario["faults"] == shrunk_rules(out)
    journal = yaml.safe_load((report / "journal.json").read_text())
    assert journal and journal[0]["operation"] == "submit"
    replay = report / "replay.sh"
    assert replay.stat().st_mode & stat.S_IXUSR
    script = replay.read_text()
    assert "serve --scenario" in script and "naive_client.py" in script
    assert "EMULATOR_IMAGE_URL=" in script and "EMULATOR_VENDOR=pixazo" in script


def test_robust_client_command_passes_on_pixazo() -> None:
    done = fuzz("pixazo", "--examples", "5", "--", sys.executable,
                str(EXAMPLES / "bgremove_cli.py"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every property held" in done.stdout


def test_a_command_past_the_deadline_is_killed_and_breaks_terminates() -> None:
    done = fuzz("pixazo", "--examples", "1", "--deadline", "1", "--property", "terminates",
                "--", sys.executable, "-c", "import time; print('working'); time.sleep(60)",
                timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "terminates: the client had not returned after 1 s" in done.stdout
    assert "client returned failure (killed after 1 s)" in done.stdout
    assert "client output:\n  working" in done.stdout


@pytest.mark.parametrize("argv, message", [
    (["fuzz-client", "nope", "--", "true"], "unknown vendor 'nope'"),
    (["fuzz-client", "emulator", "--", "true"], "unknown vendor 'emulator'"),
    (["fuzz-client", "pixazo", "--no-property", "nope", "--", "true"],
     "unknown property 'nope'"),
    (["fuzz-client", "pixazo", "--examples", "0", "--", "true"], "--examples must be >= 1"),
    (["fuzz-client", "pixazo", "--", "/nonexistent/client"],
     "command not found: '/nonexistent/client'"),
    (["fuzz-client", "pixazo", "--family", "nope", "--", "true"],
     "unknown behaviour family 'nope'"),
    (["fuzz-client", "pixazo", "--shrink-time", "-1", "--", "true"],
     "--shrink-time must be >= 0"),
])
def test_usage_errors_exit_2(argv: list[str], message: str,
                             capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["fuzz-client", "pixazo", "true"],
                                  ["fuzz-client", "pixazo", "--"],
                                  ["fuzz-client", "pixazo"]])
def test_a_missing_separator_or_command_is_a_usage_error(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    assert "give the client's command after --" in capsys.readouterr().err


def test_a_missing_vendor_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["fuzz-client", "--", "true"])
    assert exited.value.code == 2
    assert "VENDOR" in capsys.readouterr().err


def test_a_separator_of_another_sub_command_is_left_alone(
        capsys: pytest.CaptureFixture[str]) -> None:
    # "fuzz-client" after the "--" is a file name for scenario check, not the sub-command
    assert cli.main(["scenario", "check", "--", "fuzz-client"]) == 1
    assert "fuzz-client" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        cli.main(["scenario", "check", "a.yaml", "--bogus"])
    assert exited.value.code == 2


def test_a_family_and_a_shrink_cap_from_the_command_line() -> None:
    # the strict client crashes on an added field: --family variation finds it; with
    # --shrink-time 0 no run is made after the first failure, which is then reported as is
    done = fuzz("pixazo", "--examples", "15", "--family", "variation", "--shrink-time", "0",
                "--", sys.executable, str(EXAMPLES / "buggy_clients.py"), "strict-fields")
    out = done.stdout
    assert done.returncode == 1, out + done.stderr
    rules = shrunk_rules(out)
    assert rules and all("vary" in r for r in rules), out
    failing = [line for line in out.splitlines() if line.startswith("[") and "BROKEN" in line]
    assert len(failing) == 1, out  # shrinking ran no client
