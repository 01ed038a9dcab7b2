"""Assign new images to the clusters of a saved run, and read each cluster as the digit it stands for.

    python -m job.predict RUN_DIR|SWEEP_DIR|MODEL.npz INPUT [INPUT ...] [--k K] [--labels IDX] [--out CSV]

The model: a run folder's model.npz, one k of a sweep folder (--k; by default its best held-out k, else
its suggested k), or a model file itself. Each cluster is read as the digit most of its training images
are (its majority digit), at any k.

INPUT: an IDX images file (gzipped or not; its labels file beside it is used when present), a Zarr array
or group (a dataset store's split, e.g. data/mnist.zarr/test, whose labels are used), or PNG files and
folders of them (any size, grey, colour or transparent: each prepared as MNIST's digits were, by
data_prep.digit_images; dark digits on a light background are inverted to MNIST's light-on-dark; a file
that cannot be read is one warning line, the others are still assigned). Writes a CSV (row, source,
cluster, digit, distance) and prints a summary; with known labels, the accuracy of that reading, which
on the MNIST test split reproduces the held-out accuracy the run reported.
May use: job.model (the saved model), job.dataset (the feature scaling), job.engine.kernels (assignment),
data_prep (readers, atomic writes).
"""

from __future__ import annotations

import csv
import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data_prep.atomic import check_replaceable, durable_replace
from data_prep.digits import N_CLASSES
from job.errors import DataError
from job.model import Model

log = logging.getLogger(__name__)
BLOCK = 8192  # images assigned at a time: memory stays flat however many there are


@dataclass
class Images:
    """A source of images: blocks of uint8 [b, h, w] with a name per row, and labels where known.

    Every kind is read block by block (BLOCK images at a time): memory stays flat however many there are.
    """

    blocks: Callable[[], Iterator[tuple[list[str], np.ndarray]]]  # () -> (names, uint8 [b, h, w]) each
    n: int
    labels: np.ndarray | None  # uint8 [n]: one byte per image, small next to the images
    description: str


def _idx(path: Path, labels_path: Path | None) -> Images:
    from data_prep.idx import IdxReader, read_idx

    with IdxReader(path) as reader:  # a damaged file is data_prep's one-line IdxFormatError
        shape, dtype = reader.shape, reader.dtype
    if len(shape) != 3 or dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images [n, h, w], found {dtype} {shape}")
    n = shape[0]
    if labels_path is None:
        guess = path.with_name(path.name.replace("images-idx3", "labels-idx1"))
        labels_path = guess if guess != path and guess.exists() else None
    labels = None
    if labels_path is not None:
        labels = read_idx(labels_path)
        if labels.shape != (n,):
            raise DataError(f"{labels_path}: {labels.shape[0]} labels for {n} images in {path.name}")

    def blocks():
        with IdxReader(path) as reader:
            start = 0
            for block in reader.iter_blocks(BLOCK):
                yield [f"{path.name}[{i}]" for i in range(start, start + len(block))], block
                start += len(block)

    return Images(
        blocks,
        n,
        labels,
        f"{n:,} images from {path}" + (f" (labels from {labels_path.name})" if labels_path else ""),
    )


def _zarr(path: Path) -> Images:
    import zarr

    from data_prep.zarr_store import array_in, read_chunk

    try:
        node = zarr.open(store=str(path), mode="r")
    except Exception as exc:
        raise DataError(f"{path}: not a Zarr array or group ({type(exc).__name__})") from exc
    labels = None
    if isinstance(node, zarr.Group):
        if "images" not in node:
            raise DataError(
                f"{path}: a Zarr group without an 'images' array (give a split, e.g. {path}/test)"
            )
        array, name = array_in(node, "images", str(path)), "images"
    else:
        array, name = node, ""
    if array.ndim != 3 or array.dtype != np.uint8:
        raise DataError(f"{path}: expected uint8 images [n, h, w], found {array.dtype} {array.shape}")
    n = int(array.shape[0])

    def chunks(arr, component):
        for index in range(arr.cdata_shape[0]):
            yield read_chunk(arr, str(path), component, index)

    if isinstance(node, zarr.Group) and "labels" in node:
        stored = array_in(node, "labels", str(path))
        if stored.ndim != 1 or stored.shape[0] != n:
            raise DataError(f"{path}/labels: {stored.shape} labels for the {n:,} images of {path}/images")
        labels = np.concatenate(list(chunks(stored, "labels")))
        if labels.size and labels.max() > 9:
            raise DataError(f"{path}/labels: label {int(labels.max())} is outside 0-9")

    def blocks():
        start = 0
        for chunk in chunks(array, name):
            for lo in range(0, len(chunk), BLOCK):
                block = chunk[lo : lo + BLOCK]
                yield [f"{path.name}[{i}]" for i in range(start, start + len(block))], block
                start += len(block)

    return Images(blocks, n, labels, f"{n:,} images from {path}")


