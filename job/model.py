"""The saved model: a clustering's centers with what reads each cluster as a digit; its one file format.

A run writes model.npz (a sweep, model_kNN.npz per k) with Model.save; job.predict reads it with
Model.load, which names a missing or damaged file in one sentence.

May use: job.errors.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from job.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Model:
    """A fitted clustering as predict uses it: the centers (pixels in [0, 1]), the image shape they are
    flattened from, and each cluster's digit by the one-to-one (Hungarian) and the majority reading."""

    centers: np.ndarray  # [k, p] float32
    image_shape: tuple[int, int]
    digits: np.ndarray  # cluster -> digit (Hungarian, -1 = none)
    digits_majority: np.ndarray

    @property
    def predicted_digits(self) -> np.ndarray:
        """cluster -> the digit predicted for its images: the digit most of its training images are (at
        any k). The one-to-one (Hungarian) mapping is a score of the clustering, not a prediction: at k=10
        on MNIST it reads a cluster of 1s as a 5 (held-out 0.517 against 0.594 by majority)."""
        return self.digits_majority

    def save(self, path: Path) -> Path:
        """Write the model file (an .npz of centers, image_shape, mapping_hungarian, mapping_majority)."""
        np.savez(
            path,
            centers=self.centers.astype(np.float32),
            image_shape=np.asarray(self.image_shape),
            mapping_hungarian=np.asarray(self.digits),
            mapping_majority=np.asarray(self.digits_majority),
        )
        return path

    @classmethod
    def load(cls, source: Path, k: int | None = None) -> Model:
        """The model of a run folder, of one k of a sweep folder (k=None: the best held-out k, else the
        suggested one), or a model file (model.npz, model_kNN.npz)."""
        path = model_file(Path(source), k)
        try:
            with np.load(path) as saved:
                model = cls(
                    saved["centers"].astype(np.float32),
                    tuple(int(v) for v in saved["image_shape"]),  # type: ignore[arg-type]  # checked below
                    saved["mapping_hungarian"].astype(np.int64),
                    saved["mapping_majority"].astype(np.int64),
                )
        except Exception as exc:
            raise DataError(f"{path}: not a model this job wrote ({type(exc).__name__})") from exc
        k, width = model.centers.shape if model.centers.ndim == 2 else (0, -1)
        if len(model.image_shape) != 2 or width != int(np.prod(model.image_shape)):
            raise DataError(
                f"{path}: its centers are {width} values wide but its images are "
                f"{'x'.join(map(str, model.image_shape))} pixels: the model is damaged"
            )
        if (
            model.digits.shape != (k,)
            or model.digits_majority.shape != (k,)
            or not np.isfinite(model.centers).all()
        ):
            raise DataError(
                f"{path}: its cluster-to-digit mappings do not have one entry per center: damaged"
            )
        return model


def model_file(source: Path, k: int | None = None) -> Path:
    """Which saved model `source` names: a file itself; a run folder's model.npz; a sweep folder's
    model_kNN.npz for k, by default the best held-out k (a --split train sweep) or the suggested k.
    DataError, in the user's terms, when it names none."""
    import json

    if not source.is_dir():
        if not source.exists():
            raise DataError(f"{source}: not found (give a run folder, a sweep folder or a model file)")
        return source
    if (source / "model.npz").exists():
        return source / "model.npz"
    saved = {
        int(p.stem[len("model_k") :]): p
        for p in source.glob("model_k*.npz")
        if p.stem[len("model_k") :].isdigit()
    }
    if not saved:
        raise DataError(
            f"{source / 'model.npz'}: no saved model (is {source} a finished run or sweep folder?)"
        )
    if k is None:
        try:
            record = json.loads((source / "sweep.json").read_text())
            k = (record.get("classifier") or {}).get("best_k") or record["suggested_k"]
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"{source}: a sweep folder without a readable sweep.json; choose a model with "
                f"--k ({', '.join(map(str, sorted(saved)))})"
            ) from exc
        log.info(
            "sweep folder: using k=%d (%s); --k chooses another of %s",
            k,
            "its best held-out accuracy" if record.get("classifier") else "its suggested k",
            ", ".join(map(str, sorted(saved))),
        )
    if int(k) not in saved:
        raise DataError(
            f"{source}: no model for k={k} in this sweep; it has k = {', '.join(map(str, sorted(saved)))}"
        )
    return saved[int(k)]
