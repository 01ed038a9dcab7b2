"""K-Means as a digit classifier: scikit-learn and the job on the same k list, in one run.

    python benchmarks/classifier.py [--ks 10,32,64,128,256] [--seeds 0,1,2] [--name classifier]

For each seed, alternating: scikit-learn's `KMeans(k, random_state=seed, n_init=1)` on the 60,000 MNIST
training images scaled to [0, 1] (float64, as the task's script scales them), each cluster mapped to the
majority digit of its training members, accuracy on the 10,000 test images, for every k (one process per
k: its fit time is `fit`'s wall time); then one job sweep, `python -m job --split train --k <list>
--seed <seed>` (defaults otherwise: the sweep's evaluation, figures and report included), whose
sweep.json gives the held-out accuracy and fit seconds per k. Prints a table per k (medians over the
seeds) and the totals: scikit-learn fitting the whole list against the job's whole sweep (wall). Saves
benchmarks/results/classifier.json and docs/images/classifier.png.
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

from _common import REPO, mnist_store, print_table, save


def sklearn_one(k: int, seed: int, store: Path) -> dict:
    """In a process of its own: fit, map, score; prints one JSON line."""
    import numpy as np
    import zarr
    from sklearn.cluster import KMeans

    root = zarr.open_group(str(store), mode="r")
    X = root["train/images"][:].reshape(60_000, -1) / 255.0
    y = root["train/labels"][:]
    X_test = root["test/images"][:].reshape(10_000, -1) / 255.0
    y_test = root["test/labels"][:]
    started = time.perf_counter()
    model = KMeans(n_clusters=k, random_state=seed, n_init=1).fit(X)
    fit = time.perf_counter() - started
    majority = np.array(
        [
            np.bincount(y[model.labels_ == c], minlength=10).argmax() if (model.labels_ == c).any() else -1
            for c in range(k)
        ]
    )
    accuracy = float((majority[model.predict(X_test)] == y_test).mean())
    return {"fit s": fit, "accuracy": accuracy, "n_iter": int(model.n_iter_)}


def _sklearn(k: int, seed: int, store: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--one", str(k), "--seed-one", str(seed), "--store", str(store)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO / "benchmarks",
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _job(ks: list[int], seed: int, store: Path) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "sweep"
        cmd = [
            sys.executable,
            "-m",
            "job",
            "--data",
            str(store),
            "--split",
            "train",
            "--k",
            ",".join(map(str, ks)),
            "--seed",
            str(seed),
            "--out",
            str(out),
            "--dashboard-address",
            "127.0.0.1:0",
        ]
        started = time.perf_counter()
        proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr[-3000:])
        if len(ks) == 1:  # one k is a run, not a sweep: its metrics.json
            run = json.loads((out / "metrics.json").read_text())
            fit = run["fit"]
            held = run["held_out"]["accuracy_majority"]
            metrics = {
                "timings": run["timings"],
                "sweep": [
                    {
                        "k": ks[0],
                        "fit_seconds": fit["fit_seconds"],
                        "held_out_accuracy": held,
                        "n_iter": fit["n_iter"],
                    }
                ],
            }
        else:
            metrics = json.loads((out / "sweep.json").read_text())
    return {
        "wall s": wall,
        "timings": metrics["timings"],
        "rows": {
            r["k"]: {"fit s": r["fit_seconds"], "accuracy": r["held_out_accuracy"], "n_iter": r["n_iter"]}
            for r in metrics["sweep"]
        },
    }


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    ks = [r["k"] for r in rows]
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax = fig.add_subplot(1, 2, 1)
    ax.plot(ks, [r["sklearn accuracy"] for r in rows], "o-", label="scikit-learn KMeans (n_init=1)")
    ax.plot(ks, [r["job accuracy"] for r in rows], "s--", color="crimson", label="the job's sweep")
    ax.set_title("Held-out accuracy against k (median of seeds)")
    ax2 = fig.add_subplot(1, 2, 2)
    ax2.plot(ks, [r["sklearn fit s"] for r in rows], "o-", label="scikit-learn fit")
    ax2.plot(ks, [r["job fit s"] for r in rows], "s--", color="crimson", label="job fit (in its sweep)")
    ax2.set_title("Fit time against k (median of seeds), s")
    for a in (ax, ax2):
        a.set_xscale("log", base=2)
        a.minorticks_off()
        a.set_xticks(ks, [str(k) for k in ks])
        a.set_xlabel("k (log scale)")
        a.grid(True, alpha=0.3)
        a.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ks", default="10,32,64,128,256")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--name", default="classifier", help="results file name (another name: no figure)")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--seed-one", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(sklearn_one(args.one, args.seed_one, Path(args.store))))
        return
    ks, seeds, store = (
        [int(k) for k in args.ks.split(",")],
        [int(s) for s in args.seeds.split(",")],
        mnist_store(),
    )
    runs = []
    for seed in seeds:
        sk = {}
        for k in ks:
            sk[k] = _sklearn(k, seed, store)
            print(
                f"seed {seed}, k={k}: scikit-learn accuracy {sk[k]['accuracy']:.3f}, fit "
                f"{sk[k]['fit s']:.1f} s",
                flush=True,
            )
        job = _job(ks, seed, store)
        print(
            f"seed {seed}: job sweep {job['wall s']:.1f} s wall; "
            + ", ".join(f"k={k} {job['rows'][k]['accuracy']:.3f}" for k in ks),
            flush=True,
        )
        runs.append({"seed": seed, "sklearn": sk, "job": job})

    def med(values):
        return statistics.median(values)

    rows = []
    for k in ks:
        sk_acc, job_acc = (
            med([r["sklearn"][k]["accuracy"] for r in runs]),
            med([r["job"]["rows"][k]["accuracy"] for r in runs]),
        )
        sk_fit, job_fit = (
            med([r["sklearn"][k]["fit s"] for r in runs]),
            med([r["job"]["rows"][k]["fit s"] for r in runs]),
        )
        rows.append(
            {
                "k": k,
                "sklearn accuracy": sk_acc,
                "job accuracy": job_acc,
                "difference": job_acc - sk_acc,
                "sklearn fit s": sk_fit,
                "job fit s": job_fit,
                "fit ratio": job_fit / sk_fit,
            }
        )
    totals = {
        "sklearn fits of the list, s (median over seeds)": med(
            [sum(r["sklearn"][k]["fit s"] for k in ks) for r in runs]
        ),
        "job sweep wall, s (median over seeds)": med([r["job"]["wall s"] for r in runs]),
    }
    totals["ratio"] = (
        totals["job sweep wall, s (median over seeds)"]
        / totals["sklearn fits of the list, s (median over seeds)"]
    )
    print()
    print_table(rows, list(rows[0]))
    print("\n" + "; ".join(f"{name}: {value:.2f}" for name, value in totals.items()))
    save(args.name, {"ks": ks, "seeds": seeds, "rows": rows, "totals": totals, "runs": runs})
    if args.name == "classifier":
        plot(rows, Path(os.environ.get("CLASSIFIER_PLOT", REPO / "docs" / "images" / "classifier.png")))


if __name__ == "__main__":
    main()
