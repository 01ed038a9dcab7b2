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

The same loop also runs inside one task (lloyd_in_one_task): the rows of a coarse level of the sampled
fit gathered onto one worker and stepped there on as many threads as the workers of its machine have.
Where an iteration's arithmetic is a few tens of milliseconds, the round trip of a pass through the client
and the scheduler (~30-40 ms on 2 workers, more with more workers: docs/benchmarks.md section 20) is most
of its time; in the task there is none (section 24).
May use: job.engine, job.kmeans.passes.
"""

from __future__ import annotations

import logging
import operator
import os
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise

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


def _first_pass_projection(centers, groups: bounds.Groups | None):
    """The centers in group order projected for job.engine.projected's search, or None below
    projected.MIN_K centers. Not for an iteration's rows in doubt: searching them through it took 1.31x
    the time at k=256 and 512 and 1.00-1.05x at k=1024 (benchmarks/projected_search.py --steps,
    docs/benchmarks.md section 19), a chunk's rows in doubt being too few to repay it."""
    if groups is None or not projected.pays(len(centers)):
        return None
    return projected.project(np.asarray(centers)[groups.order])


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
        self.projection = _first_pass_projection(centers, self.groups)
        return self._run(bounds.init_chunks, centers, self.groups, self.projection, name="bounds_init")

    def assign(self, centers):
        """The plain pass (no bounds) that keeps only the labels: (sums, counts, inertia)."""
        self.passes = []
        projection = projected.project(centers) if projected.pays(len(centers)) else None
        return self._run(bounds.assign_chunks, centers, projection, name="assign")

    def step(self, centers, moves, exact=False):
        return self._run(_step_after, centers, moves, self.groups, exact, name="bounds_step")

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
    rows_per_thread = max(1, int(X.shape[0]) // max(1, len(plan[1])))
    state = _Bounds(plan, _groups(centers, rows_per_thread, seed))
    centers, n_iter, sums, counts, inertia = _bounded_loop(
        state, int(X.shape[0]), centers, rule, on_iteration, log
    )
    return Converged(centers, n_iter, sums, counts, inertia, state.labels(X))


def _groups(centers: np.ndarray, rows_per_thread: int, seed: int) -> bounds.Groups:
    """The centers' groups for threads of `rows_per_thread` rows each (bounds.group_count's cap)."""
    k = len(centers)
    return bounds.make_groups(
        centers, bounds.group_count(k, rows_per_thread, BOUNDS_BYTES_PER_ROW * rows_per_thread), seed
    )


def _bounded_loop(state, n: int, centers: np.ndarray, rule: LoopRule, on_iteration, logger):
    """Lloyd under `rule` from `centers` over the n rows whose bounds `state` keeps (_Bounds on the
    workers, _ThreadBounds in one process), ending with one exact pass: (centers, n_iter, sums, counts,
    inertia) at the last centers. Logs to `logger` (anything with .info and .log)."""
    k = len(centers)
    started = time.perf_counter()
    centers = np.asarray(centers, dtype=np.float64)
    sums, counts, inertia, sq_total = state.init(centers)
    passes, computed = 1, float(n * k)  # distances computed over `passes` passes of n x k each
    logger.info(
        "bounds: %d groups of centers; first pass%s in %.2f s",
        state.groups.count,
        " (through the centers' projection)" if state.projection is not None else " (every distance)",
        time.perf_counter() - started,
    )
    iterations, n_iter = Iterations(rule, logger), rule.done_before
    for n_iter in range(rule.done_before + 1, rule.max_iter + 1):
        if not counts.all():
            # Rare with k-means++ starts; a cluster that emptied keeps its center (FusedKMeans._lloyd
            # re-seeds it on the non-bounded path).
            logger.info("%d empty cluster(s) keep their centers", int((counts == 0).sum()))
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
    logger.info(
        "bounded Lloyd%s: %d iterations in %.2f s, %.1f%% of the distances computed",
        rule.label,
        n_iter - rule.done_before,
        time.perf_counter() - started,
        100 * computed / (passes * n * k),
    )
    return centers, n_iter, sums, counts, float(inertia)


# --- the same loop inside one task ------------------------------------------------------------------

# A level of the sampled fit (job.kmeans.estimator's coarse levels) runs in one task when its rows take
# at most IN_TASK_MAX_BYTES and, on a cluster of several machines, it has at most IN_TASK_MAX_WORK
# row-centers. Its iterations then cost their arithmetic only. On the first 1M generated digits, 2 cores,
# the job's quarter levels (benchmarks/coarse_in_task.py, docs/benchmarks.md section 24): 50,125 rows at
# k=64 1.10 s against 1.75 s over the two workers (33 iterations), 64,217 rows at k=256 2.52 against 3.29
# s, 250,182 rows at k=1024 25.3 against 27.0 s, the same centers each way. On one machine the task has
# every core the workers have; over several it would have one machine's, where an iteration of a large
# level is its arithmetic and the other machines would share it. The byte cap bounds what one worker
# holds for it (a copy of the rows, and their bounds).
IN_TASK_MAX_WORK = 2**25
IN_TASK_MAX_BYTES = 2**28


def fits_in_one_task(rows: int, row_bytes: int, k: int, hosts: int) -> bool:
    """Whether a loop over `rows` rows of `row_bytes` each at k centers, on a cluster whose workers run
    on `hosts` machines, runs in one task."""
    return rows * row_bytes <= IN_TASK_MAX_BYTES and (hosts == 1 or rows * k <= IN_TASK_MAX_WORK)


def threads_per_host(nthreads: dict[str, int]) -> dict[str, int]:
    """Worker threads (by worker address, as Client.nthreads gives them) added up by the machine (the
    address's host) their workers run on."""
    from distributed.comm import get_address_host

    per_host: dict[str, int] = defaultdict(int)
    for address, n in nthreads.items():
        per_host[get_address_host(address)] += n
    return dict(per_host)


class _Lines:
    """A logger's .info and .log that keep the lines for a task to return, each also handed to
    `forward(index, level, text)` as it is written when given (the task's live progress)."""

    def __init__(self, forward=None):
        self.records: list[tuple[int, str]] = []
        self.forward = forward

    def log(self, level: int, message: str, *args) -> None:
        text = message % args if args else message
        if self.forward is not None:
            self.forward(len(self.records), level, text)
        self.records.append((level, text))

    def info(self, message: str, *args) -> None:
        self.log(logging.INFO, message, *args)


class _Relay:
    """The client's side of a task's live log lines (distributed's events on one topic): each line logged
    as it arrives, in order; close() stops it and returns how many were logged, so that the rest can be
    logged from the task's result, none twice (an event may arrive after the result, or never)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.shown, self.open = 0, True

    def __call__(self, event) -> None:
        index, level, text = event[1]
        with self.lock:
            if self.open and index == self.shown:
                log.log(level, "%s", text)
                self.shown += 1

    def close(self) -> int:
        with self.lock:
            self.open = False
            return self.shown


class _ThreadBounds:
    """The bounds of in-memory rows in this process (`chunks`, in order): a contiguous share of the rows
    per thread, stepped side by side on `pool` (bounds' kernels release the GIL: numba nogil, BLAS). A
    share is views of the chunks it spans (small ones joined, _merged), not a copy: concatenating a
    199,712-row sample first took ~0.37 s of its task's 1.86 s (fresh pages for 157 MB)."""

    def __init__(
        self, chunks: list[np.ndarray], groups: bounds.Groups, pool: ThreadPoolExecutor, threads: int
    ):
        self.shares = list(pool.map(_merged, _shares(chunks, threads)))
        self.groups, self.pool = groups, pool
        self.states: list = []
        self.projection: projected.Projection | None = None
        self.thread_ids: set[int] = set()  # the threads that stepped a share: what a test can check

    def _map(self, fn, *iterables) -> tuple:
        def call(*args):
            self.thread_ids.add(threading.get_ident())
            return fn(*args)

        results = list(self.pool.map(call, *iterables))
        self.states = [r[0] for r in results]
        return bounds.add_steps(*(r[1] for r in results))

    def init(self, centers):
        self.projection = _first_pass_projection(centers, self.groups)
        return self._map(
            lambda share: bounds.init_chunks(centers, self.groups, self.projection, *share), self.shares
        )

    def step(self, centers, moves, exact=False):
        return self._map(
            lambda share, states: bounds.step_chunks(states, centers, moves, self.groups, exact, *share),
            self.shares,
            self.states,
        )


# Rows below which consecutive pieces of a share are stepped as one array (copied together): a sample drawn
# from the 8.1M store's 198 chunks comes in pieces of ~1,300 rows (~320 for its quarter), and a bounds step
# per piece that small cost more than the step itself.
MERGE_BELOW_ROWS = 4_096


def _merged(pieces: list[np.ndarray]) -> list[np.ndarray]:
    """Runs of consecutive pieces under MERGE_BELOW_ROWS rows joined into arrays of at least that many
    (a run's last array, before a large piece or at the end, may have fewer); a piece of that many rows
    or more is kept as it is (a view, no copy)."""
    out: list[np.ndarray] = []
    run: list[np.ndarray] = []

    def flush() -> None:
        if run:
            out.append(run[0] if len(run) == 1 else np.concatenate(run))
            run.clear()

    for piece in pieces:
        if len(piece) >= MERGE_BELOW_ROWS:
            flush()
            out.append(piece)
            continue
        run.append(piece)
        if sum(len(p) for p in run) >= MERGE_BELOW_ROWS:
            flush()
    flush()
    return out


def _shares(chunks: list[np.ndarray], threads: int) -> list[list[np.ndarray]]:
    """The rows of `chunks` (in order) cut into `threads` contiguous shares of (nearly) equal rows, each
    a list of views of the chunks it spans; empty chunks (a drawn piece can be) and shares left out."""
    n = sum(len(c) for c in chunks)
    edges = np.linspace(0, n, threads + 1).astype(int)
    offsets = np.cumsum([0, *(len(c) for c in chunks)])
    return [
        [
            chunk[max(a - start, 0) : min(b - start, len(chunk))]
            for chunk, start in zip(chunks, offsets[:-1])
            if len(chunk) and start < b and start + len(chunk) > a
        ]
        for a, b in pairwise(edges)
        if b > a
    ]


def _usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def lloyd_in_task(
    centers: np.ndarray, rule: LoopRule, seed: int, threads: int, topic: str | None, *chunks
) -> dict:
    """bounded Lloyd on the rows of `chunks` (in order) inside the calling task, from `centers` under
    `rule`, on `threads` threads (at most the cores this process may use), each over a contiguous share
    of the rows (_ThreadBounds), BLAS held to one thread each. Each log line is also sent as it is
    written as a distributed event on `topic` (from a worker, when given). Returns the centers, n_iter,
    inertia, seconds, the threads that did work and the loop's log lines (levels and texts)."""
    from threadpoolctl import threadpool_limits

    started = time.perf_counter()
    n = sum(len(chunk) for chunk in chunks)
    threads = max(1, min(threads, _usable_cores(), n))
    lines = _Lines(_event_sender(topic) if topic else None)
    groups = _groups(centers, max(1, n // threads), seed)
    with (
        ThreadPoolExecutor(threads, thread_name_prefix="bounded-lloyd") as pool,
        threadpool_limits(1, user_api="blas"),
    ):
        state = _ThreadBounds(list(chunks), groups, pool, threads)
        centers, n_iter, _, _, inertia = _bounded_loop(state, n, centers, rule, None, lines)
    return {
        "centers": centers,
        "n_iter": n_iter,
        "inertia": inertia,
        "seconds": time.perf_counter() - started,
        "threads": len(state.thread_ids),
        "log": lines.records,
    }


def _event_sender(topic: str):
    """forward(index, level, text) that logs a distributed event on `topic` from the current worker."""
    from distributed import get_worker

    worker = get_worker()
    return lambda index, level, text: worker.log_event(topic, [index, level, text])


def _widest_host(client) -> tuple[str, int]:
    """The worker whose host runs the most of the cluster's worker threads (the first by address of
    those, the one with the most threads of its own), and that host's threads, all its workers'."""
    from distributed.comm import get_address_host

    nthreads = dict(client.nthreads())
    per_host = threads_per_host(nthreads)
    worker = max(sorted(nthreads), key=lambda a: (per_host[get_address_host(a)], nthreads[a]))
    return worker, per_host[get_address_host(worker)]


def warm_workers(client) -> list:
    """bounds.warm as a task on every worker, side by side with whatever runs: returns their futures
    (hold them until the loops start). With the loops in one task, a worker that runs neither the start
    nor that task would first call a compiled kernel in the sample's first pass over the workers or in
    the pass that assigns every row, its numba start (~0.3 s) then on the fit's path (docs/benchmarks.md
    section 24)."""
    token = uuid.uuid4().hex
    return [
        client.submit(bounds.warm, key=f"warm_kernels-{token}-{i}", workers=[worker], pure=False)
        for i, worker in enumerate(sorted(dict(client.nthreads())))
    ]


def lloyd_in_one_task(client, X: da.Array, centers: np.ndarray, rule: LoopRule, seed: int = 0) -> dict:
    """lloyd_in_task on X's rows (a dask array, lazy or persisted) as one task on the worker of
    _widest_host, with that host's threads; its log lines reach this module's log as the loop writes
    them (one a second, as over the workers). Returns lloyd_in_task's result. Its rows travel to that
    worker once; an iteration then makes no round trip."""
    started = time.perf_counter()
    worker, threads = _widest_host(client)
    name = f"bounded_lloyd_in_task-{uuid.uuid4().hex}"  # the dashboard's task stream names it
    relay = _Relay()
    client.subscribe_topic(name, relay)
    try:
        parts = client.compute(list(X.to_delayed().ravel()))
        future = client.submit(
            lloyd_in_task,
            np.asarray(centers, dtype=np.float64),
            rule,
            seed,
            threads,
            name,
            *parts,
            key=name,
            workers=[worker],
            allow_other_workers=True,
            pure=False,
        )
        result = future.result()
        del future, parts
    finally:
        shown = relay.close()
        client.unsubscribe_topic(name)
    for level, line in result["log"][shown:]:
        log.log(level, "%s", line)
    log.info(
        "that loop ran as one task on %s with %d threads: %.2f s, %.2f s with gathering its %s rows",
        worker,
        result["threads"],
        result["seconds"],
        time.perf_counter() - started,
        f"{int(X.shape[0]):,}",
    )
    return result
