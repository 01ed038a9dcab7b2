"""What one bounded Lloyd pass costs the client and the scheduler, by number of workers.

    python benchmarks/pass_overhead.py [--workers 2,16] [--rows 8192] [--k 256] [--iterations 20]
                                       [--repeats 3] [--name pass_overhead]

On 16 cores the job's k=256 fit on the 8.1M store spent longer per iteration on its samples than on 2
(docs/benchmarks.md, section 20): each iteration on few rows per worker is bound by what the one client
and scheduler process does per task, not by arithmetic. This measures that part alone: job.kmeans.bounded's
loop over the first --rows rows of data/mnist-1000000.zarr (so few that the workers' arithmetic is
negligible), k centers drawn from them, tol=0, on a LocalCluster of N single-threaded workers; per
iteration, the wall time and the CPU time of this process (client and scheduler, as in the job's
LocalCluster). Four shapes of a pass, in the same run:

  job                 one task per worker thread, its result kept whole for the next pass, the centers
                      scattered to the cluster once per pass, the summaries added on the workers; the
                      pass's tasks one graph in one message, the previous passes' futures released
                      after it
  one submission per thread (7448fa0)
                      the same tasks, each thread's submitted on its own and the summaries' getitems in
                      one more submission, the centers scattered to the cluster before them
  inline (3e42edf)    three submissions per thread (the pass, then a getitem each for its states and its
                      summary), the centers inside every task, every summary gathered to the client
  actors (not kept)   no tasks: a distributed Actor per worker thread holds its chunks and its last pass,
                      and the client calls each directly (no scheduler in the loop). Not the job's: a
                      worker runs every actor call on its one actor thread (distributed.worker's
                      "actor" executor), so a worker of several threads would step its chunks one
                      thread at a time; the passes leave the dashboard's task stream; a lost worker
                      loses its actor

On a 2-core machine N=16 oversubscribes the cores, so the wall times there are not 16-core times; the
client's CPU per iteration is the part that does not shrink with more cores.
Writes benchmarks/results/<name>.json.
"""

from __future__ import annotations

import argparse
import operator
import sys
import time
import uuid

import numpy as np

from _common import REPO, print_table, save

sys.path.insert(0, str(REPO))

from job.engine import bounds, projected
from job.kmeans import bounded


class InlinePass(bounded._Bounds):
    """The pass as it was before: three submissions per thread, the arguments inline, gathered sums."""

    def _run(self, fn, *args, name):
        fn = bounds.step_chunks if fn is bounded._step_after else fn
        states, summaries = [], []
        for i, (worker, chunks) in enumerate(self.groups_of_chunks):
            previous = (self.passes[i],) if self.passes else ()
            result = self.client.submit(
                fn, *previous, *args, *chunks, workers=[worker], allow_other_workers=True, pure=False
            )
            states.append(
                self.client.submit(
                    operator.getitem, result, 0, workers=[worker], allow_other_workers=True, pure=False
                )
            )
            summaries.append(self.client.submit(operator.getitem, result, 1, pure=False))
        self.passes = states
        return bounds.add_steps(*self.client.gather(summaries))


class SubmitPerThread(bounded._Bounds):
    """The pass as it was at 7448fa0: one submission per thread, then one for the summaries' getitems."""

    def _run(self, fn, *args, name):
        from job.engine.map_reduce import reduce_on_cluster

        args = tuple(self._scattered(arg) for arg in args)
        results = []
        for i, (worker, chunks) in enumerate(self.groups_of_chunks):
            previous = (self.passes[i],) if self.passes else ()
            results.append(self._on(worker, fn, *previous, *args, *chunks, key=f"{name}-{uuid.uuid4().hex}"))
        self.passes = results
        sums = self.client.map(
            operator.getitem,
            results,
            [1] * len(results),
            key=[f"{name}-sums-{uuid.uuid4().hex}" for _ in results],
        )
        return reduce_on_cluster(self.client, sums, bounds.add_steps)

    def _scattered(self, arg):
        large = (isinstance(arg, np.ndarray) and arg.nbytes >= bounded.SHARED_MIN_BYTES) or isinstance(
            arg, projected.Projection
        )
        if not large or len(self.groups_of_chunks) < 2:
            return arg
        [future] = self.client.scatter([arg], hash=False)
        return future


