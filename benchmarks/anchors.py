"""The job against the few lines of scikit-learn a user would write instead, on 70k, 1M and 8.1M images.

    python benchmarks/anchors.py [--sizes 70000,1000000,8100000] [--e2e 3]

Every anchor runs in a fresh process of its own, one after the other, on the same machine and data:

  sklearn script      the task's plain script (benchmarks/sklearn_script.py: KMeans(10) on all 70,000)
  minibatch xN        MiniBatchKMeans(10, batch_size=8192).partial_fit over the store's chunks, N epochs
  sample M + KMeans   KMeans(10, k-means++, n_init=1) on a uniform random sample of M rows (M = 2,560:
                      faiss' default of 256 per center; 100,000; 500,000), then every row assigned
  dask-ml             stock dask_ml.cluster.KMeans on a 2-worker LocalCluster, X persisted as float32
  job (full Lloyd)    python -m job --sample-size all (k-means|| and every Lloyd pass on all rows)
  job (default)       python -m job, default settings: 4 single-task starts on a subsample, the best one
                      continued on the sample (200,000 rows; all of them at 70k), then polished on all rows

Data: n = 70,000 is MNIST (train + test, the job's default); larger n are the first n training images of
the generated store (python -m job.generate --n 8100000, seed 0: the same bytes on every machine),
and the job runs with --split train on data/mnist-<n>.zarr generated with the same seed. Inertia is always
the sum of squared distances over all n rows, pixels in [0, 1]. "fit s" is the wall time from opening the
data to the final centers (for the job: its "load data" and "fit" phases, persisting X and then the fit);
"passes" counts reads of all n rows; peaks are each process's VmHWM (the job records its client, scheduler
and workers).

--e2e R alternates R runs of the task's script and of `python -m job` (defaults, whole job: evaluation,
figures, report) on MNIST and reports the median wall time of each, start-up included.

Writes benchmarks/results/anchors.json and docs/images/anchors-<n>.png (inertia against fit time);
--only runs a subset (name prefixes), --name changes the file names (e.g. for another machine).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, mnist_store, print_table, save

BIG = REPO / "data" / "mnist-8100000.zarr"
K = 10


# --- what runs inside each anchor's own process ---------------------------------------------------


def _peak_rss() -> int:
    sys.path.insert(0, str(REPO))
    from job.phases import peak_rss

    return peak_rss()


def _chunks(store: Path, split: str, n: int):
    """The first n rows of a split, chunk by chunk: (start, uint8 [m, 784])."""
    import zarr

    images = zarr.open_group(str(store), mode="r")[f"{split}/images"]
    rows = images.chunks[0]
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        yield start, images[start:stop].reshape(stop - start, -1)


def _splits(store: Path, n: int):
    """(store, split, rows) pieces making up the benchmark's n rows."""
    if n == 70_000:
        return [(store, "train", 60_000), (store, "test", 10_000)]
    return [(store, "train", n)]


def _all_chunks(pieces):
    for store, split, rows in pieces:
        yield from (block for _, block in _chunks(store, split, rows))


def _inertia(pieces, centers: np.ndarray) -> float:
    """Sum of squared distances of all rows (scaled to [0, 1]) to their nearest center: one pass."""
    sys.path.insert(0, str(REPO))
    from job.engine.kernels import assign

    total = 0.0
    for block in _all_chunks(pieces):
        total += float(assign(block, centers * 255.0)[1].sum())
    return total / 255.0**2


def run_minibatch(pieces, epochs: int) -> dict:
    from sklearn.cluster import MiniBatchKMeans

    model = MiniBatchKMeans(n_clusters=K, batch_size=8192, random_state=0, n_init=1)
    for _ in range(epochs):
        for block in _all_chunks(pieces):
            model.partial_fit(block.astype(np.float32) / 255.0)
    return {"centers": model.cluster_centers_, "passes": epochs}


def run_sample(pieces, size: int) -> dict:
    from sklearn.cluster import KMeans

    n = sum(rows for *_, rows in pieces)
    chosen = np.sort(np.random.default_rng(0).choice(n, size=min(size, n), replace=False))
    parts, offset = [], 0
    for block in _all_chunks(pieces):
        local = chosen[(chosen >= offset) & (chosen < offset + len(block))] - offset
        parts.append(block[local])
        offset += len(block)
    sample = np.concatenate(parts).astype(np.float32) / 255.0
    model = KMeans(n_clusters=K, init="k-means++", n_init=1, random_state=0).fit(sample)
    return {"centers": model.cluster_centers_, "passes": 1}


