"""A dask worker preload that holds a running job's fit at a point the test chooses, however fast the
machine: the fault tests stop the job there, instead of hoping a tol=0 fit is still running.

    env = {**os.environ, **hold_env(partial / "checkpoint.npz", at=5, release=tmp_path / "go")}

Every worker the job starts (its LocalCluster inherits the environment; so do `dask worker` processes)
loads this file (distributed's `distributed.worker.preload` setting). From the moment `file` exists and,
when `at` is given, records `n_iter >= at`, every Lloyd or bounded-Lloyd task on the worker waits in its
task thread (the worker's event loop stays free: heartbeats, close and kill work as usual) until
`release` exists, if one is given, else until the process ends. The job can then neither finish nor
move more than one iteration past the point.
"""

import os
import time
from pathlib import Path

# Every kernel a fit's iterations run on the workers (looked up by name when a task is unpickled).
HELD = {
    "job.engine.kernels": ("lloyd_partial", "over_chunks"),
    "job.kmeans.bounded": ("_step_after",),
}


def hold_env(file: Path, at: int | None = None, release: Path | None = None) -> dict[str, str]:
    """The environment that makes the job's workers hold (see the module's docstring)."""
    env = {"DASK_DISTRIBUTED__WORKER__PRELOAD": repr([__file__]), "HOLD_FIT_FILE": str(file)}
    if at is not None:
        env["HOLD_FIT_AT"] = str(at)
    if release is not None:
        env["HOLD_FIT_RELEASE"] = str(release)
    return env


def _holding() -> bool:
    import numpy as np

    file, at = Path(os.environ["HOLD_FIT_FILE"]), os.environ.get("HOLD_FIT_AT")
    release = os.environ.get("HOLD_FIT_RELEASE")
    if release and Path(release).exists():
        return False
    if at is None:
        return file.exists()
    try:
        with np.load(file) as saved:
            return int(saved["n_iter"]) >= int(at)
    except (OSError, ValueError, KeyError):  # not written yet, or being replaced
        return False


def _held(function):
    def wait_then_run(*args, **kwargs):
        while _holding():
            time.sleep(0.05)
        return function(*args, **kwargs)

    wait_then_run.__name__ = function.__name__
    return wait_then_run


def dask_setup(worker):
    import importlib

    for module_name, names in HELD.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, _held(getattr(module, name)))
