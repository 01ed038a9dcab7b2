"""Getting a Dask cluster: one module per kind (local, scheduler, ssh, slurm), each a frozen config
dataclass that knows how to start or join its cluster; files (cluster config YAML, the shipped presets);
lifecycle (connect and wait for workers, describe, tune, close); sizing (a LocalCluster from the machine).
A new kind is one new module here (job.deploy.base registers it).
May use: job.errors, distributed, dask, yaml; nothing else of job.
"""
