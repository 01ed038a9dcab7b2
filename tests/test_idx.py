"""The IDX reader: exact round trips, and our own error for every malformed file."""

import gzip

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_prep.errors import IdxFormatError
from data_prep.idx import IdxReader, read_idx, write_idx


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.arange(5, dtype=np.uint8),
        np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4),
        np.arange(-6, 6, dtype=np.int16).reshape(6, 2),
        np.arange(10, dtype=np.int32) * 100_000,
        np.linspace(0, 1, 7, dtype=np.float64),
    ],
)
def test_round_trip_is_exact(tmp_path, array, compress):
    path = write_idx(tmp_path / "a.idx", array, compress=compress)
    back = read_idx(path)
    assert back.dtype == array.dtype.newbyteorder("=") and back.shape == array.shape
    np.testing.assert_array_equal(back, array)


def test_streaming_blocks_cover_the_file(tmp_path):
    array = np.random.default_rng(0).integers(0, 255, (1000, 5, 5)).astype(np.uint8)
    path = write_idx(tmp_path / "a.idx.gz", array, compress=True)
    with IdxReader(path) as reader:
        blocks = list(reader.iter_blocks(300))
    assert [len(b) for b in blocks] == [300, 300, 300, 100]
    np.testing.assert_array_equal(np.concatenate(blocks), array)


def _header(code=0x08, dims=(2, 2, 2)):
    return bytes([0, 0, code, len(dims)]) + np.asarray(dims, dtype=">u4").tobytes()


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"\x00\x00", "too short"),
        (b"\x01\x02\x08\x01" + b"\x00" * 8, "wrong magic number"),
        (_header(code=0x07) + b"\x00" * 8, "unknown IDX dtype code 0x07"),
        (bytes([0, 0, 8, 0]), "zero dimensions"),
        (bytes([0, 0, 8, 3]) + b"\x00\x00\x00\x02", "truncated IDX header"),
        (_header() + b"\x00" * 7, "truncated"),
        (_header() + b"\x00" * 9, "unexpected bytes"),
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_malformed_files_raise_our_error_naming_the_file(tmp_path, payload, message, compress):
    path = tmp_path / "bad.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    with pytest.raises(IdxFormatError, match=message) as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_corrupt_gzip_is_our_error(tmp_path):
    good = gzip.compress(_header() + bytes(range(8)) * 1000)
    path = tmp_path / "bad.idx.gz"
    path.write_bytes(good[:20] + b"\xff" * 40 + good[60:])
    with pytest.raises(IdxFormatError, match=r"corrupt gzip|truncated|unexpected"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(IdxFormatError, match="file not found"), IdxReader(tmp_path / "nope.idx"):
        pass


def test_huge_declared_size_fails_fast_without_allocating(tmp_path):
    path = tmp_path / "huge.idx.gz"
    path.write_bytes(gzip.compress(_header(dims=(4_000_000_000, 60_000, 60_000)) + b"\x00" * 100))
    with pytest.raises(IdxFormatError, match=r"truncated|more than any IDX file holds"):
        read_idx(path)


@st.composite
def idx_like(draw):
    """Mostly files with a valid header (so the reader gets past the magic number to the dimensions and
    the data) whose body is the right length or off by a little, sometimes with one byte flipped
    anywhere; sometimes any bytes at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    code = draw(st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]))
    dims = draw(st.lists(st.integers(0, 6), min_size=1, max_size=4))
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    size = max(0, int(np.prod(dims)) * itemsize + draw(st.sampled_from([0, 0, 0, -1, 1, -7, 5])))
    payload = bytearray(_header(code, dims) + draw(st.binary(min_size=size, max_size=size)))
    if payload and draw(st.booleans()):
        payload[draw(st.integers(0, len(payload) - 1))] ^= draw(st.integers(1, 255))
    return bytes(payload)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=idx_like(), compress=st.booleans())
def test_any_bytes_parse_exactly_or_raise_our_error(tmp_path, payload, compress):
    path = tmp_path / "fuzz.idx"
    path.write_bytes(gzip.compress(payload) if compress else payload)
    try:
        array = read_idx(path)
    except IdxFormatError:
        return
    with IdxReader(path) as reader:
        header = reader.header
    assert array.shape == header.shape
    expected = np.frombuffer(payload[4 + 4 * len(header.shape) :], dtype=header.dtype).reshape(header.shape)
    np.testing.assert_array_equal(array, expected)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    dims=st.lists(st.integers(0, 5), min_size=1, max_size=3),
    code=st.sampled_from([0x08, 0x09, 0x0B, 0x0C, 0x0D, 0x0E]),
    extra=st.integers(-3, 3),
)
def test_valid_header_with_wrong_length_is_rejected(tmp_path, dims, code, extra):
    itemsize = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}[code]
    nbytes = int(np.prod(dims)) * itemsize
    if nbytes + extra < 0:
        return
    path = tmp_path / "v.idx"
    path.write_bytes(_header(code, dims) + b"\x01" * (nbytes + extra))
    if extra == 0:
        assert read_idx(path).shape == tuple(dims)
    else:
        with pytest.raises(IdxFormatError):
            read_idx(path)
