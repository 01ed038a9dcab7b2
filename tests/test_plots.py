"""The figures: real PNGs of the expected layout, blank where a cluster has no example."""

import numpy as np
from matplotlib.image import imread

from job.report import figures as plots


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
