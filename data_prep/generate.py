"""A large MNIST-derived dataset, generated chunk by chunk on a Dask cluster straight into the Zarr layout
the job reads (like MNIST8M: row r is training image r mod 60,000 under a random deformation, with its
label; the test split is MNIST's own test set, for held-out accuracy on real digits).

Each chunk is one task that reads its source images from the MNIST store, deforms them
(data_prep.augment) and writes its own chunk of the output: nothing passes through the client, memory
does not grow with n, and the bytes depend only on the seed (never on the number of workers or the
chunking). The store is built under a hidden name and renamed into place when complete.

generate_dataset takes any distributed Client; `python -m job.generate` is the command that starts one
(any cluster kind of job.deploy) and calls it. May use: data_prep only (never job).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import zarr

if TYPE_CHECKING:
    from zarr.core.array_spec import ArrayConfigParams

from . import __version__
from .atomic import store_lock
from .augment import Deformation, deform, deformation_draws
from .digits import DEFAULT_CHUNK_SIZE, N_CLASSES
from .errors import DataPrepError
from .zarr_store import (
    array_in,
    building_store,
    check_store_replaceable,
    chunk_digest,
    create_split,
    default_compressors,
    reading_store,
    record_digests,
    refuse_broken_link,
    reuse_if_same,
    store_attrs,
    validate_store,
)

log = logging.getLogger(__name__)
BATCH = 4096  # images deformed at a time inside a chunk: bounds a task's memory whatever the chunk size
LOCK_WAIT_SECONDS = 600
# zarr skips chunks equal to the fill value; validate_store counts written chunks, so write them all.
WRITE_EVERY_CHUNK: ArrayConfigParams = {"write_empty_chunks": True}


@dataclass(frozen=True)
class GenerateConfig:
    out: Path
    source: Path  # a complete MNIST store (python -m data_prep)
    n: int
    seed: int = 0
    chunk_size: int = DEFAULT_CHUNK_SIZE
    deformation: Deformation = field(default_factory=Deformation)
    zstd_level: int = 5
    overwrite: bool = False

    def __post_init__(self):
        if self.n < 1:
            raise DataPrepError(f"--n must be at least 1, got {self.n}")
        if self.chunk_size < 1:
            raise DataPrepError(f"chunk size must be at least 1, got {self.chunk_size}")
        if self.seed < 0:
            raise DataPrepError(f"--seed must be >= 0, got {self.seed}")

    def recipe(self) -> dict:
        """Everything the bytes depend on (chunk_size only lays them out)."""
        files = store_attrs(self.source).get("provenance", {}).get("files", {})
        return _as_json(
            {
                "n": self.n,
                "seed": self.seed,
                "deformation": self.deformation.to_dict(),
                "source_sha256": {stem: meta.get("sha256") for stem, meta in sorted(files.items())},
            }
        )


def _as_json(value):
    """As it reads back from the store's attributes (tuples become lists), so that recipes compare."""
    return json.loads(json.dumps(value))


def make_chunk(
    out: str, source: str, start: int, stop: int, seed: int, deformation: dict
) -> tuple[np.ndarray, str, str]:
    """Generate rows start..stop-1 into `out` (a task on a worker); return their label counts and the
    SHA-256 of the chunk's images and labels (recorded in the store by the client)."""
    params = Deformation(**{**deformation, "scale_range": tuple(deformation["scale_range"])})
    src = zarr.open_group(store=source, mode="r", zarr_format=3)
    src_images, src_labels = array_in(src, "train/images", source), array_in(src, "train/labels", source)
    n_src, height, width = src_images.shape
    shape = (int(height), int(width))
    dst = zarr.open_group(store=out, mode="r+", zarr_format=3)
    images, labels = array_in(dst, "train/images", out), array_in(dst, "train/labels", out)
    counts = np.zeros(N_CLASSES, dtype=np.int64)
    block = np.empty((stop - start, *shape), dtype=np.uint8)
    rows = np.arange(start, stop) % n_src
    label_block = np.asarray(src_labels.get_orthogonal_selection(rows))
    for lo in range(0, stop - start, BATCH):
        hi = min(lo + BATCH, stop - start)
        originals = np.asarray(src_images.get_orthogonal_selection((rows[lo:hi], slice(None), slice(None))))
        block[lo:hi] = deform(originals, deformation_draws(seed, start + lo, hi - lo, shape), params)
    images[start:stop] = block
    labels[start:stop] = label_block
    counts += np.bincount(label_block, minlength=N_CLASSES)[:N_CLASSES]
    return counts, chunk_digest(block), chunk_digest(label_block)


