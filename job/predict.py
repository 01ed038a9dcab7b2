"""Assign new images to the clusters of a saved run, and read each cluster as the digit it stands for.

    python -m job.predict RUN_DIR INPUT [INPUT ...] [--labels IDX] [--out predictions.csv]

INPUT: an IDX images file (gzipped or not; its labels file beside it is used when present), a Zarr array
or group (a dataset store's split, e.g. data/mnist.zarr/test, whose labels are used), or PNG files and
folders of them (grey or colour, the model's image size; dark digits on a light background are inverted
to MNIST's light-on-dark). Writes a CSV (row, source, cluster, digit, distance) and prints a summary; with
known labels, the accuracy of the cluster -> digit mapping, which on the MNIST test split reproduces the
held-out accuracy the run reported.
"""

from __future__ import annotations

import argparse
import csv
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.errors import DataPrepError

from .dataset import PIXEL_MAX
from .errors import DataError, JobError
from .kernels import assign

log = logging.getLogger(__name__)
BLOCK = 8192  # images assigned at a time: memory stays flat however many there are


@dataclass(frozen=True)
class Model:
    centers: np.ndarray  # [k, p] float32
    image_shape: tuple[int, int]
    digits: np.ndarray  # cluster -> digit (Hungarian, -1 = none)
    digits_majority: np.ndarray

    @classmethod
    def load(cls, run_dir: Path) -> Model:
        path = Path(run_dir) / "model.npz"
        try:
            with np.load(path) as saved:
                return cls(saved["centers"].astype(np.float32), tuple(int(v) for v in saved["image_shape"]),
                           saved["mapping_hungarian"].astype(np.int64), saved["mapping_majority"].astype(np.int64))
        except FileNotFoundError:
            raise DataError(f"{path}: no saved model (is {run_dir} a finished run folder?)") from None
        except (KeyError, ValueError, OSError) as exc:
            raise DataError(f"{path}: not a model this job wrote ({exc})") from None


@dataclass
class Images:
    """A source of images: blocks of uint8 [b, h, w] with a name per row, and labels where known."""

    blocks: object  # callable () -> iterator of (names, uint8 [b, h, w])
    n: int
    labels: np.ndarray | None
    description: str


def _idx(path: Path, labels_path: Path | None) -> Images:
    from data_prep.idx import read_idx

    try:
        images = read_idx(path)
    except DataPrepError as exc:
        raise DataError(str(exc)) from None
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images [n, h, w], found {images.dtype} {images.shape}")
    if labels_path is None:
        guess = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        labels_path = guess if guess != path and guess.exists() else None
    labels = None
    if labels_path is not None:
        try:
            labels = read_idx(labels_path)
        except DataPrepError as exc:
            raise DataError(str(exc)) from None
        if labels.shape != (len(images),):
            raise DataError(f"{labels_path}: {labels.shape[0]} labels for {len(images)} images in {path.name}")

    def blocks():
        for start in range(0, len(images), BLOCK):
            yield [f"{path.name}[{i}]" for i in range(start, min(start + BLOCK, len(images)))], images[start : start + BLOCK]

    return Images(blocks, len(images), labels, f"{len(images):,} images from {path}"
                  + (f" (labels from {labels_path.name})" if labels_path else ""))


def _zarr(path: Path) -> Images:
    import zarr

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise DataError(f"{path}: not a Zarr array or group ({type(exc).__name__})") from None
    labels = None
    if isinstance(node, zarr.Group):
        if "images" not in node:
            raise DataError(f"{path}: a Zarr group without an 'images' array (give a split, e.g. {path}/test)")
        array = node["images"]
        labels = node["labels"][:] if "labels" in node else None
    else:
        array = node
    if array.ndim != 3 or array.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images [n, h, w], found {array.dtype} {array.shape}")

    def blocks():
        for start in range(0, array.shape[0], BLOCK):
            stop = min(start + BLOCK, array.shape[0])
            yield [f"{path.name}[{i}]" for i in range(start, stop)], array[start:stop]

    return Images(blocks, int(array.shape[0]), labels, f"{array.shape[0]:,} images from {path}")


