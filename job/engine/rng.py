"""Counter-based random numbers: a value per (seed, stream, global row index), whatever the chunking.

splitmix64 (Steele, Lea & Flood 2014) hashes the counter; a stream separates independent uses (the
rounds of k-means||, the choice of example images) under one seed. Because each row's number depends on
its global index only, any chunking of the same rows, on any number of workers, draws the same numbers.
May use: numpy only.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


def hash64(index, seed: int, stream: int = 0) -> np.ndarray:
    """uint64 hash of each index under (seed, stream)."""
    with np.errstate(over="ignore"):
        # splitmix64 steps by the golden ratio before mixing, so that no counter maps to the fixed point 0
        key = _mix(np.asarray([seed & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64) * _GOLDEN + _GOLDEN)
        key = _mix(key + np.uint64(stream & 0xFFFFFFFFFFFFFFFF) * _GOLDEN + _GOLDEN)
        return _mix(np.asarray(index).astype(np.uint64) * _GOLDEN + key + _GOLDEN)


def uniforms(index, seed: int, stream: int = 0) -> np.ndarray:
    """float64 in [0, 1) for each index under (seed, stream): the top 53 bits of the hash."""
    return (hash64(index, seed, stream) >> np.uint64(11)).astype(np.float64) * 2.0**-53
