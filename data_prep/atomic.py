"""Atomic creation of a folder: build it under a hidden sibling name, rename it into place at the end.

Used for Zarr stores and run folders alike, so that a half-written output never carries its final name.
"""

from __future__ import annotations

import errno
import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class TargetExistsError(FileExistsError):
    """The target appeared while we were building it (another writer finished first)."""


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_directory(target: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary sibling of `target`; rename it to `target` when the block succeeds.

    On any error the temporary folder is removed. If `target` appeared meanwhile (another writer won the
    race) it is kept unless `overwrite`, and ours is discarded.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        tmp.mkdir()
        yield tmp
        if target.exists():
            if not overwrite:
                raise TargetExistsError(errno.EEXIST, "exists", str(target))
            trash = _sibling(target, "trash")
            os.rename(target, trash)
            os.rename(tmp, target)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.rename(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


