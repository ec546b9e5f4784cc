"""Running the real ``medagent`` console entry point in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def medagent(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """``python -m medagent ARGS``: the caller's ``MEDAGENT_*`` variables left out (tests set
    their own in ``env``), a wide terminal so help and tables do not wrap, offline hub."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDAGENT_")}
    full_env.update(COLUMNS="200", HF_HUB_OFFLINE="1")
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "medagent", *args],
        capture_output=True,
        text=True,
        env=full_env,
        input=stdin,
        timeout=timeout,
    )
