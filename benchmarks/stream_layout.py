"""Chunk size and compressor for streaming: what a streaming Lloyd iteration costs with each layout.

    python benchmarks/stream_layout.py [--n 1000000] [--iters 3]

Takes the first --n images of the generated store (data/mnist-8100000.zarr; deformed digits, which
compress less well than MNIST's own) and writes them into a temporary Zarr v3 store per layout: chunk
sizes 2,048 / 8,192 / 32,768 with zstd(5)+crc32c, and at 8,192 other compressors. For each, on a LocalCluster
of 2 single-threaded workers: size on disk, one read-and-decompress pass, and the median streaming
Lloyd iteration (job.kmeans.passes.lloyd_step, X never persisted). The files sit in the page cache after
writing, as
they would on a machine with enough RAM; the times are decompression and parsing, not disk.
Writes benchmarks/results/stream_layout.json.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import zarr
from distributed import Client, LocalCluster
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

from _common import REPO, print_table, save
from job.dataset import to_features
from job.deploy.lifecycle import reduce_batching_latency
from job.kmeans.estimator import lloyd_step
from job.kmeans.kmeans_parallel import kmeans_parallel

LAYOUTS = [
    ("zstd(5)+crc32c", 2048, [ZstdCodec(level=5), Crc32cCodec()]),
    ("zstd(5)+crc32c", 8192, [ZstdCodec(level=5), Crc32cCodec()]),
    ("zstd(5)+crc32c", 32768, [ZstdCodec(level=5), Crc32cCodec()]),
    ("none", 8192, []),
    ("zstd(1)+crc32c", 8192, [ZstdCodec(level=1), Crc32cCodec()]),
    ("zstd(9)+crc32c", 8192, [ZstdCodec(level=9), Crc32cCodec()]),
    (
        "blosc lz4+crc32c",
        8192,
        [BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle", typesize=1), Crc32cCodec()],
    ),
]


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _read_only(block):
    return np.zeros((1,), dtype=np.int64) + block.shape[0]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--store", type=Path, default=REPO / "data" / "mnist-8100000.zarr")
    args = parser.parse_args()
    import dask.array as da

    source = zarr.open_array(str(args.store), path="train/images", mode="r")
    rows = []
    with (
        tempfile.TemporaryDirectory(dir=REPO / "data") as tmp,
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="2GiB",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        reduce_batching_latency(client)
        centers = None
        for name, chunk, compressors in LAYOUTS:
            path = Path(tmp) / f"{name}-{chunk}.zarr"
            array = zarr.create_array(
                str(path),
                shape=(args.n, 28, 28),
                chunks=(chunk, 28, 28),
                dtype="uint8",
                compressors=compressors,
                fill_value=0,
            )
            started = time.perf_counter()
            for lo in range(0, args.n, 65536):
                hi = min(lo + 65536, args.n)
                array[lo:hi] = source[lo:hi]
            write_s = time.perf_counter() - started
            images = da.from_zarr(str(path))
            X = to_features(images)
            if centers is None:
                centers, _ = kmeans_parallel(X[:70_000].persist(), 10, seed=0)
            started = time.perf_counter()
            images.map_blocks(
                _read_only, drop_axis=(1, 2), chunks=((1,) * images.numblocks[0],), dtype=np.int64
            ).sum().compute()
            read_s = time.perf_counter() - started
            lloyd_step(X, centers)  # warm
            times = []
            for _ in range(args.iters):  # exactly what each iteration of FusedKMeans's loop runs
                started = time.perf_counter()
                lloyd_step(X, centers)
                times.append(time.perf_counter() - started)
            row = {
                "codec": name,
                "chunk": chunk,
                "MiB on disk": _size(path) / 2**20,
                "ratio": args.n * 784 / _size(path),
                "write s": write_s,
                "read s": read_s,
                "iter s": statistics.median(times),
            }
            rows.append(row)
            print(f"  {name} chunk {chunk}: {row['iter s']:.2f} s/iter", flush=True)
            import shutil

            shutil.rmtree(path)
    print(f"\nStreaming layouts, first {args.n:,} generated images, 2 workers x 1 thread")
    print_table(rows, ["codec", "chunk", "MiB on disk", "ratio", "write s", "read s", "iter s"])
    save("stream_layout", {"args": {"n": args.n, "iters": args.iters}, "rows": rows})


if __name__ == "__main__":
    main()
