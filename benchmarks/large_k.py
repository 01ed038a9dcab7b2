"""Large k: the job against faiss-cpu and scikit-learn at hundreds to thousands of clusters, in one run.

    python benchmarks/large_k.py --store data/mnist-8100000.zarr --k 256 [--only faiss,job] [--name NAME]
                                 [--repeats N] [--cores N]

Every anchor runs in a fresh process of its own, one after the other, on the same machine and data, and
does what a user of it would: read the store's train split once into memory as uint8 ("load"), fit
("fit"), then assign every row to its nearest center ("assign"). Inertia is the sum of squared distances
over all rows, pixels in [0, 1]; held-out accuracy reads each cluster as the majority digit of its
training rows and scores MNIST's real test split (data/mnist.zarr). The assignment of every anchor is
faiss's exact search (IndexFlatL2, BLAS), so the anchors differ only in their fit.

  faiss (default)        faiss.Kmeans(784, k, niter=20) on a uniform sample of 256 rows per centroid
                         (its max_points_per_centroid default: faiss would draw it itself, but all rows as
                         float32 would not fit in memory)
  faiss (1,024/centroid) the same with 1,024 rows per centroid
  MiniBatchKMeans        scikit-learn MiniBatchKMeans(k), one partial_fit epoch over 8,192-row batches
  KMeans 100k            scikit-learn KMeans(k, n_init=1) on a uniform 100,000-row sample
  job                    python -m job --split train --k K, defaults: "load" is its "load data" phase,
                         "fit" its fit phase (whose last pass assigns every row: labels and inertia), and
                         the whole job (evaluation, figures, report) is reported beside it

With --repeats N every anchor runs N times, round-robin (each round runs every anchor once), and its row
gives the median of each time over its runs, the runs themselves kept in the JSON: on these machines
the same read of the store into memory took 12.8 s to 26.4 s from one process to the next (the kernel's
page faults on fresh memory, 60% of its time: sys, not user), which one run per anchor cannot tell from
a difference between anchors.

With --cores N every process (each anchor, the job's client, scheduler and workers) runs on the first N
cores only (the CPU affinity mask, as `taskset` sets it): the job's default cluster then has N workers
and faiss N threads, so one machine measures the scaling from 2 to 16 cores of the same code and data.

Peak memory is each process's VmHWM (the job: client, scheduler and every worker). Writes
benchmarks/results/<name>.json and, when every anchor ran, docs/images/<name>.png (inertia against total
time).
faiss-cpu is a benchmark-only dependency: pip install -e ".[bench]".
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, RESULTS, mnist_store, print_table, save

ANCHORS = ("faiss (default)", "faiss (1,024/centroid)", "MiniBatchKMeans", "KMeans 100k", "job")
SEED = 0
BLOCK = 65_536  # rows converted to float32 at a time for the assignment


def _peak_rss() -> int:
    sys.path.insert(0, str(REPO))
    from job.phases import peak_rss

    return peak_rss()


def _load(store: Path) -> tuple[np.ndarray, np.ndarray]:
    """The train split's images as uint8 [n, 784] and their digits, read chunk by chunk."""
    import zarr

    root = zarr.open_group(str(store), mode="r")
    images, labels = root["train/images"], root["train/labels"]
    n = images.shape[0]
    X = np.empty((n, int(np.prod(images.shape[1:]))), dtype=np.uint8)
    rows = images.chunks[0]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        X[start:stop] = images[start:stop].reshape(stop - start, -1)
    return X, labels[:]


def _floats(X: np.ndarray) -> np.ndarray:
    return X.astype(np.float32) / np.float32(255)


def _sample(X: np.ndarray, size: int) -> np.ndarray:
    rows = np.sort(np.random.default_rng(SEED).choice(len(X), size=min(size, len(X)), replace=False))
    return _floats(X[rows])


def _assign(X: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, float]:
    """Every row's nearest center and the inertia, by faiss's exact search."""
    import faiss

    index = faiss.IndexFlatL2(X.shape[1])
    index.add(np.ascontiguousarray(centers, dtype=np.float32))
    labels = np.empty(len(X), dtype=np.int64)
    inertia = 0.0
    for start in range(0, len(X), BLOCK):
        d, i = index.search(_floats(X[start : start + BLOCK]), 1)
        labels[start : start + len(d)] = i[:, 0]
        inertia += float(d.astype(np.float64).sum())
    return labels, inertia


