"""Errors a user can cause: each carries one sentence that names the culprit.

UserError is the one root of data_prep's errors and of job's (job.errors): the command lines print any
of them as one line, and library callers catch one class.

May use: nothing.
"""


class UserError(Exception):
    """Base class for every error the project reports to the user (data_prep's and job's)."""


class DataPrepError(UserError):
    """Base class for every error data_prep reports to the user."""


class IdxFormatError(DataPrepError):
    """An IDX file is malformed: bad magic number, dtype, dimensions or length."""


class ChecksumError(DataPrepError):
    """A file's content does not match its known checksum."""


class SourceError(DataPrepError):
    """The IDX files could not be found or downloaded."""


class StoreError(DataPrepError):
    """A Zarr store is missing, incomplete or not laid out as expected."""


class DamagedChunkError(StoreError):
    """A chunk of a store is missing, fails its checksum or does not decode.

    Raised on a worker and re-raised in the client by distributed, so it must stay picklable: one string.
    """
