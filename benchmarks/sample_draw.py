"""What counting the sample's rows on the client saves the sampled fit's draw, against persisting the
picked rows and asking dask for their chunk sizes.

    python benchmarks/sample_draw.py --store data/mnist-8100000.zarr [--size 255534] [--repeats 6]

The sampled fit draws a seeded sample of X's rows (job.kmeans.sampling.sample_rows) and spreads it in
equal chunks over the workers' threads (job.engine.persist.persist_spread). Two ways, interleaved (the
order alternating) on one LocalCluster of the job's, X persisted as the job holds it, a new seed per run:

  persist, count, spread   the picked rows persisted where they were picked, their chunk sizes asked of
                           the cluster by dask's compute_chunk_sizes (a task per chunk), then spread
                           (how the job drew before 2026-12-06 night; kept here as the anchor)
  count, then spread       each chunk's kept rows counted on the client from the same counter-based
                           numbers its task draws, the lazy sample then spread in one persist (the job)

Both give the same rows in the same chunks (checked for one seed). Each way's steps are timed too. Writes
benchmarks/results/sample_draw-<rows>.json.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from _common import REPO, job_cluster_with_x, print_table, save

sys.path.insert(0, str(REPO))

from distributed import wait

from job.dataset import open_dataset
from job.engine.persist import persist_spread
from job.kmeans.sampling import SAMPLE_STREAM, _chunk_rows, auto_sample_size, sample_rows


def _persist_count_spread(client, X, size: int, seed: int, parts: dict):
    started = time.perf_counter()
    picked = X.map_blocks(
        _chunk_rows,
        size / X.shape[0],
        seed,
        SAMPLE_STREAM,
        dtype=X.dtype,
        chunks=((math.nan,) * X.numblocks[0], (X.shape[1],)),
        name=f"picked-{seed}",
    )
    picked = picked.persist()
    wait(picked)
    persisted = time.perf_counter()
    picked.compute_chunk_sizes()
    counted = time.perf_counter()
    spread = persist_spread(client, picked)
    parts["persist"].append(persisted - started)
    parts["count (compute_chunk_sizes)"].append(counted - persisted)
    parts["spread"].append(time.perf_counter() - counted)
    return spread


def _count_then_spread(client, X, size: int, seed: int, parts: dict):
    started = time.perf_counter()
    sample = sample_rows(X, size, seed)
    counted = time.perf_counter()
    spread = persist_spread(client, sample)
    parts["count (on the client)"].append(counted - started)
    parts["spread"].append(time.perf_counter() - counted)
    return spread


WAYS = {"persist, count, spread": _persist_count_spread, "count, then spread": _count_then_spread}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--size", type=int, help="sample rows (default: the job's at k=256)")
    parser.add_argument("--repeats", type=int, default=6)
    args = parser.parse_args()
    data = open_dataset(args.store, "train")
    size = args.size or auto_sample_size(data.n, 256)
    times: dict[str, list[float]] = {way: [] for way in WAYS}
    parts: dict[str, dict[str, list[float]]] = {way: defaultdict(list) for way in WAYS}
    with ExitStack() as stack:
        client, X = job_cluster_with_x(stack, args.store)
        a, b = (WAYS[way](client, X, size, 0, defaultdict(list)) for way in WAYS)
        same = a.chunks == b.chunks and bool(np.array_equal(a.compute(), b.compute()))
        rows = int(a.shape[0])
        del a, b
        for repeat in range(args.repeats):
            order = list(WAYS) if repeat % 2 == 0 else list(reversed(WAYS))
            for way in order:
                started = time.perf_counter()
                sample = WAYS[way](client, X, size, 1 + repeat, parts[way])
                times[way].append(time.perf_counter() - started)
                del sample
                print(f"{way}: {times[way][-1]:.3f} s", flush=True)
    anchor = statistics.median(times["persist, count, spread"])
    table = [
        {
            "way": way,
            "median s": statistics.median(t),
            "min s": min(t),
            "max s": max(t),
            "vs persist, count, spread": statistics.median(t) / anchor,
        }
        for way, t in times.items()
    ]
    print(f"{data.n:,} rows in {X.numblocks[0]} chunks; a sample of {rows:,} rows; identical: {same}")
    print_table(table, ["way", "median s", "min s", "max s", "vs persist, count, spread"])
    steps = [
        {"way": way, "step": step, "median s": statistics.median(t), "min s": min(t), "max s": max(t)}
        for way in WAYS
        for step, t in parts[way].items()
    ]
    print_table(steps, ["way", "step", "median s", "min s", "max s"])
    save(
        f"sample_draw-{data.n}",
        {
            "store": str(args.store),
            "rows": data.n,
            "chunks": X.numblocks[0],
            "sample_rows": rows,
            "same_rows_both_ways": same,
            "runs": times,
            "table": table,
            "steps": steps,
        },
    )


if __name__ == "__main__":
    main()
