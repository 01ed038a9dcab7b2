"""Distributed, out-of-core K-Means for MNIST-style images on Dask.

The library API, for notebooks and programs (the CLI, `python -m job`, is a thin layer over it)::

    from distributed import Client
    from job import JobConfig, run_job

    client = Client()                                   # or one connected to your cluster
    result = run_job(JobConfig(data="data/mnist.zarr", out="runs/first"), client=client)
    result.metrics["evaluation"]["ari"], result.run_dir, result.model.cluster_centers_

- `FusedKMeans`: the estimator (scikit-learn / dask-ml contract) on any dask or numpy array;
- `JobConfig`, `run_job`, `run_sweep`, `RunResult`: the whole job, or a sweep over k, with an existing
  Client or a cluster started from a cluster config (`load_cluster_config`, `LocalConfig`, ...);
- `open_dataset`, `flat_pixels`: a store's split as lazy dask arrays (uint8 images [n, h, w] and labels;
  the images as [n, h*w] rows);
- `JobError`: what the job raises for a problem the user can fix (one sentence).

Names are imported on first use, so that a worker importing job.engine.kernels does not import the
pipeline.
May use: its names' modules, imported lazily on first use.
"""

from __future__ import annotations

from data_prep import __version__  # one version for the distribution
from data_prep.lazy import lazy_exports

_EXPORTS = {
    "FusedKMeans": "job.kmeans.estimator",
    "JobConfig": "job.config",
    "load_cluster_config": "job.deploy.files",
    "LocalConfig": "job.deploy.local",
    "SchedulerConfig": "job.deploy.scheduler",
    "SSHConfig": "job.deploy.ssh",
    "SlurmConfig": "job.deploy.slurm",
    "run_job": "job.pipeline",
    "RunResult": "job.pipeline",
    "run_sweep": "job.pipeline",
    "parse_k": "job.config",
    "JobError": "job.errors",
    "open_dataset": "job.dataset",
    "flat_pixels": "job.dataset",
}

__all__ = [
    "FusedKMeans",
    "JobConfig",
    "JobError",
    "LocalConfig",
    "RunResult",
    "SSHConfig",
    "SchedulerConfig",
    "SlurmConfig",
    "__version__",
    "flat_pixels",
    "load_cluster_config",
    "open_dataset",
    "parse_k",
    "run_job",
    "run_sweep",
]


__getattr__, __dir__ = lazy_exports(globals(), _EXPORTS)
