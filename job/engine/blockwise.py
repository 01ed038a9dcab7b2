"""Apply a function to every chunk of a dask array in the same task that produces the chunk.

For an X streamed from Zarr, each chunk is a chain (read, decompress, scale to float32). A function
applied as a separate task (delayed(f) on X.to_delayed()) leaves the scheduler free to compute the chain
on one worker and f on another, shipping 25 MB float32 chunks between them; applied with map_blocks, dask
fuses f with the chain into one task per chunk. Measured on 1M streamed images: a Lloyd step took
6.7-7.1 s unfused and 2.3-2.5 s fused (benchmarks/out_of_core.py, docs/benchmarks.md).
May use: dask and numpy only (nothing else of job).
"""

from __future__ import annotations

import functools
import uuid

import dask
import dask.array as da
import numpy as np
from dask import delayed

# Parts per node of a reduction tree: no single task receives all of them.
TREE_FAN_IN = 8


def tree_reduce(parts: list, combine, fan_in: int = TREE_FAN_IN):
    """Combine delayed parts in a tree of `fan_in`-way nodes, so no single task receives all of them."""
    while len(parts) > 1:
        parts = [delayed(combine, pure=False)(*parts[i : i + fan_in]) for i in range(0, len(parts), fan_in)]
    return parts[0]


def per_chunk(X, func, *args, with_offset: bool = False) -> list:
    """[Delayed(func(chunk, *args))] for the chunks of X along axis 0, each fused with X's own chain.

    numpy arrays among `args` become one key each, sent once per worker: as plain arguments dask would
    embed a copy in every chunk's task. With `with_offset`, func also gets offset= the chunk's first row.
    """
    args = tuple(delayed(a) if isinstance(a, np.ndarray) else a for a in args)
    boxed = X.map_blocks(
        _boxed,
        *args,
        kernel=func,
        with_offset=with_offset,
        drop_axis=list(range(1, X.ndim)),
        chunks=((1,) * X.numblocks[0],),
        dtype=object,
        meta=np.empty((0,), dtype=object),
        name=f"{getattr(func, '__name__', 'func').strip('_')}-{uuid.uuid4().hex}",
    )
    return list(boxed.to_delayed().ravel())


def _boxed(block, *args, kernel, with_offset, block_info=None):
    """func's result boxed in a 1-element object array: one block of a map_blocks result."""
    kwargs = {"offset": int(block_info[0]["array-location"][0][0])} if with_offset else {}
    out = np.empty((1,), dtype=object)
    out[0] = kernel(block, *args, **kwargs)
    return out


def unbox(part):
    """The value inside a per_chunk result (or the value itself, once combined)."""
    return part[0] if isinstance(part, np.ndarray) and part.dtype == object and part.shape == (1,) else part


def combine_boxed(combine, *parts):
    return combine(*(unbox(p) for p in parts))


def boxed_pairs(X, other, func, *args, with_offset: bool = False):
    """func(X chunk, other chunk, *args[, offset=first row]) per chunk of X, boxed: an object dask array
    with one element per chunk, each task fused with X's own chain (other [n] is rechunked like X)."""
    args = tuple(delayed(a) if isinstance(a, np.ndarray) else a for a in args)
    arg_pairs = [a for arg in args for a in (arg, None)]
    other = other.rechunk((X.chunks[0],))
    starts = np.cumsum((0, *X.chunks[0][:-1])).astype(np.int64)
    offsets = da.from_array(starts, chunks=1)
    # align_arrays=False: blocks are matched by position (the offsets' chunks of 1 against X's rows).
    return da.blockwise(
        _boxed_pair,
        "i",
        X,
        "ij",
        other,
        "i",
        offsets,
        "i",
        *arg_pairs,
        kernel=func,
        with_offset=with_offset,
        concatenate=True,
        align_arrays=False,
        dtype=object,
        meta=np.empty((0,), dtype=object),
        adjust_chunks={"i": 1},
        name=f"{getattr(func, '__name__', 'func').strip('_')}-{uuid.uuid4().hex}",
    )


def _boxed_pair(block, other, offset, *args, kernel, with_offset):
    kwargs = {"offset": int(offset[0])} if with_offset else {}
    out = np.empty((1,), dtype=object)
    out[0] = kernel(block, other, *args, **kwargs)
    return out


def reduce_boxes(boxes, combine):
    """combine(every boxed part), in a tree of tasks on the cluster."""
    parts = list(boxes.to_delayed().ravel())
    (result,) = dask.compute(tree_reduce(parts, functools.partial(combine_boxed, combine)))
    return unbox(result)


def _rows_of(block, local):
    return block[local]


def take_rows(X, index) -> np.ndarray:
    """X[index] as a numpy array, for a few rows: one small task per chunk that holds any of them, run
    where the chunk is (a persisted chunk never moves; a streamed one is read by that task alone).

    Instead of dask's fancy indexing, which turned X[index] with 10,000 sorted indices over 989 chunks of
    8.1M persisted images into a graph that took 10 s (2 cores) to build, optimise and run.
    """
    index = np.asarray(index, dtype=np.int64)
    if len(index) == 0:
        return np.empty((0, *X.shape[1:]), dtype=X.dtype)
    order = np.argsort(index, kind="stable")
    bounds = np.cumsum((0,) + X.chunks[0])
    chunk = np.searchsorted(bounds, index[order], side="right") - 1
    blocks = X.to_delayed().reshape(X.numblocks[0], -1)[:, 0]
    parts = [delayed(_rows_of)(blocks[c], index[order][chunk == c] - bounds[c]) for c in np.unique(chunk)]
    rows = np.concatenate(dask.compute(*parts))
    out = np.empty_like(rows)
    out[order] = rows
    return out