def generate_dataset(config: GenerateConfig, client) -> Path:
    """Generate the store on `client`'s cluster (its workers must see config.out's folder); return it.

    Idempotent: a complete store of the same recipe is reused as it is.
    """
    refuse_broken_link(Path(config.out))
    out, source = Path(config.out).resolve(), Path(config.source).resolve()
    info = validate_store(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with store_lock(out, "generation", LOCK_WAIT_SECONDS), reading_store(source):
        return _reuse_or_generate(config, out, source, info, client)


def _reuse_or_generate(config: GenerateConfig, out: Path, source: Path, info, client) -> Path:
    if config.overwrite:
        check_store_replaceable(out)
    if out.exists() and not config.overwrite:
        reuse_if_same(out, lambda provenance: provenance.get("recipe") == config.recipe())
        log.info("%s is complete and made with the same recipe: reusing it", out)
        return out
    return _generate_locked(config, out, source, info, client)


def _generate_locked(config: GenerateConfig, out: Path, source: Path, info, client) -> Path:
    from distributed import as_completed

    shape = info["train"].image_shape
    compressors = default_compressors(config.zstd_level)
    started = time.perf_counter()
    with building_store(out, config.overwrite, "generation") as (tmp, root):
        train_images, train_labels = create_split(
            root, "train", config.n, shape, config.chunk_size, compressors, config=WRITE_EVERY_CHUNK
        )
        _copy_test_split(source, root, config.chunk_size, compressors)
        deformation = dataclasses.asdict(config.deformation)
        futures = [
            client.submit(
                make_chunk,
                str(tmp),
                str(source),
                start,
                min(start + config.chunk_size, config.n),
                config.seed,
                deformation,
                key=f"generate_chunk-{start // config.chunk_size}-{tmp.name}",
            )
            for start in range(0, config.n, config.chunk_size)
        ]
        counts, last_report = np.zeros(N_CLASSES, dtype=np.int64), 0.0
        digests, chunk_of = {}, {future.key: i for i, future in enumerate(futures)}
        for done, future in enumerate(as_completed(futures), start=1):
            chunk_counts, image_digest, label_digest = future.result()
            counts += chunk_counts
            digests[chunk_of[future.key]] = (image_digest, label_digest)
            now = time.perf_counter() - started
            if now - last_report >= 5 or done == len(futures):
                rows = min(done * config.chunk_size, config.n)
                eta = now / done * (len(futures) - done)
                log.info(
                    "generated %d/%d chunks (~%s images), %.0f s, about %.0f s left",
                    done,
                    len(futures),
                    f"{rows:,}",
                    now,
                    eta,
                )
                last_report = now
        in_order = [digests[i] for i in range(len(futures))]
        record_digests(train_images, [image for image, _ in in_order])
        record_digests(train_labels, [label for _, label in in_order])
        root.attrs.update({"provenance": _provenance(config, source, counts), "complete": True})
        validate_store(tmp)
    log.info("wrote %s: %s images in %.1f s", out, f"{config.n:,}", time.perf_counter() - started)
    return out


def _copy_test_split(source: Path, root: zarr.Group, chunk_size: int, compressors) -> None:
    src = zarr.open_group(store=str(source), mode="r", zarr_format=3)
    images, labels = (
        np.asarray(array_in(src, f"test/{name}", str(source))[:]) for name in ("images", "labels")
    )
    arrays = create_split(
        root, "test", len(images), images.shape[1:], chunk_size, compressors, config=WRITE_EVERY_CHUNK
    )
    for array, data in zip(arrays, (images, labels)):
        array[:] = data
        record_digests(
            array, [chunk_digest(data[lo : lo + chunk_size]) for lo in range(0, len(data), chunk_size)]
        )


def _provenance(config: GenerateConfig, source: Path, counts: np.ndarray) -> dict:
    return {
        "dataset": "mnist-deformed",
        "generator": (
            "data_prep.generate (row r = train image r mod n_train, randomly deformed; test = MNIST test)"
        ),
        "recipe": config.recipe(),
        "source": str(source),
        "label_counts": [int(c) for c in counts],
        "codec": f"zstd(level={config.zstd_level}) + crc32c",
        "chunk_size": config.chunk_size,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "versions": {"data_prep": __version__, "zarr": zarr.__version__, "numpy": np.__version__},
    }
