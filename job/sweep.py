"""Choosing k: fit every k of a list on data loaded once, score each, plot the curves, suggest one.

For each k: inertia, silhouette on one seeded sample (the same rows for every k), ARI and NMI against the
digits, Davies-Bouldin and Calinski-Harabasz (job.evaluate, by reductions over all of X). X is read or
persisted once for the whole sweep. The suggestion uses only the internal criteria (no digit labels):
see suggest_k. With --split train the sweep also scores each k as a classifier (job.classifier): every
cluster read as the majority digit of its training members, the held-out accuracy on the test split, and
for the best k its per-digit accuracy, confusion matrix and the test images misclassified most often.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from data_prep.atomic import NotOursError, TargetExistsError, atomic_directory
from data_prep.redact import redact_text

from . import classifier, evaluate, plots, report, report_html
from .blockwise import take_rows
from .cluster import cluster_memory, describe_cluster, reduce_batching_latency, use_or_connect
from .config import JobConfig
from .dataset import PIXEL_SCALE, check_workers_can_read, flat_pixels, open_dataset
from .errors import DataError, JobError
from .model import make_estimator, predict_labels
from .persist import decide_persist, persist_balanced
from .phases import PhaseRecorder, peak_memory_per_process
from .run import RunResult, check_output_folder, default_run_dir, evaluate_at, exclusive, versions

log = logging.getLogger(__name__)


def parse_k(text: str) -> tuple[int, ...]:
    """'10' -> (10,); '5..15' -> (5, 6, ..., 15); '10..50+10' -> (10, 20, ..., 50) (a step);
    '16..256x2' -> (16, 32, 64, 128, 256) (a factor); '5,8,10' -> (5, 8, 10); parts combine with commas
    ('10,16..256x2'); sorted, without repeats."""
    try:
        values: set[int] = set()
        for part in str(text).replace(" ", "").split(","):
            if ".." in part:
                values.update(_k_range(part))
            else:
                values.add(int(part))
    except ValueError:
        raise JobError(f"--k must be a number, a range like 5..15, 10..50+10 (a step) or 16..256x2 (a factor), "
                       f"or a list like 5,8,10; got {text!r}") from None
    if min(values) < 2 and len(values) > 1:
        raise JobError(f"a k sweep needs every k >= 2; got {text!r}")
    return tuple(sorted(values))


def _k_range(part: str) -> list[int]:
    lo, rest = part.split("..")
    step, factor = "1", None
    if "x" in rest:
        rest, factor = rest.split("x")
    elif "+" in rest:
        rest, step = rest.split("+")
    lo, hi, step = int(lo), int(rest), int(step)
    if hi < lo or step < 1:
        raise ValueError
    if factor is None:
        return list(range(lo, hi + 1, step))
    factor = int(factor)
    if factor < 2 or lo < 1:
        raise ValueError
    values = [lo]
    while values[-1] * factor <= hi:
        values.append(values[-1] * factor)
    return values


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


def suggest_k(rows: list[dict]) -> Suggestion:
    """The internal criteria vote: the highest silhouette, the lowest Davies-Bouldin, the elbow of the
    inertia curve. The k with most votes wins; on a tie, the silhouette's choice. With fewer than three
    values of k a curve has no elbow, so that criterion abstains (it would always vote for the first k)."""
    ks = [r["k"] for r in rows]
    votes = {"silhouette (highest)": max(rows, key=lambda r: np.nan_to_num(r["silhouette"], nan=-2))["k"],
             "Davies-Bouldin (lowest)": min(rows, key=lambda r: np.nan_to_num(r["davies_bouldin"], nan=np.inf))["k"]}
    if len(ks) >= 3:
        votes["elbow of inertia"] = elbow(ks, [r["inertia"] for r in rows])
    tally = {k: list(votes.values()).count(k) for k in set(votes.values())}
    best = max(tally.values())
    winners = [k for k, n in tally.items() if n == best]
    k = votes["silhouette (highest)"] if len(winners) > 1 else winners[0]
    picked = ", ".join(f"{name}: k={value}" for name, value in votes.items())
    if len(ks) < 3:
        picked += "; the elbow abstains with fewer than 3 values of k"
    agree = (f"{tally[k]} of {len(votes)} criteria agree" if tally[k] > 1
             else "no two criteria agree; the silhouette decides")
    return Suggestion(k, f"{agree} ({picked})", votes)


def run_sweep(config: JobConfig, ks: tuple[int, ...], client=None) -> RunResult:
    """Fit and score every k in `ks`; write the sweep folder atomically (sweep.json, plots, report.html).
    client: as run_job's (the caller's own Client, left open), or None to connect to config.cluster."""
    if config.resume or config.engine != "fused":
        raise JobError("a k sweep runs with the fused engine, and cannot be resumed")
    run_dir = Path(config.out) if config.out else default_run_dir()
    check_output_folder(run_dir, config.overwrite)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with exclusive(run_dir):
        try:
            with atomic_directory(run_dir, overwrite=config.overwrite, why_not_ours=report.why_not_a_run_folder) as tmp:
                metrics, models = _sweep_phases(config, ks, tmp, started_at, client)
                summary = summary_text(metrics, run_dir)
                (tmp / "summary.txt").write_text(summary + "\n")
        except NotOursError as exc:
            raise JobError(str(exc)) from None
        except TargetExistsError:
            raise JobError(f"{run_dir}: another run wrote this folder meanwhile; nothing was replaced") from None
    return RunResult(run_dir, metrics, summary, models)


def _sweep_phases(config: JobConfig, ks: tuple[int, ...], out: Path, started_at: str, given_client=None):
    recorder = PhaseRecorder(total=3 + len(ks))
    with recorder.phase("open data"):
        data = open_dataset(config.data, config.split)
        if max(ks) > data.n:
            raise DataError(f"--k {max(ks)} is larger than the {data.n:,} images of {config.data}")
        X = flat_pixels(data.images)
    with ExitStack() as stack:
        with recorder.phase("start cluster"):
            client = stack.enter_context(use_or_connect(config.cluster, given_client))
            reduce_batching_latency(client, cluster_side=config.cluster.kind == "local" and given_client is None)
            check_workers_can_read(client, config.data, data.splits)
            persist, reason = decide_persist(X.nbytes, cluster_memory(client), config.persist, config.memory_fraction)
            log.info("persist decision: %s", reason)
            if persist:
                X = persist_balanced(client, X)
            test = _test_split(config, client)
        recorder.client = client
        cluster_info = describe_cluster(client, None if given_client else config.cluster)
        dashboard = client.dashboard_link
        rows, models, predicted = [], {}, {}
        for k in ks:
            with recorder.phase(f"k={k}"):
                models[k], row, predicted[k] = _score_one_k(config, k, X, data, out, test)
                rows.append(row)
                r = rows[-1]
                log.info("k=%d: inertia %.6g, silhouette %.4f, ARI %.3f, NMI %.3f, Davies-Bouldin %.3f, "
                         "Calinski-Harabasz %.0f", k, r["inertia"], r["silhouette"], r["ari"], r["nmi"],
                         r["davies_bouldin"], r["calinski_harabasz"])
        as_classifier = _as_classifier(rows, predicted, test, data.image_shape) if test else None
        peaks = peak_memory_per_process(client)
    recorder.client = None  # the cluster is closed: nothing left to sample
    with recorder.phase("plot and save"):
        suggestion = suggest_k(rows)
        plots.plot_sweep_elbow(rows, suggestion.k, suggestion.votes.get("elbow of inertia"), out / "elbow.png")
        plots.plot_sweep_silhouette(rows, suggestion.k, out / "silhouette.png")
        plots.plot_sweep_criteria(rows, suggestion.k, out / "criteria.png")
        if as_classifier:
            _plot_classifier(rows, as_classifier, len(ks), out)
    metrics = {
        "kind": "sweep", "config": {**config.to_dict(), "k": list(ks)}, "started": started_at,
        "dataset": {"store": redact_text(str(config.data)), "splits": list(data.splits), "n": data.n,
                    "image_shape": list(data.image_shape)},
        "persisted": persist, "persist_reason": reason, "sweep": rows,
        "classifier": {key: value for key, value in (as_classifier or {}).items() if key != "images"} or None,
        "suggested_k": suggestion.k, "suggestion_reason": suggestion.reason, "votes": suggestion.votes,
        "cluster": cluster_info, "dashboard": dashboard, "versions": versions(),
        "timings": recorder.seconds, "memory": {**recorder.memory, "peak_rss_per_process": peaks},
    }
    report.write_metrics(out / "sweep.json", metrics)
    report_html.write_sweep_report(out, metrics)
    return metrics, models


@dataclass(frozen=True)
class TestSplit:
    """The held-out test split a --split train sweep classifies: its pixels (persisted when the training
    rows are) and true digits."""

    X: object
    truth: np.ndarray
    n: int


def _test_split(config: JobConfig, client) -> TestSplit | None:
    if config.split != "train":
        return None
    test = open_dataset(config.data, "test")
    X = flat_pixels(test.images)
    X = persist_balanced(client, X) if X.nbytes <= cluster_memory(client) * config.memory_fraction else X
    return TestSplit(X, np.asarray(test.labels.compute()), test.n)


def _as_classifier(rows: list[dict], predicted: dict[int, np.ndarray], test: TestSplit, image_shape,
                   shown: int = 32) -> dict:
    """The best k as a classifier (highest held-out accuracy): its scores, and the test images the
    sweep's k values misclassify most often (their pixels under "images", for the figure)."""
    best = max(rows, key=lambda r: (r["held_out_accuracy"], -r["k"]))
    index, times_wrong = classifier.most_misclassified(predicted, test.truth, shown)
    images = take_rows(test.X, index).reshape(len(index), *image_shape) if len(index) else np.empty((0, *image_shape))
    return {
        "best_k": best["k"], "held_out_accuracy": best["held_out_accuracy"], "n_test": test.n,
        "per_digit_accuracy": best["held_out"]["per_digit_accuracy"], "confusion": best["held_out"]["confusion"],
        "most_misclassified": [{"index": int(i), "true": int(test.truth[i]), "predicted": int(predicted[best["k"]][i]),
                                "times_wrong": int(w)} for i, w in zip(index, times_wrong)],
        "images": images,
    }


