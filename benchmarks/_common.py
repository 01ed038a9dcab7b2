"""Helpers shared by the benchmark scripts: MNIST store, the job's cluster and persisted X, timing, table
printing, JSON output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"


def mnist_store(path: Path = REPO / "data" / "mnist.zarr") -> Path:
    """The MNIST store, converted from $MNIST_SOURCE (default ../shared/data/mnist) if missing."""
    from data_prep import PrepConfig, prepare_dataset

    source = os.environ.get("MNIST_SOURCE") or str(REPO.parent / "shared" / "data" / "mnist")
    return prepare_dataset(PrepConfig(out=path, source=source))


def job_cluster_with_x(stack, store: Path, n_workers: int | None = None):
    """The job's own LocalCluster (closed with `stack`; n_workers single-threaded workers, default one
    per usable core) and the store's train split persisted on it as the job's "load data" phase holds it
    (job.pipeline.persist_pixels). Returns (client, X)."""
    from job.dataset import open_dataset
    from job.deploy.local import LocalConfig
    from job.pipeline import persist_pixels

    client = LocalConfig(n_workers=n_workers, dashboard_address="127.0.0.1:0").start(stack)
    client.wait_for_workers(1)
    return client, persist_pixels(client, open_dataset(store, "train"))[1]


def timed(fn, repeats: int = 1):
    """(result of the last call, median seconds over `repeats` calls)."""
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return result, statistics.median(times)


def print_table(rows: list[dict], columns: list[str]) -> None:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
        return str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    print(" | ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(row, widths)))


def save(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "node": platform.node()},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **payload,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"\nwrote {path.relative_to(REPO)}")
    return path
