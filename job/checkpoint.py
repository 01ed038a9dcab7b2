"""Checkpoints of a run in progress, so that a killed run can be resumed with the same result.

While a run is in progress its folder does not exist yet (it appears atomically at the end); its state
lives beside it in `<run>.partial/`: `job.json` (what the result depends on: the config's hash and the
data's fingerprint) and `checkpoint.npz` (centers after the last completed Lloyd iteration, replaced
atomically). The partial folder is removed when the run completes.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from data_prep.zarr_store import store_attrs

from .config import JobConfig
from .errors import JobError

JOB_FILE = "job.json"
CHECKPOINT_FILE = "checkpoint.npz"
# The settings a clustering's result depends on; the cluster, output and evaluation options do not.
RESULT_FIELDS = ("split", "k", "seed", "n_init", "engine", "max_iter", "tol", "init_max_iter", "oversampling_factor")


def partial_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".partial")


def result_settings(config: JobConfig) -> dict:
    return {name: getattr(config, name) for name in RESULT_FIELDS}


def data_fingerprint(store: Path, split: str) -> str:
    """SHA-256 over the store's recorded source checksums and the split: cheap, and changes with the data."""
    provenance = store_attrs(store).get("provenance", {})
    files = {stem: meta.get("sha256") for stem, meta in provenance.get("files", {}).items()}
    payload = json.dumps({"files": files, "split": split}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def start(config: JobConfig, run_dir: Path) -> Path:
    """Create (or replace) the partial folder of a new run and record what its result depends on."""
    partial = partial_dir(run_dir)
    partial.mkdir(parents=True, exist_ok=True)  # normally made already, to hold the run's lock
    (partial / CHECKPOINT_FILE).unlink(missing_ok=True)
    record = {"settings": result_settings(config), "data": data_fingerprint(config.data, config.split),
              "store": str(config.data)}
    (partial / JOB_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return partial


def load_for_resume(config: JobConfig, run_dir: Path) -> dict | None:
    """The last checkpoint of the run to resume, after checking it was made with this config and data.

    Returns None when the run stopped before its first checkpoint (it then starts from the beginning).
    """
    partial = partial_dir(run_dir)
    if run_dir.exists():
        raise JobError(f"{run_dir}: this run is already complete; nothing to resume")
    try:
        record = json.loads((partial / JOB_FILE).read_text())
    except FileNotFoundError:
        raise JobError(f"{run_dir}: no run in progress to resume ({partial / JOB_FILE} not found)") from None
    settings = result_settings(config)
    differ = [f"{k} ({settings[k]!r} now, {record['settings'].get(k)!r} in the run)"
              for k in RESULT_FIELDS if record["settings"].get(k) != settings[k]]
    if differ:
        raise JobError(f"{run_dir}: cannot resume with other settings: {', '.join(differ)}")
    if record["data"] != data_fingerprint(config.data, config.split):
        raise JobError(f"{run_dir}: cannot resume on other data: {config.data} is not the store the run used")
    try:
        with np.load(partial / CHECKPOINT_FILE) as saved:
            return {"centers": saved["centers"], "n_iter": int(saved["n_iter"]),
                    "converged": bool(saved["converged"])}
    except FileNotFoundError:
        return None


def save(partial: Path, state: dict) -> None:
    """Write the state after an iteration: a temporary file renamed over the previous checkpoint."""
    tmp = partial / f".{CHECKPOINT_FILE}.tmp"
    with open(tmp, "wb") as f:
        np.savez(f, centers=state["centers"], n_iter=state["n_iter"], inertia=state["inertia"],
                 converged=state["converged"])
    os.replace(tmp, partial / CHECKPOINT_FILE)