def _held_out(labels: np.ndarray, truth: np.ndarray, centers: np.ndarray, k: int) -> float:
    """Accuracy on MNIST's real test split, each cluster read as its training rows' majority digit."""
    import zarr

    table = np.bincount(labels * 10 + truth.astype(np.int64), minlength=k * 10).reshape(k, 10)
    majority = table.argmax(axis=1)
    test = zarr.open_group(str(mnist_store()), mode="r")["test"]
    test_labels, _ = _assign(test["images"][:].reshape(test["labels"].shape[0], -1), centers)
    return float((majority[test_labels] == test["labels"][:]).mean())


def _fit(name: str, X: np.ndarray, k: int) -> np.ndarray:
    if name.startswith("faiss"):
        import faiss

        per_centroid = 256 if name == "faiss (default)" else 1024
        kmeans = faiss.Kmeans(X.shape[1], k, niter=20, seed=SEED + 1234, max_points_per_centroid=per_centroid)
        kmeans.train(_sample(X, per_centroid * k))
        return kmeans.centroids
    if name == "MiniBatchKMeans":
        from sklearn.cluster import MiniBatchKMeans

        model = MiniBatchKMeans(n_clusters=k, random_state=SEED)
        for start in range(0, len(X), 8192):
            model.partial_fit(_floats(X[start : start + 8192]))
        return model.cluster_centers_
    from sklearn.cluster import KMeans

    return KMeans(n_clusters=k, n_init=1, random_state=SEED).fit(_sample(X, 100_000)).cluster_centers_


def anchor_main(name: str, store: Path, k: int) -> None:
    """One anchor in this process: load, fit, assign; prints one JSON line."""
    started = time.perf_counter()
    X, truth = _load(store)
    loaded = time.perf_counter()
    centers = np.asarray(_fit(name, X, k), dtype=np.float32)
    fitted = time.perf_counter()
    labels, inertia = _assign(X, centers)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "load s": loaded - started,
                "fit s": fitted - loaded,
                "assign s": done - fitted,
                "total s": done - started,
                "inertia": inertia,
                "held-out": _held_out(labels, truth, centers, k),
                "peak RSS MiB": {"client": _peak_rss() / 2**20},
            }
        )
    )


def _anchor(name: str, store: Path, k: int) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--anchor", name, "--store", str(store), "--k", str(k)],
        check=False,
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _job(store: Path, k: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        cmd = [
            sys.executable,
            "-m",
            "job",
            "--data",
            str(store),
            "--split",
            "train",
            "--k",
            str(k),
            "--out",
            str(run),
            "--dashboard-address",
            "127.0.0.1:0",
        ]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"job failed: {proc.stderr[-3000:]}")
        m = json.loads((run / "metrics.json").read_text())
    t, fit = m["timings"], m["fit"]
    peak = m["memory"]["peak_rss_per_process"]
    # the client and the scheduler share a process (a LocalCluster): one figure; then each worker
    peaks = {
        "client+scheduler": peak["client"] / 2**20,
        **{f"worker {i}": value / 2**20 for i, value in enumerate(peak["workers"].values())},
    }
    client_peak = {
        phase: value["client_peak_rss"] / 2**20
        for phase, value in m["memory"].items()
        if isinstance(value, dict) and "client_peak_rss" in value
    }
    return {
        "load s": t["load data"],
        "fit s": t["fit"],
        "assign s": 0.0,
        "total s": t["load data"] + t["fit"],
        "job wall s": wall,
        "inertia": fit["inertia"],
        "held-out": m["held_out"]["accuracy_majority"],
        "peak RSS MiB": peaks,
        "n_iter": fit["n_iter"],
        "strategy": fit.get("strategy"),
        "passes": fit.get("passes_over_all_rows"),
        "sample": fit.get("sample"),
        "timings": t,
        "fit detail": fit,
        "cluster sizing": m["cluster"]["sizing"],
        "client peak RSS MiB by phase": client_peak,
    }


