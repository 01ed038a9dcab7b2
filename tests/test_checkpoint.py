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
        stores.append(prepare_dataset(PrepConfig(out=tmp_path / f"s{seed}.zarr", source=str(source), name="tiny")))
    return stores


def test_save_then_resume_round_trips(two_stores, tmp_path):
    run = tmp_path / "run"
    config = JobConfig(data=two_stores[0], out=run, k=3)
    partial = checkpoint.start(config, run)
    assert checkpoint.load_for_resume(config.replace(resume=True), run) is None  # killed before iteration 1
    centers = np.random.default_rng(0).random((3, 784))
    checkpoint.save(partial, {"centers": centers, "n_iter": 7, "inertia": 1.5, "converged": False})
    state = checkpoint.load_for_resume(config.replace(resume=True), run)
    assert state["n_iter"] == 7 and not state["converged"]
    np.testing.assert_array_equal(state["centers"], centers)  # float64, bit for bit
    assert sorted(p.name for p in partial.iterdir()) == sorted([checkpoint.JOB_FILE, checkpoint.CHECKPOINT_FILE])


def test_resume_refuses_other_data_other_settings_and_finished_runs(two_stores, tmp_path):
    run = tmp_path / "run"
    checkpoint.start(JobConfig(data=two_stores[0], out=run, k=3), run)
    with pytest.raises(JobError, match="cannot resume on other data"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[1], out=run, k=3, resume=True), run)
    with pytest.raises(JobError, match=r"cannot resume with other settings: seed \(4 now, 0 in the run\)"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[0], out=run, k=3, seed=4, resume=True), run)
    with pytest.raises(JobError, match="no run in progress to resume"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[0], out=tmp_path / "other", resume=True),
                                   tmp_path / "other")
    run.mkdir()
    with pytest.raises(JobError, match="already complete"):
        checkpoint.load_for_resume(JobConfig(data=two_stores[0], out=run, k=3, resume=True), run)
