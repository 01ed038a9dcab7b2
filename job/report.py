"""What a run leaves behind: metrics.json, the model, labels in Zarr, and a short text summary."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from .scoring import N_CLASSES

# Every name a run or sweep folder of ours may hold (predictions.csv is job.predict's default output).
RUN_FILES = {"metrics.json", "summary.txt", "centers.png", "examples_closest.png", "examples_random.png",
             "confusion.png", "sizes.png", "pca.png", "labels.zarr", "model.npz", "centers.npy", "report.html",
             "predictions.csv"}
SWEEP_FILES = {"sweep.json", "summary.txt", "elbow.png", "silhouette.png", "criteria.png", "accuracy.png",
               "per_digit.png", "confusion_test.png", "misclassified.png", "report.html"}
_SWEEP_CENTERS = re.compile(r"(centers_k\d+\.png|model_k\d+\.npz)$")


def why_not_a_run_folder(path: Path) -> str | None:
    """None when `path` is a run or sweep folder this job wrote (so --overwrite may replace it), else why
    not. Ours means: its metrics.json (or sweep.json) is one we wrote, and it holds nothing else than the
    files a run writes, so that replacing it cannot take a file of the user's with it."""
    path = Path(path)
    if not path.is_dir():
        return "exists and is not a folder"
    names = {p.name for p in path.iterdir()}
    is_sweep = "sweep.json" in names
    record = path / ("sweep.json" if is_sweep else "metrics.json")
    try:
        metrics = json.loads(record.read_text())
        ours = isinstance(metrics, dict) and "versions" in metrics and "config" in metrics
    except (OSError, ValueError):
        ours = False
    if not ours:
        return "exists and is not a run folder of this job (no metrics.json or sweep.json of ours in it)"
    allowed = SWEEP_FILES if is_sweep else RUN_FILES
    foreign = sorted(n for n in names if n not in allowed and not (is_sweep and _SWEEP_CENTERS.match(n)))
    if foreign:
        return f"is a run folder that also holds files the job did not write ({', '.join(foreign[:5])})"
    return None


def _json_default(value):
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _finite(value):
    """JSON has no NaN: write null instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def write_metrics(path: Path, metrics: dict) -> Path:
    path.write_text(json.dumps(_finite(metrics), indent=2, default=_json_default) + "\n")
    return path


def write_model(path: Path, centers: np.ndarray, image_shape, mapping_hungarian, mapping_majority) -> Path:
    """Everything `predict` needs: centers [k, p] float32, the cluster->digit mappings, the image shape."""
    np.savez(
        path, centers=centers.astype(np.float32), image_shape=np.asarray(image_shape),
        mapping_hungarian=np.asarray(mapping_hungarian), mapping_majority=np.asarray(mapping_majority),
    )
    return path


def mapping_line(hungarian: list[int], majority: list[int]) -> str:
    """The summary's cluster -> digit line. With as many clusters as digits, the one-to-one mapping,
    cluster by cluster; otherwise (where the one-to-one mapping leaves all but ten clusters at -1) the
    majority mapping grouped by digit: "digit 0: clusters 3, 17, 40; digit 1: ..."."""
    if len(hungarian) <= N_CLASSES:
        return f"  cluster -> digit: {' '.join(f'{c}:{d}' for c, d in enumerate(hungarian))}"
    groups = {d: [c for c, m in enumerate(majority) if m == d] for d in sorted(set(majority))}
    return "  clusters by majority digit: " + "; ".join(
        f"{d}: {', '.join(map(str, clusters))}" for d, clusters in groups.items())


def summary_text(metrics: dict, run_dir: Path) -> str:
    ev, fit, ds = metrics["evaluation"], metrics["fit"], metrics["dataset"]
    lines = [
        f"K-Means, k={metrics['config']['k']}, on {ds['n']:,} images ({'+'.join(ds['splits'])}) "
        f"with the {fit['engine']} engine: {fit['n_iter']} iterations, inertia {fit['inertia']:,.0f}",
        f"  ARI {ev['ari']:.3f}   NMI {ev['nmi']:.3f}   accuracy {ev['accuracy_hungarian']:.3f} (Hungarian), "
        f"{ev['accuracy_majority']:.3f} (majority)",
        f"  silhouette {ev['silhouette']:.4f} on a sample of {ev['silhouette_sample']:,}"
        if ev.get("silhouette") is not None and not math.isnan(ev["silhouette"])
        else "  silhouette: not computed",
        mapping_line(ev["mapping_hungarian"], ev["mapping_majority"]),
    ]
    if metrics.get("held_out"):
        ho = metrics["held_out"]
        lines.append(
            f"  held-out test split ({ho['n']:,} images): accuracy {ho['accuracy_hungarian']:.3f} (Hungarian), "
            f"{ho['accuracy_majority']:.3f} (majority)"
        )
    total = sum(metrics["timings"].values())
    lines.append(f"  total {total:.1f} s; results in {run_dir}/ (open report.html)")
    return "\n".join(lines)
