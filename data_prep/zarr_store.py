"""The Zarr v3 layout of a dataset, written atomically and checked before it is trusted.

    <name>.zarr/            group; attrs: dataset name, provenance, "complete": true
        train/images        uint8 [n, h, w], chunks (chunk_size, h, w), dims (sample, y, x)
        train/labels        uint8 [n],       chunks (chunk_size,),     dims (sample,)
        test/images, test/labels

Chunks hold whole images and are written one at a time, aligned to chunk boundaries, so memory does not
grow with n and no two writes share a chunk. The store is built in a hidden sibling folder and renamed into
place only when complete: a half-written store never carries the name.
May use: data_prep's atomic and errors (and zarr).
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

from .atomic import NotOursError, staged_directory
from .errors import DamagedChunkError, StoreError

log = logging.getLogger(__name__)

# Chosen by benchmarks/codecs.py (docs/benchmarks.md): zstd level 5 gives ~4.9:1 on MNIST and the
# fastest reads of the codecs tried; CRC32C after it turns a corrupted chunk into an error instead of
# silently wrong pixels.
DEFAULT_CHUNK_SIZE = 8192
IMAGE_DIMS = ("sample", "y", "x")
LABEL_DIMS = ("sample",)
# What a store of ours holds at its top level: anything else in a folder means it is not (only) ours.
STORE_ENTRIES = {"zarr.json", "train", "test"}


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
    def unwritable(exc: OSError) -> str:
        if exc.errno == errno.ENOSPC:
            return "disk full while writing the store; nothing was kept"
        return f"cannot write the store ({exc.strerror or exc})"

    with staged_directory(out, overwrite=overwrite, why_not_ours=why_store_not_ours, error=StoreError,
                          rival=f"another {what} created it meanwhile; pass --overwrite to replace it",
                          unwritable=unwritable) as tmp:
        yield tmp


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


def open_array(root: zarr.Group, location, component: str):
    """root[component], or StoreError naming the array when it is missing or its metadata is damaged."""
    try:
        node = root[component]
    except KeyError:
        raise StoreError(f"{location}: missing array {component}") from None
    except Exception as exc:  # zarr.json that is not JSON, or not valid Zarr v3 metadata
        raise StoreError(f"{location}/{component}: its zarr.json is damaged or not Zarr v3 metadata "
                         f"({type(exc).__name__})") from None
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{location}/{component}: is a group, not an array")
    return node


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
        images = open_array(root, path, f"{split}/images")
        labels = open_array(root, path, f"{split}/labels")
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
            missing, extra = chunk_key_problems(array)
            if missing:
                raise StoreError(
                    f"{path}/{split}/{name}: {len(missing)} of {array.nchunks} chunks are missing "
                    f"(first: {missing[0]}); re-create the store (python -m data_prep --overwrite)"
                )
            if extra:
                raise StoreError(
                    f"{path}/{split}/{name}: {len(extra)} unexpected chunk file(s) outside the array's shape "
                    f"(first: {extra[0]}); the store was changed after it was written"
                )
        info[split] = SplitInfo(int(images.shape[0]), tuple(images.shape[1:]), int(images.chunks[0]))
    shapes = {i.image_shape for i in info.values()}
    if len(shapes) > 1:
        raise StoreError(f"{path}: splits hold images of different sizes {sorted(shapes)}")
    return info


def store_attrs(path: str | Path) -> Mapping:
    return dict(open_root(path).attrs)


def _stored_keys(array) -> set[str]:
    from zarr.core.sync import sync

    store, prefix = array.store_path.store, array.store_path.path

    async def listing():
        return [key async for key in store.list_prefix(f"{prefix}/c/" if prefix else "c/")]

    keys = sync(listing())
    return {key[len(prefix) + 1 :] if prefix else key for key in keys}


def chunk_key(array, index: tuple[int, ...]) -> str:
    return array.metadata.encode_chunk_key(index)


def chunk_key_problems(array) -> tuple[list[str], list[str]]:
    """(missing chunk keys, unexpected chunk keys) of an array: zarr reads a missing chunk silently as its
    fill value, and merely counting the stored chunks would let an extra file hide a missing one."""
    expected = {chunk_key(array, index) for index in np.ndindex(*array.cdata_shape)}
    stored = _stored_keys(array)
    return sorted(expected - stored), sorted(stored - expected)


def read_chunk(array, location: str, component: str, index: int) -> np.ndarray:
    """Rows of chunk `index` (along samples) of `array`; a chunk that is missing, fails its checksum or
    does not decode raises DamagedChunkError naming the store, the array and the chunk."""
    from zarr.core.sync import sync

    rows = int(array.chunks[0])
    start, stop = index * rows, min((index + 1) * rows, int(array.shape[0]))
    key = chunk_key(array, (index,) + (0,) * (array.ndim - 1))
    store, prefix = array.store_path.store, array.store_path.path
    full_key = f"{prefix}/{key}" if prefix else key
    try:
        if not sync(store.exists(full_key)):
            reason = "the chunk file is missing (zarr would read it as zeros)"
        else:
            return array[start:stop]
    except Exception as exc:  # checksum mismatch, truncated zstd frame, wrong size: all mean damage
        reason = _damage_reason(exc)
    raise DamagedChunkError(
        f"{location}/{component}: chunk {index} (rows {start:,}-{stop - 1:,}, file {key}) is damaged: {reason}; "
        f"check the whole store with `python -m data_prep verify {location}` and re-create it"
    )


def _damage_reason(exc: Exception) -> str:
    text = str(exc)
    if "checksum" in text.lower():
        return "its CRC32C checksum does not match (the bytes on disk changed)"
    first = text.splitlines()[0][:160] if text else "it does not decode"
    return f"it does not decode ({type(exc).__name__}: {first})"


def verify_store(path: str | Path, on_progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Read every chunk of every array of a dataset store; return one line per problem found (empty: the
    store is whole). The layout is checked first (validate_store); then each chunk is decoded, so that a
    flipped byte anywhere is found (CRC32C) rather than only when a job happens to read it."""
    try:
        validate_store(path)
    except StoreError as exc:
        return [str(exc)]
    root = open_root(path)
    arrays = [(f"{split}/{name}", root[f"{split}/{name}"]) for split in ("train", "test") for name in ("images", "labels")]
    total, done, problems = sum(a.cdata_shape[0] for _, a in arrays), 0, []
    for component, array in arrays:
        for index in range(array.cdata_shape[0]):
            try:
                read_chunk(array, str(path), component, index)
            except DamagedChunkError as exc:
                problems.append(str(exc).split("; check the whole store")[0])
            done += 1
            if on_progress is not None:
                on_progress(done, total)
    return problems


