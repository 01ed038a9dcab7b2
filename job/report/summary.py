"""What a run leaves behind: metrics.json, the model, labels in Zarr, and a short text summary.

May use: data_prep.digits, numpy (and the libraries whose versions it records).
"""

from __future__ import annotations

import json
import math
import platform
from pathlib import Path

import numpy as np

from data_prep.digits import N_CLASSES


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


# Above this many clusters the summary counts the clusters of each digit instead of listing them (a line of
# 1,024 cluster numbers at k=1024 hid everything else); the full mapping is in metrics.json and report.html.
MAPPING_LISTED_MAX_K = 32


def mapping_line(majority: list[int]) -> str:
    """The summary's cluster -> digit line: the digit each cluster mostly holds (its majority digit; the
    one-to-one mapping is only the Hungarian accuracy's). Up to ten clusters, cluster by cluster; up to
    MAPPING_LISTED_MAX_K, grouped by digit: "0: 3, 17, 40; 1: ..."; more, how many clusters each digit has."""
    if len(majority) <= N_CLASSES:
        return f"  cluster -> digit it mostly holds: {' '.join(f'{c}:{d}' for c, d in enumerate(majority))}"
    groups = {d: [c for c, m in enumerate(majority) if m == d] for d in sorted(set(majority))}
    if len(majority) > MAPPING_LISTED_MAX_K:
        counts = "; ".join(f"{d}: {len(clusters)}" for d, clusters in groups.items())
        return f"  clusters per majority digit: {counts} (which ones: report.html, metrics.json)"
    return "  clusters by majority digit: " + "; ".join(
        f"{d}: {', '.join(map(str, clusters))}" for d, clusters in groups.items()
    )


def accuracy_text(scores: dict, k: int) -> str:
    """The summary's accuracy: "accuracy A (Hungarian), B (majority)"; above ten clusters the majority
    reading only: a one-to-one mapping then counts all but ten clusters as wrong (0.018 at k=1024)."""
    majority = f"{scores['accuracy_majority']:.3f} (majority)"
    return (
        f"accuracy {scores['accuracy_hungarian']:.3f} (Hungarian), {majority}"
        if k <= N_CLASSES
        else f"accuracy {majority}"
    )


def summary_text(metrics: dict, run_dir: Path) -> str:
    ev, fit, ds, k = metrics["evaluation"], metrics["fit"], metrics["dataset"], metrics["config"]["k"]
    lines = [
        f"K-Means, k={k}, on {ds['n']:,} images ({'+'.join(ds['splits'])}) "
        f"with the {fit['engine']} engine: {fit['n_iter']} iterations, inertia {fit['inertia']:,.0f}",
        f"  ARI {ev['ari']:.3f}   NMI {ev['nmi']:.3f}   {accuracy_text(ev, k)}",
        f"  silhouette {ev['silhouette']:.4f} on a sample of {ev['silhouette_sample']:,}"
        if ev.get("silhouette") is not None and not math.isnan(ev["silhouette"])
        else "  silhouette: not computed",
        mapping_line(ev["mapping_majority"]),
    ]
    if ho := metrics.get("held_out"):
        lines.append(f"  held-out test split ({ho['n']:,} images): {accuracy_text(ho, k)}")
    return _with_footer(lines, metrics, run_dir)


def _with_footer(lines: list[str], metrics: dict, run_dir: Path) -> str:
    lines.append(
        f"  total {sum(metrics['timings'].values()):.1f} s; results in {run_dir}/ (open report.html)"
    )
    return "\n".join(lines)


def sweep_summary_text(metrics: dict, run_dir: Path) -> str:
    header = "    k    inertia  silhouette    ARI    NMI  Davies-Bouldin  Calinski-Harabasz"
    if metrics.get("classifier"):
        header += "  held-out accuracy"
    lines = [
        f"k sweep on {metrics['dataset']['n']:,} images: {', '.join(str(r['k']) for r in metrics['sweep'])}",
        header,
    ]
    for r in metrics["sweep"]:
        lines.append(
            f"  {r['k']:3d} {r['inertia']:10,.0f} {r['silhouette']:11.4f} {r['ari']:6.3f} {r['nmi']:6.3f}"
            f" {r['davies_bouldin']:15.3f} {r['calinski_harabasz']:18,.0f}"
            + (f" {r['held_out_accuracy']:18.3f}" if "held_out_accuracy" in r else "")
        )
    lines.append(f"  suggested k = {metrics['suggested_k']}: {metrics['suggestion_reason']}")
    if c := metrics.get("classifier"):
        lines.append(
            f"  as a classifier: best k = {c['best_k']}, held-out accuracy {c['held_out_accuracy']:.3f} on "
            f"{c['n_test']:,} test images (each cluster read as its majority training digit)"
        )
    return _with_footer(lines, metrics, run_dir)


def library_versions() -> dict:
    """The versions metrics.json records: Python and the libraries the result depends on."""
    from importlib.metadata import version

    import dask
    import distributed
    import sklearn
    import zarr

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "dask": dask.__version__,
        "distributed": distributed.__version__,
        "dask_ml": version("dask-ml"),  # not imported: it takes 1.4 s
        "scikit_learn": sklearn.__version__,
        "zarr": zarr.__version__,
    }
