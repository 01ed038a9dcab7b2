"""Where the IDX files come from: a local folder, or a verified download from public mirrors.

Either way the result is one verified path per (split, kind). A local copy is checked by the SHA-256 of
its decompressed content (re-gzipping changes the .gz bytes, not the data); a download is checked by
pooch against the published MD5 of the .gz, then by the same SHA-256.
May use: data_prep's registry, idx, redact and errors.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import ChecksumError, SourceError
from .idx import GZIP_MAGIC
from .redact import RedactingFilter
from .registry import MNIST_MIRRORS, IdxFileSpec

log = logging.getLogger(__name__)

DOWNLOAD = "download"


@dataclass(frozen=True)
class SourceFile:
    """A located, verified IDX file."""

    spec: IdxFileSpec
    path: Path
    sha256: str  # of the decompressed content
    verified: bool  # False when no known checksum existed to compare with
    origin: str  # the folder or URL it came from


def default_cache_dir() -> Path:
    import pooch

    return Path(os.environ.get("MNIST_CACHE") or pooch.os_cache("mnist-kmeans"))


def content_sha256(path: Path) -> str:
    """SHA-256 of a file's decompressed content (gzip detected by its magic bytes)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as raw:
            compressed = raw.read(2) == GZIP_MAGIC
            raw.seek(0)
            stream = gzip.GzipFile(fileobj=raw) if compressed else raw
            while block := stream.read(1 << 20):
                digest.update(block)
    except (EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise ChecksumError(f"{path}: corrupt gzip data ({exc})") from exc
    return digest.hexdigest()


def _verify(spec: IdxFileSpec, path: Path, origin: str) -> SourceFile:
    sha = content_sha256(path)
    if spec.sha256 is None:
        log.warning("%s: no known checksum for this file; it is used unverified", path)
        return SourceFile(spec, path, sha, verified=False, origin=origin)
    if sha != spec.sha256:
        raise ChecksumError(
            f"{path}: checksum mismatch (SHA-256 of the content is {sha[:12]}..., "
            f"expected {spec.sha256[:12]}...); the file is corrupt or not the expected dataset"
        )
    return SourceFile(spec, path, sha, verified=True, origin=origin)


def _find_in_folder(folder: Path, stem: str) -> Path | None:
    # Accept the published names and the common variant with a dot before "idx" (train-images.idx3-ubyte).
    variants = {stem, stem.replace("-idx", ".idx")}
    for name in sorted(variants):
        for candidate in (folder / f"{name}.gz", folder / name):
            if candidate.is_file():
                return candidate
    return None


def from_folder(folder: str | Path, specs: Sequence[IdxFileSpec]) -> list[SourceFile]:
    """Locate and verify every file of `specs` in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SourceError(f"{folder}: source folder not found")
    found = {s.stem: _find_in_folder(folder, s.stem) for s in specs}
    missing = [stem for stem, path in found.items() if path is None]
    if missing:
        raise SourceError(f"{folder}: missing IDX file(s) {', '.join(missing)} (gzipped or not)")
    return [_verify(s, found[s.stem], str(folder)) for s in specs]  # type: ignore[arg-type]  # none is None here


def _tame(pooch_logger: logging.Logger) -> None:
    """pooch logs through a logging.Logger("pooch") of its own, outside logging's tree (pooch/utils.py,
    get_logger), with its own stderr handler: the root logger's level and filters never reach it, and its
    "Downloading file ... from 'http://user:PASSWORD@host/...'" line printed a mirror's password. Its
    records are masked like ours, and its INFO lines (we log each fetch ourselves) shown only when
    debugging."""
    pooch_logger.setLevel(logging.DEBUG if log.isEnabledFor(logging.DEBUG) else logging.WARNING)
    for handler in pooch_logger.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


def download(
    specs: Sequence[IdxFileSpec],
    cache_dir: str | Path | None = None,
    mirrors: Sequence[str] = MNIST_MIRRORS,
    retries: int = 2,
) -> list[SourceFile]:
    """Fetch every file of `specs` into `cache_dir`, trying each mirror in turn.

    pooch verifies each .gz against its published MD5 before it is moved into the cache, retries a
    failed download `retries` times, and reuses a cached file whose hash matches. pooch has no mirror
    fallback, so the loop over mirrors is ours.
    """
    import pooch

    _tame(pooch.get_logger())
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    results = []
    for spec in specs:
        fname = f"{spec.stem}.gz"
        known_hash = f"md5:{spec.gz_md5}" if spec.gz_md5 else None
        if known_hash is None:
            log.warning("%s: no published checksum; the download cannot be verified", fname)
        failures = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + fname
            fetcher = pooch.create(
                path=cache,
                base_url="",
                registry={fname: known_hash},
                urls={fname: url},
                retry_if_failed=retries,
            )
            try:
                log.info("fetching %s", url)
                path = Path(fetcher.fetch(fname, progressbar=False))
            except Exception as exc:  # noqa: BLE001 (pooch raises requests, OSError and ValueError alike)
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("%s failed: %s", url, reason)
                failures.append(f"{url} ({reason[:120]})")
                continue
            results.append(_verify(spec, path, url))
            break
        else:
            raise SourceError(f"{fname}: download failed from every mirror: {'; '.join(failures)}")
    return results
