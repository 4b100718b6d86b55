"""The worked client (``bgremove``) as a command, for ``rmbg-emulator fuzz-client``::

    rmbg-emulator fuzz-client pixazo -- python examples/bgremove_cli.py

Reads ``EMULATOR_URL`` (fal: its queue host is ``$EMULATOR_URL/queue``), ``EMULATOR_VENDOR``,
``EMULATOR_API_KEY``, ``EMULATOR_IMAGE_URL``, ``EMULATOR_OUTPUT`` and ``EMULATOR_DEADLINE``
(seconds; the poll timeout is sized to fit inside it), writes the cut-out and exits 0; exits 1
with the error on stderr when the removal fails.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bgremove import BackgroundRemovalError, Backoff, PollPolicy, RetryPolicy, create_remover


def main() -> int:
    """Remove the background of ``$EMULATOR_IMAGE_URL`` through ``$EMULATOR_VENDOR``; 0 when
    the cut-out is written to ``$EMULATOR_OUTPUT``, 1 otherwise."""
    env = os.environ
    vendor = env["EMULATOR_VENDOR"]
    base_url = env["EMULATOR_URL"].rstrip("/") + ("/queue" if vendor == "fal" else "")
    deadline_s = float(env.get("EMULATOR_DEADLINE", "30"))
    try:
        with create_remover(vendor, env["EMULATOR_API_KEY"], base_url=base_url,
                            retry=RetryPolicy(attempts=5, backoff=Backoff(initial_s=0.5)),
                            poll=PollPolicy(backoff=Backoff(initial_s=0.25, max_s=2.0),
                                            timeout_s=max(1.0, deadline_s * 0.8)),
                            request_timeout_s=max(1.0, deadline_s / 3)) as remover:
            Path(env["EMULATOR_OUTPUT"]).write_bytes(remover.remove(env["EMULATOR_IMAGE_URL"]).png)
    except BackgroundRemovalError as exc:
        print(f"bgremove_cli: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
