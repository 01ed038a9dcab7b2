"""Configuration objects: frozen dataclasses built from YAML, then overridden by CLI flags.

Unknown keys are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from data_prep.redact import redact
from data_prep.zarr_store import is_url

from .cluster_config import ClusterConfig, LocalConfig
from .cluster_config import load_cluster_config as load_cluster_config  # re-exported
from .errors import ConfigError

ENGINES = ("fused", "dask-ml")
SPLITS = ("all", "train", "test")


@dataclass(frozen=True)
class JobConfig:
    """Everything one run of the job depends on (recorded in metrics.json)."""

    data: Path | str = Path("data/mnist.zarr")  # a path, or an fsspec URL (s3://bucket/mnist.zarr)
    split: str = "all"
    k: int = 10
    seed: int = 0
    n_init: int | str = "auto"  # starts (seeds seed, seed+1, ...); the lowest inertia is kept. auto: 4 on a
    # subsample when the fit is sampled, else 1 (job.sampling.SAMPLED_STARTS)
    sample_size: int | str | None = "auto"  # rows of the sampled fit's first stage; None: every pass on all rows
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
    cluster: ClusterConfig = field(default_factory=LocalConfig)

    def __post_init__(self):
        if not is_url(self.data):
            object.__setattr__(self, "data", Path(self.data))
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
        if self.sample_size in ("all", "none"):
            object.__setattr__(self, "sample_size", None)
        if self.sample_size not in (None, "auto"):
            try:
                object.__setattr__(self, "sample_size", int(self.sample_size))
            except (TypeError, ValueError):
                raise ConfigError(f"--sample-size must be a number of rows, auto or all; got {self.sample_size!r}") from None
            if self.sample_size < self.k:
                raise ConfigError(f"--sample-size must be at least k ({self.k}), got {self.sample_size}")
        if self.n_init != "auto":
            try:
                object.__setattr__(self, "n_init", int(self.n_init))
            except (TypeError, ValueError):
                raise ConfigError(f"--n-init must be a number or auto, got {self.n_init!r}") from None
            if self.n_init < 1:
                raise ConfigError(f"--n-init must be at least 1, got {self.n_init}")
        if self.n_init != "auto" and self.n_init > 1 and (self.resume or self.engine != "fused"):
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
        """The settings as plain JSON values, secrets masked (data_prep.redact): this is what metrics.json,
        the report and the checkpoint record, never what the job runs with."""

        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if value is not self and hasattr(value, "to_dict"):
                return value.to_dict()
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            return value

        return redact(plain(self))
