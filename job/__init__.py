"""Distributed, out-of-core K-Means for MNIST-style images on Dask.

The library API, for notebooks and programs (the CLI, `python -m job`, is a thin layer over it)::

    from distributed import Client
    from job import JobConfig, run_job

    client = Client()                                   # or one connected to your cluster
    result = run_job(JobConfig(data="data/mnist.zarr", out="runs/first"), client=client)
    result.metrics["evaluation"]["ari"], result.run_dir, result.model.cluster_centers_

- `FusedKMeans`: the estimator (scikit-learn / dask-ml contract) on any dask or numpy array;
- `JobConfig`, `run_job`, `run_sweep`, `RunResult`: the whole job, or a sweep over k, with an existing
  Client or a cluster started from a `ClusterConfig` (`load_cluster_config`, `LocalConfig`, ...);
- `open_dataset`, `flat_pixels`: a store's split as lazy dask arrays (uint8 images [n, h, w] and labels;
  the images as [n, h*w] rows);
- `JobError`: what the job raises for a problem the user can fix (one sentence).

Names are imported on first use, so that a worker importing job.kernels does not import the pipeline.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "FusedKMeans": "job.model",
    "JobConfig": "job.config",
    "load_cluster_config": "job.cluster_config",
    "LocalConfig": "job.cluster_config",
    "SchedulerConfig": "job.cluster_config",
    "SSHConfig": "job.cluster_config",
    "SlurmConfig": "job.cluster_config",
    "run_job": "job.run",
    "RunResult": "job.run",
    "run_sweep": "job.sweep",
    "parse_k": "job.sweep",
    "JobError": "job.errors",
    "open_dataset": "job.dataset",
    "flat_pixels": "job.dataset",
}

__all__ = ["FusedKMeans", "JobConfig", "JobError", "LocalConfig", "RunResult", "SSHConfig", "SchedulerConfig",
           "SlurmConfig", "__version__", "flat_pixels", "load_cluster_config", "open_dataset", "parse_k", "run_job",
           "run_sweep"]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'job' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
