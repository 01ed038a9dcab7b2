"""What the per-chunk SHA-256 check costs every read of a store: decoding a chunk against hashing its rows.

    python benchmarks/chunk_digests.py [--store data/mnist.zarr] [--repeats 3]

Every chunk a worker reads is compared with the SHA-256 recorded for it when the store was written
(data_prep.zarr_store.read_chunk), so that a chunk that decodes but holds other rows (moved, swapped,
rewritten) stops the job. For each images chunk of the train split, in one process: the median time
to read and decode it through zarr (zstd + CRC32C, from the page cache) and to hash its decoded rows.
The ratio is the share the check adds to a read. Writes benchmarks/results/chunk_digests.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import zarr

from _common import REPO, mnist_store, print_table, save, timed
from data_prep.zarr_store import chunk_digest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=None, help="default: data/mnist.zarr (made if missing)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    store = args.store or mnist_store()
    images = zarr.open_group(store=str(store), mode="r", zarr_format=3)["train/images"]
    rows, n = int(images.chunks[0]), int(images.shape[0])
    decode = digest = nbytes = 0.0
    for start in range(0, n, rows):
        block, seconds = timed(lambda: images[start : start + rows], args.repeats)
        decode += seconds
        digest += timed(lambda: chunk_digest(block), args.repeats)[1]
        nbytes += block.nbytes
    row = {
        "store": str(Path(store).resolve().relative_to(REPO))
        if Path(store).resolve().is_relative_to(REPO)
        else str(store),
        "chunks": -(-n // rows),
        "MB decoded": nbytes / 1e6,
        "decode s": decode,
        "SHA-256 s": digest,
        "decode GB/s": nbytes / decode / 1e9,
        "SHA-256 GB/s": nbytes / digest / 1e9,
        "check / decode": digest / decode,
    }
    print_table([row], list(row))
    save("chunk_digests", {"rows": [row], "repeats": args.repeats})


if __name__ == "__main__":
    main()