def run_dask_ml(pieces) -> dict:
    from dask_ml.cluster import KMeans
    from distributed import Client, LocalCluster

    sys.path.insert(0, str(REPO))
    from job.dataset import open_dataset, to_features

    store = pieces[0][0]
    X = to_features(open_dataset(store, "all" if len(pieces) == 2 else "train").images)[
        : sum(p[2] for p in pieces)
    ]
    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            memory_limit="9GiB",
        ) as cluster,
        Client(cluster) as client,
    ):
        X = X.persist()
        model = KMeans(n_clusters=K, random_state=0).fit(X)
        peaks = client.run(_peak_rss)
    return {
        "centers": np.asarray(model.cluster_centers_),
        "passes": None,
        "n_iter": int(model.n_iter_),
        "worker_peaks": peaks,
    }


def anchor_main(name: str, n: int, store: Path, arg: int) -> None:
    """One anchor, in this process: time it, measure its inertia over all rows, print one JSON line."""
    pieces = _splits(store, n)
    started = time.perf_counter()
    if name == "minibatch":
        result = run_minibatch(pieces, arg)
    elif name == "sample":
        result = run_sample(pieces, arg)
    else:
        result = run_dask_ml(pieces)
    fit_seconds = time.perf_counter() - started
    inertia = _inertia(pieces, np.asarray(result.pop("centers"), dtype=np.float64))
    passes = result.pop("passes")
    print(
        json.dumps(
            {
                "fit s": fit_seconds,
                "inertia": inertia,
                "passes": None if passes is None else passes + 1,
                "peak_rss": {"client": _peak_rss()},
                **result,
            }
        )
    )


# --- the driver ------------------------------------------------------------------------------------


