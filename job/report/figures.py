"""Figures people look at (matplotlib, Agg backend, PNG). Each function takes small numpy arrays, or a
sweep's per-k scores (rows with attributes k, inertia, silhouette, ...: job.evaluation.choose_k.KScore).

No pyplot: figures are `matplotlib.figure.Figure` objects, so no global state is shared between runs.
May use: data_prep.digits, numpy, matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from data_prep.digits import PIXEL_MAX


def _grid(n: int, max_cols: int = 10) -> tuple[int, int]:
    cols = min(n, max_cols)
    return math.ceil(n / cols), cols


def _save(fig: Figure, path: Path) -> Path:
    # Every figure has layout="constrained", so bbox_inches="tight" would only draw it a second time.
    fig.savefig(path, dpi=100)
    return path


def _digit(d: int) -> str:
    return "-" if d < 0 else str(d)


def plot_centers(centers: np.ndarray, image_shape, digits, sizes, path: Path) -> Path:
    """The k centers as images, each captioned "#cluster→digit" with `digits` the digit most of the
    cluster's images are (its majority digit: at any k what the cluster holds, where the one-to-one
    mapping of the accuracy metric titled a cluster of 1s "5"), and its size. Drawn as one mosaic image
    with a caption per center rather than k axes: at k=256 the axes took 10 s to render (2 cores), the
    mosaic well under a second.
    """
    k = len(centers)
    rows, cols = _grid(k, max_cols=10 if k <= 100 else 16)
    h, w = image_shape
    gap_x, gap_y = max(1, w // 7), h // 2 + 2  # room for two lines of caption above each center
    mosaic = np.full((rows * (h + gap_y), cols * (w + gap_x) - gap_x), np.nan)
    for c in range(k):
        r, q = divmod(c, cols)
        mosaic[r * (h + gap_y) + gap_y : (r + 1) * (h + gap_y), q * (w + gap_x) : q * (w + gap_x) + w] = (
            centers[c].reshape(image_shape)
        )
    # Inches a center, and its caption's points: at k=128 captions of 6 points on 0.9-inch cells were
    # unreadable at page size; 1.2 inches and 8 points up to 256 clusters (16 x 16 of them).
    cell = 1.4 if k <= 100 else 1.2 if k <= 256 else 0.9
    fig = Figure(figsize=(cell * cols, 1.2 * cell * rows + 0.4), layout="constrained")
    fig.suptitle("Cluster centers (#cluster → the digit most of its images are, cluster size)")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, vmin=0, vmax=max(1e-9, float(np.max(centers))), interpolation="nearest")
    ax.axis("off")
    for c in range(k):
        r, q = divmod(c, cols)
        ax.text(
            q * (w + gap_x) + w / 2,
            r * (h + gap_y) + gap_y - 1,
            f"#{c}→{_digit(digits[c])}\nn={sizes[c]:,}",
            ha="center",
            va="bottom",
            fontsize=8 if k <= 256 else 6,
        )
    return _save(fig, path)


# Example rows drawn at most: one row of images per cluster, so at k=1024 two figures of 1,024 rows took
# 23 s each to draw (2 cores, a test run beside) into PNGs 76,880 pixels tall that no one scrolls; 256
# rows took 5 s.
EXAMPLE_CLUSTERS_SHOWN = 256
# Up to this many rows each image is drawn 0.75 inches wide; beyond, 0.4 (41 pixels for 28): a figure of
# 256 rows 19,280 pixels tall took 3.7 s to draw (twice per run), at 0.4 inches 1.9 s.
EXAMPLE_LARGE_CELLS_MAX_ROWS = 64


def plot_examples(
    images: np.ndarray, indices: np.ndarray, digits, title: str, path: Path, sizes=None
) -> Path:
    """One row per cluster of example images ([k, m, h, w]); blank where a cluster has fewer members.
    Above EXAMPLE_CLUSTERS_SHOWN clusters, only that many rows: the largest clusters (by `sizes`, else
    the first ones), in cluster order, the title saying so.

    Drawn as one mosaic image rather than k * m axes: the same picture, ten times faster to render.
    """
    clusters = np.arange(len(indices))
    if len(clusters) > EXAMPLE_CLUSTERS_SHOWN:
        order = np.arange(len(clusters)) if sizes is None else np.argsort(-np.asarray(sizes), kind="stable")
        clusters = np.sort(order[:EXAMPLE_CLUSTERS_SHOWN])
        which = "largest" if sizes is not None else "first"
        title = f"{title} (the {len(clusters)} {which} of {len(indices):,} clusters)"
        images, indices = images[clusters], indices[clusters]
    k, m = indices.shape
    h, w = images.shape[2:]
    gap = max(1, h // 10)
    mosaic = np.full((k * (h + gap) - gap, m * (w + gap) - gap), np.nan)
    for (c, j), index in np.ndenumerate(indices):
        if index >= 0:
            mosaic[c * (h + gap) : c * (h + gap) + h, j * (w + gap) : j * (w + gap) + w] = images[c, j]
    cell = 0.75 if k <= EXAMPLE_LARGE_CELLS_MAX_ROWS else 0.4  # inches an image
    fig = Figure(figsize=(cell * m + 1.2, cell * k + 0.8), layout="constrained")
    ax = fig.add_subplot()
    cmap = matplotlib.colormaps["gray_r"].with_extremes(bad="white")
    ax.imshow(mosaic, cmap=cmap, interpolation="nearest", vmin=0, vmax=PIXEL_MAX)
    ax.set_yticks([r * (h + gap) + h / 2 for r in range(k)], [f"#{c}→{_digit(digits[c])}" for c in clusters])
    ax.set_xticks([])
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title(title)
    return _save(fig, path)


def confusion_order(table: np.ndarray, digits) -> np.ndarray:
    """The clusters in the confusion figure's row order: by the digit each mostly holds, then by how
    much of it (the largest share first), so that the matrix reads along its diagonal."""
    table = np.asarray(table, dtype=float)
    share = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    digits = np.asarray(digits)
    held = share[np.arange(len(digits)), np.clip(digits, 0, table.shape[1] - 1)]
    return np.lexsort((-held, np.where(digits < 0, table.shape[1], digits)))


# With many clusters the confusion figure writes no share in its cells and, past ROW_LABELS_MAX_K, labels
# the bands of clusters per digit instead of each row, on rows ~4 pixels tall: at k=1024 the cells' text
# and a label per row made a PNG 46,000 pixels tall that took 12 s to draw (2 cores), a third of the
# figures' time in a k=1024 run; 2.7 s at k=256. The sizes figure likewise drops a label per bar.
CELL_TEXT_MAX_K = 128
ROW_LABELS_MAX_K = 256


def plot_confusion(table: np.ndarray, digits, path: Path) -> Path:
    """Clusters x digits counts as a heatmap, each row normalised to the cluster's size, the rows in
    the order of the digit each cluster mostly holds (confusion_order): a diagonal to read along."""
    table = np.asarray(table, dtype=float)
    order = confusion_order(table, digits)
    share = (table / np.maximum(table.sum(axis=1, keepdims=True), 1))[order]
    k, n_classes = table.shape
    row_inches = 0.45 if k <= ROW_LABELS_MAX_K else 0.04
    fig = Figure(figsize=(0.6 * n_classes + 2, row_inches * k + 1.5), layout="constrained")
    ax = fig.add_subplot()
    _share_heatmap(fig, ax, share, min_shown=0.05 if k <= CELL_TEXT_MAX_K else np.inf, aspect="auto")
    ax.set_xticks(range(n_classes))
    if k <= ROW_LABELS_MAX_K:
        ax.set_yticks(range(k), [f"#{c}→{_digit(digits[c])}" for c in order])
    else:  # a label per digit, in the middle of its band of rows
        held = np.asarray(digits)[order]
        bands = [(d, np.flatnonzero(held == d)) for d in np.unique(held)]
        ax.set_yticks(
            [rows.mean() for _, rows in bands], [f"→{_digit(d)} ({len(rows)} clusters)" for d, rows in bands]
        )
    ax.set_xlabel("true digit")
    ax.set_ylabel("cluster → the digit it mostly holds")
    ax.set_title("Share of each cluster per true digit")
    return _save(fig, path)


def _share_heatmap(fig: Figure, ax, share: np.ndarray, min_shown: float, aspect: str = "equal") -> None:
    """Shares in [0, 1] as a blue heatmap, each one of at least `min_shown` written in its cell."""
    im = ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect=aspect)
    for (row, col), value in np.ndenumerate(share):
        if value >= min_shown:
            ax.text(
                col,
                row,
                f"{value:.2f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if value > 0.6 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.04)


def plot_sizes(sizes, digits, path: Path) -> Path:
    """A bar per cluster; up to CELL_TEXT_MAX_K clusters in cluster order, each labelled with its number
    and the digit it mostly holds; beyond that grouped and coloured by that digit, the largest first."""
    k = len(sizes)
    if k <= CELL_TEXT_MAX_K:
        fig = Figure(figsize=(max(4, 0.5 * k + 1), 3), layout="constrained")
        ax = fig.add_subplot()
        ax.bar(range(k), sizes, color="steelblue")
        ax.set_xticks(range(k), [f"#{c}\n{_digit(digits[c])}" for c in range(k)], fontsize=8)
        ax.set_title("Cluster sizes (cluster, mapped digit)")
    else:
        fig = Figure(figsize=(16, 4), layout="constrained")
        ax = fig.add_subplot()
        held, sizes = np.asarray(digits), np.asarray(sizes)
        order = np.lexsort((-sizes, np.where(held < 0, 10, held)))  # by digit, the largest first
        palette = matplotlib.colormaps["tab10"]
        for d in np.unique(held):
            at = np.flatnonzero(held[order] == d)
            color = "lightgray" if d < 0 else palette(d % 10)
            ax.bar(at, sizes[order][at], width=1.0, color=color, label=_digit(d))
        ax.set_xlim(-0.5, k - 0.5)
        ax.set_xlabel("clusters, by the digit each mostly holds, the largest first")
        ax.legend(title="mostly digit", ncols=2, fontsize=8, loc="upper right")
        ax.set_title("Cluster sizes, coloured by the digit each cluster mostly holds")
    ax.set_ylabel("images")
    return _save(fig, path)


def _curve_against_k(rows: list, key: str, suggested: int, ylabel: str, title: str, color: str):
    """(figure, axes, ks, values): one score (an attribute of each row) against k, the suggested k circled."""
    ks, values = [r.k for r in rows], [getattr(r, key) for r in rows]
    fig = Figure(figsize=(6, 3.6), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(ks, values, "o-", color=color)
    if suggested in ks:
        ax.scatter(
            [suggested],
            [values[ks.index(suggested)]],
            s=140,
            facecolors="none",
            edgecolors="crimson",
            linewidths=2,
            zorder=3,
            label=f"suggested k={suggested}",
        )
    _k_axis(ax, ks)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    return fig, ax, ks, values


def _k_axis(ax, ks: list[int]) -> None:
    """k on the x axis, every k a tick; a log2 scale when k spans a factor of 8 or more (10..256)."""
    if ks and ks[-1] >= 8 * max(ks[0], 1):
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (log scale)" if ax.get_xscale() == "log" else "k")


def plot_sweep_elbow(rows: list, suggested: int, elbow_k: int | None, path: Path) -> Path:
    """Inertia against k, with the elbow and the suggested k marked."""
    fig, ax, ks, inertia = _curve_against_k(
        rows,
        "inertia",
        suggested,
        "inertia (sum of squared distances)",
        "Elbow: inertia against k",
        "steelblue",
    )
    ax.plot([ks[0], ks[-1]], [inertia[0], inertia[-1]], ":", color="grey", label="first to last k")
    if elbow_k in ks:
        ax.axvline(elbow_k, color="orange", linestyle="--", label=f"elbow k={elbow_k}")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sweep_silhouette(rows: list, suggested: int, path: Path) -> Path:
    fig, ax, _, _ = _curve_against_k(
        rows,
        "silhouette",
        suggested,
        "mean silhouette (sample)",
        "Silhouette against k (higher is better)",
        "seagreen",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_sweep_criteria(rows: list, suggested: int, path: Path) -> Path:
    """ARI and NMI against the digits, Davies-Bouldin and Calinski-Harabasz, each against k."""
    ks = [r.k for r in rows]
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    panels = [
        ("Agreement with the digits", [("ari", "ARI"), ("nmi", "NMI")], "score"),
        ("Davies-Bouldin (lower is better)", [("davies_bouldin", "Davies-Bouldin")], "index"),
        ("Calinski-Harabasz (higher is better)", [("calinski_harabasz", "Calinski-Harabasz")], "index"),
    ]
    for i, (title, series, ylabel) in enumerate(panels):
        ax = fig.add_subplot(1, 3, i + 1)
        for key, label in series:
            ax.plot(ks, [getattr(r, key) for r in rows], "o-", label=label)
        ax.axvline(suggested, color="crimson", alpha=0.4, label=f"suggested k={suggested}")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("k")
        ax.set_ylabel(ylabel)
        ax.set_xticks(ks[:: max(1, len(ks) // 8)])
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_sweep_accuracy(rows: list, best: int, path: Path) -> Path:
    """Held-out accuracy against k (each cluster read as its majority training digit), the in-sample
    accuracy beside it, the best k circled."""
    fig, ax, ks, held_out = _curve_against_k(
        rows,
        "held_out_accuracy",
        best,
        "accuracy",
        "Held-out accuracy against k\n(each cluster read as its majority digit)",
        "crimson",
    )
    ax.lines[0].set_label("held-out (test split)")
    ax.plot(ks, [r.accuracy_majority for r in rows], "s--", color="grey", label="in-sample (train)")
    ax.collections[0].set_label(f"best k={best}: {held_out[ks.index(best)]:.3f}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_per_digit_accuracy(per_digit, k: int, path: Path) -> Path:
    fig = Figure(figsize=(6, 3), layout="constrained")
    ax = fig.add_subplot()
    ax.bar(range(len(per_digit)), per_digit, color="crimson")
    for d, value in enumerate(per_digit):
        ax.text(d, value + 0.01, f"{value:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(per_digit)))
    ax.set_ylim(0, 1.08)
    ax.set_xlabel("true digit")
    ax.set_ylabel("held-out accuracy")
    ax.set_title(f"Per digit, k={k}: the share of each digit's test images read right")
    return _save(fig, path)


def plot_digit_confusion(confusion, k: int, path: Path) -> Path:
    """True digit x predicted digit on the test split, each row as shares of that digit's images."""
    table = np.asarray(confusion, dtype=float)
    share = table / np.maximum(table.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(6.4, 5.2), layout="constrained")
    ax = fig.add_subplot()
    _share_heatmap(fig, ax, share, min_shown=0.01)
    ax.set_xticks(range(table.shape[1]))
    ax.set_yticks(range(table.shape[0]))
    ax.set_xlabel("predicted digit (majority of the nearest cluster)")
    ax.set_ylabel("true digit")
    ax.set_title(f"Test split confusion, k={k}")
    return _save(fig, path)


