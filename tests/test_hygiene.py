"""Repository hygiene: the changelog's shape, and pre-commit hooks that run CI's own checks."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Any

import yaml

from tests.conftest import REPO


def _hooks() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text(encoding="utf-8"))
    return {hook["id"]: hook for repo in config["repos"] if repo["repo"] == "local"
            for hook in repo["hooks"]}


def test_changelog_keeps_a_changelog_with_an_unreleased_section() -> None:
    """Keep a Changelog 1.1.0: ``## [Unreleased]`` first, then released versions with ISO
    dates, newest first; the newest is the package's version."""
    text = (REPO / "CHANGELOG.md").read_text(encoding="utf-8")
    assert text.startswith("# Changelog\n")
    assert "https://keepachangelog.com/en/1.1.0/" in text
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings[0] == "[Unreleased]"
    released = [re.fullmatch(r"\[(\d+\.\d+\.\d+)\] - (\d{4}-\d{2}-\d{2})", h) for h in
                headings[1:]]
    assert released and all(released), headings
    version = re.search(r'^version = "(.+)"$',
                        (REPO / "pyproject.toml").read_text(encoding="utf-8"), re.MULTILINE)
    assert version is not None and released[0] is not None
    assert released[0].group(1) == version.group(1)
    kinds = set(re.findall(r"^### (.+)$", text, re.MULTILINE))
    assert kinds <= {"Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"}


def test_pre_commit_runs_the_checks_ci_runs() -> None:
    """ruff and mypy with the very commands of ``.ci/run``; every hook is local and never
    passes file names (the commands pick their own files)."""
    hooks = _hooks()
    assert set(hooks) == {"ruff", "mypy", "contracts"}
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    for name in ("ruff", "mypy"):
        assert hooks[name]["entry"] in ci, name
    assert all(h["language"] == "system" and h["pass_filenames"] is False
               for h in hooks.values())


def test_pre_commit_contract_hook_validates_the_contracts() -> None:
    """The contract hook fires on contract and contract-code changes, and its command passes
    on the shipped contracts."""
    hook = _hooks()["contracts"]
    files = re.compile(hook["files"])
    for path in ("contracts/pixazo.yaml", "emulator/contracts.py",
                 "emulator/contracts/loading.py"):
        assert files.search(path), path
    assert not files.search("emulator/app.py")
    argv = shlex.split(hook["entry"])
    assert argv[0] == "python"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    proc = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "pixazo: ok" in proc.stdout


def _tracked_text_files() -> dict[str, str]:
    """Every tracked file that reads as UTF-8 text, by its repository path."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, check=True,
                            capture_output=True).stdout.decode().split("\0")
    texts: dict[str, str] = {}
    for name in filter(None, listed):
        try:
            texts[name] = (REPO / name).read_text(encoding="utf-8")
        except (UnicodeDecodeError, FileNotFoundError, IsADirectoryError):
            continue
    return texts


def test_no_install_line_asks_pypi_for_the_emulator() -> None:
    """rmbg-emulator is not on PyPI: no tracked file tells anyone to ``pip install
    rmbg-emulator`` (or ``'rmbg-emulator[...]'``) by name; a checkout or a Git URL works."""
    by_name = re.compile(r"""pip install ['"]?rmbg-emulator(\[[^\]]*\])?['"]?(?!\S*\s*@)""")
    found = [f"{name}: {m.group(0)}" for name, text in _tracked_text_files().items()
             for m in by_name.finditer(text) if name != "tests/test_hygiene.py"]
    assert found == []


def test_no_tracked_file_points_outside_the_repository() -> None:
    """Vendor facts live in ``docs/vendors/`` and the weights in the package: no tracked file
    refers to ``../shared``, ``shared/vendor-docs``, ``shared/models`` or the notes file that
    lived beside the checkout."""
    outside = re.compile(r"\.\./shared|shared/vendor-docs|shared/models|\bNOTES\.md")
    found = [f"{name}:{text[:m.start()].count(chr(10)) + 1}: {m.group(0)}"
             for name, text in _tracked_text_files().items() if name != "tests/test_hygiene.py"
             for m in outside.finditer(text)]
    assert found == []
