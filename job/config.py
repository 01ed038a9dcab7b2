"""Configuration objects: frozen dataclasses built from YAML, then overridden by CLI flags.

Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError

CLUSTER_KINDS = ("local", "scheduler")
ENGINES = ("fused", "dask-ml")
SPLITS = ("all", "train", "test")


@dataclass(frozen=True)
class ClusterConfig:
    """How to get a Dask cluster.

    kind "local": a LocalCluster on this machine (n_workers, threads_per_worker, memory_limit per worker,
    processes, dashboard_address). kind "scheduler": an existing cluster, by `address` or `scheduler_file`,
    waiting at most `timeout` seconds for it to answer.
    """

    kind: str = "local"
    n_workers: int = 2
    threads_per_worker: int = 1
    memory_limit: str = "4GiB"
    processes: bool = True
    dashboard_address: str = "127.0.0.1:8787"
    address: str | None = None
    scheduler_file: str | None = None
    timeout: float = 10.0

    def __post_init__(self):
        if self.kind not in CLUSTER_KINDS:
            raise ConfigError(f"cluster kind must be one of {', '.join(CLUSTER_KINDS)}, got {self.kind!r}")
        if self.kind == "local":
            if self.n_workers < 1 or self.threads_per_worker < 1:
                raise ConfigError("n_workers and threads_per_worker must be at least 1")
        elif not (self.address or self.scheduler_file):
            raise ConfigError("a 'scheduler' cluster needs an address or a scheduler_file")
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")


@dataclass(frozen=True)
class JobConfig:
    """Everything one run of the job depends on (recorded in metrics.json)."""

    data: Path = Path("data/mnist.zarr")
    split: str = "all"
    k: int = 10
    seed: int = 0
    n_init: int = 1  # starts (seeds seed, seed+1, ...); the lowest inertia is kept
    engine: str = "fused"
    max_iter: int = 300
    tol: float = 1e-4
    init_max_iter: int | None = None
    oversampling_factor: float = 2.0
    silhouette_sample: int = 10_000
    examples_per_cluster: int = 8
    out: Path | None = None
    overwrite: bool = False
    persist: str = "auto"  # "auto" | "always" | "never"
    memory_fraction: float = 0.5  # of the cluster's memory X may take when persisted
    checkpoint_every: int = 1  # Lloyd iterations between checkpoints (fused engine)
    resume: bool = False  # continue the run in `out` from its last checkpoint
    cluster: ClusterConfig = field(default_factory=ClusterConfig)

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ConfigError(f"--split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.engine not in ENGINES:
            raise ConfigError(f"--engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.k < 1:
            raise ConfigError(f"--k must be at least 1, got {self.k}")
        if self.max_iter < 1:
            raise ConfigError(f"--max-iter must be at least 1, got {self.max_iter}")
        if self.tol < 0:
            raise ConfigError(f"--tol must be >= 0, got {self.tol}")
        if self.silhouette_sample < 0:
            raise ConfigError(f"--silhouette-sample must be >= 0, got {self.silhouette_sample}")
        if self.persist not in ("auto", "always", "never"):
            raise ConfigError(f"--persist must be auto, always or never, got {self.persist!r}")
        if self.n_init < 1:
            raise ConfigError(f"--n-init must be at least 1, got {self.n_init}")
        if self.n_init > 1 and (self.resume or self.engine != "fused"):
            raise ConfigError("--n-init above 1 works with the fused engine, and not with --resume")
        if self.checkpoint_every < 1:
            raise ConfigError(f"--checkpoint-every must be at least 1, got {self.checkpoint_every}")
        if self.resume and (self.out is None or self.engine != "fused"):
            raise ConfigError("--resume needs the run folder, and works with the fused engine only")
        if not 0 < self.memory_fraction <= 1:
            raise ConfigError(f"memory_fraction must be in (0, 1], got {self.memory_fraction}")

    def replace(self, **changes) -> JobConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            return value

        return plain(self)


def _from_mapping(cls, mapping: dict, source: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**mapping)
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def load_cluster_config(path: str | Path, **overrides) -> ClusterConfig:
    """Read a cluster_config/*.yaml file; `overrides` whose value is not None win over the file."""
    path = Path(path)
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: cluster config not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    mapping.update({key: value for key, value in overrides.items() if value is not None})
    if overrides.get("address") or overrides.get("scheduler_file"):
        mapping["kind"] = "scheduler"
    return _from_mapping(ClusterConfig, mapping, str(path))
