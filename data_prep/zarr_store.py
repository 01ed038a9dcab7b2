"""The Zarr v3 layout of a dataset, written atomically and checked before it is trusted.

    <name>.zarr/            group; attrs: dataset name, provenance, "complete": true
        train/images        uint8 [n, h, w], chunks (chunk_size, h, w), dims (sample, y, x)
        train/labels        uint8 [n],       chunks (chunk_size,),     dims (sample,)
        test/images, test/labels

Chunks hold whole images and are written one at a time, aligned to chunk boundaries, so memory does not
grow with n and no two writes share a chunk. The store is built in a hidden sibling folder and renamed into
place only when complete: a half-written store never carries the name. Each array records the SHA-256 of
every chunk's decoded rows (attribute "chunk_sha256"), so that a chunk that decodes but holds other rows
(moved, swapped, rewritten) is found and located, by `verify` and by every read of the job.
May use: data_prep's atomic, digits, errors, idx, locations and registry (and zarr).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from .atomic import staged_directory
from .digits import N_CLASSES
from .errors import DamagedChunkError, StoreError
from .locations import is_url

log = logging.getLogger(__name__)

# The codecs: chosen by benchmarks/codecs.py (docs/benchmarks.md): zstd level 5 gives ~4.9:1 on MNIST
# and the fastest reads of the codecs tried; CRC32C after it turns a corrupted chunk into an error
# instead of silently wrong pixels. Images per chunk: digits.DEFAULT_CHUNK_SIZE.
IMAGE_DIMS = ("sample", "y", "x")
LABEL_DIMS = ("sample",)
# What a store of ours holds at its top level: anything else in a folder means it is not (only) ours.
STORE_ENTRIES = {"zarr.json", "train", "test"}
# The attribute of each array that lists its chunks' SHA-256 (of the decoded rows, in chunk order).
DIGEST_ATTR = "chunk_sha256"
# A chunk file's key under the default v3 encoding (c/0/0/0); anything else in c/ is not a chunk
# (a file browser's .DS_Store, an editor's backup) and is ignored rather than counted.
_CHUNK_KEY = re.compile(r"c(/\d+)+")


def default_compressors(level: int = 5) -> list:
    return [ZstdCodec(level=level), Crc32cCodec()]


@dataclass(frozen=True)
class SplitInfo:
    n: int
    image_shape: tuple[int, int]
    chunk_size: int


def chunk_digest(rows: np.ndarray) -> str:
    """SHA-256 of a chunk's decoded rows (C order): what `chunk_sha256` records and reads compare with.
    1.5 GB/s on one core here, ~0.4x the time of decoding the chunk: ~4 s of CPU for the 6.35 GB of the 8.1M
    store (benchmarks/chunk_digests.py, docs/benchmarks.md section 11)."""
    return hashlib.sha256(np.ascontiguousarray(rows).data).hexdigest()


def record_digests(array, digests: list[str]) -> None:
    """Store the chunk digests of `array` (one per chunk, in order) in its attributes."""
    if len(digests) != array.cdata_shape[0]:
        raise StoreError(f"{array.path}: {len(digests)} chunk digests for {array.cdata_shape[0]} chunks")
    array.attrs[DIGEST_ATTR] = list(digests)


def create_split(
    group: zarr.Group,
    split: str,
    n: int,
    image_shape: tuple[int, ...],
    chunk_size: int,
    compressors: list,
    **config,
) -> tuple[zarr.Array, zarr.Array]:
    """The empty images [n, *image_shape] and labels [n] arrays of a new split: uint8, chunk_size rows a
    chunk. `config`: zarr's array config (e.g. write_empty_chunks)."""
    sub, row = group.create_group(split), tuple(image_shape)
    images, labels = (
        sub.create_array(
            name,
            shape=(n, *dims),
            chunks=(chunk_size, *dims),
            dtype="uint8",
            compressors=compressors,
            dimension_names=names,
            fill_value=0,
            **config,
        )
        for name, dims, names in (("images", row, IMAGE_DIMS), ("labels", (), LABEL_DIMS))
    )
    return images, labels


