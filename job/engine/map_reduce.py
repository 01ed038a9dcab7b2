"""Run a kernel over every chunk of a dask array and reduce the results, persisted or streamed.

Holds map_reduce and its plan (one task per worker thread, pinned to the worker holding the chunks, when X
is persisted on a distributed cluster; a tree over X's graph otherwise) and the moments pass built on it.
May use: job.engine.blockwise and job.engine.kernels (nothing above the engine).
"""

from __future__ import annotations

import functools
import uuid

import dask
import dask.array as da
import numpy as np

from job.engine import kernels
from job.engine.blockwise import (
    TREE_FAN_IN,
    boxed_pairs,
    combine_boxed,
    per_chunk,
    reduce_boxes,
    tree_reduce,
    unbox,
)


def _chunk_futures(X: da.Array):
    """The futures of X's chunks in order when X is persisted on a distributed client, else None."""
    from distributed import Future

    graph = X.__dask_graph__()
    futures = [graph.get(key) for key in dask.core.flatten(X.__dask_keys__())]
    if not futures or not all(isinstance(f, Future) for f in futures):
        return None
    return futures


def _group_by_worker_thread(client, futures: list) -> list[tuple[str, list]]:
    """Split the chunk futures into one group per worker thread, each on a worker holding its chunks.

    One task per thread and iteration, instead of one per chunk: each task costs a few milliseconds of
    scheduling, (de)serialisation and GIL hand-offs on the worker, which on MNIST was as much as the
    arithmetic (42 ms per iteration with 8 chunks as 8 tasks, 28 ms as 2). Pinning the task to the
    holder matters too: left to itself the scheduler sometimes ran a task on the other worker, copying
    the chunk there every iteration (the active memory manager drops the replica again within seconds).
    """
    holders = client.who_has(futures)
    nthreads = client.nthreads()
    if not nthreads:
        # Every worker is gone for the moment (their nannies restarting them, e.g. for memory: seen in CI
        # between the persist and the fit): wait for one, or let the TimeoutError say so (job.deploy.faults).
        client.wait_for_workers(1, timeout=60)
        nthreads = client.nthreads()
    by_worker: dict[str, list] = {}
    for future in futures:
        # Among the workers holding this chunk (replicas happen), the one with the least work so far.
        candidates = sorted(holders.get(future.key, ()) or nthreads)
        worker = min(candidates, key=lambda w: len(by_worker.get(w, ())) / nthreads.get(w, 1))
        by_worker.setdefault(worker, []).append(future)
    groups: list[tuple[str, list]] = []
    for worker, chunk_futures in by_worker.items():
        slots = max(1, min(nthreads.get(worker, 1), len(chunk_futures)))
        groups.extend((worker, chunk_futures[i::slots]) for i in range(slots))
    return groups


def reduce_on_cluster(client, parts: list, combine, fan_in: int = TREE_FAN_IN):
    """Tree-reduce futures on the workers down to at most `fan_in`, then combine those in the client."""
    while len(parts) > fan_in:
        parts = [
            client.submit(combine, *parts[i : i + fan_in], pure=False) for i in range(0, len(parts), fan_in)
        ]
    return combine(*client.gather(parts))


def plan_tasks(X: da.Array):
    """How to send a Lloyd step over X: (client, [(worker, chunk futures)]) when X is persisted on a
    distributed cluster, else None (X is then streamed through its graph). Built once per fit: asking
    the scheduler where chunks live costs a round trip."""
    futures = _chunk_futures(X)
    if futures is None:
        return None
    client = futures[0].client
    return client, _group_by_worker_thread(client, futures)


def map_reduce(X: da.Array, kernel, combine, *args, plan=None, weights=None):
    """combine(kernel(chunk, *args) for every chunk of X), computed on the cluster.

    With sample weights (a dask array [n]), kernel(chunk, *args, w=the chunk's weights), each chunk paired
    with its weights in one task (job.engine.blockwise.boxed_pairs) and the results combined in a tree.

    When X is persisted, one task per worker thread runs `kernel` over the chunks that worker holds and
    combines them there (see plan_tasks): no graph to build or optimise, one round trip. Otherwise (X
    streamed from storage, or no distributed client) the kernel runs on each chunk of X's graph and the
    results are combined in a tree.
    """
    if weights is not None:
        return reduce_boxes(boxed_pairs(X, weights, _weighted, kernel, *args), combine)
    plan = plan if plan is not None else plan_tasks(X)
    if plan is not None:
        client, groups = plan
        # Keys named after the kernel, so the dashboard's task stream and progress bars say
        # "lloyd_partial" rather than "over_chunks".
        parts = [
            client.submit(
                kernels.over_chunks,
                kernel,
                combine,
                args,
                *group,
                workers=[worker],
                allow_other_workers=True,
                key=f"{kernel.__name__}-{uuid.uuid4().hex}",
            )
            for worker, group in groups
        ]
        return reduce_on_cluster(client, parts, combine)
    # Streamed: each chunk's kernel runs in the task that reads and scales the chunk (job.engine.blockwise).
    parts = per_chunk(X, kernel, *args)
    (result,) = dask.compute(tree_reduce(parts, functools.partial(combine_boxed, combine)))
    return unbox(result)


def _weighted(block, w, kernel, *args):
    return kernel(block, *args, w=w)


def moments(X: da.Array, plan=None) -> tuple[int, np.ndarray, np.ndarray, bool]:
    """(n, column sums, column sums of squares, all finite) in one pass over X."""
    return map_reduce(X, kernels.chunk_moments, kernels.add_moments, plan=plan)
