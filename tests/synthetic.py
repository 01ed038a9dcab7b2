"""Tiny synthetic IDX datasets that tests write themselves."""

from pathlib import Path

import numpy as np

from data_prep.idx import write_idx
from data_prep.registry import STANDARD_STEMS


def synthetic_arrays(n_train=300, n_test=100, shape=(28, 28), seed=0):
    """Small images whose pixels depend on the label, so clusters are well separated."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        images = rng.integers(0, 40, (n, *shape)).astype(np.uint8)
        for i, label in enumerate(labels):
            images[i, label : label + 3, :] = 255
        out[split] = (images, labels)
    return out


def write_dataset(folder: Path, arrays: dict, compress=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for (split, kind), stem in STANDARD_STEMS.items():
        images, labels = arrays[split]
        write_idx(
            folder / (stem + (".gz" if compress else "")), images if kind == "images" else labels, compress
        )
    return folder
