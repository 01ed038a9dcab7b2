"""This checkout against another commit, interleaved: does a refactoring leave the speed and the results?

    python benchmarks/against_commit.py [--commit 8d7e242] [--repeats 7] [--fit-pairs 3]

1. The per-chunk Lloyd kernel: the other commit's job/engine/kernels.py (read with `git show`) loaded
   beside ours; both run lloyd_partial (no weights) on the same 35,000 MNIST rows (what one of two workers
   holds) at k = 10 and 64, one BLAS thread, alternately; median of --repeats.
2. Whole fits on all rows (persisted on a 2-worker LocalCluster), three of each per process, in a process
   of this checkout and one of the other commit (a git worktree) taking turns, --fit-pairs times:
   `FusedKMeans(10, random_state=0, sample_size=None)` (k-means|| and plain Lloyd over all 70,000 images)
   and, with --k256, `FusedKMeans(256, random_state=0)` (the defaults: starts fitted in memory by Hamerly,
   then bounded Lloyd with the group search and the projected first pass).

The machine's own speed, which moves by tens of percent over a day, cancels in the ratios. Prints the
tables and writes benchmarks/results/<--name>.json (default against_commit).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from _common import REPO, mnist_store, print_table, save
from data_prep.idx import read_idx

# Run in a process whose `job` is the checkout at sys.argv[1]: three timed fits, as JSON on stdout.
FIT = """
import json, sys, time
from distributed import Client, LocalCluster
from job.dataset import flat_pixels, open_dataset
from job.engine.persist import persist_balanced
from job.kmeans.estimator import FusedKMeans

params = json.loads(sys.argv[2])
with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster, Client(cluster) as c:
    X = persist_balanced(c, flat_pixels(open_dataset(sys.argv[1], "all").images), rows=8750)
    FusedKMeans(**{**params, "random_state": 1, "max_iter": 5}).fit(X)  # compiles, warms the workers
    seconds = []
    for _ in range(3):
        started = time.perf_counter()
        model = FusedKMeans(**params, random_state=0).fit(X)
        seconds.append(time.perf_counter() - started)
print(json.dumps({"seconds": seconds, "n_iter": int(model.n_iter_), "inertia": float(model.inertia_)}))
"""
FITS = {"k=10, plain Lloyd": {"n_clusters": 10, "sample_size": None}, "k=256, defaults": {"n_clusters": 256}}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def kernel_rows(commit: str, repeats: int, tmp: Path) -> list[dict]:
    source = subprocess.run(
        ["git", "show", f"{commit}:job/engine/kernels.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tmp / "kernels_then.py").write_text(source)
    # Ours imported as itself: loaded under another name, numba's cache (kept beside the source file) would
    # record that name, and the job's next import of these kernels from the cache would fail to find it.
    from job.engine import kernels as now

    then = _load(tmp / "kernels_then.py", "kernels_then")
    X = read_idx(REPO.parent / "shared/data/mnist/train-images-idx3-ubyte.gz")[:35000].reshape(35000, -1)
    rng = np.random.default_rng(0)
    rows = []
    for k in (10, 64):
        centers = X[rng.choice(len(X), k, replace=False)].astype(np.float64)
        (s_now, c_now, _), (s_then, c_then, _) = now.lloyd_partial(X, centers), then.lloyd_partial(X, centers)
        times: dict[str, list[float]] = {"now": [], "then": []}
        with threadpool_limits(1):
            for _ in range(repeats):
                for name, module in (("now", now), ("then", then)):
                    started = time.perf_counter()
                    module.lloyd_partial(X, centers)
                    times[name].append(time.perf_counter() - started)
        ms_now, ms_then = (statistics.median(times[name]) * 1e3 for name in ("now", "then"))
        rows.append(
            {
                "k": k,
                "ms now": round(ms_now, 1),
                f"ms at {commit}": round(ms_then, 1),
                "ratio": round(ms_now / ms_then, 3),
                "same sums and counts": bool(np.array_equal(s_now, s_then) and np.array_equal(c_now, c_then)),
            }
        )
    return rows


def _fits(checkout: Path, store: Path, params: dict) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}  # ahead of the editable install's path
    proc = subprocess.run(
        [sys.executable, "-c", FIT, str(store), json.dumps(params)],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fit_rows(commit: str, pairs: int, fits: list[str], tmp: Path) -> list[dict]:
    worktree = tmp / "then"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(worktree), commit], cwd=REPO, check=True)
    try:
        store, rows = mnist_store(), []
        for fit, pair in ((fit, pair) for fit in fits for pair in range(pairs)):
            now, then = _fits(REPO, store, FITS[fit]), _fits(worktree, store, FITS[fit])
            rows.append(
                {
                    "fit": fit,
                    "pair": pair + 1,
                    "fit s now (median of 3)": round(statistics.median(now["seconds"]), 2),
                    f"fit s at {commit}": round(statistics.median(then["seconds"]), 2),
                    "ratio": round(statistics.median(now["seconds"]) / statistics.median(then["seconds"]), 3),
                    "same iterations and inertia": now["n_iter"] == then["n_iter"]
                    and now["inertia"] == then["inertia"],
                }
            )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=REPO, check=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commit", default="8d7e242", help="the commit to compare with")
    parser.add_argument("--repeats", type=int, default=7, help="kernel calls of each, alternately")
    parser.add_argument("--fit-pairs", type=int, default=3, help="processes of each, taking turns")
    parser.add_argument("--k256", action="store_true", help="also the default fit at k=256")
    parser.add_argument("--name", default="against_commit", help="results file name")
    args = parser.parse_args()
    fit_names = list(FITS) if args.k256 else list(FITS)[:1]
    with tempfile.TemporaryDirectory() as tmp:
        kernel = kernel_rows(args.commit, args.repeats, Path(tmp))
        print("1. lloyd_partial on 35,000 rows, one BLAS thread")
        print_table(kernel, list(kernel[0]))
        fits = fit_rows(args.commit, args.fit_pairs, fit_names, Path(tmp))
    print("\n2. FusedKMeans on MNIST-70k, persisted, 2 workers")
    print_table(fits, list(fits[0]))
    ratios = {name: statistics.median(r["ratio"] for r in fits if r["fit"] == name) for name in fit_names}
    print("median ratio of the fits: " + ", ".join(f"{name} {ratio:.3f}" for name, ratio in ratios.items()))
    save(args.name, {"commit": args.commit, "kernel": kernel, "fits": fits, "fit_ratio_median": ratios})


if __name__ == "__main__":
    main()