class _ThreadHolder:
    """On a worker: one thread's chunks and its last pass's result (states, sums), for ActorPass."""

    def __init__(self, *chunks):
        self.chunks, self.last = chunks, None

    def run(self, fn, args, fresh):
        self.last = fn(*(() if fresh else (self.last,)), *args, *self.chunks)
        return self.last[1]


class ActorPass(bounded._Bounds):
    """The pass through distributed's actors: one per worker thread, called by the client directly."""

    def _run(self, fn, *args, name):
        if not hasattr(self, "actors"):
            self.actors = [
                self.client.submit(_ThreadHolder, *chunks, workers=[worker], actor=True).result()
                for worker, chunks in self.groups_of_chunks
            ]
        fresh = not self.passes  # init() empties passes
        calls = [actor.run(fn, args, fresh) for actor in self.actors]
        self.passes = [None] * len(self.actors)
        return bounds.add_steps(*(call.result() for call in calls))

    def labels(self, X):
        return None  # the labels stay in the actors; this benchmark reads only the inertia


SHAPES = {
    "job": bounded._Bounds,
    "one submission per thread (7448fa0)": SubmitPerThread,
    "inline (3e42edf)": InlinePass,
    "actors (not kept)": ActorPass,
}


def measure(workers: int, X: np.ndarray, k: int, iterations: int, repeats: int) -> list[dict]:
    import dask.array as da
    from distributed import Client, LocalCluster

    from job.engine.map_reduce import plan_tasks
    from job.engine.persist import persist_spread

    rows = []
    with (
        LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None) as cluster,
        Client(cluster) as client,
    ):
        Xd = persist_spread(client, da.from_array(X, chunks=(8192, X.shape[1])))
        plan = plan_tasks(Xd)
        centers = X[np.random.default_rng(0).choice(len(X), k, replace=False)].astype(np.float64)
        for shape, cls in SHAPES.items():
            bounded._Bounds = cls  # the loop builds its state from this name
            try:
                bounded_lloyd = bounded.bounded_lloyd
                from job.kmeans.passes import LoopRule

                bounded_lloyd(Xd, plan, centers, LoopRule(tol=0, max_iter=2))  # compiled, warm
                wall, cpu = [], []
                for _ in range(repeats):
                    started, cpu_started = time.perf_counter(), time.process_time()
                    fitted = bounded_lloyd(Xd, plan, centers, LoopRule(tol=0, max_iter=iterations))
                    wall.append((time.perf_counter() - started) / iterations)
                    cpu.append((time.process_time() - cpu_started) / iterations)
            finally:
                bounded._Bounds = SHAPES["job"]
            rows.append(
                {
                    "workers": workers,
                    "shape": shape,
                    "ms / iteration": 1000 * float(np.median(wall)),
                    "client+scheduler CPU ms / iteration": 1000 * float(np.median(cpu)),
                    "inertia": fitted.inertia,
                    "runs ms": [round(1000 * w, 1) for w in wall],
                }
            )
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", default="2,16")
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--k", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--name", default="pass_overhead", help="results file name (benchmarks/results/)")
    args = parser.parse_args()
    import zarr

    images = zarr.open_group(str(REPO / "data" / "mnist-1000000.zarr"), mode="r")["train/images"]
    X = np.asarray(images[: args.rows]).reshape(args.rows, -1)
    rows = [
        row
        for workers in (int(w) for w in args.workers.split(","))
        for row in measure(workers, X, args.k, args.iterations, args.repeats)
    ]
    print_table(
        rows, ["workers", "shape", "ms / iteration", "client+scheduler CPU ms / iteration", "inertia"]
    )
    save(args.name, {"rows": args.rows, "k": args.k, "iterations": args.iterations, "results": rows})


if __name__ == "__main__":
    main()