def write_split(
    arrays: tuple[zarr.Array, zarr.Array],
    image_blocks: Iterator[np.ndarray],
    label_blocks: Iterator[np.ndarray],
    on_progress: Callable[[int], None] | None = None,
) -> None:
    """Fill a new split's (images, labels) arrays (create_split) from two iterators of chunk-sized blocks
    (the last may be shorter), recording each chunk's digest."""
    images, labels = arrays
    start, image_digests, label_digests, n = 0, [], [], images.shape[0]
    for image_block, label_block in zip(image_blocks, label_blocks):
        stop = start + len(image_block)
        images[start:stop] = image_block
        labels[start:stop] = label_block
        image_digests.append(chunk_digest(image_block))
        label_digests.append(chunk_digest(label_block))
        start = stop
        if on_progress is not None:
            on_progress(stop)
    if start != n:
        raise StoreError(f"{images.path}: wrote {start} of {n} images")
    record_digests(images, image_digests)
    record_digests(labels, label_digests)


def _describe(array) -> str:
    return f"{array.dtype} {tuple(array.shape)}"


@contextmanager
def building_store(out: Path, overwrite: bool, what: str) -> Iterator[tuple[Path, zarr.Group]]:
    """Yield the hidden folder a store is built in (data_prep.atomic) and its new, empty root group; it
    takes `out`'s name only when complete. A full disk, an unwritable place or a rival writer become one
    StoreError naming `out`."""

    def unwritable(exc: OSError) -> str:
        if exc.errno == errno.ENOSPC:
            return "disk full while writing the store; nothing was kept"
        return f"cannot write the store ({exc.strerror or exc})"

    with ExitStack() as stack:
        if overwrite and (Path(out) / "zarr.json").is_file():  # not under a job that reads it (reading_store)
            stack.enter_context(
                _flock(
                    Path(out) / "zarr.json",
                    fcntl.LOCK_EX,
                    f"{out}: a job is reading this store; replace it once the job has finished",
                )
            )
        tmp = stack.enter_context(
            staged_directory(
                out,
                overwrite=overwrite,
                why_not_ours=why_store_not_ours,
                error=StoreError,
                rival=f"another {what} created it meanwhile; pass --overwrite to replace it",
                unwritable=unwritable,
            )
        )
        yield tmp, zarr.open_group(store=str(tmp), mode="w", zarr_format=3)


