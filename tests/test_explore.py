"""Explore and explain: k sweeps and predict on new images."""

import csv
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from job.config import parse_k
from job.errors import JobError
from job.evaluation.choose_k import elbow, suggest_k

from . import run_module


def test_parse_k():
    assert parse_k("10") == (10,)
    assert parse_k("5..8") == (5, 6, 7, 8)
    assert parse_k("12,5,8,5") == (5, 8, 12)
    assert parse_k("16..256x2") == (16, 32, 64, 128, 256)  # a factor
    assert parse_k("10..50+10") == (10, 20, 30, 40, 50)  # a step
    assert parse_k("10, 16..100x2") == (10, 16, 32, 64)
    for bad in ("five", "1..3", "4..64x1", "4..64x", "4..64+0", "0..64x2"):
        with pytest.raises(JobError, match=r"^k must be|every k"):
            parse_k(bad)
    with pytest.raises(JobError, match=r"^k range '8..5' runs backwards: write it 5..8"):
        parse_k("8..5")


def test_elbow_and_suggestion_rules():
    ks = list(range(2, 9))
    inertia = [100, 60, 30, 25, 22, 20, 19]  # bends at k=4
    assert elbow(ks, inertia) == 4
    silhouette, davies_bouldin = [0.1, 0.2, 0.3, 0.25, 0.2, 0.1, 0.1], [2, 1.8, 1.2, 1.5, 1.6, 1.7, 1.9]
    suggestion = suggest_k(ks, inertia, silhouette, davies_bouldin)
    assert suggestion.k == 4 and suggestion.reason.startswith("3 of 3 criteria agree")
    silhouette[3] = 0.5  # silhouette now says 5, Davies-Bouldin and the elbow still say 4
    assert suggest_k(ks, inertia, silhouette, davies_bouldin).k == 4
    assert "2 of 3" in suggest_k(ks, inertia, silhouette, davies_bouldin).reason
    silhouette[3] = float("nan")  # a skipped silhouette never wins
    assert suggest_k(ks, inertia, silhouette, davies_bouldin).votes["silhouette (highest)"] == 4


def test_the_elbow_abstains_with_fewer_than_three_values_of_k():
    """With two values of k the "elbow" was always the first k: it must not count as a vote."""
    ks, inertia, silhouette, davies_bouldin = (
        [8, 10],
        [100, 90],
        [0.1, 0.2],
        [1.0, 1.5],
    )  # DB: 8, silhouette: 10
    suggestion = suggest_k(ks, inertia, silhouette, davies_bouldin)
    assert "elbow of inertia" not in suggestion.votes
    assert suggestion.k == 10 and suggestion.reason.startswith("no two criteria agree")
    assert "elbow abstains" in suggestion.reason
    assert suggest_k(ks, inertia, silhouette, [1.0, 0.5]).reason.startswith("2 of 2 criteria agree")


@pytest.mark.slow
def test_k_sweep_5_to_15_on_mnist(mnist_store, tmp_path, browser):
    """The issue's acceptance: a sweep over 5..15 on all of MNIST, end to end."""
    out = tmp_path / "sweep"
    proc = run_module(
        "job",
        "--data",
        str(mnist_store),
        "--k",
        "5..15",
        "--out",
        str(out),
        "--silhouette-sample",
        "3000",
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "sweep.json").read_text())
    rows = metrics["sweep"]
    assert [r["k"] for r in rows] == list(range(5, 16))
    inertia = [r["inertia"] for r in rows]
    assert all(b < a for a, b in itertools.pairwise(inertia)), inertia  # more clusters, less inertia
    assert all(
        0 < r["ari"] < 1 and 0 < r["nmi"] < 1 and r["davies_bouldin"] > 0 and r["calinski_harabasz"] > 0
        for r in rows
    )
    assert metrics["suggested_k"] in range(5, 16) and "criteria" in metrics["suggestion_reason"]
    for name in [
        "elbow.png",
        "silhouette.png",
        "criteria.png",
        "report.html",
        *(f"centers_k{k:02d}.png" for k in range(5, 16)),
    ]:
        assert (out / name).stat().st_size > 2000, name
    assert f"suggested k = {metrics['suggested_k']}" in proc.stdout
    state = check_page(browser, out / "report.html", "sweep-report.png")
    assert len(state["images"]) == 3 + 11 and f"Suggested k = {metrics['suggested_k']}" in state["text"]


