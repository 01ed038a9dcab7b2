"""The whole job as one library call: a single k (run_job) or a sweep over k (run_sweep), as two plans
over one session.

The session is what both share, in this order: check the output folder and lock it; open the store
lazily ("open data"); connect to the cluster ("start cluster"); check that the workers can read the
store, decide whether X is persisted, open the held-out test split ("load data"); then the plan's own
phases, recorded by job.phases; then metrics.json (or sweep.json) and report.html, written into a hidden
folder that replaces the run folder in one rename (job.run_folder). A plan says what its phases do and
what its record holds: SingleK fits one k with checkpoints, scores it, and draws its figures; Sweep
fits and scores every k, suggests one and, with --split train, reads each k as a classifier.
May use: every room below it (job.engine, job.kmeans, job.deploy, job.evaluation, job.report) and
job.checkpoint, job.config, job.dataset, job.phases, job.run_folder.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import dask.array as da
import numpy as np

from data_prep.redact import RedactingFilter, redact_text
from data_prep.zarr_store import reading_store
from job import checkpoint
from job.config import JobConfig
from job.dataset import PIXEL_SCALE, Dataset, check_labels, check_workers_can_read, flat_pixels, open_dataset
from job.deploy import faults
from job.deploy.lifecycle import cluster_memory, describe_cluster, reduce_batching_latency, use_or_connect
from job.engine.persist import chunks_to_merge, decide_persist, persist_balanced, total_threads
from job.errors import DataError, JobError
from job.evaluation import classifier, examples
from job.evaluation.choose_k import KScore, suggest_k
from job.evaluation.evaluate import Evaluation, EvaluationPass, evaluate_at
from job.evaluation.metrics import sample_indices, start_pca_2d, start_silhouette
from job.kmeans.estimator import make_estimator
from job.kmeans.passes import lloyd_step, predict_labels
from job.model import Model
from job.phases import PhaseRecorder, peak_memory_per_process
from job.report import figures, summary
from job.report import html as report_html
from job.run_folder import check_output_folder, default_run_dir, exclusive, written_atomically

log = logging.getLogger(__name__)

# what a sweep's row (KScore) takes from the Evaluation of its k: the fields of the same name, but the
# silhouette (the sweep's own, on its sample)
SWEEP_EVALUATION_FIELDS = tuple(
    f.name
    for f in dataclasses.fields(KScore)
    if f.name in {g.name for g in dataclasses.fields(Evaluation)} - {"silhouette"}
)


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


def run_job(config: JobConfig, client=None) -> RunResult:
    """Fit config.k, evaluate, plot, and write the run folder atomically; return where it is and what it
    holds.

    client: a distributed Client to run on (a notebook's, say: its dashboard shows the job), left open;
    None connects to config.cluster and closes what it started.
    """
    return _run_session(config, SingleK(config), client)


def run_sweep(config: JobConfig, ks: tuple[int, ...], client=None) -> RunResult:
    """Fit and score every k in `ks`; write the sweep folder atomically (sweep.json, plots, report.html).
    client: as run_job's (the caller's own Client, left open), or None to connect to config.cluster."""
    if config.engine != "fused":
        raise JobError("a k sweep runs with the fused engine")
    return _run_session(config, Sweep(config, tuple(ks)), client)


# --- the session both plans run in ---------------------------------------------------------------


@dataclass(frozen=True)
class TestSplit:
    """The held-out test split a --split train run classifies: its pixels and true digits."""

    X: da.Array
    truth: np.ndarray
    n: int


@dataclass(frozen=True)
class Session:
    """What a plan's phases work with: the open data (X persisted or streamed), the cluster, the output."""

    config: JobConfig
    client: object
    recorder: PhaseRecorder
    data: Dataset
    X: da.Array
    test: TestSplit | None
    out: Path  # the hidden folder being written
    persisted: bool
    persist_reason: str