def _plot_classifier(rows: list[dict], as_classifier: dict, n_k: int, out: Path) -> None:
    best = as_classifier["best_k"]
    plots.plot_sweep_accuracy(rows, best, out / "accuracy.png")
    plots.plot_per_digit_accuracy(as_classifier["per_digit_accuracy"], best, out / "per_digit.png")
    plots.plot_digit_confusion(as_classifier["confusion"], best, out / "confusion_test.png")
    shown = as_classifier["most_misclassified"]
    if shown:
        plots.plot_misclassified(as_classifier["images"], [m["true"] for m in shown], [m["predicted"] for m in shown],
                                 [m["times_wrong"] for m in shown], n_k, best, out / "misclassified.png")


def _score_one_k(config: JobConfig, k: int, X, data, out: Path, test: TestSplit | None = None) -> tuple:
    """Fit k and score it; returns (the model, its row of sweep.json, the test images' predicted digits
    or None)."""
    model = make_estimator("fused", n_clusters=k, init="k-means||", random_state=config.seed,
                           max_iter=config.max_iter, tol=config.tol, oversampling_factor=config.oversampling_factor,
                           init_max_iter=config.init_max_iter, n_init=config.n_init, sample_size=config.sample_size)
    started = time.perf_counter()
    model.fit(X)
    fit_seconds = time.perf_counter() - started
    raw_centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    centers = raw_centers * PIXEL_SCALE
    idx = evaluate.sample_indices(data.n, config.silhouette_sample, config.seed)  # the same rows for every k
    _, ev, _, _, sample = evaluate_at(X, data.labels, raw_centers, model.counts_, model.cluster_sums_, idx,
                                      config.examples_per_cluster, config.seed)
    silhouette = evaluate.silhouette_later(sample.rows, sample.labels, k)  # on the workers while we draw
    criteria = {name: ev[name] for name in ("calinski_harabasz", "davies_bouldin")}
    plots.plot_centers(centers, data.image_shape, ev["mapping_hungarian"], ev["cluster_sizes"],
                       out / f"centers_k{k:02d}.png", majority=ev["mapping_majority"])
    report.write_model(out / f"model_k{k:02d}.npz", centers, data.image_shape, ev["mapping_hungarian"],
                       ev["mapping_majority"])
    held_out, predicted = None, None
    if test is not None:
        clusters = predict_labels(test.X, raw_centers).compute()
        held_out = classifier.held_out_scores(clusters, test.truth, k, ev["mapping_majority"], ev["mapping_hungarian"])
        predicted = np.asarray(ev["mapping_majority"])[clusters]
    silhouette = silhouette() if config.silhouette_sample >= 2 else float("nan")
    extra = {} if held_out is None else {
        "held_out_accuracy": held_out["accuracy_majority"], "held_out": {
            key: held_out[key] for key in ("n", "accuracy_majority", "per_digit_accuracy", "confusion")}}
    if held_out is not None and k == classifier.N_CLASSES:
        extra["held_out"]["accuracy_hungarian"] = held_out["accuracy_hungarian"]
    return model, {"k": k, "inertia": float(model.inertia_) * PIXEL_SCALE**2, "n_iter": int(model.n_iter_), "silhouette": silhouette,
            "ari": ev["ari"], "nmi": ev["nmi"], "accuracy_hungarian": ev["accuracy_hungarian"],
            "accuracy_majority": ev["accuracy_majority"], **criteria, "fit_seconds": fit_seconds,
            "starts": [{"seed": s["seed"], "inertia": s["inertia"] * PIXEL_SCALE**2} for s in model.starts_],
            "cluster_sizes": ev["cluster_sizes"], "mapping_hungarian": ev["mapping_hungarian"],
            "mapping_majority": ev["mapping_majority"], **extra}, predicted


