"""The cluster configurations shipped with mnist-kmeans (local, scheduler, ssh, slurm).

This folder is installed as the package data of `job.presets` (pyproject.toml maps it), so that an
installed `mnist-kmeans --cluster-config NAME.yaml` finds these files by name wherever it runs
(job.deploy.files.resolve_config_path). Copy one to make your own: a path to any YAML file works too.
"""
