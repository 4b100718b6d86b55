"""rmbg-emulator: an offline stand-in for hosted Bria RMBG 2.0 background-removal APIs.

Importing the package turns off onnxruntime's telemetry for this process and every process it
starts (they inherit the environment): the emulator never reaches the network on its own.
Every path to onnxruntime (``serve``, ``remove``, worker processes, the pytest plugin, the
benchmarks) imports this package first, so this is the one place that decides it.
"""

from __future__ import annotations

import os

__version__ = "0.1.0"

#: Read by onnxruntime when it loads. onnxruntime 1.32 sends telemetry events
#: (``CONNECT mobile.events.data.microsoft.com:443``) every few seconds while a model runs;
#: ``onnxruntime.disable_telemetry_events()`` does not stop them, this variable set before
#: the import does. Set to ``"1"`` unconditionally: a ``0`` inherited from the user's
#: environment must not turn it back on.
ORT_TELEMETRY_ENV = "ORT_DISABLE_TELEMETRY"
os.environ[ORT_TELEMETRY_ENV] = "1"

#: How to add the ``test`` extra (hypothesis, schemathesis, openapi-spec-validator), for the
#: commands that need it. The package is not on PyPI: it installs from a checkout or from its
#: Git repository.
INSTALL_TEST_EXTRA = ("pip install -e '.[test]' in a checkout, or "
                      "pip install 'rmbg-emulator[test] @ git+<repository URL>'")

__all__ = ["INSTALL_TEST_EXTRA", "ORT_TELEMETRY_ENV", "__version__"]
