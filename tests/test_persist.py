"""The persist decision and the even layout of a persisted X."""

from collections import Counter

import dask.array as da
import numpy as np

from job.engine.map_reduce import plan_tasks
from job.engine.persist import (
    TARGET_CHUNK_BYTES,
    _targets,
    balanced_chunks,
    chunks_to_merge,
    decide_persist,
    persist_balanced,
)


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


def test_small_stored_chunks_are_merged_while_enough_remain_per_thread():
    # MNIST's stored chunks are 8,192 images (6.4 MB): five make one chunk of at most TARGET_CHUNK_BYTES
    assert TARGET_CHUNK_BYTES // (8192 * 784) == 5
    assert chunks_to_merge((8192,) * 989, 784, 2) == 5  # the 8.1M store: 198 chunks of 31 MB
    assert chunks_to_merge((8192,) * 123, 784, 2) == 5  # 1M rows: 25 chunks, still >= 8 per thread
    assert chunks_to_merge((5 * 8192,) * 198, 784, 2) == 1  # merged blocks are not merged again
    assert chunks_to_merge((8192,) * 40, 784, 2) == 1  # merged, fewer than 8 per thread would remain
    assert chunks_to_merge((8192,) * 8, 784, 2) == 1  # MNIST's train split
    assert chunks_to_merge((8192,) * 989, 784, 64) == 1
    assert chunks_to_merge((50_000,) * 100, 784, 2) == 1  # chunks already above the target


def test_the_job_reads_a_persisted_x_in_the_blocks_it_keeps(client, tmp_path, monkeypatch):
    """With many small stored chunks, each task reads the stored chunks of one persisted block: no
    chunk is read alone and then moved between workers to be merged (a rechunk)."""
    from distributed import get_task_stream

    from data_prep import PrepConfig, prepare_dataset
    from job import JobConfig, run_job

    from .synthetic import synthetic_arrays, write_dataset

    source = write_dataset(tmp_path / "idx", synthetic_arrays(n_train=2_000, n_test=100))
    store = prepare_dataset(PrepConfig(out=tmp_path / "s.zarr", source=str(source), name="s", chunk_size=50))
    config = JobConfig(
        data=store, out=tmp_path / "run", k=3, split="train", persist="always", silhouette_sample=50
    )
    # blocks of two stored chunks of 50 images (an 8.1M store's are five of 8,192, too large for a test)
    monkeypatch.setattr("job.engine.persist.TARGET_CHUNK_BYTES", 2 * 50 * 784)
    with get_task_stream(client) as stream:
        run_job(config, client=client)
    reads = {t["key"] for t in stream.data if str(t["key"][0]).startswith("read-train-images")}
    # 40 stored chunks of 50 rows on 2 threads: 20 blocks of 2 chunks, one task each (as stored and then
    # rechunked, it was 40 reads, half of them moved to the other worker to be merged)
    assert len(reads) == 20, len(reads)
