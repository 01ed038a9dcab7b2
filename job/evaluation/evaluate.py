"""Score a clustering in one pass over X: the typed Evaluation that metrics.json, the figures and the
report read, the labels, the example images' indices and the silhouette's sample.

May use: job.engine, job.evaluation.{scoring, metrics, examples}.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field

import dask.array as da
import numpy as np

from job.evaluation import examples, scoring
from job.evaluation.metrics import label_metrics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    """Everything known of one clustering of X against the true digits (metrics.json's "evaluation")."""

    ari: float
    nmi: float
    homogeneity: float
    completeness: float
    v_measure: float
    accuracy_majority: float
    accuracy_hungarian: float
    mapping_majority: list[int]  # the digit each cluster reads as (its most frequent one)
    mapping_hungarian: list[int]  # the one-to-one assignment; -1 for clusters beyond the ten digits
    cluster_sizes: list[int]
    contingency: list[list[int]]  # [k, 10]: cluster x true digit
    calinski_harabasz: float
    davies_bouldin: float
    silhouette_sample: int
    silhouette: float = float("nan")  # filled in once the sample's score arrives (with_silhouette)

    def with_silhouette(self, value: float) -> Evaluation:
        return dataclasses.replace(self, silhouette=float(value))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Sample:
    """The silhouette's seeded sample: its rows (X's units), cluster labels and true digits."""

    rows: np.ndarray
    labels: np.ndarray
    truth: np.ndarray


@dataclass(frozen=True)
class EvaluationPass:
    """What evaluate_at returns: the labels (int32 [n], persisted on the workers), the Evaluation (its
    silhouette still to come: evaluation.metrics.start_silhouette on `sample`, so that it can overlap other
    work), and the closest and random example indices [k, m]."""

    labels: da.Array
    evaluation: Evaluation
    closest: np.ndarray
    random: np.ndarray
    sample: Sample = field(repr=False)


def evaluate_at(
    X: da.Array,
    truth: da.Array,
    centers: np.ndarray,
    counts: np.ndarray,
    sums: np.ndarray,
    sample_index: np.ndarray,
    examples_per_cluster: int,
    seed: int,
    labels: da.Array | None = None,
) -> EvaluationPass:
    """Score the clustering of X at `centers` (X's units) in one pass over X (job.evaluation.scoring);
    counts [k] and sums [k, p] are the fit's per-cluster counts and coordinate sums at those centers;
    labels, the fit's labels when its last pass kept them (then no distance is computed again)."""
    counts, sums = np.asarray(counts), np.asarray(sums, dtype=np.float64)
    means = sums / np.maximum(counts, 1)[:, None]
    started = time.perf_counter()
    labels, totals = scoring.score_pass(
        X,
        truth,
        centers,
        means,
        examples_per_cluster=examples_per_cluster,
        seed=seed,
        sample_index=sample_index,
        labels=labels,
    )
    evaluation = Evaluation(
        **label_metrics(totals.contingency),
        contingency=totals.contingency.tolist(),
        calinski_harabasz=float(scoring.calinski_harabasz(counts, sums, totals.sq_total)[0]),
        davies_bouldin=scoring.davies_bouldin(counts, means, totals.spread),
        silhouette_sample=len(sample_index),
    )
    log.info(
        "evaluation pass (labels, contingency, Calinski-Harabasz %.1f, Davies-Bouldin %.3f, examples, the "
        "silhouette's %s rows) in %.2f s",
        evaluation.calinski_harabasz,
        evaluation.davies_bouldin,
        f"{len(sample_index):,}",
        time.perf_counter() - started,
    )
    sample = Sample(totals.sample_rows, totals.sample_labels, totals.sample_truth)
    return EvaluationPass(
        labels, evaluation, examples.indices(totals.closest), examples.indices(totals.random), sample
    )
