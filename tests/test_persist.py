"""The persist decision and the even layout of a persisted X."""

from collections import Counter

import dask.array as da
import numpy as np

from job.engine.map_reduce import plan_tasks
from job.engine.persist import _targets, balanced_chunks, decide_persist, persist_balanced


def test_decision_follows_the_cluster_memory():
    assert decide_persist(100, 1000, "auto", 0.5)[0]
    persist, reason = decide_persist(600, 1000, "auto", 0.5)
    assert not persist and "streamed" in reason
    assert not decide_persist(1, 0, "auto", 0.5)[0]  # no declared limit: do not guess
    assert decide_persist(10**12, 1000, "always", 0.5) == (True, "--persist always")
    assert decide_persist(1, 1000, "never", 0.5) == (False, "--persist never")


def test_balanced_chunks_are_equal_and_a_multiple_of_threads():
    rows = balanced_chunks(70_000, 784 * 4, 2)
    assert rows == 8750  # 8 chunks of 27 MB
    assert balanced_chunks(100, 10, 4) == 25


def test_targets_keep_chunks_in_place_up_to_each_share():
    nthreads = {"a": 1, "b": 1}
    assert _targets([("a",), ("a",), ("a",), ("b",)], nthreads) == ["a", "a", "b", "b"]
    assert Counter(_targets([("a", "b")] * 4, nthreads)) == {"a": 2, "b": 2}
    assert _targets([(), ()], nthreads) in (["a", "b"], ["b", "a"])  # lost chunks are placed too


def test_persisted_x_is_spread_evenly_and_unchanged(client):
    X_np = np.random.default_rng(0).random((1000, 6)).astype(np.float32)
    # Computed on one worker only, so that every chunk starts out in the same place.
    worker = sorted(client.scheduler_info()["workers"])[0]
    X = da.from_array(X_np, chunks=(1000, 6)).persist(workers=[worker])
    balanced = persist_balanced(client, X, rows=125)
    assert balanced.chunks[0] == (125,) * 8
    np.testing.assert_array_equal(balanced.compute(), X_np)
    _, groups = plan_tasks(balanced)
    assert sorted(len(g) for _, g in groups) == [4, 4]
    assert len({w for w, _ in groups}) == 2
