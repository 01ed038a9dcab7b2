"""Reader for the IDX format (MNIST, Fashion-MNIST, KMNIST, ...), gzipped or not.

An IDX file is a 4-byte magic number (two zero bytes, a dtype code, the number of dimensions), one
big-endian uint32 per dimension, then the values in C order, big-endian. The reader checks every part of
that against the file and streams the records in bounded pieces, so a bad header can neither make it
allocate more than it actually read nor make it hang.
May use: data_prep.errors only.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import math
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import numpy as np

from .errors import IdxFormatError

DTYPE_CODES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
GZIP_MAGIC = b"\x1f\x8b"
# Largest single read: a header that declares terabytes costs at most this much before it is caught.
_READ_PIECE = 8 * 1024 * 1024
# Past 2**48 bytes (256 TiB) a declared size is a damaged header, not data.
MAX_DECLARED_BYTES = 2**48


@dataclass(frozen=True)
class IdxHeader:
    dtype: np.dtype  # big-endian as stored
    shape: tuple[int, ...]

    @property
    def record_shape(self) -> tuple[int, ...]:
        return self.shape[1:]

    @property
    def record_nbytes(self) -> int:
        return int(np.prod(self.record_shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def data_nbytes(self) -> int:
        return self.shape[0] * self.record_nbytes


@contextmanager
def _open_stream(path: Path) -> Iterator[BinaryIO]:
    try:
        raw = open(path, "rb")  # noqa: SIM115 (closed by the `with raw:` below, once open errors are ours)
    except FileNotFoundError as exc:
        raise IdxFormatError(f"{path}: file not found") from exc
    except OSError as exc:
        raise IdxFormatError(f"{path}: cannot be read ({exc.strerror})") from exc
    with raw:
        if raw.read(2) == GZIP_MAGIC:
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
                yield cast(BinaryIO, stream)
        else:
            raw.seek(0)
            yield raw


def _read_exactly(stream: BinaryIO, nbytes: int) -> bytes:
    """Read up to `nbytes` in bounded pieces; fewer means the stream ended."""
    if nbytes <= _READ_PIECE:
        return stream.read(nbytes)
    parts = []
    remaining = nbytes
    while remaining:
        part = stream.read(min(remaining, _READ_PIECE))
        if not part:
            break
        parts.append(part)
        remaining -= len(part)
    return b"".join(parts)


def _parse_header(stream: BinaryIO, path: Path) -> IdxHeader:
    magic = stream.read(4)
    if len(magic) < 4:
        raise IdxFormatError(f"{path}: too short to be an IDX file ({len(magic)} bytes)")
    if magic[0] != 0 or magic[1] != 0:
        raise IdxFormatError(
            f"{path}: wrong magic number 0x{magic.hex()} (an IDX file starts with two zero bytes)"
        )
    code, ndim = magic[2], magic[3]
    if code not in DTYPE_CODES:
        raise IdxFormatError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0:
        raise IdxFormatError(f"{path}: IDX header declares zero dimensions")
    dims_bytes = stream.read(4 * ndim)
    if len(dims_bytes) < 4 * ndim:
        raise IdxFormatError(f"{path}: truncated IDX header ({ndim} dimensions declared)")
    shape = tuple(int(d) for d in np.frombuffer(dims_bytes, dtype=">u4"))
    # numpy refuses a shape whose non-zero dimensions overflow, even with a zero among them
    nbytes = math.prod(max(1, d) for d in shape) * DTYPE_CODES[code].itemsize
    if nbytes > MAX_DECLARED_BYTES:  # a damaged header: numpy cannot even index such an array
        raise IdxFormatError(
            f"{path}: IDX header declares {shape}, {nbytes:,} bytes: more than any IDX file holds"
        )
    return IdxHeader(dtype=DTYPE_CODES[code], shape=shape)


_T = TypeVar("_T")


def _opened(value: _T | None) -> _T:
    """An IdxReader's stream or header, which exist inside its `with` block only."""
    if value is None:
        raise RuntimeError("IdxReader is read inside its `with` block")
    return value


