"""Which compressor and chunk size for the MNIST images store: ratio, write time and read time.

    python benchmarks/codecs.py

Writes the 60,000 training images (uint8 [n, 28, 28]) with each codec and chunk size into a temporary
Zarr v3 store, then reads the whole array back (median of 3). Prints a table and writes
benchmarks/results/codecs.json.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import zarr
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec

from _common import mnist_store, print_table, save, timed

CODECS = {
    "none": [],
    "zstd(1)": [ZstdCodec(level=1)],
    "zstd(5)": [ZstdCodec(level=5)],
    "zstd(5)+crc32c": [ZstdCodec(level=5), Crc32cCodec()],
    "zstd(9)": [ZstdCodec(level=9)],
    "blosc lz4 bitshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle", typesize=1)],
    "blosc lz4 noshuffle": [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1)],
    "blosc zstd(5) noshuffle": [BloscCodec(cname="zstd", clevel=5, shuffle="noshuffle", typesize=1)],
    "gzip(5)": [GzipCodec(level=5)],
}


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main():
    images = zarr.open_array(str(mnist_store()), path="train/images", mode="r")[:]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in (2048, 8192, 32768):
            for name, compressors in CODECS.items():
                path = Path(tmp) / f"{name}-{chunk}.zarr"

                def write():
                    shutil.rmtree(path, ignore_errors=True)
                    array = zarr.create_array(
                        store=str(path),
                        shape=images.shape,
                        dtype="uint8",
                        chunks=(chunk, 28, 28),
                        compressors=compressors,
                    )
                    for start in range(0, len(images), chunk):
                        array[start : start + chunk] = images[start : start + chunk]

                _, write_s = timed(write, 1)
                _, read_s = timed(lambda: zarr.open_array(str(path), mode="r")[:], 3)
                rows.append(
                    {
                        "codec": name,
                        "chunk": chunk,
                        "ratio": images.nbytes / _size(path),
                        "write s": write_s,
                        "read s": read_s,
                        "read MB/s": images.nbytes / read_s / 1e6,
                    }
                )
    print_table(rows, ["codec", "chunk", "ratio", "write s", "read s", "read MB/s"])
    save("codecs", {"images": list(images.shape), "results": rows})


if __name__ == "__main__":
    main()