class Plan(Protocol):
    """What a plan tells the session (SingleK and Sweep below)."""

    phases: int  # its own phases, after "open data", "start cluster" and "load data"
    largest_k: int  # refused when the data has fewer images
    checkpoints: bool  # whether it keeps a resumable <run>.partial/ (removed once the run is complete)
    reads_test_split_often: bool  # persist the held-out test split when it fits
    record_file: str  # metrics.json or sweep.json
    models: dict  # the fitted estimators by k, filled by run()

    # once the data is open (checkpoints, resume)
    def open(self, run_dir: Path, X: da.Array, out: Path) -> None: ...
    def connected(self, client, recorder: PhaseRecorder) -> None: ...  # once the cluster is up
    def run(self, session: Session) -> dict: ...  # its phases; returns its part of the record
    def config_record(self, config: JobConfig) -> dict: ...
    def write_report(self, out: Path, metrics: dict) -> None: ...
    def summary_text(self, metrics: dict, run_dir: Path) -> str: ...


@contextmanager
def _progress_shown():
    """The job's progress (phases, Lloyd iterations, the dashboard link) on stderr while it runs, when
    nothing in the process shows log records yet: a notebook's run_job was silent for its whole run.
    A program that configures logging (the CLI does) keeps its own handlers and levels."""
    root, ours = logging.getLogger(), logging.getLogger("job")
    if root.handlers or ours.handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(RedactingFilter())  # secrets in URLs never reach the notebook either
    level = ours.level
    ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        ours.setLevel(level)


def _run_session(config: JobConfig, plan: Plan, given_client) -> RunResult:
    with _progress_shown():
        return _run_session_logged(config, plan, given_client)


def _run_session_logged(config: JobConfig, plan: Plan, given_client) -> RunResult:
    run_dir = Path(config.out) if config.out else default_run_dir()
    if config.out:  # a default name is never an existing folder: exclusive() passes over those
        check_output_folder(run_dir, config.overwrite, config.resume)
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    with exclusive(run_dir, pick_free=not config.out) as run_dir, reading_store(config.data):
        with written_atomically(run_dir, config.overwrite) as tmp:
            metrics = _phases(config, plan, tmp, run_dir, started_at, given_client)
            text = plan.summary_text(metrics, run_dir)
            (tmp / "summary.txt").write_text(text + "\n")
        if plan.checkpoints:
            checkpoint.remove_partial(run_dir)  # complete: no resume needed
    return RunResult(run_dir, metrics, text, plan.models)


def _phases(config: JobConfig, plan: Plan, out: Path, run_dir: Path, started_at: str, given_client) -> dict:
    recorder = PhaseRecorder(total=3 + plan.phases)
    with recorder.phase("open data"):
        data = open_dataset(config.data, config.split)
        if plan.largest_k > data.n:
            raise DataError(
                f"k={plan.largest_k} is larger than the {data.n:,} images of {config.data}", option="k"
            )
        X = flat_pixels(data.images)
        plan.open(run_dir, X, out)
        log.info(
            "%s: %s images of %dx%d, %d chunks, flattened lazily to uint8 [%d, %d]",
            redact_text(str(config.data)),
            f"{data.n:,}",
            *data.image_shape,
            X.numblocks[0],
            *X.shape,
        )

    with ExitStack() as stack:  # the cluster (if we started it) closes however the phases end
        with recorder.phase("start cluster"):
            client = stack.enter_context(use_or_connect(config.cluster, given_client))
        recorder.client = client
        cluster_info = describe_cluster(client, None if given_client else config.cluster)
        plan.connected(client, recorder)
        reduce_batching_latency(client, cluster_side=config.cluster.kind == "local" and given_client is None)
        watch = faults.Watch.start(client)
        try:
            with recorder.phase("load data"):
                check_workers_can_read(client, config.data, data.splits)
                check_labels(config.data, data.splits + (("test",) if config.split == "train" else ()))
                persist, reason = decide_persist(
                    int(X.nbytes), cluster_memory(client), config.persist, config.memory_fraction
                )
                log.info("persist decision: %s", reason)
                if persist:
                    # the labels in X's blocks too: the evaluation reads them beside its pixels (at 8.1M
                    # rows and k=256 its pass took 3.95-5.07 s against 5.88-6.56 s; docs/benchmarks.md
                    # section 23)
                    data, X = persist_pixels(client, data)
                test = _test_split(config, client, plan.reads_test_split_often)
            session = Session(config, client, recorder, data, X, test, out, persist, reason)
            record = plan.run(session)
        except Exception as exc:
            hint = (
                f"; the checkpoint in {checkpoint.partial_dir(run_dir)} lets --resume {run_dir} continue on "
                "another cluster"
                if checkpoint.has_checkpoint(run_dir)
                else ""
            )
            fault = faults.explain(client, exc, watch, hint)
            if fault is None:
                raise
            raise fault from exc
        dashboard = client.dashboard_link
        peaks = peak_memory_per_process(client)
    recorder.client = None  # the cluster is closed: nothing left to sample
    metrics = {
        **record,
        "config": plan.config_record(config),
        "started": started_at,
        "versions": summary.library_versions(),
        "dashboard": dashboard,
        "cluster": cluster_info,
        "timings": recorder.seconds,
        "memory": {**recorder.memory, "peak_rss_per_process": peaks},
    }
    summary.write_metrics(out / plan.record_file, metrics)
    plan.write_report(out, metrics)
    return metrics