@pytest.fixture(scope="module")
def train_run(mnist_store, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "run"
    proc = run_module(
        "job",
        "--data",
        str(mnist_store),
        "--split",
        "train",
        "--out",
        str(out),
        "--silhouette-sample",
        "2000",
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_predict_on_the_test_split_reproduces_the_held_out_accuracy(
    train_run, mnist_dir, mnist_store, tmp_path
):
    held_out = json.loads((train_run / "metrics.json").read_text())["held_out"]
    idx = next(p for p in mnist_dir.iterdir() if p.name.startswith("t10k-images"))
    for source in (idx, mnist_store / "test"):  # an IDX file (labels found beside it) and a Zarr split
        out = tmp_path / f"{source.name}.csv"
        proc = run_module("job.predict", str(train_run), str(source), "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-3000:]
        # what each cluster mostly is, as the held-out accuracy is scored (not the one-to-one mapping)
        assert f"accuracy against the given labels: {held_out['accuracy_majority']:.4f}" in proc.stdout
        with open(out) as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == 10_000 and {"cluster", "digit", "squared_distance"} <= set(rows[0])


def test_predict_reads_png_files_and_refuses_bad_input(train_run, mnist_store, tmp_path):
    import zarr
    from PIL import Image

    images = zarr.open_group(str(mnist_store), mode="r")["test/images"][:20]
    folder = tmp_path / "pngs"
    folder.mkdir()
    for i, image in enumerate(images):
        pixels = image if i % 2 else 255 - image  # half of them dark ink on white, as people draw digits
        Image.fromarray(pixels).save(folder / f"digit{i:02d}.png")
    proc = run_module("job.predict", str(train_run), str(folder), "--out", str(tmp_path / "p.csv"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "20 images assigned" in proc.stdout and "10 inverted" in proc.stderr
    with open(tmp_path / "p.csv") as f:
        png_rows = list(csv.DictReader(f))
    reference = run_module(
        "job.predict", str(train_run), str(mnist_store / "test"), "--out", str(tmp_path / "z.csv")
    )
    assert reference.returncode == 0
    with open(tmp_path / "z.csv") as f:
        zarr_rows = list(csv.DictReader(f))[:20]
    assert [r["cluster"] for r in png_rows] == [r["cluster"] for r in zarr_rows]

    Image.new("L", (32, 32)).save(tmp_path / "blank.png")
    bad = run_module("job.predict", str(train_run), str(tmp_path / "blank.png"))
    assert bad.returncode == 1 and "blank.png: no digit found: the image is a single grey level" in bad.stderr
    missing = run_module("job.predict", str(tmp_path), str(folder))
    assert (
        missing.returncode == 1 and "no saved model" in missing.stderr and "Traceback" not in missing.stderr
    )


def _variants(image: np.ndarray, i: int):
    """Digit i of MNIST drawn as a user might: larger (whole-pixel scales, so that the preparation can
    give back MNIST's own pixels), off-centre on a bigger canvas, dark on light, in colour, on a
    transparent background (black ink, which read as all black before, and white ink)."""
    from PIL import Image

    factor = 2 + i % 3
    big = np.asarray(
        Image.fromarray(image).resize((28 * factor,) * 2, Image.Resampling.NEAREST), dtype=np.float64
    )
    canvas = np.zeros((28 * factor + 17, 28 * factor + 9))
    canvas[11 : 11 + big.shape[0], 2 : 2 + big.shape[1]] = big  # off-centre
    ink = canvas / 255
    kind = i % 4
    if kind == 0:  # dark ink on white
        return Image.fromarray((255 - canvas).astype(np.uint8), "L")
    if kind == 1:  # blue ink on light yellow
        rgb = np.array([250, 240, 180.0]) * (1 - ink[..., None]) + np.array([20, 40, 200.0]) * ink[..., None]
        return Image.fromarray(rgb.astype(np.uint8), "RGB")
    rgba = np.zeros((*canvas.shape, 4), dtype=np.uint8)  # black ink (kind 2) or white ink (kind 3)
    rgba[..., :3] = 0 if kind == 2 else 255
    rgba[..., 3] = canvas.astype(np.uint8)  # the ink's coverage; the background fully transparent
    return Image.fromarray(rgba, "RGBA")


def test_predict_prepares_pngs_of_any_size_colour_and_transparency_as_mnist_was_made(
    train_run, mnist_store, tmp_path
):
    """PNGs of 40 test digits drawn larger, off-centre, dark on light, in colour and on transparent
    backgrounds get the digits of the same images in MNIST's format (the test split itself); an
    unreadable file among them is one line, and the others are still assigned."""
    import zarr

    images = zarr.open_group(str(mnist_store), mode="r")["test/images"][:40]
    folder = tmp_path / "drawn"
    folder.mkdir()
    for i, image in enumerate(images):
        _variants(image, i).save(folder / f"digit{i:02d}.png")
    (folder / "broken.png").write_bytes(b"not a PNG at all")
    proc = run_module("job.predict", str(train_run), str(folder), "--out", str(tmp_path / "drawn.csv"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "40 images assigned" in proc.stdout
    skipped = [line for line in proc.stderr.splitlines() if "broken.png" in line]
    assert len(skipped) == 1 and "skipped" in skipped[0] and "not a readable PNG" in skipped[0]
    reference = run_module(
        "job.predict", str(train_run), str(mnist_store / "test"), "--out", str(tmp_path / "z.csv")
    )
    assert reference.returncode == 0
    with open(tmp_path / "drawn.csv") as f:
        drawn = [(r["source"], r["digit"]) for r in csv.DictReader(f)]
    with open(tmp_path / "z.csv") as f:
        expected = [r["digit"] for r in csv.DictReader(f)][:40]
    assert [name for name, _ in drawn] == [str(folder / f"digit{i:02d}.png") for i in range(40)]
    same = sum(digit == want for (_, digit), want in zip(drawn, expected))
    assert same >= 39, f"{same} of 40 drawn digits read as their MNIST originals"


def test_predict_checks_the_model_and_the_labels_against_the_images(train_run, mnist_store, tmp_path):
    import shutil

    import zarr

    run = tmp_path / "run"
    shutil.copytree(train_run, run)
    with np.load(run / "model.npz") as saved:
        parts = dict(saved)
    np.savez(run / "model.npz", **{**parts, "centers": parts["centers"][:, :700]})
    bad = run_module("job.predict", str(run), str(mnist_store / "test"))
    assert bad.returncode == 1 and "Traceback" not in bad.stderr
    assert "its centers are 700 values wide but its images are 28x28 pixels" in bad.stderr
    split = tmp_path / "split.zarr"
    group = zarr.open_group(str(split), mode="w", zarr_format=3)
    group.create_array("images", data=zarr.open_group(str(mnist_store), mode="r")["test/images"][:100])
    group.create_array("labels", data=np.zeros(99, dtype=np.uint8))
    bad = run_module("job.predict", str(train_run), str(split), "--out", str(tmp_path / "p.csv"))
    assert bad.returncode == 1 and "(99,) labels for the 100 images" in bad.stderr
    assert not (tmp_path / "p.csv").exists()


def test_predict_streams_idx_and_zarr_inputs_in_blocks(
    train_run, mnist_dir, mnist_store, tmp_path, monkeypatch
):
    """Memory stays flat: with blocks of 500 images, the peak of Python allocations while predicting the
    10,000 test images stays below what loading them whole takes (7.8 MB, before any float32 copy). A
    Zarr input is read a stored chunk (8,192 images, 6.4 MB) at a time: zarr decodes it through a couple
    of buffers of that size."""
    import tracemalloc

    from job import predict

    monkeypatch.setattr(predict, "BLOCK", 500)
    idx = next(p for p in mnist_dir.iterdir() if p.name.startswith("t10k-images"))
    # What predict imports on its first call (dask.array through job.dataset: ~38 MB of allocations that
    # tracemalloc would count) is imported first: the peak measured is the data's.
    import job.dataset
    import job.engine.kernels  # noqa: F401

    for source, limit in ((idx, 6_000_000), (mnist_store / "test", 20_000_000)):
        tracemalloc.start()
        result = predict.predict(train_run, [source], out=tmp_path / "p.csv")
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert result.n == 10_000 and result.accuracy is not None
        assert peak < limit, (source, peak)


def check_page(browser, path: Path, screenshot: str) -> dict:
    """Open a report in Chromium: every image loads, the console stays clean, nothing is fetched over the
    network; save a full-page screenshot to test-artifacts/. Returns what the page showed."""
    from .conftest import ARTIFACTS

    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors, requests = [], []
    page.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    state = page.evaluate("""() => ({
        images: Array.from(document.images).map(i => ({alt: i.alt, ok: i.complete && i.naturalWidth > 0})),
        text: document.body.innerText })""")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / screenshot), full_page=True)
    page.close()
    assert state["images"] and all(i["ok"] for i in state["images"]), state["images"]
    assert not errors, errors
    assert not requests, requests
    return state


def test_run_report_opens_offline_with_every_image(browser, train_run):
    state = check_page(browser, train_run / "report.html", "report.png")
    alts = {i["alt"] for i in state["images"]}
    assert {"cluster centers", "PCA of a sample", "confusion matrix", "examples"} <= alts
    metrics = json.loads((train_run / "metrics.json").read_text())
    for text in (
        "Worst-matched clusters",
        "Cluster to digit",
        "Timings",
        "Configuration",
        "held-out accuracy",
        f"{metrics['evaluation']['ari']:.4g}",
    ):
        assert text in state["text"], text


def test_the_summary_maps_many_clusters_by_majority_digit():
    from job.report.summary import mapping_line

    # k <= 10: what each cluster mostly holds, even where the one-to-one mapping says otherwise (two 1s)
    assert mapping_line([7, 1, 1]) == "  cluster -> digit it mostly holds: 0:7 1:1 2:1"
    majority = [0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0]
    assert mapping_line(majority) == (
        "  clusters by majority digit: 0: 0, 11; 1: 1, 2; 2: 3; 3: 4; 4: 5; 5: 6; 6: 7; 7: 8; 8: 9; 9: 10"
    )
    # many clusters: how many each digit has, not a line of every cluster's number
    majority = [d % 10 for d in range(64)] + [1] * 6
    assert mapping_line(majority) == (
        "  clusters per majority digit: 0: 7; 1: 13; 2: 7; 3: 7; 4: 6; 5: 6; 6: 6; 7: 6; 8: 6; 9: 6 "
        "(which ones: report.html, metrics.json)"
    )


def test_the_summary_gives_the_hungarian_accuracy_only_where_it_means_something():
    """Above ten clusters a one-to-one mapping counts all but ten clusters wrong (0.018 at k=1024): the
    summary then gives the majority reading alone, for the fit and for the held-out split."""
    from job.report.summary import accuracy_text

    scores = {"accuracy_hungarian": 0.018, "accuracy_majority": 0.94}
    assert accuracy_text(scores, 10) == "accuracy 0.018 (Hungarian), 0.940 (majority)"
    assert accuracy_text(scores, 1024) == "accuracy 0.940 (majority)"


def test_predict_with_64_clusters_reads_each_cluster_as_its_majority_digit(mnist_store, tmp_path):
    """A k=64 model of 6,000 training images: job.predict's digits on the test split are the majority
    digit of each image's nearest center, computed here independently (scikit-learn's argmin)."""
    from sklearn.metrics import pairwise_distances_argmin

    from job.dataset import PIXEL_SCALE, flat_pixels, open_dataset
    from job.kmeans.estimator import FusedKMeans
    from job.model import Model

    train, test = open_dataset(mnist_store, "train"), open_dataset(mnist_store, "test")
    X = flat_pixels(train.images)[:6000].compute()
    y = train.labels[:6000].compute()
    model = FusedKMeans(n_clusters=64, random_state=0, n_init=1).fit(X)
    centers = np.asarray(model.cluster_centers_, dtype=np.float64) * PIXEL_SCALE
    members = model.labels_  # numpy in, numpy out
    majority = [
        int(np.bincount(y[members == c], minlength=10).argmax()) if (members == c).any() else -1
        for c in range(64)
    ]
    run = tmp_path / "run"
    run.mkdir()
    Model(centers, (28, 28), np.full(64, -1), np.asarray(majority)).save(
        run / "model.npz"
    )  # -1: no one-to-one
    out = tmp_path / "p.csv"
    proc = run_module("job.predict", str(run), str(mnist_store / "test"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out) as f:
        digits = np.array([int(r["digit"]) for r in csv.DictReader(f)])
    X_test = flat_pixels(test.images).compute().astype(np.float32) * np.float32(PIXEL_SCALE)
    expected = np.asarray(majority)[pairwise_distances_argmin(X_test, centers.astype(np.float32))]
    assert (digits == expected).mean() > 0.999  # float32 ties aside
    accuracy = (digits == test.labels.compute()).mean()
    assert accuracy > 0.8 and f"labels: {accuracy:.4f} (each cluster read as its majority" in proc.stdout


@pytest.mark.slow
def test_a_train_sweep_scores_every_k_as_a_classifier(mnist_store, tmp_path, browser):
    """--split train with a k list: the held-out accuracy the sweep reports for every k equals one
    computed here from its saved model_kNN.npz and the test split (scikit-learn's argmin), and the
    classifier figures and report section are there and load."""
    from sklearn.metrics import pairwise_distances_argmin

    from job.dataset import PIXEL_SCALE, flat_pixels, open_dataset

    out = tmp_path / "sweep"
    proc = run_module(
        "job",
        "--data",
        str(mnist_store),
        "--split",
        "train",
        "--k",
        "10,16",
        "--out",
        str(out),
        "--silhouette-sample",
        "2000",
        "--dashboard-address",
        "127.0.0.1:0",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((out / "sweep.json").read_text())
    test = open_dataset(mnist_store, "test")
    X_test = flat_pixels(test.images).compute().astype(np.float32) * np.float32(PIXEL_SCALE)
    truth = test.labels.compute()
    for row in metrics["sweep"]:
        with np.load(out / f"model_k{row['k']:02d}.npz") as saved:
            centers, majority = saved["centers"], saved["mapping_majority"]
        predicted = majority[pairwise_distances_argmin(X_test, centers)]
        assert abs((predicted == truth).mean() - row["held_out_accuracy"]) <= 3e-4  # float32 ties aside
        per_digit = [(predicted[truth == d] == d).mean() for d in range(10)]
        np.testing.assert_allclose(row["held_out"]["per_digit_accuracy"], per_digit, atol=2e-3)
    c = metrics["classifier"]
    best = max(metrics["sweep"], key=lambda r: r["held_out_accuracy"])
    assert c["best_k"] == best["k"] and c["held_out_accuracy"] == best["held_out_accuracy"] > 0.55
    assert np.asarray(c["confusion"]).sum() == 10_000 and len(c["most_misclassified"]) == 32
    assert all(m["true"] != m["predicted"] or m["times_wrong"] < 2 for m in c["most_misclassified"])
    assert "held-out accuracy" in proc.stdout and f"best k = {c['best_k']}" in proc.stdout
    for name in ("accuracy.png", "per_digit.png", "confusion_test.png", "misclassified.png"):
        assert (out / name).stat().st_size > 5000, name
    state = check_page(browser, out / "report.html", "sweep-classifier-report.png")
    assert "As a classifier" in state["text"] and f"Best k = {c['best_k']}" in state["text"]
    alts = [i["alt"] for i in state["images"]]
    assert "held-out accuracy against k" in alts and "the test images misclassified most often" in alts

    # job.predict takes the sweep folder (its best held-out k by default, or --k) or a model file
    best_csv, k10_csv, file_csv = tmp_path / "best.csv", tmp_path / "k10.csv", tmp_path / "file.csv"
    for args, csv_path in (
        ([str(out)], best_csv),
        ([str(out), "--k", "10"], k10_csv),
        ([str(out / "model_k16.npz")], file_csv),
    ):
        run = run_module("job.predict", *args, str(mnist_store / "test"), "--out", str(csv_path))
        assert run.returncode == 0, run.stderr[-3000:]
    assert (
        f"using k={c['best_k']}"
        in run_module(
            "job.predict", str(out), str(mnist_store / "test"), "--out", str(tmp_path / "again.csv")
        ).stderr
    )
    for k, csv_path in ((c["best_k"], best_csv), (10, k10_csv), (16, file_csv)):
        with np.load(out / f"model_k{k:02d}.npz") as saved:
            expected = saved["mapping_majority"][pairwise_distances_argmin(X_test, saved["centers"])]
        with open(csv_path) as f:
            digits = np.array([int(r["digit"]) for r in csv.DictReader(f)])
        assert (digits == expected).mean() > 0.999, k
    missing = run_module("job.predict", str(out), "--k", "12", str(mnist_store / "test"))
    assert missing.returncode == 1 and "no model for k=12 in this sweep; it has k = 10, 16" in missing.stderr
