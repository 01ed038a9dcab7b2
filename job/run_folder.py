"""The run folder's safety: what counts as a folder of ours, refusing what is not, one writer at a time,
and the atomic write that makes a run appear complete or not at all.

Nothing of the user's is ever replaced: an existing output is refused unless --overwrite, and even then
unless it is a run or sweep folder this job wrote (why_not_a_run_folder).
May use: job.checkpoint, job.errors, data_prep.atomic.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from data_prep.atomic import (
    LockTimeout,
    check_replaceable,
    held_lock,
    lock_path,
    staged_directory,
)
from job import checkpoint
from job.errors import JobError

log = logging.getLogger(__name__)

# Every name a run or sweep folder of ours may hold (predictions.csv is job.predict's default output).
RUN_FILES = {
    "metrics.json",
    "summary.txt",
    "centers.png",
    "examples_closest.png",
    "examples_random.png",
    "confusion.png",
    "sizes.png",
    "pca.png",
    "labels.zarr",
    "model.npz",
    "centers.npy",
    "report.html",
    "predictions.csv",
}
SWEEP_FILES = {
    "sweep.json",
    "summary.txt",
    "elbow.png",
    "silhouette.png",
    "criteria.png",
    "accuracy.png",
    "per_digit.png",
    "confusion_test.png",
    "misclassified.png",
    "report.html",
}
_SWEEP_CENTERS = re.compile(r"(centers_k\d+\.png|model_k\d+\.npz)$")


def why_not_a_run_folder(path: Path) -> str | None:
    """None when `path` is a run or sweep folder this job wrote (so --overwrite may replace it), else why
    not. Ours means: its metrics.json (or sweep.json) is one we wrote, and it holds nothing else than the
    files a run writes, so that replacing it cannot take a file of the user's with it."""
    path = Path(path)
    if not path.is_dir():
        return "exists and is not a folder"
    names = {p.name for p in path.iterdir()}
    is_sweep = "sweep.json" in names
    record = path / ("sweep.json" if is_sweep else "metrics.json")
    try:
        metrics = json.loads(record.read_text())
        ours = isinstance(metrics, dict) and "versions" in metrics and "config" in metrics
    except (OSError, ValueError):
        ours = False
    if not ours:
        return "exists and is not a run folder of this job (no metrics.json or sweep.json of ours in it)"
    allowed = SWEEP_FILES if is_sweep else RUN_FILES
    foreign = sorted(n for n in names if n not in allowed and not (is_sweep and _SWEEP_CENTERS.match(n)))
    if foreign:
        return f"is a run folder that also holds files the job did not write ({', '.join(foreign[:5])})"
    return None


def default_run_dir(root: Path = Path("runs")) -> Path:
    return root / datetime.now().strftime("%Y%m%d-%H%M%S")


def check_output_folder(run_dir: Path, overwrite: bool, resume: bool = False) -> None:
    """Before any work: an existing output is refused unless --overwrite, and even then unless it is a run
    or sweep folder of ours (why_not_a_run_folder): nothing of the user's is ever replaced."""
    if not (run_dir.exists() or run_dir.is_symlink()) or resume:
        return
    if not overwrite:
        raise JobError(f"{run_dir}: output folder exists; pass --overwrite to replace it")
    check_replaceable(run_dir, why_not_a_run_folder)


def _candidates(run_dir: Path, pick_free: bool) -> Iterator[Path]:
    yield run_dir
    if pick_free:
        yield from (run_dir.with_name(f"{run_dir.name}-{i}") for i in itertools.count(2))


@contextmanager
def exclusive(run_dir: Path, pick_free: bool = False) -> Iterator[Path]:
    """Refuse a second job writing the same run folder while this one runs; yield the folder.

    pick_free (a default name, runs/<timestamp>): two jobs started in the same second must not share it,
    so a name that exists, has a partial folder or is locked by another job is passed over for <name>-2,
    <name>-3, ..., the first one whose lock this job gets.
    The lock is a hidden sibling file (data_prep.atomic.held_lock), removed when the job ends: a lock
    inside <run>.partial/ was deleted with that folder while still held, so a second job could take a
    fresh one. On the way out the partial folder goes unless it holds a checkpoint to resume from.
    """
    with contextlib.ExitStack() as held:
        try:
            run_dir.parent.mkdir(parents=True, exist_ok=True)
            for candidate in _candidates(run_dir, pick_free):
                if pick_free and (
                    candidate.exists() or candidate.is_symlink() or checkpoint.partial_dir(candidate).exists()
                ):
                    continue
                try:
                    held.enter_context(held_lock(candidate))
                except LockTimeout as exc:
                    if pick_free:
                        continue
                    raise JobError(
                        f"{run_dir}: another job is writing this run folder (lock {lock_path(run_dir)})"
                    ) from exc
                run_dir = candidate
                break
        except OSError as exc:
            raise JobError(
                f"{run_dir}: cannot write the run folder ({exc.strerror}); nothing was kept"
            ) from exc
        try:
            yield run_dir
        except KeyboardInterrupt:
            if checkpoint.has_checkpoint(run_dir):  # Ctrl-C: say how to go on from where it stopped
                log.warning(
                    "stopped; the last checkpoint is kept: resume with  python -m job --resume %s  (and, "
                    "for a k sweep, the same --k)",
                    run_dir,
                )
            raise
        finally:
            if not checkpoint.has_checkpoint(run_dir):  # stopped before there was anything to resume
                checkpoint.remove_partial(run_dir)


# What a full, read-only or otherwise unwritable output location raises while the folder is written.
_DISK_ERRORS = {
    errno.ENOSPC,
    errno.EACCES,
    errno.EROFS,
    errno.EDQUOT,
    errno.EPERM,
    errno.ENOTDIR,
    errno.EEXIST,
}


@contextmanager
def written_atomically(run_dir: Path, overwrite: bool) -> Iterator[Path]:
    """Yield a hidden sibling folder to write the run into; on success it replaces run_dir in one rename.

    A folder that is not ours, a run that another job wrote meanwhile, or a disk that cannot take the
    folder become one JobError sentence; nothing half-written is left.
    """

    def unwritable(exc: OSError) -> str | None:
        return (
            f"cannot write the run folder ({exc.strerror}); nothing was kept"
            if exc.errno in _DISK_ERRORS
            else None
        )

    with staged_directory(
        run_dir,
        overwrite=overwrite,
        why_not_ours=why_not_a_run_folder,
        error=JobError,
        rival="another run wrote this folder meanwhile; nothing was replaced",
        unwritable=unwritable,
    ) as tmp:
        yield tmp
