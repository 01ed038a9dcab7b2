"""Yinyang bounds (job.engine.bounds, job.kmeans.bounded) give plain Lloyd's assignments, sums and
inertia: on real MNIST rows, per chunk and on a real two-worker cluster."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import zarr

from job.engine import bounds, kernels, projected
from job.engine.map_reduce import plan_tasks
from job.engine.persist import persist_balanced
from job.kmeans.bounded import bounded_lloyd
from job.kmeans.passes import LoopRule


def _rows(store, n):
    return np.asarray(zarr.open_group(str(store), mode="r")["train/images"][:n]).reshape(n, -1)


def _plain_lloyd(X, centers, iterations):
    for _ in range(iterations):
        sums, counts, _ = kernels.lloyd_partial(X, centers)
        centers = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
    return centers


def _assert_bounds_hold(X, C, groups, state):
    """Each row's upper bound is at least its distance to its center, and each group's lower bound at
    most its distance to every other center of that group (float64 distances, float32 bounds)."""
    labels, upper, lower = state
    Xf = X.astype(np.float64)
    D = np.sqrt(np.maximum(kernels.squared_norms(Xf)[:, None] - 2 * Xf @ C.T + kernels.squared_norms(C), 0))
    rows = np.arange(len(X))
    margin = 1e-4 * D.max()
    assert (upper >= D[rows, labels] - margin).all()
    D[rows, labels] = np.inf
    for g in range(groups.count):
        assert (lower[:, g] <= D[:, groups.members(g)].min(axis=1) + margin).all(), g


@pytest.mark.parametrize(
    "k, through_projection",
    [(64, False), (256, False), (256, True)],  # every center searched; from 256 on only the failed groups
)
def test_each_bounded_step_assigns_as_plain_lloyd_does(mnist_store, k, through_projection):
    """Also with the first pass made through the centers' projection (job.engine.projected), as the
    job makes it from projected.MIN_K centers on."""
    assert bounds.searches_groups(k) == (k >= bounds.GROUP_SEARCH_MIN_K)
    X = _rows(mnist_store, 6_000)
    C = X[np.random.default_rng(0).choice(len(X), k, replace=False)].astype(np.float64)
    groups = bounds.make_groups(C, bounds.group_count(k), seed=0)
    first = projected.project(C[groups.order]) if through_projection else None
    state, (sums, counts, _inertia, sq_total) = bounds.init_chunk(X, C, groups, first)
    assert np.array_equal(state[0], kernels.assign(X, C)[0])
    assert np.isclose(sq_total, float((X.astype(np.float64) ** 2).sum()))
    skipped = []
    for it in range(12):
        new = sums / np.maximum(counts, 1)[:, None]
        moves = np.sqrt(((new - C) ** 2).sum(axis=1))
        C = new
        state, (d_sums, d_counts, _moved, computed, step_inertia) = bounds.step_chunk(
            X, state, C, moves, groups, exact=it == 11
        )
        sums, counts = sums + d_sums, counts + d_counts
        plain_sums, plain_counts, plain_inertia = kernels.lloyd_partial(X, C)
        assert np.array_equal(state[0], kernels.assign(X, C)[0]), it
        assert np.array_equal(counts, plain_counts) and np.array_equal(sums, plain_sums)  # uint8: exact sums
        _assert_bounds_hold(X, C, groups, state)
        skipped.append(1 - computed / (len(X) * k))
    assert np.isclose(step_inertia, plain_inertia, rtol=1e-6)
    assert skipped[-1] > 0.3  # the bounds do skip distances once the centers settle


@pytest.mark.parametrize("k", [40, 128])  # from projected.MIN_K on, the first pass goes through the bound
def test_bounded_lloyd_on_a_cluster_matches_plain_lloyd(client, mnist_store, k):
    X_np = _rows(mnist_store, 8_000)
    X = persist_balanced(client, da.from_array(X_np, chunks=(1_000, 784)))
    start = X_np[:: len(X_np) // k][:k].astype(np.float64)
    fitted = bounded_lloyd(X, plan_tasks(X), start, LoopRule(tol=0.0, max_iter=10))
    expected = _plain_lloyd(X_np, start, 10)
    assert fitted.n_iter == 10
    assert np.allclose(fitted.centers, expected)
    sums, counts, inertia = kernels.lloyd_partial(X_np, fitted.centers)
    assert np.array_equal(fitted.counts, counts) and np.allclose(fitted.sums, sums)
    assert np.isclose(fitted.inertia, inertia, rtol=1e-6)
    assert np.array_equal(fitted.labels.compute(), kernels.assign(X_np, fitted.centers)[0])


@pytest.mark.slow
def test_a_large_k_sampled_fit_keeps_the_labels_of_its_one_pass_over_all_rows(client, mnist_store):
    """k >= 32 on a persisted X: the sample's Lloyd runs with bounds, then (polish_passes=0) one pass
    assigns every row and keeps its labels on the workers: they, the counts, the sums and the inertia
    are those of the nearest centers; with polish_passes=2 the bounded loop polishes; "auto" does not
    polish from 32 clusters on, and polishes below them."""
    from job.kmeans import estimator
    from job.kmeans.estimator import FusedKMeans

    X_np = _rows(mnist_store, 30_000)
    X = persist_balanced(client, da.from_array(X_np, chunks=(3_000, 784)))
    k = 64  # on a 20,000-row sample: one start (only its seeding), then the sample's Lloyd
    model = FusedKMeans(k, random_state=0, sample_size=20_000, polish_passes=0).fit(X)
    assert model.strategy_ == "sampled (bounded Lloyd)" and model.labels_kept_
    assert model.n_iter_ == 0 and model.passes_over_all_rows_ == 2
    labels = model.labels_.compute()
    assert np.array_equal(labels, kernels.assign(X_np, model.cluster_centers_.astype(np.float64))[0])
    sums, counts, inertia = kernels.lloyd_partial(X_np, model.cluster_centers_.astype(np.float64))
    assert np.array_equal(model.counts_, counts) and np.allclose(model.cluster_sums_, sums)
    assert np.isclose(model.inertia_, inertia, rtol=1e-6)
    assert model.sample_["n_iter"] > 1  # the sample's bounded Lloyd ran

    polished = FusedKMeans(k, random_state=0, sample_size=20_000, polish_passes=2).fit(X)
    assert 1 <= polished.n_iter_ <= 2 and polished.labels_kept_
    assert polished.inertia_ < model.inertia_
    centers = polished.cluster_centers_.astype(np.float64)
    assert np.array_equal(polished.labels_.compute(), kernels.assign(X_np, centers)[0])
    assert np.isclose(polished.inertia_, kernels.lloyd_partial(X_np, centers)[2], rtol=1e-6)

    unpolished = FusedKMeans(k, random_state=0, sample_size=20_000).fit(X)  # "auto"
    assert unpolished.n_iter_ == 0 and unpolished.inertia_ == model.inertia_
    assert np.array_equal(unpolished.cluster_centers_, model.cluster_centers_)
    assert FusedKMeans(estimator.BOUNDED_MIN_K - 1, random_state=0, sample_size=20_000).fit(X).n_iter_ >= 1


def test_the_evaluation_pass_from_kept_labels_scores_as_the_full_pass(client, mnist_store):
    """evaluate_at given the fit's labels makes no distance product and gets the same Evaluation."""
    from job.evaluation.evaluate import evaluate_at
    from job.kmeans.estimator import FusedKMeans

    X_np = _rows(mnist_store, 12_000)
    truth = da.from_array(
        np.asarray(zarr.open_group(str(mnist_store), mode="r")["train/labels"][:12_000]), chunks=3_000
    )
    X = persist_balanced(client, da.from_array(X_np, chunks=(1_500, 784)))
    model = FusedKMeans(40, random_state=0, sample_size=4_000).fit(X)
    assert model.labels_kept_
    index = np.arange(0, 12_000, 97)
    args = (X, truth, model.cluster_centers_, model.counts_, model.cluster_sums_, index, 3, 0)
    full, kept = evaluate_at(*args), evaluate_at(*args, labels=model.labels_)
    assert np.array_equal(full.labels.compute(), kept.labels.compute())
    a, b = full.evaluation.to_dict(), kept.evaluation.to_dict()
    for key in a:
        assert np.allclose(a[key], b[key], rtol=1e-9, equal_nan=True), key
    assert np.array_equal(full.closest, kept.closest) and np.array_equal(full.random, kept.random)
    assert np.array_equal(full.sample.labels, kept.sample.labels)


