"""How to get a Dask cluster: one frozen dataclass per kind, read from a cluster_config/*.yaml file.

    kind: local       a LocalCluster on this machine (the default)
    kind: scheduler   an existing cluster, by address or scheduler file (`dask scheduler`, `dask worker`)
    kind: ssh         distributed's SSHCluster: a scheduler and workers started over SSH (extra: ssh)
    kind: slurm       dask-jobqueue's SLURMCluster: workers as SLURM batch jobs (extra: slurm)

Every kind takes an optional `security:` section (TLS between client, scheduler and workers). Keys that
the chosen kind does not know, and fields it needs but lacks, are errors naming the file.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import ipaddress
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import ConfigError


@dataclass(frozen=True)
class SecurityConfig:
    """TLS for every connection: one CA that signed the certificates, and this side's certificate and key.

    The same files serve the client, the scheduler and the workers we start; a cluster started elsewhere
    (`dask scheduler --tls-ca-file CA --tls-cert CERT --tls-key KEY`) needs its own files from the same CA.
    With `require_encryption` (the default) nothing falls back to plain TCP.
    """

    ca_file: str
    cert: str
    key: str
    require_encryption: bool = True

    def __post_init__(self):
        for name in ("ca_file", "cert", "key"):
            if not Path(getattr(self, name)).is_file():
                raise ConfigError(f"security.{name}: {getattr(self, name)} is not a readable file")

    def to_security(self):
        from distributed import Security

        return Security(
            tls_ca_file=self.ca_file, require_encryption=self.require_encryption,
            **{f"tls_{role}_{part}": path for role in ("client", "scheduler", "worker")
               for part, path in (("cert", self.cert), ("key", self.key))},
        )

    def to_dask_config(self) -> dict[str, Any]:
        """The same settings as dask config, for processes we start on other hosts (they inherit it)."""
        tls = {"ca-file": self.ca_file}
        for role in ("client", "scheduler", "worker"):
            tls[role] = {"cert": self.cert, "key": self.key}
        return {"distributed.comm.tls": tls, "distributed.comm.require-encryption": self.require_encryption}


@dataclass(frozen=True)
class _Base:
    kind: ClassVar[str]
    security: SecurityConfig | None = None
    timeout: float = 30.0  # seconds to wait for the scheduler and the first worker

    def __post_init__(self):
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.security is not None:
            values["security"] = dataclasses.asdict(self.security)
        return {"kind": self.kind, **values}


@dataclass(frozen=True)
class LocalConfig(_Base):
    """A LocalCluster: n_workers processes of threads_per_worker threads, memory_limit each.

    n_workers and memory_limit may be "auto" (or left out, the default): then they come from the machine
    the job runs on (job.sizing: the cores this process may use, the memory it may use, cgroups
    included), and the job logs and records how it decided.
    """

    kind: ClassVar[str] = "local"
    n_workers: int | None = None  # None: one per usable core
    threads_per_worker: int = 1
    memory_limit: str | None = None  # per worker; None: the usable memory less a reserve, split evenly
    processes: bool = True
    dashboard_address: str = "127.0.0.1:8787"

    def __post_init__(self):
        super().__post_init__()
        for name in ("n_workers", "memory_limit"):
            if getattr(self, name) == "auto":
                object.__setattr__(self, name, None)
        if (self.n_workers is not None and (not isinstance(self.n_workers, int) or self.n_workers < 1)) \
                or self.threads_per_worker < 1:
            raise ConfigError("n_workers (a number or auto) and threads_per_worker must be at least 1")
        if self.memory_limit is not None:
            from dask.utils import parse_bytes

            try:
                parse_bytes(self.memory_limit)
            except (ValueError, TypeError):
                raise ConfigError(f"memory_limit must be a size such as 4GiB, or auto; got {self.memory_limit!r}") from None

    def sized(self):
        """(this config with n_workers and memory_limit filled in from the machine where they are auto,
        the job.sizing.Sizing that says why)."""
        from dask.utils import parse_bytes

        from .sizing import local_sizing

        sizing = local_sizing(self.n_workers, self.threads_per_worker,
                              None if self.memory_limit is None else parse_bytes(self.memory_limit))
        return dataclasses.replace(self, n_workers=sizing.n_workers, memory_limit=str(sizing.memory_limit)), sizing


@dataclass(frozen=True)
class SchedulerConfig(_Base):
    """An existing cluster: its scheduler's address (tcp:// or tls://) or the file `dask scheduler
    --scheduler-file` wrote."""

    kind: ClassVar[str] = "scheduler"
    address: str | None = None
    scheduler_file: str | None = None
    min_workers: int = 1  # start fitting once this many workers have joined

    def __post_init__(self):
        super().__post_init__()
        if not (self.address or self.scheduler_file):
            raise ConfigError("a 'scheduler' cluster needs an address or a scheduler_file")
        if self.address and self.address.startswith("tls://") and self.security is None:
            raise ConfigError(f"{self.address} speaks TLS: add a security section (ca_file, cert, key)")


@dataclass(frozen=True)
class SSHConfig(_Base):
    """distributed's SSHCluster: the scheduler on hosts[0], one worker process group on each other host.

    connect_options go to asyncssh.connect (port, username, client_keys, known_hosts, ...);
    worker_options to each `dask worker` (n_workers per host, nthreads, memory_limit, ...);
    scheduler_options to the scheduler (port, dashboard_address, ...). remote_python is the Python on the
    other hosts that has this package installed (default: the same path as here).
    """

    kind: ClassVar[str] = "ssh"
    hosts: tuple[str, ...] = ()
    connect_options: dict = field(default_factory=dict)
    worker_options: dict = field(default_factory=dict)
    scheduler_options: dict = field(default_factory=dict)
    remote_python: str | None = None
    min_workers: int = 1  # start fitting once this many workers have joined

    def __post_init__(self):
        super().__post_init__()
        hosts = self.hosts
        if isinstance(hosts, str) or not hosts or len(hosts) < 2:
            raise ConfigError("an 'ssh' cluster needs hosts: a list of at least 2 (the scheduler's host first, "
                              "then one per worker host)")
        object.__setattr__(self, "hosts", tuple(str(h) for h in hosts))


@dataclass(frozen=True)
class SlurmConfig(_Base):
    """dask-jobqueue's SLURMCluster: `jobs` batch jobs, each with `cores` and `memory`, split into
    `processes` worker processes. The scheduler runs here; its dashboard at dashboard_address."""

    kind: ClassVar[str] = "slurm"
    jobs: int = 1
    cores: int | None = None
    memory: str | None = None
    processes: int = 1
    queue: str | None = None
    account: str | None = None
    walltime: str = "01:00:00"
    interface: str | None = None
    local_directory: str | None = None
    job_extra_directives: tuple[str, ...] = ()
    job_script_prologue: tuple[str, ...] = ()
    dashboard_address: str = "127.0.0.1:8787"
    min_workers: int = 1  # start fitting once this many workers have joined

    def __post_init__(self):
        super().__post_init__()
        missing = [name for name in ("cores", "memory") if getattr(self, name) is None]
        if missing:
            raise ConfigError(f"a 'slurm' cluster needs {' and '.join(missing)} (per job)")
        if self.jobs < 1 or self.processes < 1:
            raise ConfigError("jobs and processes must be at least 1")
        for name in ("job_extra_directives", "job_script_prologue"):
            object.__setattr__(self, name, tuple(getattr(self, name)))


ClusterConfig = LocalConfig | SchedulerConfig | SSHConfig | SlurmConfig
KINDS: dict[str, type] = {c.kind: c for c in (LocalConfig, SchedulerConfig, SSHConfig, SlurmConfig)}


def cluster_config_from_mapping(mapping: dict[str, Any], source: str = "cluster config") -> ClusterConfig:
    """Build the config of mapping['kind'] (default local); unknown keys and bad values name `source`."""
    if not isinstance(mapping, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values")
    mapping = dict(mapping)
    kind = mapping.pop("kind", "local")
    cls = KINDS.get(kind)
    if cls is None:
        raise ConfigError(f"{source}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(mapping) - known)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) {', '.join(unknown)} for kind {kind}; "
                          f"known: kind, {', '.join(sorted(known))}")
    security = mapping.get("security")
    try:
        if security is not None:
            mapping["security"] = _security_from(security)
        return cls(**mapping)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    except TypeError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def _security_from(mapping) -> SecurityConfig:
    if not isinstance(mapping, dict):
        raise ConfigError("security must be a mapping with ca_file, cert and key")
    known = {f.name for f in fields(SecurityConfig)}
    unknown = sorted(set(mapping) - known)
    missing = sorted({"ca_file", "cert", "key"} - set(mapping))
    if unknown or missing:
        problems = ([f"unknown key(s) {', '.join(unknown)}"] if unknown else []) + (
            [f"missing {', '.join(missing)}"] if missing else [])
        raise ConfigError(f"security: {'; '.join(problems)}")
    return SecurityConfig(**mapping)


# The package the shipped cluster_config/*.yaml files are installed as (pyproject.toml maps the folder).
PRESETS_PACKAGE = "job.presets"
DEFAULT_CLUSTER_CONFIG = "local.yaml"


def shipped_configs() -> list[str]:
    """Names of the cluster configs shipped with the package (local.yaml, scheduler.yaml, ...)."""
    return sorted(f.name for f in importlib.resources.files(PRESETS_PACKAGE).iterdir() if f.name.endswith(".yaml"))


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


def load_cluster_config(path: str | Path | None, **overrides) -> ClusterConfig:
    """Read a cluster config YAML file, or a shipped one by name (resolve_config_path); `overrides`
    whose value is not None win over the file.

    `address` or `scheduler_file` among the overrides switch to kind scheduler (keeping the file's
    security section); other overrides must be keys the file's kind knows.
    """
    path = resolve_config_path(path)
    try:
        mapping = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: cluster config not found (shipped ones, by name: "
                          f"{', '.join(shipped_configs())})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(mapping, dict):
        raise ConfigError(f"{path}: expected a mapping of keys to values")
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if "address" in overrides or "scheduler_file" in overrides:
        mapping = {key: mapping[key] for key in ("security", "timeout") if key in mapping}
        mapping["kind"] = "scheduler"
    kind = mapping.get("kind", "local")
    cls = KINDS.get(kind)
    if cls is not None:
        known = {f.name for f in fields(cls)}
        for key in overrides:
            if key not in known:
                flag = "--" + key.replace("_", "-")
                raise ConfigError(f"{flag} does not apply to a {kind!r} cluster ({path})")
    mapping.update(overrides)
    return cluster_config_from_mapping(mapping, str(path))


def is_loopback(address: str) -> bool:
    """True when a host:port (or :port) binds to loopback only."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
