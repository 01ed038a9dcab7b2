"""Lloyd over a persisted dask array with Yinyang bounds kept on the workers: the large-k loop.

Each worker thread's chunks (job.engine.map_reduce.plan_tasks) get a bounds state (job.engine.bounds)
that stays in that worker's memory as a future between iterations; each iteration sends the new centers
and their moves, and only the changes of the per-cluster sums and counts come back ([k, p]). A row whose
bounds hold costs two comparisons instead of k distances (at k=256 on a 255,534-row sample: 57% of the
distances skipped by iteration 35, 72% by iteration 78; over all 8.1M rows polished from the sample's
centers 36-65%, those centers still moving). The first pass finds every row's nearest center (from 128
centers on through the centers' projection, job.engine.projected, which bounds every distance and
measures a few), so this pays only when a fit makes several passes over the same rows: the estimator's
loop from 32 clusters on (job.kmeans.estimator.BOUNDED_MIN_K), on the sample, and over all rows when the
sample is all of them or polish_passes asks for it; assign_kept is its final pass when no iteration over
all rows follows (docs/benchmarks.md, sections 14 and 19).

The loop is plain Lloyd's (the same stopping rules, job.kmeans.passes.LoopRule), with the inertia of each
assignment at the centers it was made against computed from the sums alone: sum ||x||^2 - 2 c.S +
n ||c||^2.
May use: job.engine, job.kmeans.passes.
"""

from __future__ import annotations

import logging
import operator
import time
import uuid

import dask
import dask.array as da
import dask.core
import numpy as np

from job.engine import bounds, projected
from job.engine.blockwise import TREE_FAN_IN
from job.kmeans.passes import Converged, Iterations, LoopRule

log = logging.getLogger(__name__)

# The lower bounds of a worker's rows may take at most this many bytes per thread's share of rows.
BOUNDS_BYTES_PER_ROW = 128
# Arguments of a pass from this size on go to the cluster once and every task fetches them (_Bounds._run).
SHARED_MIN_BYTES = 2**16


def _assignment_inertia(sq_total: float, centers: np.ndarray, sums: np.ndarray, counts: np.ndarray) -> float:
    """sum over rows of ||x - c_label||^2 from the clusters' sums and sizes (float64)."""
    C = centers.astype(np.float64)
    return float(sq_total - 2 * np.einsum("ij,ij->", C, sums) + counts @ np.einsum("ij,ij->i", C, C))


def _step_after(previous, *args):
    """bounds.step_chunks on the states of a thread's previous pass, given as that pass's whole result
    (states, sums): no task of its own to split them."""
    return bounds.step_chunks(previous[0], *args)


def _labels_after(previous, index: int) -> np.ndarray:
    """The labels of the index-th chunk in a thread's pass result (states, sums)."""
    return previous[0][index][0]