def persist_pixels(client, data: Dataset) -> tuple[Dataset, da.Array]:
    """The dataset's pixels [n, p] persisted on the cluster as the job holds them (the benchmarks hold X
    the same way): small stored chunks merged (job.engine.persist.chunks_to_merge), read in those blocks,
    then spread evenly over the workers' threads. Returns (the dataset with its images and labels in
    those blocks (Dataset.in_blocks), the persisted pixels)."""
    X = flat_pixels(data.images)
    merge = chunks_to_merge(X.chunks[0], X.dtype.itemsize * X.shape[1], total_threads(client))
    if merge > 1:
        data = data.in_blocks(merge)
    return data, persist_balanced(client, flat_pixels(data.images))


def _test_split(config: JobConfig, client, persist_if_fits: bool) -> TestSplit | None:
    """The test split a --split train run reads as a classifier (None otherwise); persisted when it is
    read for several k and fits the cluster's memory."""
    if config.split != "train":
        return None
    test = open_dataset(config.data, "test")
    X = flat_pixels(test.images)
    if persist_if_fits and X.nbytes <= cluster_memory(client) * config.memory_fraction:
        X = persist_balanced(client, X)
    return TestSplit(X, np.asarray(test.labels.compute()), test.n)


# --- what both plans do for one k ----------------------------------------------------------------


@dataclass(frozen=True)
class Fit:
    """One fitted k: the estimator, its centers in raw 0-255 pixel units, the fit's record for
    metrics.json (inertia in [0, 1] units, as the figures and metrics report it), and the per-cluster
    counts and coordinate sums at those centers (raw units) that the evaluation starts from."""

    model: object
    raw_centers: np.ndarray
    record: dict
    counts: np.ndarray
    sums: np.ndarray
    labels: da.Array | None = None  # the fit's last assignment, when it kept it on the workers

    @property
    def centers(self) -> np.ndarray:
        """[0, 1] units: what the figures, the model file and predict use."""
        return self.raw_centers * PIXEL_SCALE


def _fit(
    config: JobConfig,
    k: int,
    X: da.Array,
    partial: Path | None = None,
    resume_state: dict | None = None,
    progress=None,
) -> Fit:
    """Fit k clusters on the uint8 pixels X (checkpointing into `partial` when given; `progress`, a
    callable, hears of each Lloyd iteration over all rows in words)."""
    if config.engine == "dask-ml":
        X = X.astype(np.float32)  # stock dask-ml computes in X's dtype: give it floats (in raw units)
    model = make_estimator(
        config.engine,
        n_clusters=k,
        init="k-means||",
        random_state=config.seed,
        max_iter=config.max_iter,
        tol=config.tol,
        oversampling_factor=config.oversampling_factor,
        init_max_iter=config.init_max_iter,
        **(
            {
                "n_init": config.n_init,
                "sample_size": config.sample_size,
                "polish_passes": config.polish_passes,
            }
            if config.engine == "fused"
            else {}
        ),
    )
    started = time.perf_counter()
    if config.engine == "fused" and partial is not None:

        def on_iteration(state):
            if state["converged"] or state["n_iter"] % config.checkpoint_every == 0:
                checkpoint.save(partial, state)
            if progress is not None:
                progress(
                    f"Lloyd iteration {state['n_iter']} over all rows: inertia "
                    f"{state['inertia'] * PIXEL_SCALE**2:,.0f} (pixels in [0, 1])"
                )

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
        record.update(
            init_seconds=model.init_time_,
            lloyd_seconds=model.lloyd_time_,
            init=model.init_info_,
            starts=[{**s, "inertia": s["inertia"] * PIXEL_SCALE**2} for s in model.starts_],
        )
        record["seconds_per_iteration"] = model.lloyd_time_ / max(1, model.n_iter_)
        record["strategy"] = model.strategy_
        record["passes_over_all_rows"] = model.passes_over_all_rows_
        if model.sample_:
            record["sample"] = _inertias_in_pixel_units(model.sample_)
    record["inertia"] = float(inertia) * PIXEL_SCALE**2
    labels = model.labels_ if getattr(model, "labels_kept_", False) else None
    return Fit(model, centers, record, np.asarray(counts), np.asarray(sums), labels)


