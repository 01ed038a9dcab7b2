"""Errors a user can cause while running the job: each carries one sentence that names the culprit."""


class JobError(Exception):
    """Base class for every error the job reports to the user."""


class ConfigError(JobError):
    """A configuration file or option is invalid."""


class ClusterError(JobError):
    """The Dask cluster could not be started or reached."""


class DataError(JobError):
    """The input store is missing, incomplete or holds invalid values."""
