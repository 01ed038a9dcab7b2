"""Checkpoints of a run in progress, so that a killed run can be resumed with the same result.

While a run is in progress its folder does not exist yet (it appears atomically at the end); its state
lives beside it in `<run>.partial/`: `job.json` (what the result depends on: the config's hash and the
data's fingerprint) and `checkpoint.npz` (centers after the last completed Lloyd iteration, replaced
atomically and durably). The partial folder is removed when the run completes. A checkpoint is never
deleted silently: a new run on the same folder is refused until the user resumes or discards it.
May use: job.config, job.dataset, job.errors, data_prep (atomic writes, store provenance).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from data_prep.atomic import durable_replace
from data_prep.redact import redact_text
from data_prep.zarr_store import store_attrs, validate_store
from job.config import JobConfig
from job.dataset import splits_for
from job.errors import JobError

JOB_FILE = "job.json"
CHECKPOINT_FILE = "checkpoint.npz"
# Everything the job may write into a partial folder; nothing else in it is ever deleted. A sweep also
# keeps one file per finished k (SWEEP_K), and its CHECKPOINT_FILE lists them.
PARTIAL_FILES = (JOB_FILE, CHECKPOINT_FILE, "report.html", f".{CHECKPOINT_FILE}.tmp", f".{JOB_FILE}.tmp")
SWEEP_K = re.compile(r"\.?k(\d{5})\.npz(\.tmp)?")


def _ours(name: str) -> bool:
    return name in PARTIAL_FILES or SWEEP_K.fullmatch(name) is not None


def sweep_k_file(k: int) -> str:
    return f"k{k:05d}.npz"


# Provenance fields that describe how or when a store was written, not what it holds.
_NOT_CONTENT = ("created", "versions", "source", "chunk_size", "codec")


# A checkpoint whose job.json is gone cannot be checked against the settings and data it was made with.
_ORPHAN = (
    "{partial} holds a checkpoint without its job.json (the settings and data it was made with), so it "
    "cannot be resumed: start the run again with --out {run_dir} --overwrite, which discards it"
)


def partial_dir(run_dir: Path) -> Path:
    return run_dir.with_name(run_dir.name + ".partial")


def result_settings(config: JobConfig) -> dict:
    return {name: getattr(config, name) for name in config.result_fields()}


def data_fingerprint(store: Path | str, split: str) -> str:
    """SHA-256 over what the clustering's result depends on: the store's provenance without the fields
    that say how or when it was written (so a copy, or the same data in other chunks, matches), and the
    size and image shape of each split used. A converted store's provenance holds its source files'
    checksums; a generated one's holds its recipe (n, seed, deformation, source checksums)."""
    provenance = dict(store_attrs(store).get("provenance", {}))
    layout = {
        name: [info.n, list(info.image_shape)]
        for name, info in validate_store(store, splits_for(split)).items()
    }
    content = {key: value for key, value in provenance.items() if key not in _NOT_CONTENT}
    payload = json.dumps(
        {"provenance": content, "layout": layout, "split": split}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def remove_partial(run_dir: Path) -> None:
    """Remove the files this job writes into the partial folder, then the folder if that empties it."""
    partial = partial_dir(run_dir)
    for name in PARTIAL_FILES:
        (partial / name).unlink(missing_ok=True)
    if partial.is_dir():
        for path in partial.iterdir():
            if SWEEP_K.fullmatch(path.name):
                path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # missing, or holds something that is not ours: left as it is
        partial.rmdir()


def has_checkpoint(run_dir: Path) -> bool:
    return (partial_dir(run_dir) / CHECKPOINT_FILE).exists()


def start(config: JobConfig, run_dir: Path, sweep_ks: tuple[int, ...] | None = None) -> Path:
    """Create the partial folder of a new run and record what its result depends on.

    An earlier run's checkpoint in it is never dropped silently: without config.overwrite this is refused
    with how to resume or discard it. A partial folder holding anything else is refused untouched.
    """
    partial = partial_dir(run_dir)
    if has_checkpoint(run_dir):
        if not config.overwrite and not (partial / JOB_FILE).exists():
            raise JobError(_ORPHAN.format(partial=partial, run_dir=run_dir))
        if not config.overwrite:
            raise JobError(
                f"{partial} holds the checkpoint of an earlier run of {run_dir} that was stopped: "
                f"continue it with --resume {run_dir}, or pass --overwrite to discard it"
            )
        remove_partial(run_dir)
    if partial.exists():
        foreign = sorted(p.name for p in partial.iterdir() if not _ours(p.name))
        if foreign:
            raise JobError(
                f"{partial}: exists and holds files this job did not write ({', '.join(foreign[:5])}); "
                "it was left untouched (choose another output path)"
            )
    partial.mkdir(parents=True, exist_ok=True)
    record = {
        "settings": result_settings(config),
        "data": data_fingerprint(config.data, config.split),
        "store": redact_text(str(config.data)),
    }
    if sweep_ks is not None:
        record["sweep_ks"] = list(sweep_ks)
    tmp = partial / f".{JOB_FILE}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    durable_replace(tmp, partial / JOB_FILE)
    return partial


def _checked_record(config: JobConfig, run_dir: Path, sweep_ks: tuple[int, ...] | None) -> dict:
    """The job.json of the run to resume, checked against this config, this data and (a sweep) its ks."""
    partial = partial_dir(run_dir)
    if run_dir.exists():
        raise JobError(f"{run_dir}: this run is already complete; nothing to resume")
    try:
        record = json.loads((partial / JOB_FILE).read_text())
        if (
            not isinstance(record, dict)
            or not isinstance(record.get("settings"), dict)
            or "data" not in record
        ):
            raise ValueError("not a job record")
    except FileNotFoundError as exc:
        if has_checkpoint(run_dir):
            raise JobError(_ORPHAN.format(partial=partial, run_dir=run_dir)) from exc
        raise JobError(f"{run_dir}: no run in progress to resume ({partial / JOB_FILE} not found)") from exc
    except (OSError, ValueError) as exc:
        raise JobError(
            f"{partial / JOB_FILE}: damaged ({type(exc).__name__}); this run cannot be resumed: "
            f"run it again with --out {run_dir} --overwrite"
        ) from exc
    settings = result_settings(config)
    differ = [
        f"{k} ({settings[k]!r} now, {record['settings'].get(k)!r} in the run)"
        for k in config.result_fields()
        if record["settings"].get(k) != settings[k]
    ]
    if differ:
        raise JobError(f"{run_dir}: cannot resume with other settings: {', '.join(differ)}")
    if record["data"] != data_fingerprint(config.data, config.split):
        raise JobError(f"{run_dir}: cannot resume on other data: {config.data} is not the store the run used")
    theirs = record.get("sweep_ks")
    if theirs is not None and sweep_ks is None:
        raise JobError(
            f"{run_dir}: is a k sweep in progress: resume it with the same --k {','.join(map(str, theirs))}"
        )
    if sweep_ks is not None and theirs != list(sweep_ks):
        raise JobError(
            f"{run_dir}: cannot resume with other settings: k ({','.join(map(str, sweep_ks))} now, "
            f"{'one k' if theirs is None else ','.join(map(str, theirs))} in the run)"
        )
    return record


def load_for_resume(config: JobConfig, run_dir: Path, n_features: int) -> dict | None:
    """The last checkpoint of the run to resume, after checking it was made with this config and data,
    and that its centers are [k, n_features].

    Returns None when the run stopped before its first checkpoint (it then starts from the beginning).
    A damaged job.json or checkpoint is a JobError naming the file, never a traceback.
    """
    partial = partial_dir(run_dir)
    _checked_record(config, run_dir, None)
    path = partial / CHECKPOINT_FILE
    if not path.exists():
        return None
    centers, n_iter, converged, inertia = _read_npz(
        path, run_dir, "centers", "n_iter", "converged", "inertia"
    )
    state: dict[str, Any] = {
        "centers": np.asarray(centers, dtype=np.float64),
        "n_iter": int(n_iter),
        "converged": bool(converged),
        "inertia": float(inertia),
    }
    expected = (config.k, n_features)
    if state["centers"].shape != expected or not np.isfinite(state["centers"]).all() or state["n_iter"] < 0:
        raise JobError(
            f"{path}: the checkpoint holds centers of shape {state['centers'].shape}, not the "
            f"{expected} this run needs (or non-finite values); it cannot be resumed"
        )
    return state


def save(partial: Path, state: dict) -> None:
    """Write the state after an iteration: a temporary file renamed over the previous checkpoint."""
    _write_npz(
        partial / CHECKPOINT_FILE,
        centers=state["centers"],
        n_iter=state["n_iter"],
        inertia=state["inertia"],
        converged=state["converged"],
    )


def _read_npz(path: Path, run_dir: Path, *names: str) -> list[np.ndarray]:
    """The named arrays of a file this module wrote; a damaged one is a JobError naming it."""
    try:
        with np.load(path) as saved:
            return [saved[name] for name in names]
    except Exception as exc:  # truncated zip, missing array, garbage: np.load raises many kinds
        raise JobError(
            f"{path}: the checkpoint is damaged ({type(exc).__name__}); this run cannot be resumed: "
            f"run it again with --out {run_dir} --overwrite"
        ) from exc


def _write_npz(path: Path, **arrays) -> None:
    """An npz written to a hidden temporary beside `path`, then renamed over it durably."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    durable_replace(tmp, path)


def save_sweep_k(
    partial: Path, k: int, raw_centers: np.ndarray, row: dict, predicted: np.ndarray | None
) -> None:
    """Keep one finished k of a sweep (its centers in raw pixel units, its sweep.json row, its test
    images' predicted digits), then list it in CHECKPOINT_FILE: both written atomically and durably."""
    _write_npz(
        partial / sweep_k_file(k),
        raw_centers=raw_centers,
        row=np.array(json.dumps(row, default=lambda v: v.tolist())),
        predicted=np.asarray([] if predicted is None else predicted),
        has_predicted=predicted is not None,
    )
    finished = sorted(int(m[1]) for p in partial.iterdir() if (m := SWEEP_K.fullmatch(p.name)) and not m[2])
    _write_npz(partial / CHECKPOINT_FILE, finished_ks=np.asarray(finished))


def load_sweep(config: JobConfig, run_dir: Path, ks: tuple[int, ...], n_features: int) -> dict:
    """The finished ks of the sweep to resume, after checking its settings, data and ks: {k: (raw centers,
    row dict, predicted digits or None)}. A damaged file is a JobError naming it."""
    if run_dir.exists():
        raise JobError(f"{run_dir}: this sweep is already complete; nothing to resume")
    _checked_record(config, run_dir, ks)
    done = {}
    for k in ks:
        path = partial_dir(run_dir) / sweep_k_file(k)
        if not path.exists():
            continue
        centers, row_text, predicted, has_predicted = _read_npz(
            path, run_dir, "raw_centers", "row", "predicted", "has_predicted"
        )
        try:
            row = json.loads(str(row_text))
        except ValueError as exc:
            raise JobError(f"{path}: the checkpoint is damaged (its sweep.json row is not JSON)") from exc
        if centers.shape != (k, n_features) or row.get("k") != k:
            raise JobError(f"{path}: holds centers of shape {centers.shape} for k={row.get('k')}, not k={k}")
        done[k] = (centers.astype(np.float64), row, predicted if bool(has_predicted) else None)
    return done