def _inertias_in_pixel_units(record):
    """The record with every inertia in it (keys starting "inertia", in nested records and lists too:
    the coarse levels', the starts') scaled from 0-255 pixel units to the reports' [0, 1] units."""
    if isinstance(record, list):
        return [_inertias_in_pixel_units(item) for item in record]
    if not isinstance(record, dict):
        return record
    return {
        key: value * PIXEL_SCALE**2
        if key.startswith("inertia") and isinstance(value, (int, float))
        else _inertias_in_pixel_units(value)
        for key, value in record.items()
    }


def _evaluate(session: Session, fit: Fit) -> EvaluationPass:
    """The one evaluation pass over X at the fit's centers; the silhouette's sample is the same seeded
    rows for every k."""
    config = session.config
    index = sample_indices(session.data.n, config.silhouette_sample, config.seed)
    return evaluate_at(
        session.X,
        session.data.labels,
        fit.raw_centers,
        fit.counts,
        fit.sums,
        index,
        config.examples_per_cluster,
        config.seed,
        labels=fit.labels,
    )


def _save_model(out: Path, suffix: str, fit: Fit, image_shape, evaluation) -> None:
    """The centers' figure and the model file predict reads (centers{suffix}.png, model{suffix}.npz)."""
    _save_model_files(
        out,
        suffix,
        fit.centers,
        image_shape,
        evaluation.cluster_sizes,
        evaluation.mapping_hungarian,
        evaluation.mapping_majority,
    )


def _save_model_files(out: Path, suffix: str, centers, image_shape, sizes, hungarian, majority) -> None:
    figures.plot_centers(centers, image_shape, majority, sizes, out / f"centers{suffix}.png")
    model = Model(centers, tuple(image_shape), np.asarray(hungarian), np.asarray(majority))
    model.save(out / f"model{suffix}.npz")


def _classify_test(test: TestSplit, fit: Fit, evaluation) -> tuple[classifier.HeldOut, np.ndarray]:
    """The test images' clusters read through the mappings learned on train: (the scores, each test
    image's predicted digit by the majority mapping)."""
    clusters = predict_labels(test.X, fit.raw_centers).compute()
    k = len(fit.raw_centers)
    scores = classifier.held_out_scores(
        clusters, test.truth, k, evaluation.mapping_majority, evaluation.mapping_hungarian
    )
    return scores, np.asarray(evaluation.mapping_majority)[clusters]


# --- the plans -----------------------------------------------------------------------------------