@contextmanager
def _flock(path: Path, kind: int, busy: str) -> Iterator[None]:
    """Hold an flock of `kind` on `path` (opened read-only) for the block; StoreError(busy) when another
    process holds a conflicting one."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, kind | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StoreError(busy) from exc
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


@contextmanager
def reading_store(location: str | Path) -> Iterator[None]:
    """While a job reads a local store: a shared lock on its root zarr.json, so that a conversion or a
    generation with --overwrite (which takes it exclusively in building_store) cannot replace the store
    under the job's workers (who would read the new chunks through the old metadata, or none). Jobs share
    it; a URL, or a path that is not a store yet, takes none (open_root then says what is wrong). Held
    by the job's process: it protects against writers on the same machine (or a filesystem whose flock
    spans machines)."""
    root = Path(location) / "zarr.json" if not is_url(location) else None
    if root is None or not root.is_file():
        yield
        return
    with _flock(
        root,
        fcntl.LOCK_SH,
        f"{location}: a conversion is replacing this store right now; run the job again once it has finished",
    ):
        yield


def open_root(location: str | Path) -> zarr.Group:
    """Open a store's root group read-only: a local path, or an fsspec URL (read through zarr's
    FsspecStore; credentials and endpoints come from the backend's usual settings, e.g. AWS_* variables
    or FSSPEC_S3_* for s3fs)."""
    if not is_url(location):
        path = Path(location)
        problem = local_store_problem(path)
        if problem:
            raise StoreError(f"{path}: {problem}")
        location = str(path)
    try:
        return zarr.open_group(store=location, mode="r", zarr_format=3)
    except FileNotFoundError as exc:
        raise StoreError(f"{location}: store not found") from exc
    except ImportError as exc:
        raise StoreError(
            f"{location}: reading this URL needs {exc.name or 'an fsspec backend'} installed"
        ) from exc
    except Exception as exc:
        kind = (
            "store not found"
            if "NotFound" in type(exc).__name__
            else f"not a Zarr v3 group ({type(exc).__name__})"
        )
        raise StoreError(f"{location}: {kind}") from exc


def broken_link_problem(path: Path) -> str | None:
    """Why a symlink at `path` leads nowhere (a dangling link, a loop), or None if it is not one."""
    if not path.is_symlink():
        return None
    try:
        path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (it never reaches a file or folder)"
        return f"is a symlink to {os.readlink(path)}, which does not exist"
    return None


def refuse_broken_link(out: Path) -> None:
    """StoreError when the output path is a symlink that leads nowhere: writing there would follow it or
    replace it, and nothing is downloaded or converted for a path that is a mistake."""
    broken = broken_link_problem(Path(out))
    if broken:
        raise StoreError(f"{out}: {broken}; it was left untouched (give the store's real path)")


def local_store_problem(path: Path) -> str | None:
    """What is wrong with a local path given as a store, in the user's terms, or None when it is a folder
    with a zarr.json at its top (zarr then says whether that is a v3 group)."""
    broken = broken_link_problem(path)
    if broken:
        return broken
    if not path.exists():
        return "store not found"
    if path.is_file():
        if tarfile.is_tarfile(path):
            return "is a tar archive, not a store folder: unpack it and give the folder"
        if zipfile.is_zipfile(path):
            return "is a zip archive, not a store folder: unpack it and give the folder"
        return "is a file, not a Zarr store folder"
    if not path.is_dir():
        return "is not a file or folder (a device or a socket?)"
    if (path / "zarr.json").exists():
        return None
    if (path / ".zgroup").exists() or (path / ".zarray").exists():
        return "is a Zarr v2 store; this job reads Zarr v3 stores (re-create it with python -m data_prep)"
    return "is a folder without a zarr.json at its top: not a Zarr v3 store"


def open_array(root: zarr.Group, location, component: str):
    """root[component], or StoreError naming the array when it is missing or its metadata is damaged."""
    try:
        node = root.get(component)
    except Exception as exc:
        raise StoreError(
            f"{location}/{component}: its zarr.json is damaged or not Zarr v3 metadata ({type(exc).__name__})"
        ) from exc
    if node is None:
        raise StoreError(f"{location}: missing array {component}")
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
            raise StoreError(f"{path}/{split}: {images.shape[0]} images but {labels.shape[0]} labels")
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
    relative = (key[len(prefix) + 1 :] if prefix else key for key in keys)
    return {key for key in relative if _CHUNK_KEY.fullmatch(key)}


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
            reason: str | None = "the chunk file is missing (zarr would read it as zeros)"
        else:
            rows_read = array[start:stop]
            reason = _digest_problem(array, index, rows_read)
            if reason is None:
                return rows_read
    except Exception as exc:  # noqa: BLE001 (bad checksum, truncated zstd frame, wrong size: damage)
        reason = "the chunk file is empty (0 bytes)" if _size(store, full_key) == 0 else _damage_reason(exc)
    raise DamagedChunkError(
        f"{location}/{component}: chunk {index} (rows {start:,}-{stop - 1:,}, file {key}) is damaged: "
        f"{reason}; "
        f"check the whole store with `python -m data_prep verify {location}` and re-create it"
    )


def _size(store, key: str) -> int | None:
    from zarr.core.sync import sync

    try:
        return int(sync(store.getsize(key)))
    except Exception:  # noqa: BLE001 (a store that cannot say: the decoding error is reported as it is)
        return None


def _digest_problem(array, index: int, rows: np.ndarray) -> str | None:
    """Why chunk `index` is not the chunk that was written (its recorded SHA-256 differs), or None. A
    chunk that holds another chunk's rows (moved or swapped files) is named as such."""
    digests = array.attrs.get(DIGEST_ATTR)
    if not digests or index >= len(digests):
        return None  # a store written before digests were recorded: the codecs' CRC32C is all we have
    found = chunk_digest(rows)
    if found == digests[index]:
        return None
    elsewhere = [i for i, digest in enumerate(digests) if digest == found and i != index]
    where = f"; it holds the rows of chunk {elsewhere[0]} (chunk files moved or swapped)" if elsewhere else ""
    return (
        "it decodes, but its rows are not the ones written there (their SHA-256 differs from the one "
        f"recorded when the store was made){where}"
    )


def _damage_reason(exc: Exception) -> str:
    text = str(exc)
    if "checksum" in text.lower():
        return "its CRC32C checksum does not match (the bytes on disk changed)"
    first = text.splitlines()[0][:160] if text else "it does not decode"
    return f"it does not decode ({type(exc).__name__}: {first})"


@dataclass(frozen=True)
class Verification:
    """What `verify_store` found: one line per problem (none: the store is whole), and what was proven."""

    problems: list[str]
    proven: list[str]


def _source_digests(provenance: Mapping) -> dict[str, str]:
    """component -> SHA-256 of the IDX file content it was made from, where the provenance records it: all
    four arrays of a converted store, the test split of a generated one (a copy of MNIST's)."""
    from .registry import SPLITS, STANDARD_STEMS

    if "recipe" in provenance:  # generated: only its test split is a copy of the source's
        splits: tuple[str, ...] = ("test",)
        recorded = dict(provenance["recipe"].get("source_sha256") or {})
    else:
        recorded, splits = (
            {stem: meta.get("sha256") for stem, meta in (provenance.get("files") or {}).items()},
            SPLITS,
        )
    return {
        f"{split}/{kind}": recorded[stem]
        for (split, kind), stem in STANDARD_STEMS.items()
        if split in splits and recorded.get(stem)
    }


