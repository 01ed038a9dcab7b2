"""Whether to keep X in the workers' memory, and how to lay it out there when we do.

May use: dask and distributed only.
"""

from __future__ import annotations

import logging
import math
import uuid

import dask
import dask.array as da
import numpy as np
from distributed import Client, as_completed

log = logging.getLogger(__name__)

# Chunks of at most this many bytes when X is persisted: tens of MB keep per-task overhead small
# against the arithmetic, and several chunks per thread keep the load even (benchmarks/fit_speed.py).
TARGET_CHUNK_BYTES = 32 * 2**20
# With at least this many chunks per thread, uneven counts cost little: the chunks are kept as stored.
CHUNKS_PER_THREAD_KEPT = 8


def decide_persist(nbytes: int, cluster_bytes: int, policy: str, fraction: float) -> tuple[bool, str]:
    """Whether to keep X in the workers' memory, and the figures that decided it."""
    if policy != "auto":
        return policy == "always", f"--persist {policy}"
    if cluster_bytes == 0:
        return False, "the workers declare no memory limit, so X is streamed from the store"
    budget = fraction * cluster_bytes
    fits = nbytes <= budget
    return fits, (
        f"X is {nbytes / 2**20:,.0f} MiB; {fraction:.0%} of the cluster's {cluster_bytes / 2**30:,.1f} GiB "
        f"is {budget / 2**20:,.0f} MiB, so X is {'persisted' if fits else 'streamed from the store'}"
    )


def balanced_chunks(n_rows: int, row_bytes: int, n_threads: int) -> int:
    """Rows per chunk: a multiple of the thread count of equal chunks, each <= TARGET_CHUNK_BYTES."""
    per_thread = max(1, math.ceil(n_rows * row_bytes / (n_threads * TARGET_CHUNK_BYTES)))
    return max(1, math.ceil(n_rows / (n_threads * per_thread)))


def total_threads(client: Client) -> int:
    """The worker threads of the cluster, all workers together."""
    return sum(dict(client.nthreads()).values())


