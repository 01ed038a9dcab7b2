"""The figures: real PNGs of the expected layout, blank where a cluster has no example."""

import matplotlib
import numpy as np
from matplotlib.image import imread

from job.report import figures as plots


def test_the_centers_figure_draws_each_center_in_its_place(tmp_path):
    """Four centers in a row: the first and third black (all ones), the others a small black square in
    a white field. Left to right, the figure's dark columns follow them: two wide, two narrow."""
    centers = np.zeros((4, 28, 28))
    centers[[0, 2]] = 1.0
    centers[[1, 3], 10:18, 10:18] = 1.0
    path = plots.plot_centers(
        centers.reshape(4, 784), (28, 28), [3, 1, -1, 7], [5, 6, 7, 8], tmp_path / "c.png"
    )
    image = imread(path)[..., :3].mean(axis=2)
    dark = image < 0.2
    per_row = dark.sum(axis=1)
    rows = np.flatnonzero(per_row > 0.6 * per_row.max())  # rows crossing all four centers, not the captions
    columns = dark[rows].any(axis=0)
    runs = np.diff(np.flatnonzero(np.diff(np.r_[0, columns.astype(int), 0])).reshape(-1, 2), axis=1).ravel()
    assert len(runs) == 4, runs  # four centers, left to right (captions are above them, not in these rows)
    wide, narrow = runs[[0, 2]], runs[[1, 3]]
    assert (narrow / wide).max() < 0.4 and (narrow / wide).min() > 0.2, runs  # 8 of 28 pixels wide: 0.29


def test_every_figure_is_written(tmp_path):
    rng = np.random.default_rng(0)
    k = 4
    centers = rng.random((k, 784))
    table = rng.integers(0, 50, (k, 10))
    digits = [3, 1, -1, 7]
    for path in (
        plots.plot_centers(centers, (28, 28), digits, [5, 6, 7, 8], tmp_path / "c.png"),
        plots.plot_confusion(table, digits, tmp_path / "m.png"),
        plots.plot_sizes([5, 6, 7, 8], digits, tmp_path / "s.png"),
    ):
        image = imread(path)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
        assert image[..., :3].std() > 0.05  # not a blank canvas


def test_examples_mosaic_leaves_missing_examples_white(tmp_path):
    images = np.full((2, 3, 28, 28), 255, dtype=np.uint8)  # all black digits (gray_r: 255 is black)
    indices = np.array([[0, 1, 2], [3, -1, -1]])
    image = imread(plots.plot_examples(images, indices, [0, 1], "t", tmp_path / "e.png"))[..., :3]
    dark = (image.mean(axis=2) < 0.2).sum(axis=1)
    rows = np.flatnonzero(dark > 0.1 * image.shape[1])  # rows crossing a black square, not the title's text
    # The first row of the mosaic has three black squares, the second only one: the dark area of the
    # lower half is about a third of the upper half's.
    middle = (rows.min() + rows.max()) // 2
    upper, lower = dark[rows[rows < middle]].sum(), dark[rows[rows >= middle]].sum()
    assert 0.25 < lower / upper < 0.45


def test_with_many_clusters_the_examples_show_the_largest(tmp_path):
    """300 clusters: 256 rows (EXAMPLE_CLUSTERS_SHOWN), those of the largest clusters. The 44 smallest
    clusters' examples are black, the others white, so a black pixel in the picture is a small cluster."""
    k, shown = 300, plots.EXAMPLE_CLUSTERS_SHOWN
    images = np.zeros((k, 2, 28, 28), dtype=np.uint8)
    sizes = np.arange(k) + 1
    sizes[[5, 17]] = 10_000  # two large clusters among the first: drawn
    small = np.argsort(-sizes, kind="stable")[shown:]
    images[small] = 255
    indices = np.arange(2 * k).reshape(k, 2)
    digits = list(np.arange(k) % 10)
    largest = imread(plots.plot_examples(images, indices, digits, "t", tmp_path / "l.png", sizes=sizes))
    first = imread(plots.plot_examples(images, indices, digits, "t", tmp_path / "f.png"))
    white = np.zeros_like(images[:shown])
    text_only = imread(plots.plot_examples(white, indices[:shown], digits, "t", tmp_path / "w.png"))
    assert largest.shape == first.shape == text_only.shape  # 256 rows each
    # past EXAMPLE_LARGE_CELLS_MAX_ROWS rows, images of 0.4 inches (at 0.75, 19,280 pixels and 3.7 s to draw)
    assert largest.shape[0] < 0.5 * 100 * shown
    dark = lambda image: int((image[..., :3].mean(axis=2) < 0.2).sum())  # noqa: E731
    assert dark(first) > dark(text_only) + 100_000  # the first 256 clusters include the small ones
    assert dark(largest) < dark(text_only) * 1.1  # the largest do not: only the labels' text is dark


