"""The whole job as one library call: open the store, cluster, evaluate, plot, and write a run folder."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import platform
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import dask
import dask.array as da
import numpy as np
from distributed import CancelledError
from distributed.comm.core import CommClosedError
from filelock import FileLock, Timeout

from data_prep.atomic import NotOursError, TargetExistsError, atomic_directory, check_replaceable, lock_path
from data_prep.redact import redact_text

from . import checkpoint, classifier, evaluate, examples, plots, report, report_html, scoring
from .cluster import cluster_memory, describe_cluster, reduce_batching_latency, use_or_connect
from .config import JobConfig
from .dataset import PIXEL_SCALE, check_workers_can_read, flat_pixels, open_dataset
from .errors import ClusterError, DataError, JobError
from .model import lloyd_step, make_estimator, predict_labels
from .persist import decide_persist, persist_balanced
from .phases import PhaseRecorder, peak_memory_per_process

log = logging.getLogger(__name__)
PHASES = 6


@dataclass(frozen=True)
class RunResult:
    """What a run or a sweep left: its folder, its metrics (metrics.json or sweep.json), the printed
    summary, and the fitted estimators by k. Their lazy labels_ compute while the cluster is up (with
    the caller's own client, after the call too), and hold X's persisted chunks on it until the result
    is dropped (`del result`)."""

    run_dir: Path
    metrics: dict
    summary: str
    models: dict = field(default_factory=dict)

    @property
    def model(self):
        """The fitted estimator: the run's, or for a sweep the suggested k's."""
        if len(self.models) == 1:
            return next(iter(self.models.values()))
        return self.models[self.metrics["suggested_k"]]


def default_run_dir(root: Path = Path("runs")) -> Path:
    return root / datetime.now().strftime("%Y%m%d-%H%M%S")


def versions() -> dict:
    from importlib.metadata import version

    import distributed
    import sklearn
    import zarr

    return {
        "python": platform.python_version(), "numpy": np.__version__, "dask": dask.__version__,
        "distributed": distributed.__version__, "dask_ml": version("dask-ml"),  # not imported: it takes 1.4 s
        "scikit_learn": sklearn.__version__, "zarr": zarr.__version__,
    }


def _fit(config: JobConfig, X: da.Array, partial: Path, resume_state: dict | None):
    """Fit on the uint8 pixels X; return (model, centers in raw 0-255 pixel units, the fit's record with
    the inertia in [0, 1] units, as the figures and metrics report it, and the per-cluster (counts, sums)
    at those centers, raw units, for the evaluation)."""
    if config.engine == "dask-ml":
        X = X.astype(np.float32)  # stock dask-ml computes in X's dtype: give it floats (in raw units)
    model = make_estimator(
        config.engine, n_clusters=config.k, init="k-means||", random_state=config.seed,
        max_iter=config.max_iter, tol=config.tol, oversampling_factor=config.oversampling_factor,
        init_max_iter=config.init_max_iter,
        **({"n_init": config.n_init, "sample_size": config.sample_size} if config.engine == "fused" else {}),
    )
    started = time.perf_counter()
    if config.engine == "fused":
        def on_iteration(state):
            if state["converged"] or state["n_iter"] % config.checkpoint_every == 0:
                checkpoint.save(partial, state)

        model.fit(X, on_iteration=on_iteration, start=resume_state)
    else:
        model.fit(X)
    elapsed = time.perf_counter() - started
    centers = np.asarray(model.cluster_centers_, dtype=np.float64)
    record = {"engine": config.engine, "n_iter": int(model.n_iter_), "fit_seconds": elapsed}
    if config.engine == "dask-ml":
        # dask-ml's inertia_ is the sum of *unsquared* distances whenever its last shift is above 1e-7
        # (dask_ml/cluster/k_means.py, _kmeans_single_lloyd): keep it for reference, report ours.
        record["dask_ml_reported_inertia"] = float(model.inertia_)
        sums, counts, inertia = lloyd_step(X, centers)
    else:
        inertia, counts, sums = model.inertia_, model.counts_, model.cluster_sums_
        record.update(init_seconds=model.init_time_, lloyd_seconds=model.lloyd_time_, init=model.init_info_,
                      starts=[{**s, "inertia": s["inertia"] * PIXEL_SCALE**2} for s in model.starts_])
        record["seconds_per_iteration"] = model.lloyd_time_ / max(1, model.n_iter_)
        record["strategy"] = model.strategy_
        record["passes_over_all_rows"] = model.passes_over_all_rows_
        if model.sample_:
            record["sample"] = {key: value * PIXEL_SCALE**2 if key.startswith("inertia") else value
                                for key, value in model.sample_.items()}
    record["inertia"] = float(inertia) * PIXEL_SCALE**2
    return model, centers, record, (counts, sums)


# What distributed raises when the scheduler disappears under a running computation.
_LOST_SCHEDULER_ERRORS = (OSError, asyncio.CancelledError, CancelledError, CommClosedError)
_DISK_ERRORS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.EPERM, errno.ENOTDIR, errno.EEXIST}


def run_job(config: JobConfig, client=None) -> RunResult:
    """Run every phase and write the run folder atomically; return where it is and what it holds.

    client: a distributed Client to run on (a notebook's, say: its dashboard shows the job), left open;
    None connects to config.cluster and closes what it started.
    """
    run_dir = Path(config.out) if config.out else default_run_dir()
    check_output_folder(run_dir, config.overwrite, config.resume)
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with exclusive(run_dir):
        return _run_locked(config, run_dir, started_at, client)


def check_output_folder(run_dir: Path, overwrite: bool, resume: bool = False) -> None:
    """Before any work: an existing output is refused unless --overwrite, and even then unless it is a run
    or sweep folder of ours (report.why_not_a_run_folder): nothing of the user's is ever replaced."""
    if not (run_dir.exists() or run_dir.is_symlink()) or resume:
        return
    if not overwrite:
        raise JobError(f"{run_dir}: output folder exists; pass --overwrite to replace it")
    try:
        check_replaceable(run_dir, report.why_not_a_run_folder)
    except NotOursError as exc:
        raise JobError(str(exc)) from None


@contextmanager
def exclusive(run_dir: Path):
    """Refuse a second job writing the same run folder while this one runs.

    The lock is a hidden sibling file (data_prep.atomic.lock_path) that nothing deletes: a lock inside
    <run>.partial/ was deleted with that folder while still held, so a second job could take a fresh one.
    On the way out the partial folder goes unless it holds a checkpoint to resume from.
    """
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(lock_path(run_dir))
        lock.acquire(timeout=0)
    except Timeout:
        raise JobError(f"{run_dir}: another job is writing this run folder (lock {lock_path(run_dir)})") from None
    except OSError as exc:
        raise JobError(f"{run_dir}: cannot write the run folder ({exc.strerror}); nothing was kept") from None
    try:
        yield
    finally:
        if not checkpoint.has_checkpoint(run_dir):  # stopped before there was anything to resume
            checkpoint.remove_partial(run_dir)
        lock.release()


def _run_locked(config: JobConfig, run_dir: Path, started_at: str, client) -> RunResult:
    try:
        with atomic_directory(run_dir, overwrite=config.overwrite, why_not_ours=report.why_not_a_run_folder) as tmp:
            metrics, model = _run_phases(config, tmp, started_at, run_dir, client)
            summary = report.summary_text(metrics, run_dir)
            (tmp / "summary.txt").write_text(summary + "\n")
    except NotOursError as exc:
        raise JobError(str(exc)) from None
    except TargetExistsError:
        raise JobError(f"{run_dir}: another run wrote this folder meanwhile; nothing was replaced") from None
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        raise JobError(f"{run_dir}: cannot write the run folder ({exc.strerror}); nothing was kept") from None
    checkpoint.remove_partial(run_dir)  # complete: no resume needed
    return RunResult(run_dir, metrics, summary, {config.k: model})


def _run_phases(config: JobConfig, out: Path, started_at: str, run_dir: Path, given_client=None):
    recorder = PhaseRecorder(total=PHASES)
    with recorder.phase("open data"):
        data = open_dataset(config.data, config.split)
        if config.k > data.n:
            raise DataError(f"--k {config.k} is larger than the {data.n:,} images of {config.data}")
        X = flat_pixels(data.images)
        if config.resume:
            resume_state = checkpoint.load_for_resume(config, run_dir, X.shape[1])
            partial = checkpoint.partial_dir(run_dir)
            for stale in run_dir.parent.glob(f".{run_dir.name}.tmp-*"):  # our staging folders, left by a kill
                shutil.rmtree(stale, ignore_errors=True)
        else:
            resume_state, partial = None, checkpoint.start(config, run_dir)
        log.info("%s: %s images of %dx%d, %d chunks, flattened lazily to uint8 [%d, %d]",
                 redact_text(str(config.data)), f"{data.n:,}", *data.image_shape, X.numblocks[0], *X.shape)

    with ExitStack() as stack:  # the cluster (if we started it) closes however the phases end
        with recorder.phase("start cluster"):
            client = stack.enter_context(use_or_connect(config.cluster, given_client))
        recorder.client = client
        cluster_info = describe_cluster(client, None if given_client else config.cluster)
        live = partial / "report.html"
        recorder.on_change = lambda current: report_html.write_live_page(
            live, f"K-Means on {config.data}: k={config.k} (running)", client.dashboard_link, recorder.seconds,
            current, recorder.total)
        recorder.on_change(None)
        log.info("live progress page: %s", live.resolve().as_uri())
        reduce_batching_latency(client, cluster_side=config.cluster.kind == "local" and given_client is None)
        try:
            metrics, strips, model = _cluster_phases(config, client, recorder, data, X, out, partial, resume_state)
        except Exception as exc:
            if client.status == "running" or not isinstance(exc, _LOST_SCHEDULER_ERRORS):
                raise
            where = "the checkpoint in " + str(partial) if (partial / checkpoint.CHECKPOINT_FILE).exists() else ""
            raise ClusterError(
                f"lost the scheduler {client.scheduler.address} ({type(exc).__name__})"
                + (f"; {where} lets --resume {run_dir} continue on another cluster" if where else "")
            ) from None
        dashboard = client.dashboard_link
        peaks = peak_memory_per_process(client)
    metrics.update(
        config=config.to_dict(), started=started_at, versions=versions(), dashboard=dashboard, cluster=cluster_info,
        timings=recorder.seconds, memory={**recorder.memory, "peak_rss_per_process": peaks},
    )
    report.write_metrics(out / "metrics.json", metrics)
    report_html.write_run_report(out, json.loads((out / "metrics.json").read_text()), strips)
    return metrics, model


def _cluster_phases(config, client, recorder, data, X, out: Path, partial: Path, resume_state) -> dict:
    with recorder.phase("fit"):
        check_workers_can_read(client, config.data, data.splits)
        persist, reason = decide_persist(X.nbytes, cluster_memory(client), config.persist, config.memory_fraction)
        log.info("persist decision: %s", reason)
        if persist:
            X = persist_balanced(client, X)
        model, raw_centers, fit_record, (counts, sums) = _fit(config, X, partial, resume_state)
        centers = raw_centers * PIXEL_SCALE  # [0, 1], what the figures, the model file and predict use
        fit_record.update(persisted=persist, persist_reason=reason)
        log.info("fit: %d iterations, inertia %.6g", fit_record["n_iter"], fit_record["inertia"])

    with recorder.phase("evaluate"):
        idx = evaluate.sample_indices(data.n, config.silhouette_sample, config.seed)
        labels, ev, closest, random, sample = evaluate_at(X, data.labels, raw_centers, counts, sums, idx,
                                                          config.examples_per_cluster, config.seed)
        # Zarr needs regular chunks (train+test concatenated are not): rechunk the small labels only.
        labels.rechunk(max(labels.chunks[0])).to_zarr(str(out / "labels.zarr"))
        held_out = _held_out(config, raw_centers, ev) if config.split == "train" else None

    with recorder.phase("pick examples"):
        closest_images = examples.gather_images(X, closest, data.image_shape)
        random_images = examples.gather_images(X, random, data.image_shape)
        # The PCA and the silhouette (~2 s of the workers' time at 70k) run while the client draws: the
        # figures are the client's work, and the cluster would otherwise sit idle for them.
        started = time.perf_counter()
        pca_points = evaluate.pca_2d_later(sample.rows, PIXEL_SCALE) if len(sample.rows) >= 3 else None
        silhouette = evaluate.silhouette_later(sample.rows, sample.labels, config.k)

    with recorder.phase("plot and save"):
        digits = ev["mapping_hungarian"]
        plots.plot_centers(centers, data.image_shape, digits, ev["cluster_sizes"], out / "centers.png",
                           majority=ev["mapping_majority"])
        plots.plot_examples(closest_images, closest, digits, "Images closest to each center", out / "examples_closest.png")
        plots.plot_examples(random_images, random, digits, "Random images of each cluster", out / "examples_random.png")
        plots.plot_confusion(np.asarray(ev["contingency"]), digits, out / "confusion.png")
        plots.plot_sizes(ev["cluster_sizes"], digits, out / "sizes.png")
        report.write_model(out / "model.npz", centers, data.image_shape, digits, ev["mapping_majority"])
        np.save(out / "centers.npy", centers.astype(np.float32))
        if pca_points is not None:
            plots.plot_pca(pca_points(), sample.labels, sample.truth, out / "pca.png")
        strips = {c: _strip(np.concatenate([closest_images[c], random_images[c]])) for c in range(config.k)}
        ev["silhouette"] = silhouette()
        log.info("silhouette %.4f on %s rows, beside the figures, in %.2f s", ev["silhouette"],
                 f"{len(sample.rows):,}", time.perf_counter() - started)

    return {
        "dataset": {"store": redact_text(str(config.data)), "splits": list(data.splits), "n": data.n,
                    "image_shape": list(data.image_shape), "chunks": list(X.chunks[0])},
        "fit": fit_record, "evaluation": ev, "held_out": held_out,
    }, strips, model


def _strip(images: np.ndarray) -> np.ndarray:
    """uint8 [m, h, w] -> [h, m*w + gaps]: a row of example images with 2-pixel gaps."""
    m, h, w = images.shape
    strip = np.zeros((h, m * (w + 2)), dtype=np.uint8)
    for i, image in enumerate(images):
        strip[:, i * (w + 2) : i * (w + 2) + w] = image
    return strip


@dataclass(frozen=True)
class Sample:
    """The silhouette's seeded sample: its rows (X's units), cluster labels and true digits."""

    rows: np.ndarray
    labels: np.ndarray
    truth: np.ndarray


def evaluate_at(X: da.Array, truth: da.Array, centers: np.ndarray, counts: np.ndarray, sums: np.ndarray,
                sample_index: np.ndarray, examples_per_cluster: int, seed: int):
    """Score the clustering of X at `centers` (X's units) in one pass over X (job.scoring); counts [k] and
    sums [k, p] are the fit's per-cluster counts and coordinate sums at those centers.

    Returns (labels: int32 [n] persisted on the workers, the evaluation dict (label metrics, contingency,
    internal criteria), closest and random example indices [k, m], the silhouette's Sample: its score is
    the caller's to start, evaluate.silhouette_later, so that it can overlap other work).
    """
    counts, sums = np.asarray(counts), np.asarray(sums, dtype=np.float64)
    means = sums / np.maximum(counts, 1)[:, None]
    started = time.perf_counter()
    labels, small = scoring.score_pass(X, truth, centers, means, examples_per_cluster=examples_per_cluster,
                                       seed=seed, sample_index=sample_index)
    ev = evaluate.label_metrics(small.contingency)
    ev["contingency"] = small.contingency.tolist()
    ev["calinski_harabasz"] = float(scoring.calinski_harabasz(counts, sums, small.sq_total)[0])
    ev["davies_bouldin"] = scoring.davies_bouldin(counts, means, small.spread)
    log.info("evaluation pass (labels, contingency, Calinski-Harabasz %.1f, Davies-Bouldin %.3f, examples, the "
             "silhouette's %s rows) in %.2f s", ev["calinski_harabasz"], ev["davies_bouldin"],
             f"{len(sample_index):,}", time.perf_counter() - started)
    ev["silhouette_sample"] = int(len(sample_index))
    sample = Sample(small.sample_rows, small.sample_labels, small.sample_truth)
    return labels, ev, examples.indices(small.closest), examples.indices(small.random), sample


def _held_out(config: JobConfig, centers: np.ndarray, ev: dict) -> dict:
    """Read the test split with the cluster->digit mappings learned on train: the task's classification."""
    test = open_dataset(config.data, "test")
    clusters = predict_labels(flat_pixels(test.images), centers).compute()
    return classifier.held_out_scores(clusters, test.labels.compute(), config.k, ev["mapping_majority"],
                                      ev["mapping_hungarian"])