class SingleK:
    """One k: fit (checkpointed, resumable), evaluate, pick examples, plot and save (metrics.json)."""

    phases = 4
    checkpoints = True
    record_file = "metrics.json"
    reads_test_split_often = False

    def __init__(self, config: JobConfig):
        self.config, self.largest_k = config, config.k
        self.models: dict = {}
        self.partial: Path | None = None
        self.run_dir: Path | None = None
        self.resume_state: dict | None = None
        self.strips: dict[int, np.ndarray] = {}

    def open(self, run_dir: Path, X: da.Array, out: Path) -> None:
        config = self.config
        self.run_dir = run_dir
        if config.resume:
            self.resume_state = checkpoint.load_for_resume(config, run_dir, X.shape[1])
            self.partial = checkpoint.partial_dir(run_dir)
            _remove_stale_staging(run_dir, out)
        else:
            self.partial = checkpoint.start(config, run_dir)

    def connected(self, client, recorder: PhaseRecorder) -> None:
        """A live progress page in the partial folder, rewritten at each phase."""
        assert self.partial is not None and self.run_dir is not None  # open() came first
        live = self.partial / "report.html"
        final = self.run_dir / "report.html"
        recorder.on_change = lambda current: report_html.write_live_page(
            live,
            f"K-Means on {self.config.data}: k={self.config.k} (running)",
            client.dashboard_link,
            recorder.seconds,
            current,
            recorder.total,
            detail=recorder.detail,
            final_report=final,
        )
        recorder.on_change(None)
        log.info("live progress page: %s", live.resolve().as_uri())

    def config_record(self, config: JobConfig) -> dict:
        return config.to_dict()

    def run(self, s: Session) -> dict:
        config, data, X, out, recorder = s.config, s.data, s.X, s.out, s.recorder
        with recorder.phase("fit"):
            fit = _fit(config, config.k, X, self.partial, self.resume_state, progress=recorder.note)
            fit.record.update(persisted=s.persisted, persist_reason=s.persist_reason)
            # The estimator's own lines above are in X's units (uint8 pixels, 0-255): say which is which.
            log.info(
                "fit: %d iterations, inertia %s with pixels in [0, 1], as every figure and file reports "
                "it (%.6g in the uint8 pixel units of the lines above: x 255^2)",
                fit.record["n_iter"],
                f"{fit.record['inertia']:,.0f}",
                fit.record["inertia"] / PIXEL_SCALE**2,
            )
            self.models[config.k] = fit.model

        with recorder.phase("evaluate"):
            scored = _evaluate(s, fit)
            ev = scored.evaluation
            # Zarr needs regular chunks (train+test concatenated are not): rechunk the small labels only.
            scored.labels.rechunk(max(scored.labels.chunks[0])).to_zarr(str(out / "labels.zarr"))
            held_out = _classify_test(s.test, fit, ev)[0] if s.test is not None else None

        with recorder.phase("pick examples"):
            closest_images = examples.gather_images(X, scored.closest, data.image_shape)
            random_images = examples.gather_images(X, scored.random, data.image_shape)
            # The PCA and the silhouette (~2 s of the workers' time at 70k) run while the client draws: the
            # figures are the client's work, and the cluster would otherwise sit idle for them.
            started = time.perf_counter()
            sample = scored.sample
            pca_points = start_pca_2d(sample.rows, PIXEL_SCALE) if len(sample.rows) >= 3 else None
            silhouette = start_silhouette(sample.rows, sample.labels, config.k)

        with recorder.phase("plot and save"):
            digits = (
                ev.mapping_majority
            )  # what each cluster mostly holds (the one-to-one mapping is a metric)
            _save_model(out, "", fit, data.image_shape, ev)
            figures.plot_examples(
                closest_images,
                scored.closest,
                digits,
                "Images closest to each center",
                out / "examples_closest.png",
                sizes=ev.cluster_sizes,
            )
            figures.plot_examples(
                random_images,
                scored.random,
                digits,
                "Random images of each cluster",
                out / "examples_random.png",
                sizes=ev.cluster_sizes,
            )
            figures.plot_confusion(np.asarray(ev.contingency), digits, out / "confusion.png")
            figures.plot_sizes(ev.cluster_sizes, digits, out / "sizes.png")
            np.save(out / "centers.npy", fit.centers.astype(np.float32))
            if pca_points is not None:
                figures.plot_pca(
                    pca_points(),
                    sample.labels,
                    sample.truth,
                    out / "pca.png",
                    cluster_digits=ev.mapping_majority,
                )
            self.strips = {
                c: report_html.example_strip(np.concatenate([closest_images[c], random_images[c]]))
                for c in range(config.k)
            }
            ev = ev.with_silhouette(silhouette())
            log.info(
                "silhouette %.4f on %s rows, beside the figures, in %.2f s",
                ev.silhouette,
                f"{len(sample.rows):,}",
                time.perf_counter() - started,
            )

        return {
            "dataset": _dataset_record(config, data) | {"chunks": list(X.chunks[0])},
            "fit": fit.record,
            "evaluation": ev.to_dict(),
            "held_out": held_out.to_dict() if held_out is not None else None,
        }

    def write_report(self, out: Path, metrics: dict) -> None:
        report_html.write_run_report(out, json.loads((out / self.record_file).read_text()), self.strips)

    def summary_text(self, metrics: dict, run_dir: Path) -> str:
        return summary.summary_text(metrics, run_dir)


