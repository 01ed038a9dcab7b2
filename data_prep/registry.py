"""Known datasets: file names, checksums and public mirrors.

The SHA-256 values are of the *decompressed* IDX files (a local copy may be re-gzipped, so its .gz
bytes differ); the MD5 values are of the .gz files exactly as the public mirrors serve them.
May use: nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

SPLITS = ("train", "test")


@dataclass(frozen=True)
class IdxFileSpec:
    """One of the four IDX files of a dataset."""

    split: str  # "train" | "test"
    kind: str  # "images" | "labels"
    stem: str  # file name without .gz, e.g. "train-images-idx3-ubyte"
    sha256: str | None = None  # of the decompressed content
    gz_md5: str | None = None  # of the .gz as published


# Stems shared by MNIST and the datasets that copy its layout (Fashion-MNIST, KMNIST, ...).
STANDARD_STEMS = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}

MNIST_FILES = (
    IdxFileSpec(
        "train",
        "images",
        "train-images-idx3-ubyte",
        sha256="ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        gz_md5="f68b3c2dcbeaaa9fbdd348bbdeb94873",
    ),
    IdxFileSpec(
        "train",
        "labels",
        "train-labels-idx1-ubyte",
        sha256="65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        gz_md5="d53e105ee54ea40749a09fcbcd1e9432",
    ),
    IdxFileSpec(
        "test",
        "images",
        "t10k-images-idx3-ubyte",
        sha256="0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        gz_md5="9fb629c4189551a2d022fa330f9573f3",
    ),
    IdxFileSpec(
        "test",
        "labels",
        "t10k-labels-idx1-ubyte",
        sha256="ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
        gz_md5="ec29112dd5afa0611ce80d1b7f02629c",
    ),
)

MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)

KNOWN_DATASETS = {"mnist": MNIST_FILES}


def files_for(name: str) -> tuple[IdxFileSpec, ...]:
    """The file specs of dataset `name`; unknown names get the standard stems without checksums."""
    known = KNOWN_DATASETS.get(name.lower())
    if known is not None:
        return known
    return tuple(IdxFileSpec(split, kind, stem) for (split, kind), stem in STANDARD_STEMS.items())
