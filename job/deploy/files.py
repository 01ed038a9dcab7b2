"""Cluster config files: a YAML mapping (cluster_config/*.yaml, or the user's own) read into the frozen
dataclass of its `kind`, with CLI overrides; the shipped files found by name.

    kind: local       a LocalCluster on this machine (the default)            job.deploy.local
    kind: scheduler   an existing cluster, by address or scheduler file       job.deploy.scheduler
    kind: ssh         distributed's SSHCluster (extra: ssh)                   job.deploy.ssh
    kind: slurm       dask-jobqueue's SLURMCluster (extra: slurm)             job.deploy.slurm

Every kind takes an optional `security:` section (TLS between client, scheduler and workers). Keys that
the chosen kind does not know, and fields it needs but lacks, are errors naming the file.
May use: job.deploy.base (and through it every kind), job.errors.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from job.deploy.base import ClusterSpec, SecurityConfig
from job.errors import ConfigError


def kinds() -> dict[str, type[ClusterSpec]]:
    """Every cluster kind, by the name a YAML file's `kind` gives (imported when asked for: the command
    lines' --help stays fast)."""
    from job.deploy.local import LocalConfig
    from job.deploy.scheduler import SchedulerConfig
    from job.deploy.slurm import SlurmConfig
    from job.deploy.ssh import SSHConfig

    return {spec.kind: spec for spec in (LocalConfig, SchedulerConfig, SlurmConfig, SSHConfig)}


def cluster_config_from_mapping(mapping: dict[str, Any], source: str = "cluster config") -> ClusterSpec:
    """Build the config of mapping['kind'] (default local); unknown keys and bad values name `source`."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values")
    mapping = dict(mapping)
    kind = mapping.pop("kind", "local")
    cls = kinds().get(kind)
    if cls is None:
        raise ConfigError(f"{source}: kind must be one of {', '.join(kinds())}, got {kind!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(unknown)} for kind {kind}; "
            f"known: kind, {', '.join(sorted(known))}"
        )
    security = mapping.get("security")
    try:
        if security is not None:
            mapping["security"] = _security_from(security)
        return cls(**mapping)
    except (ConfigError, TypeError) as exc:  # TypeError: an unknown or missing key of the kind
        raise ConfigError(f"{source}: {exc}") from exc


def _security_from(mapping) -> SecurityConfig:
    if not isinstance(mapping, dict):
        raise ConfigError("security must be a mapping with ca_file, cert and key")
    known = {f.name for f in fields(SecurityConfig)}
    unknown = sorted(set(mapping) - known)
    missing = sorted({"ca_file", "cert", "key"} - set(mapping))
    if unknown or missing:
        problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else []
        )
        raise ConfigError(f"security: {'; '.join(problems)}")
    return SecurityConfig(**mapping)


# The package the shipped cluster_config/*.yaml files are installed as (pyproject.toml maps the folder).
PRESETS_PACKAGE = "job.presets"
DEFAULT_CLUSTER_CONFIG = "local.yaml"


def shipped_configs() -> list[str]:
    """Names of the cluster configs shipped with the package (local.yaml, scheduler.yaml, ...)."""
    return sorted(
        f.name for f in importlib.resources.files(PRESETS_PACKAGE).iterdir() if f.name.endswith(".yaml")
    )


def shipped_config(name: str = DEFAULT_CLUSTER_CONFIG) -> Path:
    """The file of a cluster config shipped with the package, by name (the default: local.yaml)."""
    return Path(str(importlib.resources.files(PRESETS_PACKAGE) / name))


def resolve_config_path(value: str | Path | None) -> Path:
    """A cluster config's file: `value` itself when it exists, else, for a bare name such as
    "local.yaml", the one shipped with the package (installed or in a checkout), else `value` (so that
    reading it says what is missing). None is the shipped default, whatever files the working folder has."""
    if value is None:
        return shipped_config()
    path = Path(value)
    if path.exists() or path.name != str(value):
        return path
    shipped = importlib.resources.files(PRESETS_PACKAGE) / path.name
    return Path(str(shipped)) if shipped.is_file() else path


def load_cluster_config(path: str | Path | None, **overrides) -> ClusterSpec:
    """Read a cluster config YAML file, or a shipped one by name (resolve_config_path); `overrides`
    whose value is not None win over the file.

    `address` or `scheduler_file` among the overrides switch to kind scheduler (keeping the file's
    security section); other overrides must be keys the file's kind knows.
    """
    path = resolve_config_path(path)
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(
            f"{path}: cluster config not found (shipped ones, by name: {', '.join(shipped_configs())})"
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    overrides = {key: value for key, value in overrides.items() if value is not None}
    joining = "address" in overrides or "scheduler_file" in overrides
    if joining:
        mapping = {key: mapping[key] for key in ("security", "timeout") if key in mapping}
        mapping["kind"] = "scheduler"
    kind = mapping.get("kind", "local")
    cls = kinds().get(kind)
    if cls is not None:
        known = {f.name for f in fields(cls)}
        for key in overrides:
            if key not in known:
                flag = "--" + key.replace("_", "-")
                if joining:  # the user said --scheduler: the file they never named is beside the point
                    joined = "--scheduler" if "address" in overrides else "--scheduler-file"
                    raise ConfigError(
                        f"{flag} sizes a LocalCluster we start; with {joined} the job joins a "
                        "running cluster, whose workers are already there: drop one of the two"
                    )
                raise ConfigError(f"{flag} does not apply to a {kind!r} cluster ({path})")
    mapping.update(overrides)
    return cluster_config_from_mapping(mapping, str(path))


def add_cluster_arguments(parser) -> None:
    """The cluster flags every job command takes (an argparse parser or argument group)."""
    parser.add_argument(
        "--cluster-config",
        metavar="FILE|NAME",
        help="a cluster config YAML file, or the name of one shipped with the package: "
        f"{', '.join(shipped_configs())} (default: the shipped {DEFAULT_CLUSTER_CONFIG})",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="join an existing scheduler, tcp://HOST:8786 or tls://... (overrides the file's kind)",
    )
    parser.add_argument(
        "--scheduler-file",
        metavar="FILE",
        help="join the scheduler that wrote FILE (dask scheduler --scheduler-file FILE)",
    )
    parser.add_argument(
        "--n-workers",
        type=int,
        help="LocalCluster workers (default: one per core this process may use)",
    )
    parser.add_argument(
        "--threads-per-worker", type=int, default=None, help="LocalCluster threads per worker (default: 1)"
    )
    parser.add_argument(
        "--memory-limit",
        help="LocalCluster memory per worker, e.g. 4GiB (default: the machine's memory shared between "
        "the workers)",
    )
    parser.add_argument(
        "--dashboard-address",
        help="where a cluster we start serves its dashboard (default 127.0.0.1:8787, loopback only); "
        "0.0.0.0:8787 exposes it to the network",
    )


def cluster_from_args(args) -> ClusterSpec:
    """The cluster that add_cluster_arguments' flags name: the config file's, with the flags given on top."""
    return load_cluster_config(
        args.cluster_config,
        address=args.scheduler,
        scheduler_file=args.scheduler_file,
        n_workers=args.n_workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit,
        dashboard_address=args.dashboard_address,
    )