class _Bounds:
    """The per-thread states on the workers and how to step them."""

    def __init__(self, plan, groups: bounds.Groups | None):
        self.client, self.groups_of_chunks = plan
        self.groups = groups
        self.passes: list = []  # each thread's last (states, sums), a future on its worker
        self._sent: tuple = ()  # futures held until the next pass is sent (_run)
        self.projection: projected.Projection | None = None  # the first pass's

    def _run(self, fn, *args, name):
        """One pass: fn(*args, *chunks) per worker thread, after its last pass's result when it has one
        (fn(last, *args, *chunks)); the threads' sums added up.

        On 16 workers with little data (k=256, 8,192 rows: benchmarks/pass_overhead.py, docs/benchmarks.md
        section 20) an iteration is bound by what the one client and scheduler process does per task and
        message, not by arithmetic. The shape:
        - the centers (and the projection) go to the cluster once per pass and each task fetches them
          (inline, each of 16 tasks carried its own 1.6 MB copy through the scheduler);
        - one task per thread, pinned to the worker holding its chunks, its result kept whole for the next
          pass, a getitem task for its sums, and the sums ([k, p] each) added on the workers;
        - all of a pass's tasks in one graph, sent in one message, and the passes' futures released after
          the next one is sent: distributed's client batches its messages to the scheduler 10 ms apart
          (`BatchedSend(interval="10ms")` in distributed.client), so a pass sent as one submission per
          thread waited behind its first message, as did one sent just after a release.
          2 workers: 42.6 ms an iteration against 49.3; 16: 187 against 199 ms, the client and scheduler's
          CPU 60 against 74 ms (benchmarks/pass_overhead.py, docs/benchmarks.md section 20).
        """
        args = tuple(self._shared(arg) for arg in args)
        token = uuid.uuid4().hex
        graph: dict = {}
        where: dict = {}  # each task's worker: the one holding the thread's chunks
        steps, sums = [], []
        for i, (worker, chunks) in enumerate(self.groups_of_chunks):
            previous = (self.passes[i],) if self.passes else ()
            # named after the pass, so the dashboard says "bounds_step" and "bounds_step-sums"
            step, total = f"{name}-{token}-{i}", f"{name}-sums-{token}-{i}"
            graph[step] = (fn, *previous, *args, *chunks)
            graph[total] = (operator.getitem, step, 1)
            where[step] = where[total] = [worker]
            steps.append(step)
            sums.append(total)
        level = 0
        while len(sums) > TREE_FAN_IN:  # the sums added on the workers, down to TREE_FAN_IN
            level += 1
            groups = [sums[j : j + TREE_FAN_IN] for j in range(0, len(sums), TREE_FAN_IN)]
            sums = [f"{name}-add-{token}-{level}-{j}" for j in range(len(groups))]
            for key, group in zip(sums, groups):
                graph[key] = (bounds.add_steps, *group)
                where[key] = where[group[0]]
        with dask.annotate(workers=where.__getitem__, allow_other_workers=True):
            futures = self.client.get(graph, steps + sums, sync=False)
        # The futures of the passes before are released here, after this one went out: this pass's and the
        # previous pass's are held until the next one is sent.
        self._sent = (futures, args, self.passes)
        self.passes = futures[: len(steps)]
        return bounds.add_steps(*self.client.gather(futures[len(steps) :]))

    def _on(self, worker, fn, *args, **kwargs):
        """fn(*args) as a task on the worker that holds the thread's chunks (on another if it is gone)."""
        return self.client.submit(fn, *args, workers=[worker], allow_other_workers=True, pure=False, **kwargs)

    def _shared(self, arg):
        """A future of `arg` on the cluster when it is large and more than one task will read it.
        Scattered data has no lineage: a pass whose worker holding it dies fails instead of being
        replayed from the inline copies, as dask could before (docs/benchmarks.md, section 20). As a
        task of the pass's graph it would have it, but it then goes through the scheduler: at k=256 on
        60,000 rows the bounded loop took 4% longer (2.45 s against 2.34 s, 26 iterations)."""
        large = (isinstance(arg, np.ndarray) and arg.nbytes >= SHARED_MIN_BYTES) or isinstance(
            arg, projected.Projection
        )
        if not large or len(self.groups_of_chunks) < 2:
            return arg
        [future] = self.client.scatter([arg], hash=False)
        return future

    def init(self, centers):
        self.passes = []
        self.projection = self._projection(centers)
        return self._run(bounds.init_chunks, centers, self.groups, self.projection, name="bounds_init")

    def assign(self, centers):
        """The plain pass (no bounds) that keeps only the labels: (sums, counts, inertia)."""
        self.passes = []
        projection = projected.project(centers) if projected.pays(len(centers)) else None
        return self._run(bounds.assign_chunks, centers, projection, name="assign")

    def step(self, centers, moves, exact=False):
        return self._run(_step_after, centers, moves, self.groups, exact, name="bounds_step")

    def _projection(self, centers):
        """The centers in group order projected for job.engine.projected's search, or None below
        projected.MIN_K centers. Not for an iteration's rows in doubt: searching them through it took
        1.31x the time at k=256 and 512 and 1.00-1.05x at k=1024 (benchmarks/projected_search.py
        --steps, docs/benchmarks.md section 19), a chunk's rows in doubt being too few to repay it."""
        if self.groups is None or not projected.pays(len(centers)):
            return None
        return projected.project(np.asarray(centers)[self.groups.order])

    def labels(self, X: da.Array) -> da.Array:
        """The labels of the last assignment, as a dask array over X's rows (chunks as X's)."""
        from dask.highlevelgraph import HighLevelGraph

        name = f"bounded-labels-{uuid.uuid4().hex}"
        position = {}
        for result, (worker, chunks) in zip(self.passes, self.groups_of_chunks):
            for index, chunk in enumerate(chunks):
                position[chunk.key] = self._on(worker, _labels_after, result, index)
        graph = X.__dask_graph__()
        keys = list(dask.core.flatten(X.__dask_keys__()))
        layer: dict = {(name, i): position[graph[key].key] for i, key in enumerate(keys)}
        return da.Array(
            HighLevelGraph.from_collections(name, layer, dependencies=()),
            name,
            (X.chunks[0],),
            dtype=np.int32,
        )