def _pngs(paths: list[Path], image_shape: tuple[int, int]) -> Images:
    from PIL import Image, UnidentifiedImageError

    files = []
    for path in paths:
        files.extend(sorted(path.glob("*.png")) if path.is_dir() else [path])
    if not files:
        raise DataError(f"no PNG files in {', '.join(map(str, paths))}")
    images = np.empty((len(files), *image_shape), dtype=np.uint8)
    inverted = 0
    for i, file in enumerate(files):
        try:
            with Image.open(file) as img:
                grey = np.asarray(img.convert("L"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: not a readable PNG ({exc})") from None
        if grey.shape != image_shape:
            raise DataError(f"{file}: image is {grey.shape[1]}x{grey.shape[0]}, the model expects "
                            f"{image_shape[1]}x{image_shape[0]}")
        if grey.mean() > 127:  # dark ink on a light background: MNIST is light on dark
            grey, inverted = 255 - grey, inverted + 1
        images[i] = grey

    def blocks():
        for start in range(0, len(files), BLOCK):
            yield [str(f) for f in files[start : start + BLOCK]], images[start : start + BLOCK]

    note = f" ({inverted} inverted: dark on light)" if inverted else ""
    return Images(blocks, len(files), None, f"{len(files):,} PNG images{note}")


def open_images(inputs: list[Path], image_shape: tuple[int, int], labels: Path | None = None) -> Images:
    for path in inputs:
        if not path.exists():
            raise DataError(f"{path}: not found")
    first = inputs[0]
    if all(p.suffix.lower() == ".png" or p.is_dir() and not (p / "zarr.json").exists() for p in inputs):
        return _pngs(inputs, image_shape)
    if len(inputs) > 1:
        raise DataError("give one IDX file or one Zarr array, or any number of PNG files and folders")
    if (first / "zarr.json").exists():
        return _zarr(first)
    return _idx(first, labels)


@dataclass(frozen=True)
class Prediction:
    n: int
    clusters: np.ndarray
    digits: np.ndarray
    labels: np.ndarray | None
    accuracy: float | None
    accuracy_majority: float | None
    out: Path


def predict(run_dir: Path, inputs: list[Path], out: Path | None = None, labels: Path | None = None) -> Prediction:
    """Assign every input image to its nearest center; write the CSV atomically; return the result."""
    model = Model.load(run_dir)
    images = open_images([Path(p) for p in inputs], model.image_shape, labels)
    log.info("%s; model: %d clusters from %s", images.description, len(model.centers), run_dir)
    out = Path(out) if out else Path(run_dir) / "predictions.csv"
    clusters = np.empty(images.n, dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["row", "source", "cluster", "digit", "squared_distance"])
            row = 0
            for names, block in images.blocks():
                if block.shape[1:] != model.image_shape:
                    raise DataError(f"images are {block.shape[1]}x{block.shape[2]}, the model expects "
                                    f"{model.image_shape[0]}x{model.image_shape[1]}")
                X = block.reshape(len(block), -1).astype(np.float32) / np.float32(PIXEL_MAX)
                labels_b, dist = assign(X, model.centers)
                clusters[row : row + len(block)] = labels_b
                for name, c, d in zip(names, labels_b, dist):
                    writer.writerow([row, name, int(c), int(model.digits[c]), f"{d:.6g}"])
                    row += 1
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    digits = model.digits[clusters]
    accuracy = majority = None
    if images.labels is not None:
        accuracy = float((digits == images.labels).mean())
        majority = float((model.digits_majority[clusters] == images.labels).mean())
    return Prediction(images.n, clusters, digits, images.labels, accuracy, majority, out)


def summary(result: Prediction, k: int) -> str:
    counts = np.bincount(result.clusters, minlength=k)
    digit_counts = np.bincount(result.digits[result.digits >= 0], minlength=10)
    lines = [f"{result.n:,} images assigned; predictions in {result.out}",
             "  per cluster: " + " ".join(f"{c}:{n}" for c, n in enumerate(counts)),
             "  per digit:   " + " ".join(f"{d}:{n}" for d, n in enumerate(digit_counts))]
    if result.accuracy is not None:
        lines.append(f"  accuracy against the given labels: {result.accuracy:.4f} (Hungarian mapping), "
                     f"{result.accuracy_majority:.4f} (majority)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from data_prep.cli import run_cli, setup_logging

    p = argparse.ArgumentParser(prog="python -m job.predict", description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run folder (holds model.npz)")
    p.add_argument("inputs", type=Path, nargs="+", help="IDX file, Zarr array/group, or PNG files/folders")
    p.add_argument("--labels", type=Path, default=None, help="IDX labels for an IDX input (default: beside it)")
    p.add_argument("--out", type=Path, default=None, help="CSV to write (default RUN/predictions.csv)")
    p.add_argument("--debug", action="store_true")
    args = p.parse_args(argv)
    setup_logging(args.debug)

    def body():
        result = predict(args.run, args.inputs, args.out, args.labels)
        print(summary(result, len(Model.load(args.run).centers)))

    return run_cli(body, args.debug, (JobError, DataPrepError))


if __name__ == "__main__":
    sys.exit(main())