def plot_misclassified(
    images: np.ndarray, truth, predicted, times_wrong, n_k: int, k: int, path: Path, columns: int = 8
) -> Path:
    """The test images misclassified most often over the sweep's k values: each titled with its true
    digit, what the best k predicts, and for how many of the k values it was wrong."""
    m = len(images)
    rows = max(1, -(-m // columns))
    fig = Figure(figsize=(1.1 * columns, 1.25 * rows + 0.5), layout="constrained")
    for i in range(m):
        ax = fig.add_subplot(rows, columns, i + 1)
        ax.imshow(images[i], cmap="gray_r", vmin=0, vmax=PIXEL_MAX, interpolation="nearest")
        ax.set_title(f"{truth[i]}→{_digit(predicted[i])} ({times_wrong[i]}/{n_k})", fontsize=8)
        ax.axis("off")
    fig.suptitle(
        f"Test images misclassified most often (true→predicted at k={k}, wrong for x of {n_k} k)", fontsize=10
    )
    return _save(fig, path)


# The PCA figure's legend lists each value up to this many (clusters or digits); beyond, none.
LEGEND_MAX_VALUES = 40


def plot_pca(
    points: np.ndarray, clusters: np.ndarray, digits: np.ndarray, path: Path, cluster_digits=None
) -> Path:
    """A 2-D PCA projection of a sample, colored by cluster (left) and by true digit (right), in one
    palette: each cluster in the color of the digit it mostly holds (`cluster_digits`, its majority
    digit), so that the two panels can be read against each other. (With a color per cluster index,
    cluster 6 was digit 6's pink while it held 0s.) Clusters that share a digit share its color."""
    fig = Figure(figsize=(10, 4.6), layout="constrained")
    cmap = matplotlib.colormaps["tab10"]
    if cluster_digits is None:
        cluster_digits = np.arange(int(clusters.max()) + 1)
    cluster_digits = np.asarray(cluster_digits)
    # (values, color index of a value, legend label of a value, title, legend title) per panel
    panels: list[tuple[np.ndarray, Callable[[int], int], Callable[[int], str], str, str]] = [
        (
            clusters,
            lambda c: cluster_digits[c],
            lambda c: f"#{c}→{_digit(cluster_digits[c])}",
            "colored by the digit each cluster mostly holds",
            "cluster",
        ),
        (digits, lambda d: d, str, "colored by true digit", "digit"),
    ]
    for i, (values, color_of, label_of, title, legend) in enumerate(panels):
        ax = fig.add_subplot(1, 2, i + 1)
        shown = np.unique(values)
        digit_of = {int(v): int(color_of(int(v))) for v in shown}
        color = {v: cmap(d % cmap.N) if d >= 0 else "grey" for v, d in digit_of.items()}
        if len(shown) <= LEGEND_MAX_VALUES:  # a scatter per value, each its legend entry
            for v in shown:
                sel = values == v
                ax.scatter(
                    points[sel, 0],
                    points[sel, 1],
                    s=3,
                    alpha=0.5,
                    color=color[int(v)],
                    label=label_of(int(v)),
                )
        else:  # no legend: one scatter of every point in its color (a scatter per cluster at k=1024: 2 s)
            ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.5, color=[color[int(v)] for v in values])
        ax.set_title(f"PCA of {len(points):,} sampled images,\n{title}", fontsize=10)
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        # Outside the axes: loc="best" makes matplotlib test every one of the 10,000 points for overlap;
        # with it and a second draw (bbox_inches="tight") this figure took 1.5 s, now 0.5 s.
        if len(shown) <= LEGEND_MAX_VALUES:
            ax.legend(
                markerscale=4,
                fontsize=7,
                ncol=1 if len(shown) <= 10 else 2,
                loc="upper left",
                bbox_to_anchor=(1.0, 1.0),
                title=legend,
            )
    return _save(fig, path)


def plot_sweep_classifier(rows: list, as_classifier, n_k: int, out: Path) -> None:
    """The sweep as a classifier (job.evaluation.classifier.SweepClassifier): the accuracy curve, the best
    k's per-digit accuracy and confusion, and the test images misclassified most often."""
    best = as_classifier.best_k
    plot_sweep_accuracy(rows, best, out / "accuracy.png")
    plot_per_digit_accuracy(as_classifier.per_digit_accuracy, best, out / "per_digit.png")
    plot_digit_confusion(as_classifier.confusion, best, out / "confusion_test.png")
    shown = as_classifier.most_misclassified
    if shown:
        plot_misclassified(
            as_classifier.images,
            [m["true"] for m in shown],
            [m["predicted"] for m in shown],
            [m["times_wrong"] for m in shown],
            n_k,
            best,
            out / "misclassified.png",
        )