def summary_text(metrics: dict, run_dir: Path) -> str:
    header = "    k    inertia  silhouette    ARI    NMI  Davies-Bouldin  Calinski-Harabasz"
    if metrics.get("classifier"):
        header += "  held-out accuracy"
    lines = [f"k sweep on {metrics['dataset']['n']:,} images: {', '.join(str(r['k']) for r in metrics['sweep'])}",
             header]
    for r in metrics["sweep"]:
        lines.append(f"  {r['k']:3d} {r['inertia']:10,.0f} {r['silhouette']:11.4f} {r['ari']:6.3f} {r['nmi']:6.3f}"
                     f" {r['davies_bouldin']:15.3f} {r['calinski_harabasz']:18,.0f}"
                     + (f" {r['held_out_accuracy']:18.3f}" if "held_out_accuracy" in r else ""))
    lines.append(f"  suggested k = {metrics['suggested_k']}: {metrics['suggestion_reason']}")
    if metrics.get("classifier"):
        c = metrics["classifier"]
        lines.append(f"  as a classifier: best k = {c['best_k']}, held-out accuracy {c['held_out_accuracy']:.3f} on "
                     f"{c['n_test']:,} test images (each cluster read as its majority training digit)")
    lines.append(f"  total {sum(metrics['timings'].values()):.1f} s; results in {run_dir}/ (open report.html)")
    return "\n".join(lines)