def test_the_confusion_rows_follow_the_digits_the_clusters_hold():
    """Rows in the order of each cluster's majority digit (the largest share first among clusters of one
    digit): the matrix reads along a diagonal, not in cluster-number order."""
    table = np.array([[0, 0, 9, 1], [8, 2, 0, 0], [0, 7, 1, 0], [0, 1, 5, 0], [1, 0, 0, 3]])
    digits = [2, 0, 1, 2, 3]
    order = plots.confusion_order(table, digits)
    assert list(order) == [1, 2, 0, 3, 4]  # digit 0, 1, then the two 2s (0.9 before 0.83), then 3


def test_pca_colors_each_cluster_as_the_digit_it_mostly_holds(tmp_path):
    """Cluster 6 holding 0s is drawn in digit 0's color on both panels (not digit 6's)."""
    points = np.array([[0.0, 0.0]] * 50 + [[10.0, 10.0]] * 50)
    clusters = np.array([6] * 50 + [2] * 50)
    truth = np.array([0] * 50 + [2] * 50)
    image = imread(
        plots.plot_pca(
            points, clusters, truth, tmp_path / "p.png", cluster_digits=[2, 1, 2, 3, 4, 5, 0, 7, 8, 9]
        )
    )[..., :3]
    zero = np.array(matplotlib.colormaps["tab10"](0)[:3])
    six = np.array(matplotlib.colormaps["tab10"](6)[:3])
    left = image[:, : image.shape[1] // 2].reshape(-1, 3)
    near = lambda color: (np.abs(left - color).max(axis=1) < 0.08).sum()  # noqa: E731
    assert near(zero) > 20 and near(six) == 0


def test_pca_with_more_clusters_than_a_legend_holds_keeps_each_clusters_digit_color(tmp_path):
    """Past LEGEND_MAX_VALUES clusters the points are one scatter: still each in the color of the digit
    its cluster mostly holds (clusters 0-49 hold 6s, 50-99 hold 0s; no cluster's own index colors it)."""
    k = 100
    assert k > plots.LEGEND_MAX_VALUES
    clusters = np.arange(1000) % k
    points = np.where(clusters[:, None] < 50, 10.0, 0.0) + np.random.default_rng(0).normal(size=(1000, 2))
    truth = np.where(clusters < 50, 6, 0)
    cluster_digits = np.where(np.arange(k) < 50, 6, 0)
    image = imread(plots.plot_pca(points, clusters, truth, tmp_path / "p.png", cluster_digits=cluster_digits))
    left = image[:, : image.shape[1] // 2, :3].reshape(-1, 3)
    near = lambda d: (np.abs(left - np.array(matplotlib.colormaps["tab10"](d)[:3])).max(axis=1) < 0.08).sum()  # noqa: E731
    assert near(0) > 200 and near(6) > 200 and near(1) == near(2) == 0


def test_with_many_clusters_the_confusion_and_sizes_stay_page_sized(tmp_path):
    """At k=1024 the confusion figure has no text per row or cell (a page of bands, not 46,000 pixels of
    labels) and the sizes figure groups the bars by the digit their cluster mostly holds: digit 0's
    colour is one unbroken band."""
    rng = np.random.default_rng(0)
    k = 1024
    table = rng.integers(0, 100, (k, 10)) ** 3
    digits = table.argmax(axis=1)
    confusion = imread(plots.plot_confusion(table, digits, tmp_path / "m.png"))
    assert confusion.shape[0] < 5_000 and confusion[..., :3].std() > 0.05
    sizes = imread(plots.plot_sizes(rng.integers(100, 3000, k), digits, tmp_path / "s.png"))[..., :3]
    assert sizes.shape[1] <= 1_600
    zero = np.array(matplotlib.colormaps["tab10"](0)[:3])
    row = sizes[int(sizes.shape[0] * 0.8)]  # near the axis: every bar reaches it
    columns = np.flatnonzero(np.abs(row - zero).max(axis=1) < 0.05)
    assert len(columns) > 50 and columns.max() - columns.min() + 1 - len(columns) <= 2  # one band