def _pngs(paths: list[Path], image_shape: tuple[int, int]) -> Images:
    """PNG files (and folders of them), each prepared into the model's format as MNIST was made
    (data_prep.digit_images: any size, colour or transparency). A file that cannot be read or holds no
    digit is one warning line and is left out; the others are assigned. If none can be, the error."""
    from PIL import Image, UnidentifiedImageError

    from data_prep.digit_images import BlankImageError, to_mnist_format

    files = []
    for path in paths:
        files.extend(sorted(path.glob("*.png")) if path.is_dir() else [path])
    if not files:
        raise DataError(f"no PNG files in {', '.join(map(str, paths))}")
    counts = {"inverted": 0, "skipped": 0}

    def load(file: Path) -> np.ndarray:
        try:
            with warnings.catch_warnings():  # PIL only warns between its limit and twice that
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(file) as img:  # reads the header: pixels are decoded by to_mnist_format
                    pixels, inverted = to_mnist_format(img, image_shape)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            declared = re.search(r"\((\d+) pixels\)", str(exc))
            raise DataError(
                f"{file}: declares {int(declared[1]) if declared else 'more'} pixels, more than the "
                f"{Image.MAX_IMAGE_PIXELS:,} an image may have here (a decompression bomb?); it was not "
                "decoded"
            ) from exc
        except (UnidentifiedImageError, OSError) as exc:
            raise DataError(f"{file}: not a readable PNG ({exc})") from exc
        except BlankImageError as exc:
            raise DataError(f"{file}: {exc}") from exc
        counts["inverted"] += inverted
        return pixels

    def blocks():
        for start in range(0, len(files), BLOCK):
            names, rows = [], []
            for file in files[start : start + BLOCK]:
                try:
                    rows.append(load(file))
                except DataError as exc:
                    if len(files) == 1:
                        raise
                    counts["skipped"] += 1
                    log.warning("skipped %s", exc)
                    continue
                names.append(str(file))
            if rows:
                yield names, np.stack(rows)
        if counts["skipped"] == len(files):
            raise DataError(f"none of the {len(files):,} PNG files could be read (each one named above)")
        if counts["inverted"]:
            log.info(
                "%d PNG images: %d inverted (dark digits on a light background)",
                len(files),
                counts["inverted"],
            )
        if counts["skipped"]:
            log.warning(
                "%d of %d PNG files skipped (named above); the others were assigned",
                counts["skipped"],
                len(files),
            )

    return Images(blocks, len(files), None, f"{len(files):,} PNG images")


def open_images(inputs: list[Path], image_shape: tuple[int, int], labels: Path | None = None) -> Images:
    for path in inputs:
        if not path.exists():
            raise DataError(f"{path}: not found")
    first = inputs[0]
    if all(p.suffix.lower() == ".png" or (p.is_dir() and not (p / "zarr.json").exists()) for p in inputs):
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
    k: int  # the model's clusters


CSV_HEADER = ["row", "source", "cluster", "digit", "squared_distance"]


def _why_not_predictions(path: Path) -> str | None:
    """None when `path` is a predictions CSV this command wrote (its header is ours), else why not."""
    try:
        with open(path, newline="") as f:
            first = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        first = None
    return None if first == CSV_HEADER else "exists and is not a predictions file written by job.predict"


def _check_output(out: Path) -> None:
    """An existing output file is replaced only if it is a predictions CSV of ours."""
    if out.is_dir() and not out.is_symlink():
        raise DataError(f"{out}: is a folder; give the CSV file to write (e.g. {out / 'predictions.csv'})")
    if out.exists() or out.is_symlink():
        check_replaceable(out, _why_not_predictions)


