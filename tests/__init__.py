"""The test suite. REPO: the checkout's root, for every test that runs or reads something in it;
run_module: one of its command lines in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def run_module(
    module: str, *args: str, cwd: Path | None = None, timeout: float = 600, env=None, prefix=()
) -> subprocess.CompletedProcess:
    """`python -m module args` (after `prefix`, e.g. a `timeout` command) in the checkout or `cwd`, with
    `env` added to this process's environment; its output captured as text."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", module, *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else {**os.environ, **env},
    )
