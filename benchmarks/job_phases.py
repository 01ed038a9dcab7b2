"""Wall time and peak memory of each phase of the job on all of MNIST, from a real CLI run.

    python benchmarks/job_phases.py

Runs `python -m data_prep` (IDX to Zarr) and `python -m job` (defaults: k=10, all 70,000 images,
2-worker LocalCluster) as subprocesses, then reads the run's metrics.json: per phase, its duration, the
client's peak RSS and the cluster's peak memory (sum of the worker processes, sampled by distributed's
MemorySampler). Prints a table and writes benchmarks/results/job_phases.json.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, print_table, save

MiB = 2**20


def _run(cmd) -> tuple[float, int]:
    """Wall seconds and peak RSS (bytes) of a child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.perf_counter()
    subprocess.run(cmd, cwd=REPO, check=True, capture_output=True)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return seconds, max(peak, before) * 1024


def main():
    source = os.environ.get("MNIST_SOURCE") or str(REPO.parent / "shared" / "data" / "mnist")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store, run = Path(tmp) / "mnist.zarr", Path(tmp) / "run"
        seconds, peak = _run([sys.executable, "-m", "data_prep", "--source", source, "--out", str(store)])
        rows.append(
            {
                "phase": "convert IDX to Zarr (python -m data_prep)",
                "s": seconds,
                "client peak MiB": peak / MiB,
                "cluster peak MiB": "-",
            }
        )
        seconds, peak = _run(
            [
                sys.executable,
                "-m",
                "job",
                "--data",
                str(store),
                "--out",
                str(run),
                "--dashboard-address",
                "127.0.0.1:0",
            ]
        )
        metrics = json.loads((run / "metrics.json").read_text())
    for phase, phase_seconds in metrics["timings"].items():
        memory = metrics["memory"][phase]
        cluster = memory.get("cluster_peak_memory")
        rows.append(
            {
                "phase": phase,
                "s": phase_seconds,
                "client peak MiB": memory["client_peak_rss"] / MiB,
                "cluster peak MiB": cluster / MiB if cluster else "-",
            }
        )
    rows.append(
        {
            "phase": "whole job (python -m job, wall)",
            "s": seconds,
            "client peak MiB": peak / MiB,
            "cluster peak MiB": "-",
        }
    )
    print_table(rows, ["phase", "s", "client peak MiB", "cluster peak MiB"])
    save(
        "job_phases",
        {
            "results": rows,
            "fit": metrics["fit"],
            "evaluation": {
                k: metrics["evaluation"][k] for k in ("ari", "nmi", "accuracy_hungarian", "silhouette")
            },
        },
    )


if __name__ == "__main__":
    main()