def array_in(group: zarr.Group, name: str, location: str) -> zarr.Array:
    """group[name] as an array: a group where an array belongs is damage, said in one line."""
    node = group[name]
    if not isinstance(node, zarr.Array):
        raise StoreError(f"{location}/{name}: a Zarr group where an array was expected")
    return node


def verify_store(path: str | Path, on_progress: Callable[[int, int], None] | None = None) -> Verification:
    """Read every chunk of every array of a dataset store and prove, as far as the store allows, that it
    holds what it was made with.

    The layout is checked first (validate_store); then every chunk is decoded (CRC32C: a flipped byte),
    compared with the SHA-256 recorded for it when the store was written (a chunk that decodes but holds
    other rows: moved, swapped, rewritten) and, for labels, checked to lie in 0-9. Where the provenance
    records the SHA-256 of the IDX file an array was converted from, the array's rows, behind that file's
    header, are hashed in order and compared with it: equality proves the array is exactly the source.
    """
    from .idx import header_bytes

    try:
        validate_store(path)
    except StoreError as exc:
        return Verification([str(exc)], [])
    root = open_root(path)
    sources = _source_digests(dict(root.attrs.get("provenance") or {}))  # type: ignore[arg-type]  # a JSON object
    arrays = [
        (f"{split}/{name}", array_in(root, f"{split}/{name}", str(path)))
        for split in ("train", "test")
        for name in ("images", "labels")
    ]
    total, done, problems, proven = sum(a.cdata_shape[0] for _, a in arrays), 0, [], []
    for component, array in arrays:
        whole = hashlib.sha256(header_bytes(array.dtype, array.shape)) if component in sources else None
        if array.attrs.get(DIGEST_ATTR):
            proven.append(f"{component}: every chunk holds the rows recorded when the store was made")
        for index in range(array.cdata_shape[0]):
            try:
                rows = read_chunk(array, str(path), component, index)
            except DamagedChunkError as exc:
                problems.append(str(exc).split("; check the whole store")[0])
                whole = None
            else:
                if component.endswith("labels") and rows.size and int(rows.max()) >= N_CLASSES:
                    first = int(np.argmax(rows >= N_CLASSES)) + index * int(array.chunks[0])
                    problems.append(
                        f"{path}/{component}: chunk {index} holds label {int(rows.max())} (first at "
                        f"row {first:,}), outside 0-{N_CLASSES - 1}"
                    )
                if whole is not None:
                    whole.update(np.ascontiguousarray(rows).data)
            done += 1
            if on_progress is not None:
                on_progress(done, total)
        if whole is not None:
            if whole.hexdigest() == sources[component]:
                proven.append(
                    f"{component}: identical to the IDX file it was made from (SHA-256 "
                    f"{sources[component][:12]}...)"
                )
            else:
                problems.append(
                    f"{path}/{component}: its rows differ from the IDX file it was made from (SHA-256 "
                    f"{whole.hexdigest()[:12]}..., the provenance records {sources[component][:12]}...)"
                )
    return Verification(problems, proven)


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
    """Before any work: NotOursError unless an existing `out` is a store of ours (or an empty folder)."""
    from .atomic import check_replaceable

    if Path(out).exists() or Path(out).is_symlink():
        check_replaceable(Path(out), why_store_not_ours)


def reuse_if_same(out: Path, same_data: Callable[[Mapping], bool]) -> Path:
    """`out` when it is a complete store of ours whose provenance `same_data` accepts (made from the same
    files, or the same recipe); else a StoreError that says why it cannot be reused and what to do."""
    if why_store_not_ours(out):
        raise StoreError(existing_store_problem(out))
    try:
        validate_store(out)
    except StoreError as exc:
        raise StoreError(f"{exc}; pass --overwrite to replace it") from exc
    if not same_data(store_attrs(out).get("provenance", {})):
        raise StoreError(f"{out}: store exists and holds other data; pass --overwrite to replace it")
    return out


def existing_store_problem(out: Path) -> str:
    """What to tell a user whose existing `out` cannot be reused: --overwrite if it is ours, else
    hands off."""
    reason = why_store_not_ours(Path(out)) if Path(out).exists() else None
    if reason:
        return f"{out}: {reason}; it was left untouched (choose another output path)"
    return "pass --overwrite to replace it"
