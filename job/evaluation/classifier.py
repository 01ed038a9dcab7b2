"""K-Means as a digit classifier: each cluster read as the majority digit of its training members.

With more clusters than digits, a test image is classified as the majority training digit of its nearest
center. Everything here is a pure function of small numpy arrays (cluster indices of the test images,
their true digits, the cluster -> digit mappings learned on train): the assignment itself runs on the
cluster (job.kmeans.passes.predict_labels).
May use: numpy, data_prep.digits (the classes).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from data_prep.digits import N_CLASSES


@dataclass(frozen=True)
class HeldOut:
    """The test images read as digits through the clusters learned on train (metrics.json's "held_out")."""

    n: int
    accuracy_majority: float
    accuracy_hungarian: float
    per_digit_accuracy: list[float]
    confusion: list[list[int]]
    contingency: list[list[int]]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def held_out_scores(
    clusters: np.ndarray, truth: np.ndarray, k: int, mapping_majority, mapping_hungarian
) -> HeldOut:
    """Scores of the test images' nearest clusters `clusters` [n] against their digits `truth` [n].

    Returns n, accuracy_majority (each cluster read as its majority training digit), accuracy_hungarian
    (the one-to-one mapping; meaningful for k = 10 only, as it leaves all but ten clusters unmapped),
    per_digit_accuracy [10] (majority mapping: the share of each true digit's images read right),
    confusion [10, 10] (true digit x predicted digit, counts; images of a cluster with no training
    members have no prediction and appear in no column), contingency [k, 10] (cluster x true digit).
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    truth = np.asarray(truth, dtype=np.int64)
    majority = np.asarray(mapping_majority, dtype=np.int64)
    hungarian = np.asarray(mapping_hungarian, dtype=np.int64)
    contingency = np.bincount(clusters * N_CLASSES + truth, minlength=k * N_CLASSES).reshape(k, N_CLASSES)
    predicted = majority[clusters]
    known = predicted >= 0
    confusion = np.bincount(
        truth[known] * N_CLASSES + predicted[known], minlength=N_CLASSES * N_CLASSES
    ).reshape(N_CLASSES, N_CLASSES)
    per_digit = np.diag(confusion) / np.maximum(np.bincount(truth, minlength=N_CLASSES), 1)
    return HeldOut(
        n=len(truth),
        accuracy_majority=float((predicted == truth).mean()) if len(truth) else float("nan"),
        accuracy_hungarian=float((hungarian[clusters] == truth).mean()) if len(truth) else float("nan"),
        per_digit_accuracy=[float(v) for v in per_digit],
        confusion=confusion.tolist(),
        contingency=contingency.tolist(),
    )


def most_misclassified(predicted_by_k: dict[int, np.ndarray], truth: np.ndarray, count: int):
    """The test images misclassified for the most values of k: (indices [m], times wrong [m]), m <= count,
    most often wrong first (then by index); only images wrong at least once."""
    truth = np.asarray(truth)
    wrong = np.sum([np.asarray(p) != truth for p in predicted_by_k.values()], axis=0)
    order = np.lexsort((np.arange(len(truth)), -wrong))
    order = order[wrong[order] > 0][:count]
    return order, wrong[order]


@dataclass(frozen=True)
class SweepClassifier:
    """A sweep read as a classifier: the best k (highest held-out accuracy; the smaller k on a tie), its
    scores, and the test images the sweep's values of k misclassify most often (their pixels in `images`,
    for the figure; not recorded in sweep.json)."""

    best_k: int
    held_out_accuracy: float
    n_test: int
    per_digit_accuracy: list[float]
    confusion: list[list[int]]
    most_misclassified: list[dict]  # index, true, predicted (by the best k), times_wrong
    images: np.ndarray | None = None

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "images"}


def sweep_classifier(
    rows: list, predicted_by_k: dict[int, np.ndarray], truth: np.ndarray, shown: int = 32
) -> SweepClassifier:
    """The best k as a classifier from the sweep's rows (each with k, held_out_accuracy, held_out) and the
    test images' predicted digits at each k."""
    best = max(rows, key=lambda r: (r.held_out_accuracy, -r.k))
    index, times_wrong = most_misclassified(predicted_by_k, truth, shown)
    return SweepClassifier(
        best_k=best.k,
        held_out_accuracy=best.held_out_accuracy,
        n_test=len(truth),
        per_digit_accuracy=best.held_out["per_digit_accuracy"],
        confusion=best.held_out["confusion"],
        most_misclassified=[
            {
                "index": int(i),
                "true": int(truth[i]),
                "predicted": int(predicted_by_k[best.k][i]),
                "times_wrong": int(w),
            }
            for i, w in zip(index, times_wrong)
        ],
    )
