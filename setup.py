"""Build hook: ship ``contracts/*.yaml`` inside the package, as ``emulator/_contracts/``.

The contracts live at the repository root (``contracts/``), where a source checkout and an
editable install read them (``emulator.contracts.contracts_dir``). A wheel has no repository
root, so ``build_py`` copies them into the built package; everything else is configured in
``pyproject.toml``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithContracts(build_py):
    """``build_py`` that also copies ``contracts/*.yaml`` to ``<build>/emulator/_contracts``."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "emulator" / "_contracts"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted((ROOT / "contracts").glob("*.yaml")):
            shutil.copyfile(source, target / source.name)


setup(cmdclass={"build_py": BuildPyWithContracts})