@pytest.mark.slow
def test_the_samples_loop_starts_from_a_fit_of_a_nested_quarter(client, mnist_store, monkeypatch):
    """With bounds, Lloyd on the sample starts from the centers Lloyd reaches on a quarter of it drawn
    by row position (the same rows for any chunking); the fit stays exact over all rows."""
    from job.kmeans import estimator
    from job.kmeans.estimator import FusedKMeans

    monkeypatch.setattr(estimator, "COARSE_MIN_ROWS_PER_CENTER", 50)  # 5,000 rows per 40 centers: one level
    X_np = _rows(mnist_store, 30_000)
    fits = []
    for chunk in (3_000, 7_000):
        X = persist_balanced(client, da.from_array(X_np, chunks=(chunk, 784)))
        fits.append(FusedKMeans(40, random_state=0, sample_size=20_000, polish_passes=0).fit(X))
    model, rechunked = fits
    (level,) = model.sample_["coarse"]
    assert 4_500 < level["rows"] < 5_500 and level["n_iter"] > 1
    assert rechunked.sample_["coarse"][0]["rows"] == level["rows"]
    assert np.allclose(rechunked.cluster_centers_, model.cluster_centers_)
    centers = model.cluster_centers_.astype(np.float64)
    assert np.array_equal(model.labels_.compute(), kernels.assign(X_np, centers)[0])
    assert np.isclose(model.inertia_, kernels.lloyd_partial(X_np, centers)[2], rtol=1e-6)

    monkeypatch.setattr(estimator, "COARSE_MIN_ROWS_PER_CENTER", 200)  # 5,000 < 200 x 40: no coarse level
    direct = FusedKMeans(40, random_state=0, sample_size=20_000, polish_passes=0).fit(X)
    assert direct.sample_["coarse"] == [] and not np.allclose(direct.cluster_centers_, model.cluster_centers_)


