"""Turn a dataset's four IDX files into one Zarr v3 store: the library entry point of data_prep.

May use: data_prep's sources, registry, idx, zarr_store, atomic, digits, errors.
"""

from __future__ import annotations

import functools
import logging
import platform
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import zarr

from . import __version__
from .atomic import store_lock
from .digits import DEFAULT_CHUNK_SIZE, N_CLASSES
from .errors import DataPrepError, IdxFormatError
from .idx import IdxReader
from .redact import redact_text
from .registry import MNIST_MIRRORS, SPLITS, files_for
from .sources import DOWNLOAD, SourceFile, download, from_folder
from .zarr_store import (
    building_store,
    check_store_replaceable,
    create_split,
    default_compressors,
    refuse_broken_link,
    reuse_if_same,
    write_split,
)

log = logging.getLogger(__name__)
LOCK_WAIT_SECONDS = 600


@dataclass(frozen=True)
class PrepConfig:
    """What to convert and where.

    source: a folder holding the four IDX files (gzipped or not), or "download".
    """

    out: Path
    source: str = DOWNLOAD
    name: str = "mnist"
    chunk_size: int = DEFAULT_CHUNK_SIZE
    cache_dir: Path | None = None
    mirrors: tuple[str, ...] = field(default=MNIST_MIRRORS)
    overwrite: bool = False
    zstd_level: int = 5

    def __post_init__(self):
        if self.chunk_size < 1:
            raise DataPrepError(f"chunk size must be at least 1, got {self.chunk_size}")


def locate_sources(config: PrepConfig) -> dict[tuple[str, str], SourceFile]:
    specs = files_for(config.name)
    if config.source == DOWNLOAD:
        files = download(specs, cache_dir=config.cache_dir, mirrors=config.mirrors)
    else:
        files = from_folder(config.source, specs)
    return {(f.spec.split, f.spec.kind): f for f in files}


def _log_progress(split: str, n: int, done: int) -> None:
    log.info("%s: %d/%d images", split, done, n)


def _check_headers(files: dict[tuple[str, str], SourceFile]) -> dict[str, tuple[int, tuple[int, ...]]]:
    """Validate the four headers against each other; return (n, image shape) per split."""
    layout = {}
    for split in SPLITS:
        img_file, lab_file = files[(split, "images")].path, files[(split, "labels")].path
        with IdxReader(img_file) as images, IdxReader(lab_file) as labels:
            if images.dtype != np.uint8 or len(images.shape) != 3:
                raise IdxFormatError(
                    f"{img_file}: expected uint8 images [n, h, w], header declares "
                    f"{images.dtype} {images.shape}"
                )
            if labels.dtype != np.uint8 or len(labels.shape) != 1:
                raise IdxFormatError(
                    f"{lab_file}: expected uint8 labels [n], header declares {labels.dtype} {labels.shape}"
                )
            if images.shape[0] != labels.shape[0]:
                raise IdxFormatError(
                    f"{img_file}: {images.shape[0]} images but {lab_file.name} holds {labels.shape[0]} labels"
                )
            if images.shape[0] == 0:
                raise IdxFormatError(f"{img_file}: the dataset is empty (0 images)")
            layout[split] = (images.shape[0], tuple(images.shape[1:]))
    shapes = {shape for _, shape in layout.values()}
    if len(shapes) > 1:
        raise IdxFormatError(f"train and test images differ in size: {sorted(shapes)}")
    return layout


def _checked_labels(blocks, path: Path):
    for block in blocks:
        if block.size and block.max() >= N_CLASSES:
            raise IdxFormatError(f"{path}: label {int(block.max())} is outside 0-{N_CLASSES - 1}")
        yield block


def _provenance(config: PrepConfig, files: dict[tuple[str, str], SourceFile]) -> dict:
    return {
        "dataset": config.name,
        "source": config.source if config.source == DOWNLOAD else str(Path(config.source).resolve()),
        "files": {
            f.spec.stem: {"origin": redact_text(f.origin), "sha256": f.sha256, "verified": f.verified}
            for f in files.values()
        },
        "codec": f"zstd(level={config.zstd_level}) + crc32c",
        "chunk_size": config.chunk_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {
            "data_prep": __version__,
            "zarr": zarr.__version__,
            "numpy": np.__version__,
            "python": platform.python_version(),
        },
    }


def _same_files(files: dict[tuple[str, str], SourceFile]):
    """Whether a store's provenance records these very source files (by SHA-256)."""
    wanted = {f.spec.stem: f.sha256 for f in files.values()}
    return lambda provenance: (
        {stem: meta.get("sha256") for stem, meta in provenance.get("files", {}).items()} == wanted
    )


def prepare_dataset(config: PrepConfig) -> Path:
    """Locate, verify and convert the dataset; return the path of the complete store.

    Idempotent: a complete store made from the same files is reused as it is.
    """
    out = Path(config.out)
    refuse_broken_link(out)
    files = locate_sources(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(out, "conversion", LOCK_WAIT_SECONDS):  # LockTimeout: one line naming the store
        return _convert_locked(config, out, files)


def _convert_locked(config: PrepConfig, out: Path, files) -> Path:
    if out.exists() and not config.overwrite and reuse_if_same(out, _same_files(files)):
        log.info("%s is complete and made from the same files: reusing it", out)
        return out
    if config.overwrite:
        check_store_replaceable(out)
    layout = _check_headers(files)
    compressors = default_compressors(config.zstd_level)
    started = time.perf_counter()
    with building_store(out, config.overwrite, "conversion") as (_, root):
        for split in SPLITS:
            n, image_shape = layout[split]
            img_path, lab_path = files[(split, "images")].path, files[(split, "labels")].path
            with IdxReader(img_path) as images, IdxReader(lab_path) as labels:
                write_split(
                    create_split(root, split, n, image_shape, config.chunk_size, compressors),
                    images.iter_blocks(config.chunk_size),
                    _checked_labels(labels.iter_blocks(config.chunk_size), lab_path),
                    on_progress=functools.partial(_log_progress, split, n),
                )
        root.attrs.update({"provenance": _provenance(config, files), "complete": True})
    log.info("wrote %s in %.1f s", out, time.perf_counter() - started)
    return out
