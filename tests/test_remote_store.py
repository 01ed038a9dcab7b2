"""The store as an fsspec URL: an S3 bucket served by a real S3 server (moto) on loopback, read by s3fs on
every worker; the same labels as from the local copy, and a clear error for a missing store."""

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from data_prep.errors import StoreError
from data_prep.zarr_store import validate_store

from .cluster_processes import Processes, free_port, run_job, wait_for_port

MOTO = str(Path(sys.executable).parent / "moto_server")


@pytest.fixture(scope="module")
def s3_env(tmp_path_factory):
    """A local S3 endpoint; the AWS_* variables point s3fs (and the workers, which inherit them) at it."""
    port = free_port()
    processes = Processes(tmp_path_factory.mktemp("moto"))
    server = processes.start([MOTO, "-H", "127.0.0.1", "-p", str(port)], "moto")
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
    }
    wait_for_port(port, server, processes, "moto")
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    processes.stop()


@pytest.fixture(scope="module")
def s3_store(s3_env, mnist_store) -> str:
    import s3fs

    fs = s3fs.S3FileSystem()
    fs.mkdir("datasets")
    fs.put(str(mnist_store), "s3://datasets/mnist.zarr", recursive=True)  # what `aws s3 sync` would do
    return "s3://datasets/mnist.zarr"


@pytest.mark.slow
def test_job_reads_the_store_from_s3_with_the_same_result(s3_env, s3_store, mnist_store, tmp_path):
    settings = [
        "--split",
        "test",
        "--seed",
        "2",
        "--silhouette-sample",
        "500",
        "--dashboard-address",
        "127.0.0.1:0",
    ]
    remote = run_job("--data", s3_store, "--out", str(tmp_path / "s3"), *settings, env=s3_env)
    assert remote.returncode == 0, remote.stderr[-3000:]
    local = run_job("--data", str(mnist_store), "--out", str(tmp_path / "local"), *settings)
    assert local.returncode == 0, local.stderr[-3000:]
    labels = [zarr.open_array(str(tmp_path / run / "labels.zarr"), mode="r")[:] for run in ("s3", "local")]
    np.testing.assert_array_equal(*labels)
    assert s3_store in remote.stderr


def test_missing_or_broken_remote_stores_are_clear_errors(s3_env, s3_store):
    with pytest.raises(StoreError, match=r"s3://datasets/nothing.zarr: store not found"):
        validate_store("s3://datasets/nothing.zarr")
    proc = run_job("--data", "s3://no-such-bucket/mnist.zarr", env=s3_env)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "error: s3://no-such-bucket/mnist.zarr: store not found"
    assert validate_store(s3_store, ("test",))["test"].n == 10_000
