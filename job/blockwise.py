"""Apply a function to every chunk of a dask array in the same task that produces the chunk.

For an X streamed from Zarr, each chunk is a chain (read, decompress, scale to float32). A function
applied as a separate task (delayed(f) on X.to_delayed()) leaves the scheduler free to compute the chain
on one worker and f on another, shipping 25 MB float32 chunks between them; applied with map_blocks, dask
fuses f with the chain into one task per chunk. Measured on 1M streamed images: a Lloyd step took
6.7-7.1 s unfused and 2.3-2.5 s fused (benchmarks/out_of_core.py, docs/benchmarks.md).
"""

from __future__ import annotations

import uuid

import numpy as np
from dask import delayed


def per_chunk(X, func, *args, with_offset: bool = False) -> list:
    """[Delayed(func(chunk, *args))] for the chunks of X along axis 0, each fused with X's own chain.

    numpy arrays among `args` become one key each, sent once per worker: as plain arguments dask would
    embed a copy in every chunk's task. With `with_offset`, func also gets offset= the chunk's first row.
    """
    args = tuple(delayed(a) if isinstance(a, np.ndarray) else a for a in args)
    boxed = X.map_blocks(
        _boxed, *args, kernel=func, with_offset=with_offset, drop_axis=list(range(1, X.ndim)),
        chunks=((1,) * X.numblocks[0],), dtype=object, meta=np.empty((0,), dtype=object),
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
