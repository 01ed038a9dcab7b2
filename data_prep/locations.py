"""Where a store lives: a local path or an fsspec URL. Light on purpose: the command lines parse their
arguments (and answer --help) before importing zarr, dask or distributed.
May use: nothing.
"""

from __future__ import annotations


def is_url(location) -> bool:
    """An fsspec URL (s3://, gs://, http://, ...) rather than a local path."""
    return isinstance(location, str) and "://" in location