TIMES = ("load s", "fit s", "assign s", "total s", "job wall s")


def _median_row(anchor: str, runs: list[dict]) -> dict:
    """An anchor's row: its last run, each time the median over its runs (all runs kept under "runs")."""
    row = {"anchor": anchor, **runs[-1]}
    for key in TIMES:
        if key in row:
            row[key] = float(np.median([r[key] for r in runs]))
    if len(runs) > 1:
        row["runs"] = [{key: r[key] for key in (*TIMES, "inertia") if key in r} for r in runs]
    return row


def plot(rows: list[dict], title: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for r in rows:
        is_job = r["anchor"] == "job"
        ax.scatter(
            r["total s"],
            r["inertia"],
            s=70 if is_job else 35,
            marker="*" if is_job else "o",
            color="crimson" if is_job else "steelblue",
            zorder=3,
        )
        ax.annotate(
            r["anchor"],
            (r["total s"], r["inertia"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
            color="crimson" if is_job else "black",
        )
    ax.set_xlabel("load + fit + assign every row, s")
    ax.set_ylabel("inertia over all rows (lower is better)")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--only", default="", help="comma-separated anchor name prefixes")
    parser.add_argument("--name", default=None, help="results file name (default large_k-<rows>-k<k>)")
    parser.add_argument("--repeats", type=int, default=1, help="runs of every anchor, round-robin (medians)")
    parser.add_argument("--cores", type=int, default=None, help="run every process on the first N cores")
    parser.add_argument("--anchor", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.store = args.store.resolve()
    if args.cores:
        os.sched_setaffinity(0, range(args.cores))  # inherited by every process started from here
    if args.anchor:
        anchor_main(args.anchor, args.store, args.k)
        return
    import zarr

    n = zarr.open_group(str(args.store), mode="r")["train/images"].shape[0]
    cores = len(os.sched_getaffinity(0))
    name = args.name or f"large_k-{n}-k{args.k}" + (f"-{cores}cores" if args.cores else "")
    prefixes = [p.strip() for p in args.only.split(",") if p.strip()]
    # --only re-runs some anchors: the others' rows are kept from the results file (each is saved as it ends)
    path = RESULTS / f"{name}.json"
    kept = (
        {r["anchor"]: r for r in json.loads(path.read_text())["anchors"]}
        if prefixes and path.exists()
        else {}
    )
    header = {"store": args.store.name, "rows": n, "k": args.k, "cores": cores}
    chosen = [a for a in ANCHORS if not prefixes or any(a.startswith(p) for p in prefixes)]
    runs: dict[str, list[dict]] = {a: [] for a in chosen}
    rows: list[dict] = []
    for round_ in range(args.repeats):
        for anchor in chosen:
            print(f"{anchor} (run {round_ + 1}/{args.repeats}) ...", flush=True)
            result = _job(args.store, args.k) if anchor == "job" else _anchor(anchor, args.store, args.k)
            runs[anchor].append(result)
            print(json.dumps(result, default=str)[:400], flush=True)
            rows = [
                _median_row(a, runs[a]) if runs.get(a) else kept[a]
                for a in ANCHORS
                if runs.get(a) or a in kept
            ]
            save(name, {**header, "anchors": rows, "complete": False})
    best = min(r["inertia"] for r in rows if r["anchor"] != "job") if len(rows) > 1 else None
    for r in rows:
        r["peak RSS MiB (max)"] = max(r["peak RSS MiB"].values())
        if best:
            r["vs best anchor"] = r["inertia"] / best
    print_table(
        rows,
        [
            "anchor",
            "load s",
            "fit s",
            "assign s",
            "total s",
            "inertia",
            "vs best anchor",
            "held-out",
            "peak RSS MiB (max)",
        ],
    )
    if len(rows) == len(ANCHORS):  # a plot of some anchors only would stand beside the full one, saying less
        image = REPO / "docs" / "images" / f"{name}.png"
        plot(rows, f"K-Means, k={args.k}, on {n:,} images: inertia against time ({cores} cores)", image)
    save(name, {**header, "anchors": rows, "complete": True})


if __name__ == "__main__":
    main()
