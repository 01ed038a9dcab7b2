"""A sweep's scores of each k (KScore, a row of sweep.json), and a k suggested from the internal criteria
alone (no digit labels): silhouette, Davies-Bouldin and the elbow of the inertia curve vote.

May use: numpy only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KScore:
    """One k of a sweep, as sweep.json records it (inertia in [0, 1] pixel units); held_out_accuracy and
    held_out only when the sweep also reads the test split (--split train)."""

    k: int
    inertia: float
    n_iter: int
    silhouette: float
    ari: float
    nmi: float
    accuracy_hungarian: float
    accuracy_majority: float
    calinski_harabasz: float
    davies_bouldin: float
    fit_seconds: float
    starts: list[dict]  # {"seed", "inertia"} of each start of the fit
    cluster_sizes: list[int]
    mapping_hungarian: list[int]
    mapping_majority: list[int]
    held_out_accuracy: float | None = None
    held_out: dict | None = (
        None  # n, accuracy_majority, per_digit_accuracy, confusion (+ accuracy_hungarian at k=10)
    )

    def to_dict(self) -> dict:
        row = dataclasses.asdict(self)
        return {
            key: value
            for key, value in row.items()
            if not (key in ("held_out_accuracy", "held_out") and value is None)
        }


def elbow(ks: list[int], inertias: list[float]) -> int:
    """The k farthest below the straight line from the first to the last point of the inertia curve,
    both axes scaled to [0, 1] (the "kneedle" rule)."""
    if len(ks) < 3:
        return ks[0]
    x = (np.asarray(ks, float) - ks[0]) / (ks[-1] - ks[0])
    y = np.asarray(inertias, float)
    y = (y - y.min()) / (y.max() - y.min()) if y.max() > y.min() else np.zeros_like(y)
    line = y[0] + (y[-1] - y[0]) * x
    return int(ks[int(np.argmax(line - y))])


@dataclass(frozen=True)
class Suggestion:
    k: int
    reason: str
    votes: dict[str, int]


def suggest_k(
    ks: list[int], inertia: list[float], silhouette: list[float], davies_bouldin: list[float]
) -> Suggestion:
    """The internal criteria vote: the highest silhouette, the lowest Davies-Bouldin, the elbow of the
    inertia curve (each list by k, in the order of `ks`). The k with most votes wins; on a tie, the
    silhouette's choice. With fewer than three values of k a curve has no elbow, so that criterion
    abstains (it would always vote for the first k). NaN scores (a skipped silhouette) never win."""
    index = range(len(ks))
    votes = {
        "silhouette (highest)": ks[max(index, key=lambda i: np.nan_to_num(silhouette[i], nan=-2))],
        "Davies-Bouldin (lowest)": ks[min(index, key=lambda i: np.nan_to_num(davies_bouldin[i], nan=np.inf))],
    }
    if len(ks) >= 3:
        votes["elbow of inertia"] = elbow(ks, inertia)
    tally = {k: list(votes.values()).count(k) for k in set(votes.values())}
    best = max(tally.values())
    winners = [k for k, n in tally.items() if n == best]
    k = votes["silhouette (highest)"] if len(winners) > 1 else winners[0]
    picked = ", ".join(f"{name}: k={value}" for name, value in votes.items())
    if len(ks) < 3:
        picked += "; the elbow abstains with fewer than 3 values of k"
    agree = (
        f"{tally[k]} of {len(votes)} criteria agree"
        if tally[k] > 1
        else "no two criteria agree; the silhouette decides"
    )
    return Suggestion(k, f"{agree} ({picked})", votes)
