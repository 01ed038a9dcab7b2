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




class LockTimeout(TimeoutError):
    """Another process held a store's lock for longer than we were willing to wait."""


@contextmanager
def store_lock(out: Path, what: str, wait_seconds: float = 600) -> Iterator[None]:
    """One writer per store at a time: a second one waits (up to wait_seconds), then typically finds the
    store complete and reuses it. The lock file stays beside the store (deleting it on release would race
    with a waiting process). Raises LockTimeout naming `what` holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(Path(out).with_name(f".{Path(out).name}.lock"))
    try:
        lock.acquire(timeout=wait_seconds)
    except Timeout:
        raise LockTimeout(f"{out}: another {what} has held it for {wait_seconds:g} s; try again later") from None
    try:
        yield
    finally:
        lock.release()
