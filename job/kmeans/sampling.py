"""A seeded uniform sample of X's rows, drawn on the cluster: the first stage of the sampled fit.

Row r is in the sample when u(seed, SAMPLE_STREAM, r) < size / n (job.engine.rng: counter-based, by global row
index), so the sample is the same rows whatever the chunking or the number of workers, in the order of
X. Each chunk's rows are picked by the task that holds (or reads) the chunk; the sample stays on the
workers (the fit persists it where it was drawn when one task runs its loop, else spread evenly), and only
its size reaches the client.
May use: job.engine.rng, dask.
"""

from __future__ import annotations

import dask.array as da
import numpy as np

from job.engine.rng import uniforms

# A random-number stream of its own: k-means|| uses streams 0..rounds under the same seed.
SAMPLE_STREAM = 2**32 + 7
# Rows per center below which a sample is not worth it; the default size (see auto_sample_size).
MIN_SAMPLE_ROWS = 200_000
SAMPLE_ROWS_PER_CENTER = 1_000


def auto_sample_size(n: int, k: int) -> int:
    """The default sample: max(200,000, 1,000 per center) rows. Measured on 8.1M deformed digits
    (docs/benchmarks.md, "Out of core in minutes"): at k=10 a converged fit on 200,000 rows polished by 2
    passes over all rows reached an inertia of 338.008M, within 0.01% of a 500,000-row scikit-learn fit;
    on 100,000 rows 338.082M. With many clusters each sample row costs k distances per iteration, and
    1,000 rows per center already fit within ~0.1% of where polishing over all rows takes them (section
    14). At MNIST's 70,000 images the sample is all of them: no sampling."""
    return min(n, max(MIN_SAMPLE_ROWS, SAMPLE_ROWS_PER_CENTER * k))


def _chunk_rows(block: np.ndarray, fraction: float, seed: int, stream: int, block_info=None) -> np.ndarray:
    offset = block_info[0]["array-location"][0][0]
    return block[_picked(offset, len(block), fraction, seed, stream)]


def _picked(offset: int, rows: int, fraction: float, seed: int, stream: int) -> np.ndarray:
    """Which of the rows offset .. offset + rows - 1 of X are in the sample (a boolean mask)."""
    return uniforms(offset + np.arange(rows), seed, stream) < fraction


def sample_rows(X: da.Array, size: int, seed: int, stream: int = SAMPLE_STREAM) -> da.Array:
    """About `size` rows of X (each row with probability size / n), lazily, with known chunk sizes: the
    caller persists it where it wants it, or computes it into the task that needs it. Returns X itself
    when size >= n.

    The rows each chunk keeps are counted here, on the client, from the same numbers its task draws
    (0.05 s for 8.1M rows), rather than by dask's compute_chunk_sizes after a persist: that is a task per
    chunk, 0.42 s over the 198 chunks of the 8.1M store, after a persist of its own (0.34 s) before the
    sample's rows could be spread over the workers (benchmarks/sample_draw.py, docs/benchmarks.md
    section 22)."""
    n = int(X.shape[0])
    if size >= n:
        return X
    fraction = size / n
    offsets = np.cumsum((0, *X.chunks[0][:-1]))
    kept = tuple(
        int(np.count_nonzero(_picked(int(offset), rows, fraction, seed, stream)))
        for offset, rows in zip(offsets, X.chunks[0])
    )
    return X.map_blocks(
        _chunk_rows,  # type: ignore[arg-type]  # dask's @derived_from types Array.map_blocks as da.map_blocks
        fraction,
        seed,
        stream,
        dtype=X.dtype,
        chunks=(kept, (X.shape[1],)),
        name=f"sample_rows-{da.core.tokenize(X.name, fraction, seed, stream)}",
    )


# --- the starts: several cheap fits on a nested subsample, the best one continued on the sample ---------

# The subsample the starts run on is drawn from the sample by position in it, with a stream of its own.
SUBSAMPLE_STREAM = 2**32 + 11
SUBSAMPLE_ROWS_PER_CENTER = 5_000
SEEDING_FLOOR_PER_CENTER = 1_000
# Starts when n_init is "auto". Measured on 8.1M deformed digits (docs/benchmarks.md, section 9): starts
# on a 50,000-row subsample fall into a few basins, and the subsample's inertia tells the bad basin from
# the good ones as the inertia over all rows does (3 of 4 seeds within 0.0002% of each other over all
# rows, one 0.006% worse, and the worst on the subsample too); the best of 4 is rarely a bad one.
SAMPLED_STARTS = 4
# Lloyd iterations of a start: enough to tell its basin (on the 8.1M store's sample the inertia moved by
# 0.006% between iteration 100 and convergence at 290), while the best start then runs to convergence on
# the whole sample.
START_MAX_ITER = 100


# The most work (subsample rows x centers) the starts may each take for n_init="auto" to run
# SAMPLED_STARTS of them: a start's Lloyd iterations cost rows x k distance products, single-threaded.
STARTS_MAX_WORK = 1_100_000


def auto_starts(m: int, k: int) -> int:
    """How many starts n_init="auto" runs on a sample of m rows: SAMPLED_STARTS while each start's
    subsample is at most STARTS_MAX_WORK row-centers (k=10 on any sample, k=32 on MNIST), else 1. With
    many clusters the subsample needs 1,000 rows per center, and the starts would be several single-
    threaded fits of (nearly) the whole sample: at k=256 on MNIST's 60,000 training images, 4 starts
    took ~160 s where the single seeded Lloyd over the workers takes ~30 s; at k=32 the 4 starts reach a
    lower inertia than 1 for every seed tried and a held-out accuracy nearer scikit-learn's
    (benchmarks/classifier.py, docs/benchmarks.md section 10)."""
    return SAMPLED_STARTS if subsample_size(m, k) * k <= STARTS_MAX_WORK else 1


def subsample_size(m: int, k: int) -> int:
    """Rows of the starts' subsample: 5,000 per center, but at most a quarter of the sample, so that
    the starts together cost about one fit of the sample (whose Lloyd then starts from the best of them);
    never below 1,000 per center (nor above the whole sample)."""
    return min(m, max(SEEDING_FLOOR_PER_CENTER * k, min(SUBSAMPLE_ROWS_PER_CENTER * k, m // 4)))
