"""Where IDX files come from: verified local folders, and downloads from a real HTTP server on loopback."""

import gzip
import hashlib
import logging
import shutil

import pytest

from data_prep.errors import ChecksumError, SourceError
from data_prep.registry import MNIST_FILES, IdxFileSpec, files_for
from data_prep.sources import content_sha256, download, from_folder


def _specs_for(folder):
    """Specs with the published-style MD5 of each .gz in `folder` (as a mirror's registry would hold)."""
    specs = []
    for spec in files_for("tiny"):
        data = (folder / f"{spec.stem}.gz").read_bytes()
        specs.append(IdxFileSpec(spec.split, spec.kind, spec.stem, gz_md5=hashlib.md5(data).hexdigest()))
    return specs


def test_real_mnist_copy_verifies(mnist_dir):
    files = from_folder(mnist_dir, MNIST_FILES)
    assert all(f.verified for f in files)
    assert {f.spec.stem: f.sha256 for f in files} == {s.stem: s.sha256 for s in MNIST_FILES}


def test_uncompressed_copy_verifies_by_content(mnist_dir, tmp_path):
    stem = "t10k-labels-idx1-ubyte"
    (tmp_path / stem).write_bytes(gzip.decompress((mnist_dir / f"{stem}.gz").read_bytes()))
    spec = next(s for s in MNIST_FILES if s.stem == stem)
    assert content_sha256(tmp_path / stem) == spec.sha256
    (file,) = from_folder(tmp_path, [spec])
    assert file.verified and file.path.name == stem


def test_tampered_file_is_refused_by_name(mnist_dir, tmp_path):
    for path in mnist_dir.glob("*.gz"):
        shutil.copy(path, tmp_path / path.name)
    target = tmp_path / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(gzip.decompress(target.read_bytes()))
    data[100] = (data[100] + 1) % 10
    target.write_bytes(gzip.compress(bytes(data)))
    with pytest.raises(ChecksumError, match=r"t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        from_folder(tmp_path, MNIST_FILES)


def test_missing_files_are_named(tmp_path, tiny_dir):
    (tiny_dir / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(SourceError, match=r"missing IDX file.*t10k-images-idx3-ubyte"):
        from_folder(tiny_dir, files_for("tiny"))
    with pytest.raises(SourceError, match="source folder not found"):
        from_folder(tmp_path / "absent", files_for("tiny"))


def test_unknown_dataset_is_accepted_with_a_warning(tiny_dir, caplog):
    with caplog.at_level(logging.WARNING):
        files = from_folder(tiny_dir, files_for("tiny"))
    assert not any(f.verified for f in files)
    assert "no known checksum" in caplog.text


def test_download_good_files(http_server, tiny_dir, tmp_path):
    url = http_server(tiny_dir)
    files = download(_specs_for(tiny_dir), cache_dir=tmp_path / "cache", mirrors=[url])
    assert [f.path.read_bytes() for f in files] == [(tiny_dir / f.path.name).read_bytes() for f in files]
    assert all(f.origin.startswith(url) for f in files)
    # A second call finds the verified files in the cache and downloads nothing.
    before = dict(http_server.hits)
    download(_specs_for(tiny_dir), cache_dir=tmp_path / "cache", mirrors=[url])
    assert http_server.hits == before


def test_download_falls_back_to_the_next_mirror(http_server, tiny_dir, tmp_path):
    specs = _specs_for(tiny_dir)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_dir, corrupt)
    (corrupt / "train-labels-idx1-ubyte.gz").write_bytes(b"not the file")
    (corrupt / "t10k-images-idx3-ubyte.gz").unlink()  # a 404 on the first mirror
    first, second = http_server(corrupt), http_server(tiny_dir)
    files = download(specs, cache_dir=tmp_path / "cache", mirrors=[first, second], retries=0)
    origins = {f.spec.stem: f.origin for f in files}
    assert origins["train-labels-idx1-ubyte"].startswith(second)  # corrupt on the first
    assert origins["t10k-images-idx3-ubyte"].startswith(second)  # missing on the first
    assert origins["train-images-idx3-ubyte"].startswith(first)
    for f in files:
        assert f.path.read_bytes() == (tiny_dir / f.path.name).read_bytes()


def test_download_fails_clearly_when_every_mirror_fails(http_server, tiny_dir, tmp_path):
    specs = _specs_for(tiny_dir)
    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_dir, corrupt)
    (corrupt / "train-images-idx3-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(SourceError, match=r"train-images-idx3-ubyte.gz: download failed from every mirror"):
        download(specs, cache_dir=tmp_path / "cache", mirrors=[http_server(corrupt)], retries=1)
    assert not (tmp_path / "cache" / "train-images-idx3-ubyte.gz").exists()  # never kept, never used