def _anchor(name: str, n: int, store: Path, arg: int = 0) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--anchor", name, "--n", str(n), "--store", str(store), "--arg", str(arg)],
        cwd=REPO / "benchmarks",
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _job(n: int, store: Path, *args: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        split = "all" if n == 70_000 else "train"
        cmd = [
            sys.executable,
            "-m",
            "job",
            "--data",
            str(store),
            "--split",
            split,
            "--out",
            str(run),
            "--dashboard-address",
            "127.0.0.1:0",
            *args,
        ]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(f"job {args} failed: {proc.stderr[-3000:]}")
        m = json.loads((run / "metrics.json").read_text())
    fit = m["fit"]
    peaks = m["memory"]["peak_rss_per_process"]
    fit_s = m["timings"].get("load data", 0.0) + m["timings"]["fit"]  # persisting X is part of the fit's cost
    return {
        "fit s": fit_s,
        "job wall s": wall,
        "inertia": fit["inertia"],
        "passes": fit.get("passes_over_all_rows"),
        "n_iter": fit["n_iter"],
        "sample": fit.get("sample"),
        "persisted": fit.get("persisted"),
        "peak_rss": peaks,
        "timings": m["timings"],
        "cluster": m["cluster"].get("sizing"),
        "held_out": (m.get("held_out") or {}).get("accuracy_majority"),
    }


def _store_for_job(n: int) -> Path:
    if n == 70_000:
        return mnist_store()
    store = REPO / "data" / f"mnist-{n}.zarr"
    if not store.exists():
        subprocess.run(
            [sys.executable, "-m", "job.generate", "--n", str(n), "--out", str(store)], cwd=REPO, check=True
        )
    return store


def _sklearn_script() -> dict:
    source = os.environ.get("MNIST_SOURCE") or str(REPO.parent / "shared" / "data" / "mnist")
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "benchmarks/sklearn_script.py", source, f"{tmp}/c.png"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        wall = time.perf_counter() - started
    out = dict(item.split("=") for item in proc.stdout.split() if "=" in item)
    return {
        "fit s": float(out["fit_seconds"]),
        "job wall s": wall,
        "inertia": float(out["inertia"]),
        "passes": None,
        "peak_rss": {"client": int(out["peak_rss"])},
    }


def plot(rows: list[dict], n: int, path: Path, cores: int | None = None) -> None:
    cores = cores or len(os.sched_getaffinity(0))
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8))
    ax = fig.add_subplot()
    for r in rows:
        is_job = r["anchor"].startswith("job")
        ax.scatter(
            r["fit s"],
            r["inertia"],
            s=60 if is_job else 35,
            marker="*" if is_job else "o",
            color="crimson" if is_job else "steelblue",
            zorder=3,
        )
        # The job's labels below their points, the anchors' above: they sit close together.
        ax.annotate(
            r["anchor"],
            (r["fit s"], r["inertia"]),
            textcoords="offset points",
            xytext=(6, -12) if is_job else (6, 4),
            fontsize=8,
            color="crimson" if is_job else "black",
        )
    ax.set_xscale("log")
    ax.set_xlabel("fit wall time, s (log scale)")
    ax.set_ylabel("inertia over all rows (lower is better)")
    ax.set_title(f"K-Means, k=10, on {n:,} images: inertia against fit time ({cores} cores)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="70000,1000000,8100000")
    parser.add_argument("--e2e", type=int, default=3, help="alternating end-to-end runs at 70k (0: skip)")
    parser.add_argument(
        "--full-max-iter",
        type=int,
        default=40,
        help="cap on the job's full-Lloyd anchor above 1M rows (it would run for an hour)",
    )
    parser.add_argument(
        "--only", default="", help="comma-separated name prefixes of the anchors to run (default all)"
    )
    parser.add_argument("--name", default="anchors", help="results file name (benchmarks/results/NAME.json)")
    parser.add_argument("--anchor"), parser.add_argument("--n", type=int), parser.add_argument("--store")
    parser.add_argument("--arg", type=int, default=0)
    args = parser.parse_args()
    if args.anchor:
        return anchor_main(args.anchor, args.n, Path(args.store), args.arg)

    results = {}
    for n in [int(v) for v in args.sizes.split(",") if v]:  # --sizes "": the end-to-end runs only
        data = mnist_store() if n == 70_000 else BIG
        job_store = _store_for_job(n)
        rows = []

        wanted = [p for p in args.only.split(",") if p]

        def add(name, fn):
            if wanted and not any(name.startswith(p) for p in wanted):
                return
            print(f"n={n:,}: {name} ...", flush=True)
            row = {"anchor": name, **fn()}
            rows.append(row)
            print(f"    fit {row['fit s']:.1f} s, inertia {row['inertia']:,.0f}", flush=True)

        if n == 70_000:
            add("sklearn script", _sklearn_script)
        add("minibatch x1", lambda: _anchor("minibatch", n, data, 1))
        add("minibatch x3", lambda: _anchor("minibatch", n, data, 3))
        for size in (256 * K, 100_000, 500_000):
            if size < n:
                add(f"sample {size:,} + KMeans", lambda size=size: _anchor("sample", n, data, size))
        if n <= 70_000:
            add("dask-ml", lambda: _anchor("dask_ml", n, data))
        full = ["--sample-size", "all"] + (["--max-iter", str(args.full_max_iter)] if n > 1_000_000 else [])
        add(
            "job (full Lloyd" + (f", {args.full_max_iter} it.)" if n > 1_000_000 else ")"),
            lambda: _job(n, job_store, *full),
        )
        add("job (default)", lambda: _job(n, job_store))
        print()
        print_table(rows, ["anchor", "fit s", "passes", "inertia"])
        anchor_inertias = [r["inertia"] for r in rows if not r["anchor"].startswith("job")]
        for r in rows:
            r["inertia vs best anchor"] = r["inertia"] / min(anchor_inertias) if anchor_inertias else None
        results[str(n)] = rows
        save(args.name, results)  # after each size: a long run that is stopped keeps what it measured
        plot(
            rows, n, Path(os.environ.get("ANCHORS_PLOTS", REPO / "docs" / "images")) / f"{args.name}-{n}.png"
        )

    if args.e2e:
        source_runs, job_runs = [], []
        store = mnist_store()
        for _ in range(args.e2e):
            source_runs.append(_sklearn_script()["job wall s"])
            job_runs.append(_job(70_000, store)["job wall s"])
        results["end_to_end_70000"] = {
            "sklearn script wall s": source_runs,
            "job wall s": job_runs,
            "ratio of medians": statistics.median(job_runs) / statistics.median(source_runs),
        }
        print(
            f"\nend to end on MNIST, median of {args.e2e} alternating runs: script "
            f"{statistics.median(source_runs):.1f} s, job {statistics.median(job_runs):.1f} s, ratio "
            f"{results['end_to_end_70000']['ratio of medians']:.2f}"
        )
    save(args.name, results)


if __name__ == "__main__":
    main()