def assign_kept(X: da.Array, plan, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, da.Array]:
    """One pass over persisted X at `centers` that keeps every row's label on the workers (from
    job.engine.projected.MIN_K centers on through their projection, else the fused kernel):
    (sums [k, p], counts [k], inertia, labels as a dask array over X's rows). The final pass of a fit
    whose Lloyd loop ran elsewhere (on a sample): cheaper than bounded_lloyd's first pass, which also
    computes the bounds that later iterations need."""
    started = time.perf_counter()
    state = _Bounds(plan, groups=None)
    sums, counts, inertia = state.assign(np.asarray(centers, dtype=np.float64))
    log.info("every row assigned to the %d centers in %.2f s", len(centers), time.perf_counter() - started)
    return sums, counts, float(inertia), state.labels(X)


def bounded_lloyd(
    X: da.Array, plan, centers: np.ndarray, rule: LoopRule, on_iteration=None, seed: int = 0
) -> Converged:
    """Lloyd from `centers` on persisted X (plan: job.engine.map_reduce.plan_tasks(X)) under `rule`, then
    one exact pass. on_iteration gets what FusedKMeans._lloyd gives it."""
    k = len(centers)
    rows_per_thread = max(1, int(X.shape[0]) // max(1, len(plan[1])))
    n_groups = bounds.group_count(k, rows_per_thread, BOUNDS_BYTES_PER_ROW * rows_per_thread)
    groups = bounds.make_groups(centers, n_groups, seed)
    state = _Bounds(plan, groups)
    started = time.perf_counter()
    centers = np.asarray(centers, dtype=np.float64)
    sums, counts, inertia, sq_total = state.init(centers)
    n = int(X.shape[0])
    passes, computed = 1, float(n * k)  # distances computed over `passes` passes of n x k each
    log.info(
        "bounds: %d groups of centers; first pass%s in %.2f s",
        groups.count,
        " (through the centers' projection)" if state.projection is not None else " (every distance)",
        time.perf_counter() - started,
    )
    iterations, n_iter = Iterations(rule, log), rule.done_before
    for n_iter in range(rule.done_before + 1, rule.max_iter + 1):
        if not counts.all():
            # Rare with k-means++ starts; a cluster that emptied keeps its center (FusedKMeans._lloyd
            # re-seeds it on the non-bounded path).
            log.info("%d empty cluster(s) keep their centers", int((counts == 0).sum()))
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        moves = np.sqrt(((new - centers) ** 2).sum(axis=1))
        shift = float((moves**2).sum())
        centers = new
        done = iterations.last(
            n_iter, inertia, shift, f"; distances computed {100 * computed / (passes * n * k):.1f}%"
        )
        if on_iteration is not None:
            on_iteration(
                {"n_iter": n_iter, "centers": centers, "inertia": inertia, "shift": shift, "converged": done}
            )
        delta_sums, delta_counts, _, distances, step_inertia = state.step(centers, moves, exact=done)
        sums, counts = sums + delta_sums, counts + delta_counts
        passes, computed = passes + 1, computed + distances
        inertia = step_inertia if done else _assignment_inertia(sq_total, centers, sums, counts)
        if done:
            break
    log.info(
        "bounded Lloyd%s: %d iterations in %.2f s, %.1f%% of the distances computed",
        rule.label,
        n_iter - rule.done_before,
        time.perf_counter() - started,
        100 * computed / (passes * n * k),
    )
    return Converged(centers, n_iter, sums, counts, float(inertia), state.labels(X))
