"""The Zarr v3 layout of a dataset, written atomically and checked before it is trusted.

    <name>.zarr/            group; attrs: dataset name, provenance, "complete": true
        train/images        uint8 [n, h, w], chunks (chunk_size, h, w), dims (sample, y, x)
        train/labels        uint8 [n],       chunks (chunk_size,),     dims (sample,)
        test/images, test/labels

Chunks hold whole images and are written one at a time, aligned to chunk boundaries, so memory does not
grow with n and no two writes share a chunk. The store is built in a hidden sibling folder and renamed into
place only when complete: a half-written store never carries the name.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from .atomic import TargetExistsError, atomic_directory
from .errors import StoreError

log = logging.getLogger(__name__)

# Chosen by benchmarks/codecs.py (docs/benchmarks.md): zstd level 5 gives ~4.9:1 on MNIST and the
# fastest reads of the codecs tried; CRC32C after it turns a corrupted chunk into an error instead of
# silently wrong pixels.
DEFAULT_CHUNK_SIZE = 8192
IMAGE_DIMS = ("sample", "y", "x")
LABEL_DIMS = ("sample",)


def default_compressors(level: int = 5) -> list:
    return [ZstdCodec(level=level), Crc32cCodec()]


@dataclass(frozen=True)
class SplitInfo:
    n: int
    image_shape: tuple[int, int]
    chunk_size: int


def write_split(
    group: zarr.Group,
    split: str,
    n: int,
    image_shape: tuple[int, int],
    image_blocks: Iterator[np.ndarray],
    label_blocks: Iterator[np.ndarray],
    chunk_size: int,
    compressors: list,
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Write one split from two iterators of chunk-sized blocks (the last may be shorter)."""
    sub = group.create_group(split)
    images = sub.create_array(
        "images", shape=(n, *image_shape), chunks=(chunk_size, *image_shape), dtype="uint8",
        compressors=compressors, dimension_names=IMAGE_DIMS, fill_value=0,
    )
    labels = sub.create_array(
        "labels", shape=(n,), chunks=(chunk_size,), dtype="uint8",
        compressors=compressors, dimension_names=LABEL_DIMS, fill_value=0,
    )
    start = 0
    for image_block, label_block in zip(image_blocks, label_blocks):
        stop = start + len(image_block)
        images[start:stop] = image_block
        labels[start:stop] = label_block
        start = stop
        if on_progress is not None:
            on_progress(stop)
    if start != n:
        raise StoreError(f"split {split}: wrote {start} of {n} images")


def _describe(array) -> str:
    return f"{array.dtype} {tuple(array.shape)}"


@contextmanager
def building_store(out: Path, overwrite: bool, what: str) -> Iterator[Path]:
    """Yield the hidden folder a store is built in (data_prep.atomic); it takes `out`'s name only when
    complete. A full disk, an unwritable place or a rival writer become one StoreError naming `out`."""
    try:
        with atomic_directory(out, overwrite=overwrite) as tmp:
            yield tmp
    except TargetExistsError:
        raise StoreError(f"{out}: another {what} created it meanwhile; pass --overwrite to replace it") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise StoreError(f"{out}: disk full while writing the store; nothing was kept") from None
        raise StoreError(f"{out}: cannot write the store ({exc.strerror or exc})") from None


def is_url(location) -> bool:
    """An fsspec URL (s3://, gs://, http://, ...) rather than a local path."""
    return isinstance(location, str) and "://" in location


def open_root(location: str | Path) -> zarr.Group:
    """Open a store's root group read-only: a local path, or an fsspec URL (read through zarr's
    FsspecStore; credentials and endpoints come from the backend's usual settings, e.g. AWS_* variables
    or FSSPEC_S3_* for s3fs)."""
    if not is_url(location):
        path = Path(location)
        if not path.exists():
            raise StoreError(f"{path}: store not found")
        location = str(path)
    try:
        return zarr.open_group(store=location, mode="r", zarr_format=3)
    except FileNotFoundError:
        raise StoreError(f"{location}: store not found") from None
    except ImportError as exc:
        raise StoreError(f"{location}: reading this URL needs {exc.name or 'an fsspec backend'} installed") from None
    except Exception as exc:
        kind = "store not found" if "NotFound" in type(exc).__name__ else f"not a Zarr v3 group ({type(exc).__name__})"
        raise StoreError(f"{location}: {kind}") from None


def validate_store(path: str | Path, splits: tuple[str, ...] = ("train", "test")) -> dict[str, SplitInfo]:
    """Check that `path` is a complete dataset store and describe its splits.

    Raises StoreError naming the first problem: not a Zarr v3 group, not marked complete, a missing
    array, a wrong dtype or shape, mismatched lengths, or chunks that were never written (zarr would
    silently read those as zeros).
    """
    root = open_root(path)
    if root.attrs.get("complete") is not True:
        raise StoreError(f"{path}: store is not marked complete (an interrupted conversion?)")
    info = {}
    for split in splits:
        try:
            images = root[f"{split}/images"]
            labels = root[f"{split}/labels"]
        except KeyError as exc:
            raise StoreError(f"{path}: missing array {exc.args[0]}") from None
        if images.dtype != np.uint8 or images.ndim != 3:
            raise StoreError(f"{path}/{split}/images: expected uint8 [n, h, w], found {_describe(images)}")
        if labels.dtype != np.uint8 or labels.ndim != 1:
            raise StoreError(f"{path}/{split}/labels: expected uint8 [n], found {_describe(labels)}")
        if images.shape[0] != labels.shape[0]:
            raise StoreError(
                f"{path}/{split}: {images.shape[0]} images but {labels.shape[0]} labels"
            )
        if images.shape[0] == 0:
            raise StoreError(f"{path}/{split}: holds no images")
        if images.chunks[1:] != images.shape[1:]:
            raise StoreError(f"{path}/{split}/images: chunks {images.chunks} split an image")
        for array, name in ((images, "images"), (labels, "labels")):
            if array.nchunks_initialized != array.nchunks:
                raise StoreError(
                    f"{path}/{split}/{name}: {array.nchunks - array.nchunks_initialized} of "
                    f"{array.nchunks} chunks are missing"
                )
        info[split] = SplitInfo(int(images.shape[0]), tuple(images.shape[1:]), int(images.chunks[0]))
    shapes = {i.image_shape for i in info.values()}
    if len(shapes) > 1:
        raise StoreError(f"{path}: splits hold images of different sizes {sorted(shapes)}")
    return info


def store_attrs(path: str | Path) -> Mapping:
    return dict(open_root(path).attrs)
