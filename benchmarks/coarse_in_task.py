"""What running a coarse level of the sampled fit as one task saves, against the same loop over the workers.

    python benchmarks/coarse_in_task.py --store data/mnist-1000000.zarr --ks 64,256,1024 [--repeats 3]
    python benchmarks/coarse_in_task.py --store data/mnist-1000000.zarr --ks 64,256 --workers 16

--workers N runs N single-threaded workers (default: one per core). More workers than cores oversubscribe
them, so those wall times are not a larger machine's; they show how an iteration's round trip over the
workers grows with their number (docs/benchmarks.md section 20), and the one task (on the machine's
usable cores, whatever the workers' threads add up to) does not.

With many clusters the sampled fit first runs bounded Lloyd on a nested quarter of its sample
(job.kmeans.estimator.FusedKMeans._coarse_fit). On one LocalCluster of the job's (2 single-threaded
workers), X persisted as the job holds it, for each k the job's own sample (spread evenly over the
workers, as the job held it until docs/benchmarks.md section 25) and quarter are drawn and started from
the job's start (greedy k-means++ on its seeding rows), then the quarter's loop runs two
ways, interleaved (the order alternating):

  over the workers   the quarter persisted in equal chunks over the workers' threads, then
                     job.kmeans.bounded.bounded_lloyd: one pass of tasks per iteration, through the
                     client and the scheduler (how every level ran before 2026-12-07; the anchor)
  one task           job.kmeans.bounded.lloyd_in_one_task: the quarter's rows gathered onto one worker and
                     stepped there on its host's threads (what the job does on one machine, and on
                     several within IN_TASK_MAX_WORK: the table's last column says which way it takes)

Both under the job's rule (its tol, the sample's 1e-4 gain rule), timed from the quarter's draw to the
centers at the client. Reports seconds, iterations and ms per iteration, and whether both ended at the
same centers. At k=1024 on 1M rows the sample is all of X and the quarter is X's (as the job's costly
loop over X draws it). Writes benchmarks/results/coarse_in_task-<rows>.json (-<N>workers with --workers).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from _common import REPO, job_cluster_with_x, print_table, save

sys.path.insert(0, str(REPO))

from job.engine.map_reduce import moments, plan_tasks
from job.engine.persist import persist_spread
from job.kmeans.bounded import bounded_lloyd, fits_in_one_task, lloyd_in_one_task, threads_per_host
from job.kmeans.estimator import COARSE_FACTOR, COARSE_STREAM, SAMPLE_MIN_GAIN
from job.kmeans.in_memory import local_fit, seeding_rows
from job.kmeans.passes import LoopRule, relative_tol
from job.kmeans.sampling import SUBSAMPLE_STREAM, auto_sample_size, sample_rows


def _over_workers(client, quarter, centers, rule):
    persisted = persist_spread(client, quarter)
    fitted = bounded_lloyd(persisted, plan_tasks(persisted), centers, rule, seed=0)
    return fitted.centers, fitted.n_iter


def _one_task(client, quarter, centers, rule):
    done = lloyd_in_one_task(client, quarter, centers, rule, seed=0)
    return done["centers"], done["n_iter"]


WAYS = {"over the workers": _over_workers, "one task": _one_task}


def _level(client, X, k: int):
    """The job's sample, quarter, start and rule at k (seed 0)."""
    n = int(X.shape[0])
    size = auto_sample_size(n, k)
    sample = persist_spread(client, sample_rows(X, size, 0)) if size < n else X
    m, col_sum, col_sumsq, _ = moments(sample, plan_tasks(sample))
    tol = relative_tol(1e-4, m, col_sum, col_sumsq)
    seeding = sample_rows(sample, seeding_rows(m, k), 0, stream=SUBSAMPLE_STREAM).compute()
    centers = local_fit(seeding, k, 0, tol, 0)["centers"]  # the start's task, as FusedKMeans._run_starts
    quarter = sample_rows(sample, m // COARSE_FACTOR, 0, stream=COARSE_STREAM + 1)
    return quarter, centers, LoopRule(tol, 300, SAMPLE_MIN_GAIN, label=f" (k={k})")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--ks", default="64,256,1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, help="single-threaded workers (default: one per core)")
    args = parser.parse_args()
    ks = [int(k) for k in args.ks.split(",")]
    table, runs = [], {}
    with ExitStack() as stack:
        client, X = job_cluster_with_x(stack, args.store, args.workers)
        hosts = len(threads_per_host(dict(client.nthreads())))
        for k in ks:
            quarter, centers, rule = _level(client, X, k)
            rows = int(quarter.shape[0])
            times: dict[str, list[float]] = {way: [] for way in WAYS}
            ends: dict[str, tuple] = {}
            for repeat in range(args.repeats):
                order = list(WAYS) if repeat % 2 == 0 else list(reversed(WAYS))
                for way in order:
                    started = time.perf_counter()
                    ends[way] = WAYS[way](client, quarter, centers, rule)
                    times[way].append(time.perf_counter() - started)
                    print(f"k={k} {way}: {times[way][-1]:.2f} s, {ends[way][1]} iterations", flush=True)
            same = bool(np.array_equal(ends["one task"][0], ends["over the workers"][0]))
            anchor = statistics.median(times["over the workers"])
            for way, t in times.items():
                iterations = int(ends[way][1])
                table.append(
                    {
                        "k": k,
                        "quarter rows": rows,
                        "way": way,
                        "median s": statistics.median(t),
                        "runs": ", ".join(f"{x:.2f}" for x in t),
                        "iterations": iterations,
                        "ms / iteration": 1000 * statistics.median(t) / max(1, iterations),
                        "vs over the workers": statistics.median(t) / anchor,
                        "same centers": same,
                        "the job's way": "one task"
                        if fits_in_one_task(rows, X.dtype.itemsize * X.shape[1], k, hosts)
                        else "over the workers",
                    }
                )
            runs[k] = times
            del quarter
    columns = ["k", "quarter rows", "way", "median s", "runs", "iterations", "ms / iteration"]
    print_table(table, [*columns, "vs over the workers", "same centers", "the job's way"])
    suffix = f"-{args.workers}workers" if args.workers else ""
    save(
        f"coarse_in_task-{int(X.shape[0])}{suffix}",
        {
            "store": str(args.store),
            "rows": int(X.shape[0]),
            "workers": args.workers or "one per core",
            "ks": ks,
            "runs": runs,
            "table": table,
        },
    )


if __name__ == "__main__":
    main()
