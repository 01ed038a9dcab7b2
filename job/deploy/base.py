"""What every cluster kind shares: the TLS section, the common fields, is_loopback.

A kind is one module of job.deploy (local, scheduler, ssh, slurm) holding a frozen dataclass that derives
from ClusterSpec: its fields are the keys its YAML file may hold, its __post_init__ checks them, its
start() brings up (or joins) the cluster. job.deploy.files.kinds() lists them by their `kind` name.
May use: job.errors (and distributed, dask, yaml); nothing else of job.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from contextlib import ExitStack
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, ClassVar

from job.errors import ConfigError


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
            path = Path(getattr(self, name))
            if not path.is_file() or not os.access(path, os.R_OK):
                raise ConfigError(f"security.{name}: {path} is not a readable file")
        mode = Path(self.key).stat().st_mode & 0o777
        if (
            mode & 0o077
        ):  # as ssh refuses an unprotected private key: whoever can read it can join the cluster
            who = "everyone" if mode & 0o007 else "its group"
            raise ConfigError(
                f"security.key: {self.key} is open to {who} (mode {mode:04o}); a private key "
                f"must be readable by its owner only: chmod 600 {self.key}"
            )

    def to_security(self):
        from distributed import Security

        return Security(
            tls_ca_file=self.ca_file,
            require_encryption=self.require_encryption,
            **{
                f"tls_{role}_{part}": path
                for role in ("client", "scheduler", "worker")
                for part, path in (("cert", self.cert), ("key", self.key))
            },
        )

    def to_dask_config(self) -> dict[str, Any]:
        """The same settings as dask config, for processes we start on other hosts (they inherit it)."""
        tls: dict[str, object] = {"ca-file": self.ca_file}
        for role in ("client", "scheduler", "worker"):
            tls[role] = {"cert": self.cert, "key": self.key}
        return {"distributed.comm.tls": tls, "distributed.comm.require-encryption": self.require_encryption}


@dataclass(frozen=True)
class ClusterSpec:
    """The fields every kind has; each kind names itself by `kind` (job.deploy.files.kinds)."""

    kind: ClassVar[str]
    security: SecurityConfig | None = None
    timeout: float = 30.0  # seconds to wait for the scheduler and the first worker
    min_workers: int = 1  # start fitting once this many workers have joined

    def __post_init__(self):
        if self.timeout <= 0:
            raise ConfigError(f"timeout must be positive, got {self.timeout}")
        if not isinstance(self.min_workers, int) or self.min_workers < 1:
            raise ConfigError(f"min_workers must be a whole number of at least 1, got {self.min_workers!r}")

    def start(self, stack: ExitStack):
        """A distributed Client for this cluster, entered on `stack` with whatever was started for it."""
        raise NotImplementedError

    def sizing(self) -> dict | None:
        """How the cluster's size was decided, for metrics.json (None: as the config says)."""
        return None

    def security_kwargs(self) -> dict:
        """{"security": distributed.Security} for TLS, else nothing: the keyword clients and clusters take."""
        return {} if self.security is None else {"security": self.security.to_security()}

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.security is not None:
            values["security"] = dataclasses.asdict(self.security)
        return {"kind": self.kind, **values}


def is_loopback(address: str) -> bool:
    """True when a host:port (or :port) binds to loopback only."""
    host = address.rsplit(":", 1)[0].strip("[]") if ":" in address else address
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
