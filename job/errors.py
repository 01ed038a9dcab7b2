"""Errors a user can cause while running the job: each carries one sentence that names the culprit.

May use: data_prep.errors (UserError, the root shared with data_prep; every room of job may raise these).
"""

from __future__ import annotations

from data_prep.errors import UserError


class JobError(UserError):
    """Base class for every error the job reports to the user.

    `option`: the JobConfig field (or other setting) the message begins with, so that the CLI can say
    the flag instead (`k must be at least 1` -> `--k must be at least 1`); None when it names none."""

    def __init__(self, message: str, option: str | None = None):
        super().__init__(message)
        self.option = option

    def for_flags(self, flags: dict[str, str]) -> JobError:
        """The same error with its leading setting written as its command-line flag (`k=101 ...` as
        `--k 101 ...`)."""
        message, flag = str(self), flags.get(self.option or "")
        if flag is None or self.option is None or not message.startswith(self.option):
            return self
        rest = message[len(self.option) :]
        return type(self)(flag + (" " + rest[1:] if rest.startswith("=") else rest), self.option)


class ConfigError(JobError):
    """A configuration file or option is invalid."""


class ClusterError(JobError):
    """The Dask cluster could not be started or reached."""


class DataError(JobError):
    """The input store is missing, incomplete or holds invalid values."""
