"""K-Means on dask arrays: our estimator with dask-ml's contract (stock dask-ml's for --engine dask-ml).

`FusedKMeans` keeps dask-ml's estimator contract (parameters, `cluster_centers_`, lazy `labels_`,
`inertia_`, `n_iter_`, `predict`, `transform`) and replaces its slow parts. By default it fits a sample
first, from the best of several single-task starts on a subsample (job.kmeans.sampling,
job.kmeans.in_memory), and
reads all rows only for a few polishing passes. Its k-means|| (for plain Lloyd) is ours
(job.kmeans.kmeans_parallel: seeded, weighted, independent of chunking). Its Lloyd loop is one task per worker
thread and iteration, pinned to the worker holding the chunks, that runs job.engine.kernels.lloyd_partial
(distances, argmin, per-cluster sums, counts and inertia in a single pass per chunk); only a [k, p] result
comes back to the client. Stock dask-ml builds and schedules a graph of ~100 tasks per iteration and makes
several passes over each chunk: ~200 ms per iteration on MNIST against ~32 ms here (docs/benchmarks.md).

Convergence follows scikit-learn: `tol` is relative to the mean per-feature variance of X, and the loop
stops when the squared shift of the centers (summed over all centers) is <= tol * mean(var(X)).
May use: job.engine, the other job.kmeans modules, scikit-learn (the estimator contract).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, fields
from numbers import Integral, Real
from typing import Any, ClassVar

import dask
import dask.array as da
import numpy as np
from dask import delayed
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions

from job.engine import kernels
from job.engine.map_reduce import moments, plan_tasks
from job.kmeans.kmeans_parallel import kmeans_parallel
from job.kmeans.passes import (
    Converged,
    Iterations,
    LoopRule,
    lloyd_step,
    predict_labels,
    relative_tol,
    reseed_empty,
)
from job.kmeans.validation import check_features, check_rows_and_weights

log = logging.getLogger(__name__)

DEFAULT_INIT_ROUNDS = 5
# From this many clusters on, Lloyd over a persisted X (or sample) runs with Yinyang bounds
# (job.kmeans.bounded); below it the plain fused loop is as fast (docs/benchmarks.md, section 14).
BOUNDED_MIN_K = 32
# A Lloyd pass over n rows is "costly" from this many row-centers on (n x k > 2**28: k=1024 on 1M rows,
# k=256 on 8.1M; FusedKMeans._costly_passes), where it costs as much as a sample's whole fit.
CHEAP_PASS_MAX_WORK = 2**28
# The sample's loop with bounds (or X's, when the sample is all of it) also stops once an iteration lowers
# its inertia by less than this: at k=256 on 8.1M digits the sample's inertia moved 0.16% between
# iteration 35 (where this stops) and 78 (1e-5), and 0.001% from 150 to 275 (the shift reaching tol).
SAMPLE_MIN_GAIN = 1e-4
# When the sample is all of X and a pass over it is costly (CHEAP_PASS_MAX_WORK: k=1024 on 1M rows), Lloyd
# over X starts from a coarse level too and stops once an iteration gains less than this. At k=1024 on the
# first 1M generated digits (FusedKMeans(1024, random_state=0) on the persisted rows, 2 workers, 2026-12-05):
# from the seeding, 1e-4, 101 s of fitting, inertia 17,127,165; from a coarse level on 250,182 rows, 1e-4
# on both, 67.4 s, 17,125,756; 1e-4 on the coarse level and 3e-4 over X, 47.1 s, 17,160,777 (9 iterations
# over X instead of 23: the last 14 bought 0.2% for 20 s); 3e-4 on both 44.9 s, 17,159,860; a second
# coarse level (62,592 rows, 61 per center) 70.9 s against 67.4 (docs/benchmarks.md, section 14).
ALL_ROWS_MIN_GAIN = 3e-4
# With bounds, Lloyd on a sample smaller than X starts from the centers that Lloyd reaches on a nested
# quarter of the sample, itself started the same way while a quarter keeps at least
# COARSE_MIN_ROWS_PER_CENTER rows per center (faiss trains on 256). Iterations on the quarter cost a
# quarter, and from its centers the sample's loop meets its stopping rule in ~20 iterations instead of
# ~33: at k=256 on 1M digits the sample's stage took 19 s instead of 26 s, at k=64 8.4 s instead of
# 12.6 s, each with an inertia over all rows as low or lower (docs/benchmarks.md, section 14). A second
# coarse level (62 rows per center at k=256) saved nothing and ended 0.1% worse. When the sample is all of
# X, only where a pass over X is costly (ALL_ROWS_MIN_GAIN); MNIST's 70,000 rows keep the loop from the
# seeding.
COARSE_FACTOR = 4
COARSE_MIN_ROWS_PER_CENTER = 200
COARSE_STREAM = 2**32 + 13  # + the level: a stream per nested draw


def base_seed(random_state) -> int:
    """The int every draw of a fit derives from: random_state itself when it is an int (the same result
    for any chunking and number of workers), one draw from a RandomState or Generator, or fresh entropy
    for None."""
    if random_state is None:
        return int(np.random.default_rng().integers(2**63))
    if isinstance(random_state, Integral):
        return int(random_state)
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(np.iinfo(np.int32).max))
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63 - 1))
    raise ValueError(f"random_state must be an int, a RandomState, a Generator or None, not {random_state!r}")


def _uniform_weights_as_none(weights):
    """(None, w) when every sample weight is the same w > 0 (the unweighted fit, its inertia scaled by w:
    scikit-learn's equivalence of sample_weight=None and ones), else (weights, 1)."""
    if weights is None:
        return None, 1.0
    low, high, total = dask.compute(weights.min(), weights.max(), weights.sum())
    if not total > 0:
        raise ValueError("sample_weight sums to zero: there is nothing to cluster")
    return (None, float(low)) if low == high else (weights, 1.0)


@dataclass(frozen=True)
class Found:
    """Centers, the assignment at them (inertia, per-cluster counts and coordinate sums) and how Lloyd got
    there: what a start finds and what a fit returns."""

    centers: np.ndarray
    inertia: float
    counts: np.ndarray
    sums: np.ndarray
    n_iter: int
    init_centers: np.ndarray
    init_info: dict
    init_seconds: float
    lloyd_seconds: float


@dataclass(frozen=True)
class FitResult(Found):
    """What one fit found: the best start's centers and the assignment at them, with the fit's record.
    FusedKMeans.fit turns it into the fitted attributes, in one place."""

    labels: Any  # the last assignment kept on the workers (a dask array), or None
    strategy: str
    starts: list
    passes_over_all_rows: float
    sample: dict | None = None


@dataclass(frozen=True)
class Start(Found):
    """One start of a fit on all rows (_fit_full): its seed, where Lloyd took it, and how long it took."""

    seed: int

    def record(self) -> dict:
        """Its entry in the fit's `starts_` (and metrics.json)."""
        names = ("seed", "inertia", "n_iter", "init_seconds", "lloyd_seconds", "init_info")
        return {name: getattr(self, name) for name in names}


class FusedKMeans(TransformerMixin, ClusterMixin, BaseEstimator):
    """K-Means for data larger than memory: a sampled fit polished on all rows, on dask arrays.

    A drop-in for ``dask_ml.cluster.KMeans`` (same parameters where they mean the same thing, the same
    learned attributes, a lazy ``labels_``), with a default fit that reads the data a few times instead
    of hundreds: ``n_init`` starts, each one task fitting a subsample in memory (greedy k-means++, then
    Lloyd by Hamerly's bounds), the best continued by Lloyd on a seeded uniform sample, then (below 32
    clusters: ``polish_passes``) Lloyd passes over all rows until a pass gains less than ``tol``. From 32
    clusters on, with X persisted, Lloyd keeps Yinyang bounds on the workers (most rows skip most
    distances), the sample's Lloyd starts from the centers it reaches on a nested quarter of the sample
    (``COARSE_FACTOR``; of X when the sample is all of X and a pass over it is costly,
    ``ALL_ROWS_MIN_GAIN``), and the last pass keeps every row's label there. ``sample_size=None`` runs
    every pass on all rows (k-means|| then plain Lloyd), as dask-ml does. Each Lloyd pass is one fused
    task per worker thread.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (k).
    init : {"k-means||", "k-means++", "random"} or array-like of shape (n_clusters, n_features), \
            default="k-means||"
        How the plain-Lloyd fit (``sample_size=None``) starts: our seeded k-means||
        (job.kmeans.kmeans_parallel),
        or dask-ml's k-means++ / random. The sampled fit always starts by k-means++ on its subsample.
        An array gives the initial centers and skips both (one start).
    oversampling_factor : float, default=2
        k-means||: about ``oversampling_factor * n_clusters`` candidates drawn per round.
    max_iter : int, default=300
        Most Lloyd iterations over all rows (and on the sample).
    tol : float, default=1e-4
        Relative tolerance, as scikit-learn's: Lloyd stops when the summed squared center shift is at
        most ``tol`` times the mean per-feature variance of X; the polishing passes of the sampled fit
        also stop once a pass lowers the inertia by less than ``tol`` (relative).
    random_state : int, numpy.random.RandomState, numpy.random.Generator or None, default=None
        Seeds every draw (sample, subsample, starts, k-means||). An int gives the same result for any
        chunking and number of workers; a RandomState or Generator is drawn from once per fit; None
        draws fresh entropy.
    init_max_iter : int or None, default=None
        k-means|| rounds (None: 5).
    n_init : "auto" or int, default="auto"
        Starts, seeded ``random_state + i``; the lowest inertia wins. "auto": 4 starts on a subsample
        for the sampled fit (1 with many clusters: job.kmeans.sampling.auto_starts),
        1 for plain Lloyd. A single start of the sampled fit is only its seeding (greedy k-means++).
    sample_size : "auto", int or None, default="auto"
        Rows in the seeded uniform sample of the default fit ("auto": 200,000 or 1,000 per cluster,
        all rows when there are fewer). None: every pass on all rows.
    polish_passes : "auto" or int, default="auto"
        Most Lloyd passes over all rows after the sample's fit (they stop once a pass gains less than
        ``tol``), before the final pass that assigns every row. "auto": up to ``max_iter`` below 32
        clusters, else 0: with bounds the sample's centers end within ~0.1% of where polishing takes them,
        for 1.2-1.5x the fit's time at k=32-128 on 1M digits and 3.3x at k=256 on 8.1M
        (docs/benchmarks.md, section 14).
    precompute_distances, copy_x, n_jobs, algorithm : dask-ml's keywords
        Accepted so that code written for ``dask_ml.cluster.KMeans`` runs unchanged; as there, they change
        nothing (dask-ml stores them and runs Lloyd's algorithm, "full", whatever they say).

    Attributes
    ----------
    cluster_centers_ : ndarray of shape (n_clusters, n_features)
        The centers, float64 (float32 for float32 or compact integer input).
    labels_ : dask.array.Array or ndarray of shape (n_samples,), int32
        The nearest center of each training row. For a dask collection X lazy, as dask-ml's: computed when
        asked for (or already on the workers: ``labels_kept_``); for in-memory X a numpy array, as
        scikit-learn's.
    labels_kept_ : bool
        Whether ``labels_`` are the fit's own last assignment, kept on the workers (Lloyd with bounds,
        ``n_clusters`` >= 32 on a persisted X), rather than a pass to be computed.
    inertia_ : float
        Sum of (weighted) squared distances of the training rows to their nearest center, over all rows,
        in X's units (uint8 pixels fitted as they are: in 0-255 units; times (1/255)^2 for pixels in
        [0, 1], the unit of the job's reports). The log lines of the fit use the same units.
    n_iter_ : int
        Lloyd iterations over all rows.
    n_features_in_ : int
        Number of features seen in fit.
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Column names of a (pandas or dask) DataFrame X, when they are all strings.
    counts_ : ndarray of shape (n_clusters,)
        Rows (with sample_weight: total weight) nearest each center.
    cluster_sums_ : ndarray of shape (n_clusters, n_features)
        Their (weighted) coordinate sums, float64: ``cluster_sums_ / counts_[:, None]`` are the clusters'
        means.
    strategy_ : str
        "sampled", "starts on a subsample" (the sample is all of X), "plain Lloyd" or "weighted plain Lloyd".
    starts_ : list of dict
        One record per start (seed, inertia, iterations, seconds).
    sample_ : dict or None
        The sampled fit's record (rows, iterations, inertia after each phase); when the sample is all of
        X, its coarse levels' only, if it had any.
    passes_over_all_rows_ : float
        How many times the fit read all of X.
    init_centers_ : ndarray of shape (n_clusters, n_features)
        The best start's centers before its Lloyd iterations over all rows (after the sample's stage's
        starts for the sampled fit), float64.
    init_info_ : dict
        How they were found: k-means|| rounds, candidates and passes; the subsample and its starts; or
        the iteration a resumed fit continued after.
    init_time_, lloyd_time_ : float
        Seconds spent finding the initial centers (with the sample's whole stage for the sampled fit) and
        in Lloyd over all rows.

    See Also
    --------
    dask_ml.cluster.KMeans : the stock estimator (``python -m job --engine dask-ml``).
    sklearn.cluster.KMeans : the in-memory estimator.

    Notes
    -----
    X may be a dask array, a dask DataFrame, a numpy array or a pandas DataFrame; in-memory input is
    checked by scikit-learn's ``validate_data``. Compact integers (uint8 pixels) stay compact in the
    workers' memory: each cache-sized block is converted to float32 as a kernel uses it. With
    ``sample_weight`` the fit runs weighted k-means|| and weighted Lloyd over all rows (the sampled
    strategy is unweighted); uniform weights take the unweighted path and scale the inertia.

    Examples
    --------
    >>> import numpy as np
    >>> from job import FusedKMeans
    >>> X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]], dtype=float)
    >>> model = FusedKMeans(n_clusters=2, random_state=0).fit(X)
    >>> sorted(model.cluster_centers_.tolist())
    [[1.0, 2.0], [10.0, 2.0]]
    >>> labels = model.predict(np.array([[0.0, 0.0], [12.0, 3.0]]))  # numpy in, numpy out
    >>> bool(labels[0] != labels[1])
    True
    >>> round(model.inertia_, 6)
    16.0
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means||", "k-means++", "random"}), "array-like"],
        "oversampling_factor": [Interval(Real, 0, None, closed="neither")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state", HasMethods("integers")],
        "init_max_iter": [Interval(Integral, 1, None, closed="left"), None],
        "n_init": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "sample_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left"), None],
        "polish_passes": [StrOptions({"auto"}), Interval(Integral, 0, None, closed="left")],
        # dask-ml's keywords that it stores and never uses (its algorithm is always Lloyd's, "full"):
        # accepted, so that code written for dask_ml.cluster.KMeans runs unchanged; they change nothing.
        "precompute_distances": [StrOptions({"auto"}), "boolean"],
        "copy_x": ["boolean"],
        "n_jobs": [Integral, None],
        "algorithm": [StrOptions({"full", "lloyd"})],
    }

    def __init__(
        self,
        n_clusters=8,
        *,
        init="k-means||",
        oversampling_factor=2,
        max_iter=300,
        tol=1e-4,
        random_state=None,
        init_max_iter=None,
        n_init="auto",
        sample_size="auto",
        polish_passes="auto",
        precompute_distances="auto",
        copy_x=True,
        n_jobs=1,
        algorithm="full",
    ):
        self.n_clusters = n_clusters
        self.init = init
        self.oversampling_factor = oversampling_factor
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.init_max_iter = init_max_iter
        self.n_init = n_init
        self.sample_size = sample_size
        self.polish_passes = polish_passes
        self.precompute_distances = precompute_distances
        self.copy_x = copy_x
        self.n_jobs = n_jobs
        self.algorithm = algorithm

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    def fit(self, X, y=None, sample_weight=None, *, on_iteration=None, start=None):
        """Compute the clustering of X.

        Parameters
        ----------
        X : dask array, dask DataFrame, array-like or pandas DataFrame of shape (n_samples, n_features)
            The rows to cluster (numbers; compact integers stay compact).
        y : ignored
        sample_weight : array-like or dask array of shape (n_samples,), or None, default=None
            Non-negative weight of each row in the centers, the inertia and the k-means|| draws.
        on_iteration : callable or None
            Called after every Lloyd iteration over all rows with a dict (start, n_iter, centers, inertia,
            shift, converged); the job writes its checkpoints from it.
        start : dict or None
            Resume from a checkpoint: "centers" [k, p], "n_iter" (iterations over all rows done),
            "converged"; the initialisation (and the sample's stage) is skipped and the loop continues
            where it stopped, so the result is the one an uninterrupted fit would have reached. Only
            with a single start.

        Returns
        -------
        self : FusedKMeans
        """
        self._validate_params()
        in_memory = not dask.is_dask_collection(X)
        X, weights = check_rows_and_weights(self, X, sample_weight, reset=True)
        weights, scale = _uniform_weights_as_none(weights)
        seeds = self._start_seeds()
        if start is not None and len(seeds) > 1:
            raise ValueError("resuming from a checkpoint needs n_init=1")
        n = int(X.shape[0])
        if n < self.n_clusters:
            raise ValueError(f"n_samples={n} should be >= n_clusters={self.n_clusters}.")
        self._check_init(X.shape[1], weights)
        plan = plan_tasks(X)
        if weights is not None and self.sample_size is not None:
            log.info("sample_weight: the sampled strategy is unweighted, so every pass runs on all rows")
        if weights is not None or self.sample_size is None:
            fitted = self._fit_full(X, plan, seeds, start, on_iteration, weights)
        else:
            fitted = self._fit_sampled(X, plan, seeds, self._sample_rows(n), start, on_iteration)

        centers = fitted.centers.astype(np.result_type(X.dtype, np.float32))
        # The bounded loop's last pass left every row's label on the workers: no pass to compute them again.
        labels = fitted.labels if fitted.labels is not None else predict_labels(X, centers)
        # numpy in, numpy out (scikit-learn's contract); a dask collection gets dask-ml's lazy labels
        self.labels_ = np.asarray(labels.compute()) if in_memory else labels
        self.labels_kept_ = fitted.labels is not None
        self.cluster_centers_ = centers
        self.inertia_ = float(fitted.inertia) * scale
        self.counts_ = fitted.counts * scale if scale != 1 else fitted.counts
        self.cluster_sums_ = fitted.sums * scale
        self.n_iter_ = fitted.n_iter
        self.strategy_ = fitted.strategy
        self.starts_ = fitted.starts
        self.sample_ = fitted.sample
        self.passes_over_all_rows_ = fitted.passes_over_all_rows
        self.init_centers_, self.init_info_ = fitted.init_centers, fitted.init_info
        self.init_time_, self.lloyd_time_ = fitted.init_seconds, fitted.lloyd_seconds
        return self

    def _check_init(self, n_features: int, weights) -> None:
        if isinstance(self.init, str):
            if weights is not None and self.init != "k-means||":
                raise ValueError(
                    f"sample_weight needs init='k-means||' or an array of centers, not {self.init!r}"
                )
            return
        init = np.asarray(self.init)
        if init.ndim != 2 or init.shape[0] != self.n_clusters:
            raise ValueError(
                f"The shape of the initial centers {init.shape} does not match the number of "
                f"clusters {self.n_clusters}."
            )
        if init.shape[1] != n_features:
            raise ValueError(
                f"The shape of the initial centers {init.shape} does not match the number of "
                f"features of the data {n_features}."
            )

    def _sample_rows(self, n: int) -> int:
        from job.kmeans.sampling import auto_sample_size

        if self.sample_size is None:
            return n
        if self.sample_size == "auto":
            return auto_sample_size(n, self.n_clusters)
        size = int(self.sample_size)
        if size < self.n_clusters:
            raise ValueError(f"sample_size={size} should be >= n_clusters={self.n_clusters}")
        return min(size, n)

    def _fit_full(self, X, plan, seeds, start, on_iteration, weights=None) -> FitResult:
        """Every stage on all rows: a moments pass (tol, finiteness), then for each start k-means||, Lloyd
        and a final pass; the start with the lowest inertia wins. The tolerance comes from the unweighted
        variance, as scikit-learn's does."""
        n, col_sum, col_sumsq, finite = moments(X, plan)
        if not finite:
            raise ValueError("Input contains NaN or infinity.")
        tol = relative_tol(self.tol, n, col_sum, col_sumsq)
        results = []
        for index, seed in enumerate(seeds):
            notify = (
                None if on_iteration is None else (lambda state, i=index: on_iteration({"start": i, **state}))
            )
            results.append(self._one_start(X, seed, tol, plan, start, notify, weights))
            if len(seeds) > 1:
                log.info(
                    "start %d/%d (seed %s): inertia %.6g after %d iterations",
                    index + 1,
                    len(seeds),
                    seed,
                    results[-1].inertia,
                    results[-1].n_iter,
                )
        best = min(results, key=lambda r: r.inertia)  # the first of equal ones
        init_reads = sum(r.init_info.get("chunk_reads", 0) for r in results)
        # the best start's centers and assignment, with the time of every start
        found = {f.name: getattr(best, f.name) for f in fields(Found)}
        found.update(
            init_seconds=sum(r.init_seconds for r in results),
            lloyd_seconds=sum(r.lloyd_seconds for r in results),
        )
        return FitResult(
            **found,
            labels=None,
            strategy="plain Lloyd" if weights is None else "weighted plain Lloyd",
            starts=[r.record() for r in results],
            passes_over_all_rows=1 + init_reads / max(1, X.numblocks[0]) + sum(r.n_iter + 1 for r in results),
        )

    def _fit_sampled(self, X, plan, seeds, size, start, on_iteration) -> FitResult:
        """The default strategy. Starts as single tasks on a subsample of a seeded sample, the best one
        continued by Lloyd on the sample in the workers' memory, then Lloyd over all rows. When the sample
        is all of X (size >= n: MNIST's 70,000 images), the Lloyd after the starts is the main loop."""
        from job.kmeans.sampling import sample_rows

        n = int(X.shape[0])
        sampled = size < n
        bounded = self._bounded(plan)
        sample_in_task = False
        started = time.perf_counter()
        if sampled:
            sample = sample_rows(X, size, seeds[0])
            # With bounds, the sample's own loop runs as one task when its rows fit one, as a coarse level
            # does (_in_one_task), its rows left where they were drawn until that task gathers them: at
            # k=64 on 1M digits the loop took 1.6-1.8 s with the gathering against 1.8-2.1 s over the
            # workers, the draw 0.24-0.45 s against 0.34-0.83 s; on 16 workers the loop 2.3-2.6 s against
            # 4.7-4.8 s, the same centers (docs/benchmarks.md section 25).
            sample_in_task = bounded and self._in_one_task(sample, plan)
            if plan is None:  # X streamed from its store: the sample is read from it once, here
                sample = sample.persist()
            elif sample_in_task:  # beside X's chunks: the task gathers them once
                from job.engine.persist import persist_where_drawn

                sample = persist_where_drawn(sample)
            else:  # in equal chunks spread over the workers' threads (as drawn: ~1 per chunk of X)
                from job.engine.persist import persist_spread

                sample = persist_spread(plan[0], sample)
            sample_plan = plan_tasks(sample)
        else:
            sample, sample_plan = X, plan
        m, col_sum, col_sumsq, finite = moments(sample, sample_plan)
        if not finite:
            raise ValueError("Input contains NaN or infinity.")
        if m < self.n_clusters:
            raise ValueError(
                f"the sample of {m} rows has fewer than n_clusters={self.n_clusters}; raise sample_size"
            )
        # tol relative to the feature variance, estimated on the sample (the same for a resumed run).
        tol = relative_tol(self.tol, m, col_sum, col_sumsq)
        draw_seconds = time.perf_counter() - started
        if sampled:
            log.info(
                "sample: %s of %s rows drawn (seed %s) in %.2f s", f"{m:,}", f"{n:,}", seeds[0], draw_seconds
            )
        sample_record: dict[str, Any] = {"rows": int(m), "draw_seconds": draw_seconds}
        if start is None:
            warming = []
            if bounded:
                from job.kmeans.bounded import warm_workers

                warming = warm_workers(plan[0])  # beside the start, a single task
            centers, init_info, starts = self._run_starts(sample, seeds, tol)
            del warming
            init_centers = centers.copy()
            if bounded and (sampled or self._costly_passes(n)):
                centers, sample_record["coarse"] = self._coarse_fit(sample, plan, centers, tol, seeds[0])
            if sampled:
                # With many clusters the sample's loop also stops on the gain (its shift reaches tol only
                # after hundreds of iterations that no longer move the inertia: docs/benchmarks.md, 14).
                rule = LoopRule(
                    tol, self.max_iter, SAMPLE_MIN_GAIN if bounded else 0.0, label=" on the sample"
                )
                if sample_in_task:
                    centers, loop = self._bounded_on(sample, plan, centers, rule, seeds[0], in_one_task=True)
                else:
                    on_sample = self._converge(sample, sample_plan, centers, rule, seed=seeds[0])
                    centers = on_sample.centers
                    loop = {"n_iter": int(on_sample.n_iter), "inertia": float(on_sample.inertia)}
                sample_record.update(
                    **loop, fit_seconds=time.perf_counter() - started - draw_seconds, **init_info
                )
                log.info(
                    "sample fit: %d iterations, inertia %.6g on the sample; now Lloyd over all %s rows",
                    loop["n_iter"],
                    loop["inertia"],
                    f"{n:,}",
                )
            done_before = 0
        else:
            starts = []
            centers = np.asarray(start["centers"], dtype=np.float64)
            init_centers, init_info = centers.copy(), {"resumed_after_iteration": int(start["n_iter"])}
            sample_record["resumed"] = True
            done_before = int(start["n_iter"])
            log.info("resuming after Lloyd iteration %d over all rows", done_before)
        if sampled:
            del sample
        init_seconds = time.perf_counter() - started

        started = time.perf_counter()
        inertias: list[float] = []

        def notify(state):
            inertias.append(state["inertia"])  # of the centers this pass started from
            if on_iteration is not None:
                on_iteration({"start": 0, **state})

        # Polishing (sampled): from a sample's converged centers the shift falls below tol only after a
        # hundred passes or more (8.1M deformed digits: still 10x tol after 60), while the inertia stops
        # improving after a few: stop when a pass gains less than tol, relative (docs/benchmarks.md), and
        # after at most polish_passes. Without a sample (it is X) this loop is the sample's: scikit-learn's
        # rule, and with many clusters also the sample's gain rule.
        previous = None if start is None else start.get("inertia")
        converged = start is not None and bool(start.get("converged"))
        max_iter = done_before if converged else self.max_iter
        if sampled:
            max_iter = min(max_iter, done_before + self._polish_passes())
        if sampled:
            min_gain = self.tol
        elif bounded:
            min_gain = ALL_ROWS_MIN_GAIN if self._costly_passes(n) else SAMPLE_MIN_GAIN
        else:
            min_gain = 0.0
        rule = LoopRule(tol, max_iter, min_gain, done_before, previous, " over all rows" if sampled else "")
        final = self._converge(X, plan, centers, rule, notify, seeds[0])
        n_iter, inertia = final.n_iter, final.inertia
        lloyd_seconds = time.perf_counter() - started
        if sampled:
            if inertias and start is None:
                sample_record["inertia_all_rows_after_sample"] = float(inertias[0])
            sample_record["inertia_all_rows_final"] = float(inertia)
            sample_record["full_passes"] = int(n_iter - done_before)
            log.info(
                "fit: %d Lloyd passes over all rows after the sample, inertia %.6g",
                n_iter - done_before,
                inertia,
            )
        # the draw, then Lloyd (bounded: its first pass, then one per iteration; plain: one per iteration,
        # then the final one); a coarse level drawn from X itself reads it once more
        coarse_from_x = not sampled and bool(sample_record.get("coarse"))
        return FitResult(
            **vars(final),  # the centers, n_iter, and the sums, counts, inertia and labels at them
            init_centers=init_centers,
            init_info=init_info,
            strategy=("sampled" if sampled else "starts on a subsample")
            + (" (bounded Lloyd)" if bounded else ""),
            starts=starts,
            # when the sample is X, only its coarse levels' record, if it had any
            sample=sample_record if sampled or coarse_from_x else None,
            passes_over_all_rows=2 + (n_iter - done_before) + int(coarse_from_x),
            init_seconds=init_seconds,
            lloyd_seconds=lloyd_seconds,
        )

    def _coarse_fit(self, rows, plan, centers, tol, seed, level=1) -> tuple[np.ndarray, list]:
        """The centers Lloyd reaches (with bounds, the sample's stopping rules) on a nested quarter of
        `rows`, started from the same on its own quarter (COARSE_FACTOR, COARSE_MIN_ROWS_PER_CENTER);
        `centers` when the quarter would be too small. Each level runs as _bounded_on runs it. Returns
        (centers, a record per level, the smallest first)."""
        from job.engine.persist import persist_spread
        from job.kmeans.sampling import sample_rows

        size = int(rows.shape[0]) // COARSE_FACTOR
        if size < COARSE_MIN_ROWS_PER_CENTER * self.n_clusters:
            return centers, []
        started = time.perf_counter()
        quarter = sample_rows(rows, size, seed, stream=COARSE_STREAM + level)
        in_one_task = self._in_one_task(quarter, plan)
        if not in_one_task:
            quarter = persist_spread(plan[0], quarter)
        centers, levels = self._coarse_fit(quarter, plan, centers, tol, seed, level + 1)
        label = f" on {int(quarter.shape[0]):,} rows (coarse level {level})"
        rule = LoopRule(tol, self.max_iter, SAMPLE_MIN_GAIN, label=label)
        centers, record = self._bounded_on(quarter, plan, centers, rule, seed, in_one_task)
        levels.append({"rows": int(quarter.shape[0]), **record, "seconds": time.perf_counter() - started})
        return centers, levels

    def _in_one_task(self, rows, plan) -> bool:
        """Whether bounded Lloyd on `rows` runs as one task (job.kmeans.bounded.fits_in_one_task)."""
        from job.kmeans.bounded import fits_in_one_task, threads_per_host

        hosts = len(threads_per_host(dict(plan[0].nthreads())))
        row_bytes = rows.dtype.itemsize * rows.shape[1]
        return fits_in_one_task(int(rows.shape[0]), row_bytes, self.n_clusters, hosts)

    def _bounded_on(self, rows, plan, centers, rule, seed, in_one_task) -> tuple[np.ndarray, dict]:
        """Bounded Lloyd on `rows` (a coarse level of the sample, or the sample itself: only the centers
        are kept, not the labels) under `rule`: as one task on one machine's threads
        (job.kmeans.bounded.lloyd_in_one_task), else over the workers (`rows` persisted). Returns
        (centers, {n_iter, inertia, and the task's threads when it ran as one})."""
        if in_one_task:
            from job.kmeans.bounded import lloyd_in_one_task

            done = lloyd_in_one_task(plan[0], rows, centers, rule, seed)
            record = {"n_iter": int(done["n_iter"]), "inertia": float(done["inertia"])}
            return done["centers"], {**record, "threads": int(done["threads"])}
        converged = self._converge(rows, plan_tasks(rows), centers, rule, seed=seed)
        return converged.centers, {"n_iter": int(converged.n_iter), "inertia": float(converged.inertia)}

    def _polish_passes(self) -> int:
        """Most polishing passes. "auto": until a pass gains less than tol below BOUNDED_MIN_K clusters
        (k=10 on 8.1M digits: the sample's centers took 2 passes; docs/benchmarks.md, section 12), none
        from it on. There the sample's fit with bounds, from a coarse level, ends close to where polishing
        takes it, and each pass over all rows costs much of the fit: on the first 1M generated digits
        polishing lowered the inertia by 0.05%, 0.07% and 0.14% at k=32, 64 and 128 for 1.18x, 1.30x and
        1.49x the fit's time (benchmarks/polish_passes.py), at k=256 on 8.1M by 0.23% for 3.3x (section
        14); the unpolished inertia at k=64 is still below every anchor's."""
        if self.polish_passes == "auto":
            return self.max_iter if self.n_clusters < BOUNDED_MIN_K else 0
        return int(self.polish_passes)

    def _costly_passes(self, n: int) -> bool:
        """Whether one Lloyd pass over `n` rows costs more than CHEAP_PASS_MAX_WORK row-centers."""
        return n * self.n_clusters > CHEAP_PASS_MAX_WORK

    def _bounded(self, plan) -> bool:
        """Whether Lloyd runs with Yinyang bounds (job.kmeans.bounded): with many clusters, on a
        persisted X."""
        return plan is not None and self.n_clusters >= BOUNDED_MIN_K

    def _converge(self, X, plan, centers, rule: LoopRule, on_iteration=None, seed=0) -> Converged:
        """Lloyd from `centers` under `rule` and the assignment at its last centers; with bounds on a
        persisted X (FusedKMeans._bounded) the labels stay on the workers, else they are computed again
        when asked for."""
        if self._bounded(plan) and rule.max_iter <= rule.done_before:  # no iteration: only the final pass
            from job.kmeans.bounded import assign_kept

            sums, counts, inertia, labels = assign_kept(X, plan, centers)
            return Converged(
                np.asarray(centers, dtype=np.float64), rule.done_before, sums, counts, inertia, labels
            )
        if self._bounded(plan):
            from job.kmeans.bounded import bounded_lloyd

            return bounded_lloyd(X, plan, centers, rule, on_iteration, seed)
        centers, n_iter = self._lloyd(X, centers, plan, rule, on_iteration)
        sums, counts, inertia = lloyd_step(X, centers, plan)
        return Converged(centers, n_iter, sums, counts, inertia)

    def _run_starts(self, sample, seeds, tol):
        """The starts: each one task fitting a nested subsample of the sample in memory
        (job.kmeans.in_memory.local_fit: greedy k-means++, the subsample fitting one task, and Lloyd), run
        side by side on the workers; the one with the lowest subsample inertia wins. Given centers (init as
        an array) skip them. Returns (centers, info: the subsample's size and its starts, a record per
        start)."""
        from job.kmeans.in_memory import local_fit, seeding_rows
        from job.kmeans.sampling import (
            START_MAX_ITER,
            SUBSAMPLE_STREAM,
            auto_starts,
            sample_rows,
            subsample_size,
        )

        started = time.perf_counter()
        m = int(sample.shape[0])
        if not isinstance(self.init, str):
            return np.asarray(self.init, dtype=np.float64), {}, []
        if self.n_init == "auto":
            seeds = [seeds[0] + i for i in range(auto_starts(m, self.n_clusters))]
        # One start has nothing to be chosen against: it is only the seeding, and Lloyd runs on the
        # sample over all the workers rather than single-threaded on the subsample in one task. Its task
        # then gets only the rows greedy k-means++ seeds from (3,125 at k=256), not the whole subsample:
        # gathering 256,000 rows into one task and scoring them there single-threaded cost 2.1-2.7 s.
        local_iter = min(self.max_iter, START_MAX_ITER) if len(seeds) > 1 else 0
        size = subsample_size(m, self.n_clusters) if local_iter else seeding_rows(m, self.n_clusters)
        sub = sample_rows(sample, size, seeds[0], stream=SUBSAMPLE_STREAM) if size < m else sample
        rows = delayed(np.concatenate)(list(sub.to_delayed().ravel()))
        results = dask.compute(
            *[
                delayed(local_fit, name=f"local_fit-{uuid.uuid4().hex}")(
                    rows, self.n_clusters, seed, tol, local_iter
                )
                for seed in seeds
            ]
        )
        best = min(results, key=lambda r: r["inertia"])
        starts = [
            {
                "seed": r["seed"],
                "inertia": r["inertia"],
                "n_iter": r["n_iter"],
                "init_seconds": 0.0,
                "lloyd_seconds": r["seconds"],
                "init_info": {"init": "k-means++"},
            }
            for r in results
        ]
        for r in results:
            log.info(
                "start (seed %s) on a subsample of %s rows: inertia %.6g after %d iterations, %.2f s%s",
                r["seed"],
                f"{int(sub.shape[0]):,}",
                r["inertia"],
                r["n_iter"],
                r["seconds"],
                " (best)" if r is best else "",
            )
        log.info("%d start(s) in %.2f s", len(results), time.perf_counter() - started)
        return (
            best["centers"],
            {
                "subsample_rows": int(sub.shape[0]),
                "starts": [
                    {key: r[key] for key in ("seed", "inertia", "n_iter", "seconds")} for r in results
                ],
            },
            starts,
        )

    def _start_seeds(self) -> list:
        starts = 1 if self.n_init == "auto" else int(self.n_init)
        seed = base_seed(self.random_state)
        return [seed + i for i in range(starts)]

    def _one_start(self, X, seed, tol, plan, start, on_iteration, weights=None) -> Start:
        started = time.perf_counter()
        if start is None:
            centers, init_info = self._init_centers(X, seed, weights)
            log.info(
                "init (%s): %d centers in %.2f s",
                self.init if isinstance(self.init, str) else "given",
                len(centers),
                time.perf_counter() - started,
            )
        else:
            centers = np.asarray(start["centers"], dtype=np.float64)
            init_info = {"resumed_after_iteration": int(start["n_iter"])}
            log.info("resuming after Lloyd iteration %d", start["n_iter"])
        init_centers, init_seconds = centers.copy(), time.perf_counter() - started

        started = time.perf_counter()
        done_before = 0 if start is None else int(start["n_iter"])
        if start is not None and start.get("converged"):
            n_iter = done_before
        else:
            rule = LoopRule(tol, self.max_iter, done_before=done_before)
            centers, n_iter = self._lloyd(X, centers, plan, rule, on_iteration, weights)
        lloyd_seconds = time.perf_counter() - started
        sums, counts, inertia = lloyd_step(X, centers, plan, weights)
        return Start(
            centers, inertia, counts, sums, n_iter, init_centers, init_info, init_seconds, lloyd_seconds, seed
        )

    def _init_centers(self, X: da.Array, seed: int, weights=None) -> tuple[np.ndarray, dict]:
        """The given centers for an array; ours for "k-means||" (job.kmeans.kmeans_parallel: seeded, weighted
        candidates, optional sample weights, chunking-independent); dask-ml's for "k-means++" or "random"."""
        if not isinstance(self.init, str):
            return np.asarray(self.init, dtype=np.float64).copy(), {"init": "given"}
        if self.init == "k-means||":
            rounds = self.init_max_iter or DEFAULT_INIT_ROUNDS
            return kmeans_parallel(
                X,
                self.n_clusters,
                seed=seed,
                rounds=rounds,
                oversampling=self.oversampling_factor,
                weights=weights,
            )
        from dask_ml.cluster.k_means import k_init  # imported only here: dask_ml takes 1.4 s to import

        centers = k_init(
            X,
            self.n_clusters,
            init=self.init,
            random_state=seed,
            max_iter=self.init_max_iter,
            oversampling_factor=self.oversampling_factor,
            n_init="auto",
        )
        return np.asarray(centers, dtype=np.float64), {}

    def _lloyd(
        self, X, centers, plan, rule: LoopRule, on_iteration=None, weights=None
    ) -> tuple[np.ndarray, int]:
        """Lloyd iterations from `centers` under `rule` (job.kmeans.passes.LoopRule): (centers, n_iter).
        weights: sample weights (a dask array chunked like X) or None."""
        iterations, n_iter = Iterations(rule, log), rule.done_before
        for n_iter in range(rule.done_before + 1, rule.max_iter + 1):
            sums, counts, inertia = lloyd_step(X, centers, plan, weights)
            if not np.isfinite(inertia):
                raise ValueError("Input contains NaN or infinity.")
            if not counts.all():
                # dask-ml collapses an empty cluster to the origin; like scikit-learn, we move it to
                # the points farthest from their centers.
                sums, counts = reseed_empty(X, centers, sums, counts, plan, weights)
            # A cluster still empty (X has fewer distinct points than clusters) keeps its center.
            new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
            shift = float(((new - centers) ** 2).sum())
            centers = new
            done = iterations.last(n_iter, inertia, shift)
            if on_iteration is not None:
                on_iteration(
                    {
                        "n_iter": n_iter,
                        "centers": centers,
                        "inertia": inertia,
                        "shift": shift,
                        "converged": done,
                    }
                )
            if done:
                break
        return centers, n_iter

    def predict(self, X):
        """The nearest center of each row of X.

        Parameters
        ----------
        X : dask array, dask DataFrame, array-like or pandas DataFrame of shape (n_samples, n_features)

        Returns
        -------
        labels : dask.array.Array or ndarray of shape (n_samples,), int32
            Lazy for a dask collection, as dask-ml's; a numpy array for in-memory X, as scikit-learn's.
        """
        self._check_fitted()
        labels = predict_labels(check_features(self, X, reset=False), self.cluster_centers_)
        return labels if dask.is_dask_collection(X) else np.asarray(labels.compute())

    def score(self, X, y=None, sample_weight=None) -> float:
        """Opposite of the (weighted) sum of squared distances of X's rows to their nearest center, as
        scikit-learn's KMeans.score: higher is better.

        Parameters
        ----------
        X : dask array, dask DataFrame, array-like or pandas DataFrame of shape (n_samples, n_features)
        y : ignored
        sample_weight : array-like or dask array of shape (n_samples,), or None

        Returns
        -------
        score : float
        """
        self._check_fitted()
        X, weights = check_rows_and_weights(self, X, sample_weight, reset=False)
        return -float(
            lloyd_step(X, np.asarray(self.cluster_centers_, dtype=np.float64), plan_tasks(X), weights)[2]
        )

    def transform(self, X, y=None):
        """Euclidean distances of X's rows to the centers.

        Parameters
        ----------
        X : dask array, dask DataFrame, array-like or pandas DataFrame of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        distances : dask.array.Array or ndarray of shape (n_samples, n_clusters)
            Lazy for a dask collection, a numpy array for in-memory X; X's float type (float32 for compact
            integers).
        """
        self._check_fitted()
        lazy = dask.is_dask_collection(X)
        X = check_features(self, X, reset=False)
        centers = self.cluster_centers_
        # As scikit-learn's euclidean_distances: float64 when X or the centers are; float32 otherwise
        # (compact integers and float32 centers included), float32 X upcast block by block if need be.
        dtype = np.result_type(kernels.compute_dtype(X.dtype), centers.dtype)
        if kernels.compute_dtype(X.dtype) != dtype:
            X = X.astype(dtype)
        distances = X.map_blocks(
            kernels.center_distances, centers, chunks=(X.chunks[0], (len(centers),)), dtype=dtype
        )
        return distances if lazy else np.asarray(distances.compute())

    def _check_fitted(self):
        from sklearn.utils.validation import check_is_fitted

        check_is_fitted(self, "cluster_centers_")


def make_estimator(engine: str, **params):
    """The estimator for `engine` ("fused" or "dask-ml") with dask-ml's parameters."""
    if engine == "fused":
        return FusedKMeans(**params)
    from dask_ml.cluster import KMeans as DaskMLKMeans

    return DaskMLKMeans(**params)
