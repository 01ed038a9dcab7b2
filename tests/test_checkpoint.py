"""Checkpoint files: written atomically, refused for other settings or other data."""

import numpy as np
import pytest

from data_prep import PrepConfig, prepare_dataset
from job import checkpoint
from job.config import JobConfig
from job.errors import JobError

from .synthetic import synthetic_arrays, write_dataset


@pytest.fixture
def two_stores(tmp_path):
    stores = []
    for seed in (0, 1):
        source = write_dataset(tmp_path / f"idx{seed}", synthetic_arrays(seed=seed))
        stores.append(
            prepare_dataset(PrepConfig(out=tmp_path / f"s{seed}.zarr", source=str(source), name="tiny"))
        )
    return stores


def test_save_then_resume_round_trips(two_stores, tmp_path):
    run = tmp_path / "run"
    config = JobConfig(data=two_stores[0], out=run, k=3)
    partial = checkpoint.start(config, run)
    assert (
        checkpoint.load_for_resume(config.replace(resume=True), run, 784) is None
    )  # killed before iteration 1
    centers = np.random.default_rng(0).random((3, 784))
    checkpoint.save(partial, {"centers": centers, "n_iter": 7, "inertia": 1.5, "converged": False})
    state = checkpoint.load_for_resume(config.replace(resume=True), run, 784)
    assert state["n_iter"] == 7 and not state["converged"]
    np.testing.assert_array_equal(state["centers"], centers)  # float64, bit for bit
    assert sorted(p.name for p in partial.iterdir()) == sorted(
        [checkpoint.JOB_FILE, checkpoint.CHECKPOINT_FILE]
    )


def test_resume_refuses_other_data_other_settings_and_finished_runs(two_stores, tmp_path):
    run = tmp_path / "run"
    checkpoint.start(JobConfig(data=two_stores[0], out=run, k=3), run)
    with pytest.raises(JobError, match="cannot resume on other data"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[1], out=run, k=3, resume=True), run, 784)
    with pytest.raises(JobError, match=r"cannot resume with other settings: seed \(4 now, 0 in the run\)"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[0], out=run, k=3, seed=4, resume=True), run, 784)
    with pytest.raises(JobError, match="no run in progress to resume"):
        checkpoint.load_for_resume(
            JobConfig(data=two_stores[0], out=tmp_path / "other", resume=True), tmp_path / "other", 784
        )
    run.mkdir()
    with pytest.raises(JobError, match="already complete"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[0], out=run, k=3, resume=True), run, 784)


def _resume(config):
    return checkpoint.load_for_resume(config.replace(resume=True), config.out, 784)


def test_damaged_checkpoint_or_job_record_is_one_clear_error(two_stores, tmp_path):
    run = tmp_path / "run"
    config = JobConfig(data=two_stores[0], out=run, k=3)
    partial = checkpoint.start(config, run)
    checkpoint.save(partial, {"centers": np.zeros((3, 784)), "n_iter": 2, "inertia": 1.0, "converged": False})
    path = partial / checkpoint.CHECKPOINT_FILE
    path.write_bytes(path.read_bytes()[:100])  # truncated, as by a full disk
    with pytest.raises(
        JobError, match=r"checkpoint.npz: the checkpoint is damaged \(.*\); this run cannot be resumed"
    ):
        _resume(config)
    checkpoint.save(partial, {"centers": np.zeros((4, 784)), "n_iter": 2, "inertia": 1.0, "converged": False})
    with pytest.raises(JobError, match=r"holds centers of shape \(4, 784\), not the \(3, 784\)"):
        _resume(config)
    (partial / checkpoint.JOB_FILE).write_text("{not json")
    with pytest.raises(JobError, match=r"job.json: damaged"):
        _resume(config)


def test_a_new_run_never_drops_an_earlier_runs_checkpoint_silently(two_stores, tmp_path):
    run = tmp_path / "run"
    config = JobConfig(data=two_stores[0], out=run, k=3)
    partial = checkpoint.start(config, run)
    checkpoint.save(partial, {"centers": np.ones((3, 784)), "n_iter": 4, "inertia": 1.0, "converged": False})
    with pytest.raises(
        JobError,
        match=rf"earlier run of {run} that was stopped: continue it with --resume {run}, "
        r"or pass --overwrite to discard it",
    ):
        checkpoint.start(config, run)
    assert _resume(config)["n_iter"] == 4  # still there
    checkpoint.start(config.replace(overwrite=True), run)  # discarded on request
    assert _resume(config) is None
    (partial / "notes.txt").write_text("mine")
    with pytest.raises(JobError, match="holds files this job did not write"):
        checkpoint.start(config, run)
    checkpoint.remove_partial(run)
    assert (partial / "notes.txt").read_text() == "mine"  # only our files are removed


def test_checkpoints_are_fsynced_before_and_after_the_rename(two_stores, tmp_path, monkeypatch):
    import os

    from data_prep import atomic

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(
        atomic.os,
        "fsync",
        lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))), real_fsync(fd)),
    )
    monkeypatch.setattr(
        atomic.os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))
    )
    run = tmp_path / "run"
    partial = checkpoint.start(JobConfig(data=two_stores[0], out=run, k=3), run)
    events.clear()
    checkpoint.save(partial, {"centers": np.ones((3, 784)), "n_iter": 1, "inertia": 1.0, "converged": False})
    final = str(partial / checkpoint.CHECKPOINT_FILE)
    assert events == [
        ("fsync", str(partial / f".{checkpoint.CHECKPOINT_FILE}.tmp")),
        ("replace", final),
        ("fsync", str(partial)),
    ]
