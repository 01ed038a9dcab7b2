"""kind: scheduler — join an existing cluster by its scheduler's address (tcp:// or tls://) or the file
`dask scheduler --scheduler-file` wrote; nothing is started or stopped here.

May use: job.deploy.base, job.errors.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from typing import ClassVar

from distributed import Client

from job.deploy.base import ClusterSpec
from job.errors import ClusterError, ConfigError


@dataclass(frozen=True)
class SchedulerConfig(ClusterSpec):
    """An existing cluster: its scheduler's address (tcp:// or tls://) or the file `dask scheduler
    --scheduler-file` wrote."""

    kind: ClassVar[str] = "scheduler"
    address: str | None = None
    scheduler_file: str | None = None

    def __post_init__(self):
        super().__post_init__()
        if not (self.address or self.scheduler_file):
            raise ConfigError("a 'scheduler' cluster needs an address or a scheduler_file")
        if self.address and self.address.startswith("tls://") and self.security is None:
            raise ConfigError(f"{self.address} speaks TLS: add a security section (ca_file, cert, key)")

    def start(self, stack: ExitStack) -> Client:
        target = self.scheduler_file or self.address
        try:
            if self.scheduler_file:
                client = Client(
                    scheduler_file=self.scheduler_file, timeout=self.timeout, **self.security_kwargs()
                )
            else:
                client = Client(self.address, timeout=self.timeout, **self.security_kwargs())
        except (OSError, TimeoutError, ValueError) as exc:
            hint = ""
            if self.security is None and "tls" in str(exc).lower():
                hint = "; it speaks TLS: add a security section"
            raise ClusterError(
                f"scheduler {target} did not answer within {self.timeout:g} s ({type(exc).__name__}{hint})"
            ) from exc
        return stack.enter_context(client)
