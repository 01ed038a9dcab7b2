"""Atomic, durable creation of folders and files, and the one guard that decides what may be replaced.

A folder is built under a hidden sibling name and renamed into place at the end, so that a half-written
output never carries its final name. Files and folders are fsynced before the rename and the parent
folder after it: the rename is atomic against a killed process *and* against a host crash (without the
fsyncs, ext4 and xfs may show the new name with empty files after a power loss).

Nothing is ever replaced unless the caller's `why_not_ours(target)` says it is something this project
wrote (a run folder, a sweep folder, a dataset store, a predictions file); an empty folder counts as
ours, since replacing it loses nothing. Anything else is refused with NotOursError, untouched.
May use: the standard library; nothing else of data_prep.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError

# Returns None when `target` is something we wrote and may replace, else the reason it is not.
OwnershipCheck = Callable[[Path], "str | None"]


class TargetExistsError(FileExistsError):
    """The target appeared while we were building it (another writer finished first)."""


class NotOursError(UserError, FileExistsError):
    """The target exists and is not something this project wrote: it is never replaced."""

    def __init__(self, target: Path, reason: str):
        super().__init__(errno.EEXIST, reason, str(target))
        self.target, self.reason = Path(target), reason

    def __str__(self) -> str:
        return f"{self.target}: {self.reason}; it was left untouched (choose another output path)"


def check_replaceable(target: Path, why_not_ours: OwnershipCheck) -> None:
    """Raise NotOursError unless `target` is ours to replace (or an empty folder)."""
    target = Path(target)
    if target.is_symlink() or (target.exists() and not target.is_dir() and not target.is_file()):
        raise NotOursError(target, "exists and is not a plain file or folder")
    if target.is_dir() and not any(target.iterdir()):
        return
    reason = why_not_ours(target)
    if reason:
        raise NotOursError(target, reason)


def fsync_path(path: Path) -> None:
    """Flush a file's or a folder's entry to disk (a folder's fsync makes the names in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems (e.g. certain FUSE mounts) cannot fsync a folder
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder under `root`, children before their folder."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(folder) / name)
        fsync_path(Path(folder))


def durable_replace(tmp: Path, target: Path) -> None:
    """Rename the written file `tmp` over `target`, durably: fsync it, rename, fsync the folder."""
    fsync_path(tmp)
    os.replace(tmp, target)
    fsync_path(Path(target).parent)


def _sibling(path: Path, tag: str) -> Path:
    return path.with_name(f".{path.name}.{tag}-{uuid.uuid4().hex[:8]}")


@contextmanager
def atomic_directory(
    target: Path, overwrite: bool = False, why_not_ours: OwnershipCheck | None = None
) -> Iterator[Path]:
    """Yield a hidden temporary sibling of `target`; rename it to `target` when the block succeeds.

    On any error the temporary folder is removed. If `target` exists when the block ends it is replaced
    only with `overwrite` and only if `why_not_ours` accepts it (checked again at that moment: the target
    may have changed while we worked); otherwise TargetExistsError or NotOursError, and ours is discarded.
    """
    target = Path(target)
    if overwrite and why_not_ours is None:
        raise ValueError("overwrite needs an ownership check: nothing is replaced unchecked")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _sibling(target, "tmp")
    try:
        tmp.mkdir()
        yield tmp
        fsync_tree(tmp)
        if target.exists() or target.is_symlink():
            if not overwrite:
                raise TargetExistsError(errno.EEXIST, "exists", str(target))
            assert why_not_ours is not None  # refused above when overwrite had none
            check_replaceable(target, why_not_ours)
            trash = _sibling(target, "trash")
            os.rename(target, trash)
            os.rename(tmp, target)
            fsync_path(target.parent)
            shutil.rmtree(trash, ignore_errors=True)  # ours: check_replaceable said so
        else:
            os.rename(tmp, target)
            fsync_path(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def staged_directory(
    target: Path,
    *,
    overwrite: bool,
    why_not_ours: OwnershipCheck,
    error: type[Exception],
    rival: str,
    unwritable: Callable[[OSError], str | None],
) -> Iterator[Path]:
    """atomic_directory, with what can go wrong said as one `error` sentence naming `target`: a target
    that is not ours, a rival writer that finished first (`rival`: what to tell the user), and an OSError
    that `unwritable` turns into a reason (a full or read-only disk; None re-raises it as it is)."""
    try:
        with atomic_directory(target, overwrite=overwrite, why_not_ours=why_not_ours) as tmp:
            yield tmp
    except NotOursError:
        raise  # a UserError already, naming the target
    except TargetExistsError as exc:
        raise error(f"{target}: {rival}") from exc
    except OSError as exc:
        reason = unwritable(exc)
        if reason is None:
            raise
        raise error(f"{target}: {reason}") from exc


class LockTimeout(UserError, TimeoutError):
    """Another process held a store's lock for longer than we were willing to wait."""


def lock_path(target: Path) -> Path:
    """Where the lock of `target` lives while it is held: a hidden sibling file, removed on release."""
    target = Path(target)
    return target.with_name(f".{target.name}.lock")


@contextmanager
def held_lock(target: Path, wait_seconds: float = 0) -> Iterator[Path]:
    """Hold an exclusive lock on `target` (an flock on lock_path(target)); yield the lock file's path.

    The lock file is removed on release, so nothing is left beside the target. Removing a lock file races
    with a process that opened it before the unlink and locks the nameless file after the release; so an
    acquirer that gets the lock checks that the file it holds is still the one at the path, and starts
    again if not. (A lock *inside* the target does not work: the target is replaced or removed while
    held.) Raises LockTimeout when another process holds it for longer than wait_seconds.
    """
    path = lock_path(target)
    deadline = time.monotonic() + wait_seconds
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            if time.monotonic() >= deadline:
                raise LockTimeout(f"{target}: locked by another process ({path})") from None
            time.sleep(0.1)
            continue
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it just before we locked it: take the one now at the path
    try:
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # while still held, so that no one locks it between the unlink and the close
        os.close(fd)


@contextmanager
def store_lock(out: Path, what: str, wait_seconds: float = 600) -> Iterator[None]:
    """One writer per store at a time: a second one waits (up to wait_seconds), then typically finds the
    store complete and reuses it. Raises LockTimeout naming `what` holds it."""
    try:
        with held_lock(out, wait_seconds):
            yield
    except LockTimeout as exc:
        raise LockTimeout(
            f"{out}: another {what} has held it for {wait_seconds:g} s; try again later"
        ) from exc