class IdxReader:
    """Streams the records of one IDX file; use as a context manager.

    >>> with IdxReader(path) as reader:
    ...     for block in reader.iter_blocks(8192):
    ...         ...   # block: ndarray [<=8192, *record_shape], native byte order
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._ctx: contextlib.AbstractContextManager[BinaryIO] | None = None
        self._stream: BinaryIO | None = None
        self._header: IdxHeader | None = None

    def __enter__(self) -> IdxReader:
        self._ctx = _open_stream(self.path)
        stream = self._stream = self._ctx.__enter__()
        try:
            self._header = self._translate(lambda: _parse_header(stream, self.path))
            if not isinstance(stream, gzip.GzipFile):
                self._check_raw_size()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        if self._ctx is not None:
            ctx, self._ctx = self._ctx, None
            with contextlib.suppress(OSError, EOFError, zlib.error):  # a broken gzip stream: already reported
                ctx.__exit__(None, None, None)

    @property
    def header(self) -> IdxHeader:
        return _opened(self._header)

    @property
    def stream(self) -> BinaryIO:
        return _opened(self._stream)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.header.shape

    @property
    def dtype(self) -> np.dtype:
        return self.header.dtype.newbyteorder("=")

    def _check_raw_size(self) -> None:
        header_nbytes = 4 + 4 * len(self.header.shape)
        actual = self.path.stat().st_size - header_nbytes
        expected = self.header.data_nbytes
        if actual < expected:
            raise IdxFormatError(
                f"{self.path}: truncated: header declares {self.header.shape} "
                f"({expected} data bytes) but the file holds {actual}"
            )
        if actual > expected:
            raise IdxFormatError(
                f"{self.path}: {actual - expected} unexpected bytes after the "
                f"{expected} data bytes that the header {self.header.shape} declares"
            )

    def _translate(self, read):
        try:
            return read()
        except (OSError, EOFError, zlib.error) as exc:
            raise IdxFormatError(f"{self.path}: corrupt gzip data ({exc})") from exc

    def iter_blocks(self, records_per_block: int) -> Iterator[np.ndarray]:
        """Yield consecutive blocks of whole records, then check that nothing follows them."""
        if records_per_block < 1:
            raise ValueError("records_per_block must be >= 1")
        header = self.header
        n = header.shape[0]
        record_nbytes = header.record_nbytes
        done = 0
        while done < n:
            count = min(records_per_block, n - done)
            want = count * record_nbytes
            data = self._translate(functools.partial(_read_exactly, self.stream, want))
            if len(data) < want:
                got = done * record_nbytes + len(data)
                raise IdxFormatError(
                    f"{self.path}: truncated: header declares {header.shape} "
                    f"({header.data_nbytes} data bytes) but the data ends after {got}"
                )
            block = np.frombuffer(data, dtype=header.dtype).reshape((count, *header.record_shape))
            yield block.astype(self.dtype, copy=False)
            done += count
        trailing = self._translate(lambda: self.stream.read(1))
        if trailing:
            raise IdxFormatError(
                f"{self.path}: unexpected bytes after the {header.data_nbytes} data bytes "
                f"that the header {header.shape} declares"
            )


def read_idx(path: str | Path) -> np.ndarray:
    """Read a whole IDX file into memory (native byte order). For small files and tests."""
    with IdxReader(path) as reader:
        blocks = list(reader.iter_blocks(max(1, _READ_PIECE // max(1, reader.header.record_nbytes))))
        if not blocks:
            return np.empty(reader.shape, dtype=reader.dtype)
        return np.concatenate(blocks)


def _dtype_code(dtype: np.dtype) -> int:
    codes = {dt.newbyteorder("="): code for code, dt in DTYPE_CODES.items()}
    native = np.dtype(dtype).newbyteorder("=")
    if native not in codes:
        raise ValueError(f"dtype {dtype} has no IDX code")
    return codes[native]


def header_bytes(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The IDX header of an array of `dtype` and `shape`: the bytes before its values."""
    return bytes([0, 0, _dtype_code(dtype), len(shape)]) + np.asarray(shape, dtype=">u4").tobytes()


def write_idx(path: str | Path, array: np.ndarray, compress: bool = False) -> Path:
    """Write `array` as an IDX file (used to make test data and derived datasets)."""
    big = array.astype(DTYPE_CODES[_dtype_code(array.dtype)], copy=False)
    payload = header_bytes(array.dtype, array.shape) + np.ascontiguousarray(big).tobytes()
    path = Path(path)
    if compress:
        payload = gzip.compress(payload, mtime=0)
    path.write_bytes(payload)
    return path