def test_the_loop_in_one_task_steps_its_rows_on_threads_as_plain_lloyd_does(mnist_store):
    """lloyd_in_task (the same bounded loop, the rows' pieces stepped on a thread pool in this process)
    ends where plain Lloyd does, uses the threads it is given, and never more than the cores it may."""
    from job.kmeans.bounded import _usable_cores, lloyd_in_task

    X_np = _rows(mnist_store, 6_000)
    start = X_np[:: len(X_np) // 40][:40].astype(np.float64)
    threads = min(2, _usable_cores())
    done = lloyd_in_task(start, LoopRule(tol=0.0, max_iter=10), 0, threads, None, X_np[:2_500], X_np[2_500:])
    assert done["n_iter"] == 10 and done["threads"] == threads
    assert np.allclose(done["centers"], _plain_lloyd(X_np, start, 10))
    assert np.isclose(done["inertia"], kernels.lloyd_partial(X_np, done["centers"])[2], rtol=1e-6)
    assert any("bounded Lloyd: 10 iterations" in line for _, line in done["log"])  # for the client's log
    many = lloyd_in_task(start, LoopRule(tol=0.0, max_iter=2), 0, 64, None, X_np)
    assert many["threads"] <= _usable_cores()


def test_the_threads_share_the_rows_in_order_small_pieces_joined_large_ones_as_views():
    """_shares cuts the rows of several pieces into contiguous, nearly equal shares without copying;
    _merged joins a share's small consecutive pieces (a sample drawn from many chunks) into arrays of
    at least MERGE_BELOW_ROWS rows and keeps a large piece as it is."""
    from job.kmeans.bounded import MERGE_BELOW_ROWS, _merged, _shares

    sizes = [3 * MERGE_BELOW_ROWS, *[300] * 40, 0, MERGE_BELOW_ROWS // 2, 7, 0]  # a drawn piece can be empty
    rows = np.arange(sum(sizes) * 3, dtype=np.uint8).reshape(-1, 3)
    pieces = np.split(rows, np.cumsum(sizes)[:-1])
    shares = _shares(pieces, 3)
    assert len(shares) == 3 and np.ptp([sum(len(p) for p in share) for share in shares]) <= 1
    assert np.array_equal(np.concatenate([p for share in shares for p in share]), rows)
    assert all(len(p) and np.shares_memory(p, rows) for share in shares for p in share)  # views, no copy
    merged = [_merged(share) for share in shares]
    assert np.array_equal(np.concatenate([p for share in merged for p in share]), rows)
    for share in merged:
        assert all(len(p) >= MERGE_BELOW_ROWS for p in share[:-1]), [len(p) for p in share]
    assert np.shares_memory(merged[0][0], rows) and len(merged[0][0]) >= MERGE_BELOW_ROWS  # kept as is
    assert sum(len(share) for share in merged) < sum(len(share) for share in shares)


def test_the_loop_in_one_task_on_many_small_pieces_ends_where_plain_lloyd_does(mnist_store):
    """A sample drawn from many chunks reaches the task in small pieces: joined per thread, stepped
    alike."""
    from job.kmeans.bounded import lloyd_in_task

    X_np = _rows(mnist_store, 6_000)
    start = X_np[:: len(X_np) // 40][:40].astype(np.float64)
    done = lloyd_in_task(start, LoopRule(tol=0.0, max_iter=8), 0, 2, None, *np.array_split(X_np, 60))
    assert done["n_iter"] == 8 and np.allclose(done["centers"], _plain_lloyd(X_np, start, 8))


def test_a_sample_for_one_task_stays_on_the_workers_that_drew_it(client, mnist_store):
    """persist_where_drawn keeps each drawn piece on the worker of the chunk it came from (nothing
    crosses between workers before the task gathers the rows), the same rows as the sample."""
    import dask

    from job.engine.persist import persist_where_drawn
    from job.kmeans.sampling import sample_rows

    def futures(array):
        return [array.__dask_graph__()[key] for key in dask.core.flatten(array.__dask_keys__())]

    X = persist_balanced(client, da.from_array(_rows(mnist_store, 24_000), chunks=(3_000, 784)))
    sample = persist_where_drawn(sample_rows(X, 6_000, seed=0))
    x_holders, drawn_holders = client.who_has(futures(X)), client.who_has(futures(sample))
    assert len({w for f in futures(X) for w in x_holders[f.key]}) == 2  # X lies on both workers
    assert [set(drawn_holders[f.key]) for f in futures(sample)] == [set(x_holders[f.key]) for f in futures(X)]
    assert np.array_equal(sample.compute(), sample_rows(X, 6_000, seed=0).compute())


def test_warm_loads_the_bounded_loops_kernels_in_a_fresh_process():
    """bounds.warm leaves the kernels of an init and a step loaded (a compiled signature each), in a
    process that had none of them: what a fit's first bounded pass would otherwise load."""
    import subprocess
    import sys

    script = (
        "from job.engine import bounds\n"
        "kernels = [bounds._add_rows, bounds._search, bounds._own_distances, bounds._move_rows]\n"
        "print([len(k.signatures) for k in kernels])\n"
        "bounds.warm()\n"
        "print([len(k.signatures) for k in kernels])\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    before, after = out.strip().splitlines()
    assert before == "[0, 0, 0, 0]" and "0" not in after.strip("[]").split(", "), out


def test_a_level_runs_in_one_task_on_one_machine_and_only_a_small_one_on_several():
    """Every level that fits IN_TASK_MAX_BYTES runs in one task on a one-machine cluster (the task has all
    of the workers' cores there); on several machines only one within IN_TASK_MAX_WORK row-centers."""
    from job.kmeans.bounded import fits_in_one_task, threads_per_host

    nthreads = {"tcp://10.0.0.1:4001": 4, "tcp://10.0.0.1:4002": 4, "tcp://10.0.0.2:4001": 8}
    assert threads_per_host(nthreads) == {"10.0.0.1": 8, "10.0.0.2": 8}
    assert threads_per_host({"tcp://127.0.0.1:1": 1, "tcp://127.0.0.1:2": 1}) == {"127.0.0.1": 2}
    assert fits_in_one_task(50_125, 784, 64, hosts=2) and fits_in_one_task(64_217, 784, 256, hosts=2)
    assert fits_in_one_task(250_182, 784, 1024, hosts=1) and not fits_in_one_task(250_182, 784, 1024, hosts=2)
    assert not fits_in_one_task(400_000, 784, 8, hosts=1)  # 314 MB of rows


def test_the_loop_in_one_task_logs_its_lines_on_the_client_as_it_goes_each_once(client, mnist_store, caplog):
    """lloyd_in_one_task relays the task's log lines while the loop runs (distributed events), not all at
    its end, and none is lost or logged twice."""
    import logging

    from job.kmeans.bounded import lloyd_in_one_task

    X_np = _rows(mnist_store, 20_000)
    start = X_np[:: len(X_np) // 64][:64].astype(np.float64)
    X = da.from_array(X_np, chunks=(5_000, 784))
    with caplog.at_level(logging.DEBUG, logger="job.kmeans.bounded"):
        done = lloyd_in_one_task(client, X, start, LoopRule(tol=0.0, max_iter=40, label=" (relayed)"))
    lines = [r for r in caplog.records if r.name == "job.kmeans.bounded"]
    iterations = [r for r in lines if r.getMessage().startswith("Lloyd iteration")]
    assert [r.getMessage().split("/")[0] for r in iterations] == [
        f"Lloyd iteration {i}" for i in range(1, 41)
    ]
    assert [r.getMessage() for r in lines if "bounded Lloyd (relayed)" in r.getMessage()] != []
    assert len(lines) == len(done["log"]) + 1  # every line of the task once, and the where-and-how-long line
    assert iterations[0].created < iterations[-1].created - done["seconds"] / 2  # came while it ran


@pytest.mark.slow
def test_a_small_coarse_level_runs_as_one_task_on_its_hosts_threads(client, mnist_store, monkeypatch):
    """A coarse level within bounded.IN_TASK_MAX_BYTES is one task on one worker, run on the threads of
    every worker of that host (here the two single-threaded workers of one machine), and so is the
    sample's own loop: no pass task of a distributed loop runs, and the fit ends where the loops run
    over the workers take it."""
    from dask.utils import key_split
    from distributed import get_task_stream

    from job.kmeans import bounded, estimator
    from job.kmeans.estimator import FusedKMeans

    monkeypatch.setattr(estimator, "COARSE_MIN_ROWS_PER_CENTER", 50)  # 5,000 rows per 40 centers: one level
    X = persist_balanced(client, da.from_array(_rows(mnist_store, 30_000), chunks=(3_000, 784)))
    fits, names = [], []
    for max_bytes in (bounded.IN_TASK_MAX_BYTES, 0):  # the default, then every level over the workers
        monkeypatch.setattr(bounded, "IN_TASK_MAX_BYTES", max_bytes)
        with get_task_stream(client) as stream:
            fits.append(FusedKMeans(40, random_state=0, sample_size=20_000, polish_passes=0).fit(X))
        names.append([key_split(task["key"]) for task in stream.data])
    in_task, spread = fits
    (level,) = in_task.sample_["coarse"]
    assert level["threads"] == 2 and 4_500 < level["rows"] < 5_500 and level["n_iter"] > 1
    assert in_task.sample_["threads"] == 2  # the sample's own loop too
    assert names[0].count("bounded_lloyd_in_task") == 2 and names[0].count("bounds_init") == 0
    assert "bounded_lloyd_in_task" not in names[1] and names[1].count("bounds_init") == 4
    assert "threads" not in spread.sample_["coarse"][0] and "threads" not in spread.sample_
    assert in_task.sample_["n_iter"] == spread.sample_["n_iter"]
    assert level["n_iter"] == spread.sample_["coarse"][0]["n_iter"]
    assert np.allclose(in_task.cluster_centers_, spread.cluster_centers_)


@pytest.mark.slow
def test_a_costly_loop_over_all_rows_starts_from_a_coarse_level_and_stops_on_its_gain(
    client, mnist_store, monkeypatch
):
    """When the sample is all of X and one pass over X is costly (more than CHEAP_PASS_MAX_WORK row-centers),
    Lloyd over X starts from a fit of a nested quarter of X and stops once an iteration gains less than
    ALL_ROWS_MIN_GAIN; the fit stays exact. A cheap X keeps the loop from the seeding."""
    from job.kmeans import estimator
    from job.kmeans.estimator import FusedKMeans

    monkeypatch.setattr(estimator, "COARSE_MIN_ROWS_PER_CENTER", 50)  # 5,000 rows per 40 centers: one level
    X_np = _rows(mnist_store, 20_000)
    X = persist_balanced(client, da.from_array(X_np, chunks=(4_000, 784)))
    cheap = FusedKMeans(40, random_state=0).fit(X)
    assert cheap.sample_ is None  # 20,000 x 40 row-centers is under CHEAP_PASS_MAX_WORK: no coarse level

    monkeypatch.setattr(estimator, "CHEAP_PASS_MAX_WORK", 100_000)
    costly = FusedKMeans(40, random_state=0).fit(X)
    (level,) = costly.sample_["coarse"]
    assert 4_500 < level["rows"] < 5_500 and level["n_iter"] > 1 and costly.sample_["rows"] == 20_000
    assert costly.passes_over_all_rows_ == costly.n_iter_ + 3  # the quarter's draw reads X too
    assert cheap.passes_over_all_rows_ == cheap.n_iter_ + 2
    centers = costly.cluster_centers_.astype(np.float64)
    assert np.array_equal(costly.labels_.compute(), kernels.assign(X_np, centers)[0])
    assert np.isclose(costly.inertia_, kernels.lloyd_partial(X_np, centers)[2], rtol=1e-6)

    monkeypatch.setattr(estimator, "ALL_ROWS_MIN_GAIN", 1.0)  # every gain is below it
    assert costly.n_iter_ > 2
    assert FusedKMeans(40, random_state=0).fit(X).n_iter_ == 2  # the first gain is known after iteration 2


def test_the_pass_that_assigns_every_row_through_the_projection_is_the_fused_kernels(client, mnist_store):
    """assign_kept from projected.MIN_K centers on (through the centers' projection): the labels kept on
    the workers, the counts, the sums and the inertia are those of the fused kernel."""
    from job.engine import projected
    from job.kmeans.bounded import assign_kept

    X_np = _rows(mnist_store, 8_000)
    X = persist_balanced(client, da.from_array(X_np, chunks=(1_000, 784)))
    C = X_np[np.random.default_rng(2).choice(len(X_np), 160, replace=False)].astype(np.float64) + 0.5
    assert projected.pays(len(C))
    sums, counts, inertia, labels = assign_kept(X, plan_tasks(X), C)
    plain_sums, plain_counts, plain_inertia = kernels.lloyd_partial(X_np, C)
    assert np.array_equal(labels.compute(), kernels.assign(X_np, C)[0])
    assert np.array_equal(counts, plain_counts) and np.array_equal(sums, plain_sums)  # uint8: exact sums
    assert np.isclose(inertia, plain_inertia, rtol=1e-6)