def _write_predictions(out: Path, images: Images, model: Model) -> np.ndarray:
    """Assign every image block by block into a temporary CSV renamed over `out` when complete (removed
    on any error); return each image's cluster."""
    # Here, not at the top: they bring dask and numba, and --help (or a mistyped flag) should not wait.
    from job.dataset import to_features
    from job.engine.kernels import assign

    clusters = np.empty(images.n, dtype=np.int64)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(CSV_HEADER)
            row = 0
            for names, block in images.blocks():
                if block.shape[1:] != model.image_shape:
                    raise DataError(
                        f"images are {block.shape[1]}x{block.shape[2]}, the model expects "
                        f"{model.image_shape[0]}x{model.image_shape[1]}"
                    )
                X = to_features(block)
                labels_b, dist = assign(X, model.centers)
                clusters[row : row + len(block)] = labels_b
                for name, c, d in zip(names, labels_b, dist):
                    writer.writerow([row, name, int(c), int(model.predicted_digits[c]), f"{d:.6g}"])
                    row += 1
        _check_output(out)  # again: the file may have appeared while we worked
        durable_replace(Path(tmp), out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return clusters[:row]  # fewer than images.n when unreadable PNG files were left out


def predict(
    run_dir: Path,
    inputs: list[Path],
    out: Path | None = None,
    labels: Path | None = None,
    k: int | None = None,
) -> Prediction:
    """Assign every input image to its nearest center; write the CSV atomically; return the result.
    run_dir: a run folder, a sweep folder (k: which of its models; default the best held-out k) or a
    model file."""
    model = Model.load(run_dir, k)
    images = open_images([Path(p) for p in inputs], model.image_shape, labels)
    log.info("%s; model: %d clusters from %s", images.description, len(model.centers), run_dir)
    folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
    out = Path(out) if out else folder / "predictions.csv"
    _check_output(out)
    try:
        clusters = _write_predictions(out, images, model)
    except OSError as exc:  # a full disk, a read-only or vanished folder: nothing half-written is left
        raise DataError(
            f"{out}: cannot write the predictions ({exc.strerror or exc}); nothing was kept"
        ) from exc
    digits = model.predicted_digits[clusters]
    accuracy = majority = None
    if images.labels is not None:
        accuracy = float((model.digits[clusters] == images.labels).mean())
        majority = float((model.digits_majority[clusters] == images.labels).mean())
    return Prediction(
        len(clusters), clusters, digits, images.labels, accuracy, majority, out, len(model.centers)
    )


def summary_text(result: Prediction) -> str:
    counts = np.bincount(result.clusters, minlength=result.k)
    digit_counts = np.bincount(result.digits[result.digits >= 0], minlength=N_CLASSES)
    lines = [
        f"{result.n:,} images assigned; predictions in {result.out}",
        "  per cluster: " + " ".join(f"{c}:{n}" for c, n in enumerate(counts)),
        "  per digit:   " + " ".join(f"{d}:{n}" for d, n in enumerate(digit_counts)),
    ]
    if result.accuracy is not None:
        lines.append(
            f"  accuracy against the given labels: {result.accuracy_majority:.4f} (each cluster read as "
            f"its majority training digit; {result.accuracy:.4f} by the one-to-one mapping)"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from data_prep.cli import SuggestingParser, run_cli, setup_logging

    p = SuggestingParser("python -m job.predict", __doc__.splitlines()[0])
    p.add_argument(
        "run",
        type=Path,
        help="a run folder (model.npz), a sweep folder (model_kNN.npz: see --k) or a model file",
    )
    p.add_argument("inputs", type=Path, nargs="+", help="IDX file, Zarr array/group, or PNG files/folders")
    p.add_argument("--labels", type=Path, help="IDX labels for an IDX input (default: beside it)")
    p.add_argument(
        "--k",
        type=int,
        help="a sweep folder's model to use (default: its best held-out k, else its suggested k)",
    )
    p.add_argument("--out", type=Path, help="CSV to write (default: RUN/predictions.csv)")
    args = p.parse_args(argv)
    setup_logging(args.debug)

    def body():
        result = predict(args.run, args.inputs, args.out, args.labels, args.k)
        print(summary_text(result))

    return run_cli(body, args.debug)


if __name__ == "__main__":
    sys.exit(main())