def why_store_not_ours(path: Path) -> str | None:
    """None when `path` is a dataset store this project wrote (it may be replaced), else why not."""
    path = Path(path)
    if not path.is_dir():
        return "exists and is not a Zarr store folder"
    foreign = sorted(p.name for p in path.iterdir() if p.name not in STORE_ENTRIES)
    if foreign:
        return f"exists and holds files that are not part of a dataset store ({', '.join(foreign[:5])})"
    try:
        attrs = store_attrs(path)
    except StoreError:
        return "exists and is not a Zarr store written by data_prep"
    if "data_prep" not in (attrs.get("provenance") or {}).get("versions", {}):
        return "exists and is a Zarr store that data_prep did not write"
    return None


def check_store_replaceable(out: Path) -> None:
    """Before any work: StoreError unless an existing `out` is a store of ours (or an empty folder)."""
    from .atomic import check_replaceable

    if Path(out).exists() or Path(out).is_symlink():
        try:
            check_replaceable(Path(out), why_store_not_ours)
        except NotOursError as exc:
            raise StoreError(str(exc)) from None


def reuse_if_same(out: Path, same_data: Callable[[Mapping], bool]) -> Path:
    """`out` when it is a complete store of ours whose provenance `same_data` accepts (made from the same
    files, or the same recipe); else a StoreError that says why it cannot be reused and what to do."""
    if why_store_not_ours(out):
        raise StoreError(existing_store_problem(out))
    try:
        validate_store(out)
    except StoreError as exc:
        raise StoreError(f"{exc}; pass --overwrite to replace it") from None
    if not same_data(store_attrs(out).get("provenance", {})):
        raise StoreError(f"{out}: store exists and holds other data; pass --overwrite to replace it")
    return out


def existing_store_problem(out: Path) -> str:
    """What to tell a user whose existing `out` cannot be reused: --overwrite if it is ours, else hands off."""
    reason = why_store_not_ours(Path(out)) if Path(out).exists() else None
    if reason:
        return f"{out}: {reason}; it was left untouched (choose another output path)"
    return "pass --overwrite to replace it"