def chunks_to_merge(chunk_rows: tuple[int, ...], row_bytes: int, threads: int) -> int:
    """How many consecutive chunks of X to hold as one when it is persisted (1: as they are). Many small
    stored chunks (8,192 MNIST images are 6.4 MB) are merged up to TARGET_CHUNK_BYTES, as long as at
    least CHUNKS_PER_THREAD_KEPT merged chunks per thread remain, so that every later pass has fewer
    tasks: each costs ~1.5 ms of scheduling here, and a pass over the 989 chunks of 8.1M images spent
    more time on that than on arithmetic (docs/benchmarks.md)."""
    stored = max(chunk_rows)
    if len(chunk_rows) < CHUNKS_PER_THREAD_KEPT * threads or stored * row_bytes > TARGET_CHUNK_BYTES:
        return 1
    merge = max(1, TARGET_CHUNK_BYTES // (stored * row_bytes))
    return merge if len(chunk_rows) // merge >= CHUNKS_PER_THREAD_KEPT * threads else 1


def _settle(chunk):
    """A fresh, aligned, writeable copy of a chunk that arrived over the network.

    A received array can live in an unaligned, read-only receive buffer; BLAS then copies every block
    it reads into a temporary, and (with distributed's MALLOC_TRIM_THRESHOLD_) each temporary is fresh
    pages from the kernel: 6,700 page faults and ~10 ms per iteration for one 27 MB chunk, measured.
    """
    return np.array(chunk, order="C", copy=True)


def _targets(holders: list[tuple[str, ...]], nthreads: dict[str, int]) -> list[str]:
    """A worker for each chunk: chunks stay where they are up to each worker's share (by threads);
    the rest go to the workers below their share."""
    total = sum(nthreads.values())
    quota = {w: math.ceil(len(holders) * n / total) for w, n in nthreads.items()}
    load = dict.fromkeys(nthreads, 0)
    targets: list[str | None] = []
    for held in holders:
        keep = [w for w in held if w in load and load[w] < quota[w]]
        worker = min(keep, key=lambda w: load[w]) if keep else None
        if worker is not None:
            load[worker] += 1
        targets.append(worker)
    for i, worker in enumerate(targets):
        if worker is None:
            worker = min(load, key=lambda w: load[w] / nthreads[w])
            load[worker] += 1
            targets[i] = worker
    return [w for w in targets if w is not None]  # every one is set by now


def persist_balanced(client: Client, X: da.Array, rows: int | None = None) -> da.Array:
    """Persist X in equal chunks spread evenly over the workers' threads.

    The scheduler leaves persisted chunks where their inputs were computed, which can give one worker
    most of them (seen here: 6 of 8); every Lloyd iteration then waits for that worker. distributed's
    `rebalance` does not help: it only moves data off workers above 30% of their memory limit. So the
    chunks that sit on an over-full worker are copied once to an under-full one, pinned there, and the
    returned array is built from the resulting futures.
    """
    # Client.nthreads() asks the scheduler; scheduler_info() answered with no workers at all once, right
    # after a large persist on 8.1M images (a cached identity), and the placement below then failed.
    nthreads = dict(client.nthreads())
    if not nthreads:
        raise RuntimeError("the cluster has no workers left to hold X")
    threads = sum(nthreads.values())
    row_bytes = X.dtype.itemsize * X.shape[1]
    stored = max(X.chunks[0])
    keep = (
        rows is None
        and X.numblocks[0] >= CHUNKS_PER_THREAD_KEPT * threads
        and stored * row_bytes <= TARGET_CHUNK_BYTES
    )
    merge = chunks_to_merge(X.chunks[0], row_bytes, threads) if keep else 1
    if merge > 1:  # (a store's X is read merged instead: job.pipeline, job.dataset.lazy_array)
        X = X.rechunk((stored * merge, X.shape[1]))
    elif not keep:  # many chunks of at most the target size are balanced as they are: no rechunk pass
        X = X.rechunk((rows or balanced_chunks(X.shape[0], row_bytes, threads), X.shape[1]))
    X, futures = _persisted(X)
    holders = client.who_has(futures)
    targets = _targets([tuple(holders.get(f.key, ())) for f in futures], nthreads)
    placed = [
        f
        if target in holders.get(f.key, ())
        else client.submit(_settle, f, workers=[target], allow_other_workers=True, pure=False)
        for f, target in zip(futures, targets)
    ]
    _wait_or_raise(placed)
    moved = sum(p is not f for p, f in zip(placed, futures))
    balanced = _array_of_futures("balanced-" + X.name, placed, X.chunks, X._meta)
    log.info(
        "X persisted in %d chunks of up to %d rows over %d threads (%d chunk(s) moved to even the load)",
        X.numblocks[0],
        max(X.chunks[0]),
        threads,
        moved,
    )
    return balanced


def _wait_or_raise(futures: list) -> None:
    """Wait for the futures; the first one's error as soon as one fails (the workers ran out of memory,
    say: job.deploy.faults says so), rather than after every other has finished or failed too."""
    for future in as_completed(futures):  # distributed's wait() has no FIRST_EXCEPTION
        if future.status == "error":
            future.result()


def persist_spread(client: Client, X: da.Array) -> da.Array:
    """persist_balanced in equal chunks, one share per worker thread: a drawn sample (about one piece
    per chunk of the array it came from) made even before every Lloyd pass runs over it."""
    threads = total_threads(client)
    return persist_balanced(
        client, X, balanced_chunks(int(X.shape[0]), X.dtype.itemsize * X.shape[1], threads)
    )


def persist_where_drawn(X: da.Array) -> da.Array:
    """Persist rows drawn from a persisted array (a piece per chunk of it, job.kmeans.sampling) where each
    piece is computed, beside the chunk it came from: nothing crosses between workers. For rows that one
    task gathers next (job.kmeans.bounded.lloyd_in_one_task) rather than a loop over the workers, whose
    passes want them spread evenly (persist_spread): spreading a sample first moved much of it twice."""
    return _persisted(X)[0]


def _persisted(X: da.Array) -> tuple[da.Array, list]:
    """X persisted, once every chunk is in memory (the first error raised as soon as one fails), and its
    chunks' futures in order."""
    X = X.persist()
    graph = X.__dask_graph__()
    futures = [graph[key] for key in dask.core.flatten(X.__dask_keys__())]
    _wait_or_raise(futures)
    return X, futures


def persist_on_current_client(X: np.ndarray) -> da.Array | None:
    """An in-memory X scattered to the current distributed Client's workers in equal chunks, one share
    per thread, as a dask array of their futures; None when this process has no Client.

    Without it every pass of a fit embeds the numpy chunks in its graph and ships them to the workers
    again: MNIST's 60,000 float32 images fitted in 7.3 s that way, 3.3 s scattered once (3.0 s as a
    persisted dask array; docs/benchmarks.md, section 16). Scattered, not persisted from a graph:
    distributed warns about (and pickles) a graph that carries 188 MB of data.
    """
    from distributed import default_client

    try:
        client = default_client()
    except ValueError:  # no Client in this process
        return None
    threads = total_threads(client)
    rows = balanced_chunks(len(X), X.dtype.itemsize * X.shape[1], max(1, threads))
    # hash=False: with distributed's default content-hashed keys, fitting the same array twice in a row
    # re-scattered the keys the first fit was releasing, and the second fit lost them ("cancelled for
    # reason: lost dependencies", tests/test_estimator.py).
    futures = client.scatter([X[i : i + rows] for i in range(0, len(X), rows)], hash=False)
    chunks = (tuple(len(X[i : i + rows]) for i in range(0, len(X), rows)), (X.shape[1],))
    return _array_of_futures(f"scattered-{uuid.uuid4().hex}", futures, chunks, X[:0])


def _array_of_futures(name: str, futures: list, chunks, meta) -> da.Array:
    """A dask array [n, p] whose row chunks are these futures, in order (one column chunk)."""
    from dask.highlevelgraph import HighLevelGraph

    layer: dict = {(name, i, 0): future for i, future in enumerate(futures)}
    return da.Array(HighLevelGraph.from_collections(name, layer, dependencies=()), name, chunks, meta=meta)
