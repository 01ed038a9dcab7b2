"""Open a dataset store lazily and turn its images into features, without computing anything.

May use: job.errors and data_prep (the store layout, the pixel range).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import dask.array as da
import numpy as np

from data_prep.digits import N_CLASSES, PIXEL_MAX
from data_prep.zarr_store import array_in, open_root, read_chunk, validate_store
from job.errors import DataError

ArrayT = TypeVar("ArrayT", da.Array, np.ndarray)  # lazy rows, or one block of them

PIXEL_SCALE = 1.0 / PIXEL_MAX  # raw uint8 pixels -> [0, 1]


@dataclass(frozen=True)
class Dataset:
    """Lazy views of one or more splits of a store.

    images: uint8 [n, h, w]; labels: uint8 [n]; both chunked along samples only.
    """

    images: da.Array
    labels: da.Array
    image_shape: tuple[int, int]
    splits: tuple[str, ...]
    store: str  # absolute path or URL, as the workers open it

    @property
    def n(self) -> int:
        return int(self.images.shape[0])

    def in_blocks(self, chunks_per_block: int) -> Dataset:
        """The same splits again, images and labels each read in blocks of `chunks_per_block` stored
        chunks (lazy_array): how a persisted X is read, and its labels beside it (the evaluation's pass
        then reads a block's labels in the task of its pixels, not a task per stored chunk merged after).
        The store was validated when it was opened: only its root is opened again."""
        root = open_root(self.store)

        def read(component: str) -> da.Array:
            parts = [lazy_array(root, self.store, f"{s}/{component}", chunks_per_block) for s in self.splits]
            return parts[0] if len(parts) == 1 else da.concatenate(parts)

        return replace(self, images=read("images"), labels=read("labels"))


def splits_for(split: str) -> tuple[str, ...]:
    return ("train", "test") if split == "all" else (split,)


def open_dataset(store: str | Path, split: str = "all") -> Dataset:
    """Check the store is complete, then open the chosen splits as lazy dask arrays, one block per
    stored chunk (Dataset.in_blocks: several)."""
    names = splits_for(split)
    info = validate_store(store, names)  # a damaged store is data_prep's one-line StoreError
    url = _absolute(store)
    root = open_root(url)
    images = [lazy_array(root, url, f"{s}/images") for s in names]
    labels = [lazy_array(root, url, f"{s}/labels") for s in names]
    cat = (lambda xs: xs[0]) if len(names) == 1 else da.concatenate
    return Dataset(cat(images), cat(labels), info[names[0]].image_shape, names, url)


def lazy_array(root, location: str, component: str, chunks_per_block: int = 1) -> da.Array:
    """A Zarr array as a dask array with one task per block of `chunks_per_block` stored chunks, each
    chunk read by data_prep's read_chunk.

    Instead of da.from_zarr: zarr turns a damaged chunk into a bare ValueError ("Stored and computed
    checksum do not match") and a deleted one into silent zeros; read_chunk names the store, the array
    and the chunk in both cases. The zarr array object is one key of the graph, shared by every task.
    Blocks of several chunks are what a persisted X is held as (job.engine.persist.chunks_to_merge):
    read so, rather than rechunked after the read, no chunk crosses between workers to be merged, and
    persisting the 1M-row store took 0.92 s instead of 1.80 s on 2 fresh workers (docs/benchmarks.md,
    section 21).
    """
    from dask import delayed

    array = root[component]
    rows = int(array.chunks[0]) * chunks_per_block
    n = int(array.shape[0])
    chunks = (tuple(min(rows, n - s) for s in range(0, n, rows)), *tuple((d,) for d in array.shape[1:]))
    return da.map_blocks(
        _read_block,
        delayed(array, pure=True),
        location,
        component,
        chunks=chunks,
        dtype=array.dtype,
        meta=np.empty((0,) * array.ndim, dtype=array.dtype),
        per=chunks_per_block,
        name=f"read-{component.replace('/', '-')}-" + _token(location, component, array, chunks_per_block),
    )


def _token(location, component, array, per) -> str:
    from dask.base import tokenize

    return tokenize(location, component, array.shape, array.chunks, per, str(array.metadata.to_dict()))


def _read_block(array, location, component, per, block_info=None):
    """Block b: stored chunks b * per .. b * per + per - 1 of `array`, each read and checked by
    read_chunk, into one array."""
    first = block_info[None]["chunk-location"][0] * per
    if per == 1:
        return read_chunk(array, location, component, first)
    rows = int(array.chunks[0])
    stop = min(int(array.shape[0]), (first + per) * rows)
    block = np.empty((stop - first * rows, *array.shape[1:]), dtype=array.dtype)
    for i in range(first, -(-stop // rows)):
        at = (i - first) * rows
        block[at : at + rows] = read_chunk(array, location, component, i)
    return block


def _absolute(store: str | Path) -> str:
    """Workers may run in another folder (or on another machine): give them an absolute path."""
    text = str(store)
    return text if "://" in text else str(Path(text).resolve())


def _probe_store(path: str, splits: tuple[str, ...]) -> str | None:
    try:
        validate_store(path, splits)
    except Exception as exc:  # noqa: BLE001 (whatever stops this worker is reported with its name)
        return str(exc)
    return None


def check_workers_can_read(client, store: str | Path, splits: tuple[str, ...]) -> None:
    """Before the fit, every worker opens the store as the job will; raise DataError naming the workers
    that cannot (a path not shared with them, missing permissions, a different copy)."""
    results = client.run(_probe_store, _absolute(store), tuple(splits))
    failed = {worker: reason for worker, reason in results.items() if reason}
    if failed:
        detail = "; ".join(f"{worker}: {reason}" for worker, reason in sorted(failed.items()))
        raise DataError(f"{len(failed)} of {len(results)} worker(s) cannot read {store}: {detail}")


# Label chunks read by one task in check_labels: 989 tasks of one 8,192-label chunk each (the 8.1M
# store) took 2.5 s of scheduling on 2 workers for 8 MB of labels; in batches of 64, 17 tasks took 0.6 s.
LABEL_CHUNKS_PER_TASK = 64


def _label_maxima(url: str, component: str, indices: range) -> list[int]:
    """The largest label of each chunk in `indices`, each read (and its SHA-256 checked) by read_chunk."""
    array = array_in(open_root(url), component, url)
    return [int(read_chunk(array, url, component, i).max()) for i in indices]


def check_labels(store: str | Path, splits: tuple[str, ...]) -> None:
    """Raise DataError unless every label of `splits` is a class 0..N_CLASSES-1, naming the first chunk
    (and its rows) that holds another value.

    validate_store checks the labels' dtype and layout, not their values; scoring counts clusters x
    classes and cannot use a label 255. The labels are read on the workers, LABEL_CHUNKS_PER_TASK chunks a
    task through read_chunk (which also checks each chunk's recorded SHA-256), before the fit: a damaged
    label chunk stops the job before it has spent anything, and before a checkpoint exists.
    """
    import dask
    from dask import delayed

    url = _absolute(store)
    root = open_root(url)
    arrays = [(split, array_in(root, f"{split}/labels", url)) for split in splits]
    batches = [
        [
            delayed(_label_maxima, pure=True)(
                url, f"{split}/labels", range(i, min(i + LABEL_CHUNKS_PER_TASK, n))
            )
            for i in range(0, n, LABEL_CHUNKS_PER_TASK)
        ]
        for split, array in arrays
        for n in [-(-int(array.shape[0]) // int(array.chunks[0]))]
    ]
    maxima = dask.compute(*batches)
    for (split, array), per_batch in zip(arrays, maxima):
        chunk_max = np.array([m for batch in per_batch for m in batch])
        bad = np.flatnonzero(chunk_max >= N_CLASSES)
        if bad.size:
            index, rows = int(bad[0]), int(array.chunks[0])
            start, stop = index * rows, min((index + 1) * rows, int(array.shape[0]))
            raise DataError(
                f"{store}/{split}/labels: chunk {index} (rows {start:,}-{stop - 1:,}) "
                f"holds label {int(chunk_max[index])}, outside 0-{N_CLASSES - 1}: the labels are damaged "
                f"(python -m data_prep verify {store} lists every such chunk)"
            )


def flat_pixels(images: da.Array) -> da.Array:
    """uint8 [n, h, w] -> uint8 [n, h*w], lazily: the job's X. One byte a pixel in the workers' memory
    (4x less than float32); the kernels convert each cache-sized block to float32 as they use it, and
    the job scales the centers by PIXEL_SCALE to [0, 1] (K-Means is scale-equivariant)."""
    n = images.shape[0]
    return images.reshape(n, int(np.prod(images.shape[1:])))


def to_features(images: ArrayT, dtype=np.float32) -> ArrayT:
    """uint8 [n, h, w] -> `dtype` [n, h*w] in [0, 1], lazily and chunk by chunk.

    The reshape merges only the unchunked trailing axes, so it never rechunks along samples.
    """
    n = images.shape[0]
    flat = images.reshape(n, int(np.prod(images.shape[1:])))
    return flat.astype(dtype) / dtype(PIXEL_MAX)