class Sweep:
    """Every k of a list on data loaded once: fit and score each, plot the curves, suggest a k
    (job.evaluation.choose_k, internal criteria only); with --split train each k also read as a
    classifier of the test split, and the best k's per-digit accuracy, confusion and the test images
    misclassified most often (sweep.json)."""

    checkpoints = (
        True  # one file per finished k in <sweep>.partial/: --resume starts at the first unfinished k
    )
    record_file = "sweep.json"
    reads_test_split_often = True

    def __init__(self, config: JobConfig, ks: tuple[int, ...]):
        self.config, self.ks, self.largest_k = config, ks, max(ks)
        self.phases = len(ks) + 1
        self.models: dict = {}
        self.partial: Path | None = None
        # k -> (raw centers, sweep.json row, predicted test digits): finished before a resume
        self.done: dict = {}

    def open(self, run_dir: Path, X: da.Array, out: Path) -> None:
        if self.config.resume:
            self.done = checkpoint.load_sweep(self.config, run_dir, self.ks, X.shape[1])
            self.partial = checkpoint.partial_dir(run_dir)
            _remove_stale_staging(run_dir, out)
            log.info(
                "resuming the sweep: %s kept from the interrupted run, %s to fit",
                ", ".join(f"k={k}" for k in self.done) or "no k",
                ", ".join(f"k={k}" for k in self.ks if k not in self.done) or "none",
            )
        else:
            self.partial = checkpoint.start(self.config, run_dir, sweep_ks=self.ks)

    def connected(self, client, recorder: PhaseRecorder) -> None:
        pass

    def config_record(self, config: JobConfig) -> dict:
        return {**config.to_dict(), "k": list(self.ks)}

    def run(self, s: Session) -> dict:
        rows, predicted = [], {}
        for k in self.ks:
            with s.recorder.phase(f"k={k}"):
                if k in self.done:
                    self.models[k], row, predicted[k] = self._restored(s, k, *self.done[k])
                else:
                    self.models[k], row, predicted[k] = self._score_one_k(s, k)
                    assert self.partial is not None  # open() came first
                    checkpoint.save_sweep_k(
                        self.partial,
                        k,
                        np.asarray(self.models[k].cluster_centers_, dtype=np.float64),
                        row.to_dict(),
                        predicted[k],
                    )
                rows.append(row)
                log.info(
                    "k=%d: inertia %.6g, silhouette %.4f, ARI %.3f, NMI %.3f, Davies-Bouldin %.3f, "
                    "Calinski-Harabasz %.0f",
                    k,
                    row.inertia,
                    row.silhouette,
                    row.ari,
                    row.nmi,
                    row.davies_bouldin,
                    row.calinski_harabasz,
                )
        as_classifier = None
        if s.test is not None:
            as_classifier = classifier.sweep_classifier(rows, predicted, s.test.truth)
            shown = np.asarray([m["index"] for m in as_classifier.most_misclassified], dtype=np.int64)
            as_classifier = dataclasses.replace(
                as_classifier, images=examples.gather_images(s.test.X, shown[None, :], s.data.image_shape)[0]
            )
        with s.recorder.phase("plot and save"):
            suggestion = suggest_k(
                [r.k for r in rows],
                [r.inertia for r in rows],
                [r.silhouette for r in rows],
                [r.davies_bouldin for r in rows],
            )
            figures.plot_sweep_elbow(
                rows, suggestion.k, suggestion.votes.get("elbow of inertia"), s.out / "elbow.png"
            )
            figures.plot_sweep_silhouette(rows, suggestion.k, s.out / "silhouette.png")
            figures.plot_sweep_criteria(rows, suggestion.k, s.out / "criteria.png")
            if as_classifier is not None:
                figures.plot_sweep_classifier(rows, as_classifier, len(self.ks), s.out)
        return {
            "kind": "sweep",
            "dataset": _dataset_record(s.config, s.data),
            "persisted": s.persisted,
            "persist_reason": s.persist_reason,
            "sweep": [r.to_dict() for r in rows],
            "classifier": as_classifier.to_dict() if as_classifier is not None else None,
            "suggested_k": suggestion.k,
            "suggestion_reason": suggestion.reason,
            "votes": suggestion.votes,
        }

    def _score_one_k(self, s: Session, k: int) -> tuple:
        """Fit k and score it; returns (the model, its row of sweep.json, the test images' predicted
        digits or None)."""
        config = s.config
        fit = _fit(config, k, s.X)
        scored = _evaluate(s, fit)
        ev = scored.evaluation
        # On the workers while we draw.
        silhouette_of = start_silhouette(scored.sample.rows, scored.sample.labels, k)
        _save_model(s.out, f"_k{k:02d}", fit, s.data.image_shape, ev)
        held_out, predicted = _classify_test(s.test, fit, ev) if s.test is not None else (None, None)
        silhouette = silhouette_of() if config.silhouette_sample >= 2 else float("nan")
        extra: dict[str, Any] = (
            {}
            if held_out is None
            else {
                "held_out_accuracy": held_out.accuracy_majority,
                "held_out": {
                    key: getattr(held_out, key)
                    for key in ("n", "accuracy_majority", "per_digit_accuracy", "confusion")
                },
            }
        )
        if held_out is not None and k == classifier.N_CLASSES:
            extra["held_out"]["accuracy_hungarian"] = held_out.accuracy_hungarian
        row = KScore(
            k=k,
            inertia=fit.record["inertia"],
            n_iter=fit.record["n_iter"],
            silhouette=silhouette,
            fit_seconds=fit.record["fit_seconds"],
            starts=[{"seed": start["seed"], "inertia": start["inertia"]} for start in fit.record["starts"]],
            **{name: getattr(ev, name) for name in SWEEP_EVALUATION_FIELDS},
            **extra,
        )
        return fit.model, row, predicted

    def _restored(self, s: Session, k: int, raw_centers: np.ndarray, row: dict, predicted) -> tuple:
        """A k finished before the sweep was interrupted: its row and test predictions as they were, its
        figure and model file drawn again into this run's folder, and an estimator holding its centers."""
        from job.kmeans.estimator import FusedKMeans

        log.info("k=%d: kept from the interrupted run (%s)", k, self.partial)
        score = KScore(**row)
        _save_model_files(
            s.out,
            f"_k{k:02d}",
            raw_centers * PIXEL_SCALE,
            s.data.image_shape,
            score.cluster_sizes,
            score.mapping_hungarian,
            score.mapping_majority,
        )
        model = FusedKMeans(n_clusters=k, random_state=self.config.seed)
        model.cluster_centers_ = raw_centers.astype(np.float32)
        model.n_features_in_ = raw_centers.shape[1]
        model.inertia_, model.n_iter_ = score.inertia / PIXEL_SCALE**2, score.n_iter
        return model, score, predicted

    def write_report(self, out: Path, metrics: dict) -> None:
        report_html.write_sweep_report(out, metrics)

    def summary_text(self, metrics: dict, run_dir: Path) -> str:
        return summary.sweep_summary_text(metrics, run_dir)


def _remove_stale_staging(run_dir: Path, current: Path) -> None:
    """The staging folders a killed run of run_dir left (.NAME.tmp-*), not this run's own (`current`):
    removing that one too only went unnoticed while labels.zarr's writer re-created it."""
    for stale in run_dir.parent.glob(f".{run_dir.name}.tmp-*"):
        if stale.resolve() != current.resolve():
            shutil.rmtree(stale, ignore_errors=True)


def _dataset_record(config: JobConfig, data: Dataset) -> dict:
    return {
        "store": redact_text(str(config.data)),
        "splits": list(data.splits),
        "n": data.n,
        "image_shape": list(data.image_shape),
    }
