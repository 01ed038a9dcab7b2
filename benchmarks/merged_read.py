"""What reading a persisted X in the blocks it is kept as saves, against reading it as stored and then
merging the chunks.

    python benchmarks/merged_read.py --store data/mnist-1000000.zarr [--repeats 4] [--fresh]

When X is persisted, its small stored chunks (8,192 images, 6.4 MB) are held merged, five to a chunk
(job.engine.persist.chunks_to_merge). Two ways, interleaved on one LocalCluster of the job's (2
single-threaded workers here):

  as stored, then merged   one task per stored chunk, then dask's rechunk: the chunks of one merged
                           chunk computed on different workers are moved to one of them to be joined
                           (how the job read X before 2026-12-06)
  read merged              one task per merged chunk, reading its stored chunks itself
                           (job.dataset.lazy_array with chunks_per_block: the job now)

Each then goes through persist_balanced (the even layout over the workers), as in the job's "load data"
phase; every chunk's SHA-256 is checked both ways. By default both ways share one cluster, whose workers
are warm after the first run (their freed memory is reused); with --fresh every run starts a cluster of
its own, as the job does, and pays the first touch of X's memory in new worker processes. Writes
benchmarks/results/merged_read-<rows>[-fresh].json.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from _common import REPO, print_table, save

sys.path.insert(0, str(REPO))

from job.dataset import flat_pixels, open_dataset
from job.deploy.local import LocalConfig
from job.engine.persist import chunks_to_merge, persist_balanced, total_threads


def _cluster(stack: ExitStack):
    client = LocalConfig(dashboard_address="127.0.0.1:0").start(stack)
    client.wait_for_workers(1)
    return client


def _persist(client, store: Path, merged: bool) -> tuple[float, int]:
    data = open_dataset(store, "train")
    X = flat_pixels(data.images)
    if merged:
        merge = chunks_to_merge(X.chunks[0], X.shape[1], total_threads(client))
        X = flat_pixels(data.in_blocks(merge).images)
    started = time.perf_counter()
    held = persist_balanced(client, X)
    seconds = time.perf_counter() - started
    blocks = held.numblocks[0]
    del held
    client.run(gc.collect)
    time.sleep(2)  # the workers release the chunks before the next way reads them
    return seconds, blocks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--fresh", action="store_true", help="a new cluster for every run")
    args = parser.parse_args()
    times: dict[str, list[float]] = {"as stored, then merged": [], "read merged": []}
    rows = open_dataset(args.store, "train").n
    with ExitStack() as shared:
        client = None if args.fresh else _cluster(shared)
        for _ in range(args.repeats):
            for way in times:
                with ExitStack() as own:
                    runner = _cluster(own) if args.fresh else client
                    workers = len(runner.nthreads())
                    seconds, blocks = _persist(runner, args.store, merged=way == "read merged")
                times[way].append(seconds)
                print(f"{way}: {seconds:.2f} s ({blocks} chunks held)", flush=True)
    table = [
        {
            "way": way,
            "median s": statistics.median(t),
            "min s": min(t),
            "max s": max(t),
            "vs as stored": statistics.median(t) / statistics.median(times["as stored, then merged"]),
        }
        for way, t in times.items()
    ]
    print_table(table, ["way", "median s", "min s", "max s", "vs as stored"])
    save(
        f"merged_read-{rows}" + ("-fresh" if args.fresh else ""),
        {
            "store": str(args.store),
            "rows": rows,
            "workers": workers,
            "fresh_cluster_per_run": args.fresh,
            "runs": times,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
