"""The estimator's inputs, accepted as scikit-learn and dask-ml accept them and refused with their messages.

X may be a dask array, a dask DataFrame, a numpy array (or anything array-like) or a pandas DataFrame.
In-memory input goes through scikit-learn's own `validate_data` (complex, non-numeric, empty, NaN and
infinite input refused with its messages, feature names and `n_features_in_` recorded or checked). A dask
array is checked the same way through a small in-memory stand-in of its shape and dtype, so that no pass
over the data is spent on validation (the fit's first pass finds NaN and infinity, as dask-ml's does).
The result is always a dask array chunked along rows only, with no empty chunks; compact integers
(uint8 pixels) stay compact and the kernels convert them block by block.
May use: scikit-learn's validation, dask; nothing else of job.
"""

from __future__ import annotations

import numbers

import dask
import dask.array as da
import numpy as np
from sklearn.utils.validation import validate_data

# Integer types whose values float32 holds exactly: kept as they are (1-2 bytes a value in memory). Wider
# integers become float64, as scikit-learn makes them.
COMPACT_INTEGERS = {np.dtype(t) for t in (np.bool_, np.uint8, np.int8, np.uint16, np.int16)}


# With no Client, in-memory X is cut into chunks of at most this many bytes (and at least 4 chunks) for
# dask's local scheduler: as 4 chunks of 15,000 rows (47 MB each), MNIST's 60,000 float32 images fitted
# in 2.3-2.7 s, against 1.7-1.8 s in chunks of 3,750-7,500 rows (2 cores, k=10, warm; scikit-learn's
# KMeans took 3.5 s).
IN_MEMORY_CHUNK_BYTES = 16 * 2**20


def in_memory_chunk_rows(n: int, row_bytes: int) -> int:
    """Rows per chunk for an in-memory X of n rows: a quarter of them, at most IN_MEMORY_CHUNK_BYTES."""
    return max(1, min(-(-n // 4), IN_MEMORY_CHUNK_BYTES // max(1, row_bytes)))


def _in_memory_as_dask(X: np.ndarray) -> da.Array:
    """A validated numpy X as a dask array: scattered to the current Client's workers once, if there is
    one (job.engine.persist.persist_on_current_client), else chunked in place for dask's local scheduler."""
    from job.engine.persist import persist_on_current_client

    scattered = persist_on_current_client(X)
    if scattered is not None:
        return scattered
    return da.from_array(X, chunks=(in_memory_chunk_rows(len(X), X.dtype.itemsize * X.shape[1]), X.shape[1]))


def check_features(estimator, X, *, reset: bool) -> da.Array:
    """X as a dask array [n, p] of numbers, validated for `estimator` (reset=True in fit: records
    n_features_in_ and feature_names_in_; False in predict/transform/score: checks them)."""
    X, columns = _dask_from_dataframe(X)
    if isinstance(X, da.Array):
        if any(np.isnan(c) for c in X.chunks[0]):
            X = X.compute_chunk_sizes()  # a filtered array: its rows are counted once, here
        stand_in = np.zeros((min(int(X.shape[0]), 2), *X.shape[1:]), dtype=X.dtype)
        validate_data(
            estimator, _with_columns(stand_in, columns), reset=reset, dtype=None, ensure_all_finite=False
        )
    else:
        X = validate_data(estimator, X, reset=reset, dtype="numeric")
        X = _in_memory_as_dask(X)
    if (X.dtype.kind in "iub" and X.dtype not in COMPACT_INTEGERS) or X.dtype.kind not in "fiub":
        X = X.astype(np.float64)
    elif X.dtype == np.float16:
        X = X.astype(np.float32)  # BLAS has no half precision
    if X.numblocks[1] != 1:
        X = X.rechunk({1: -1})  # a chunk must hold whole samples
    if 0 in X.chunks[0] and X.shape[0] > 0:
        X = X.rechunk({0: tuple(c for c in X.chunks[0] if c)})  # as dask-ml: empty chunks dropped
    return X


def _dask_from_dataframe(X):
    """(a dask DataFrame as a dask array with known chunk sizes, its column names); anything else as
    it is, with no column names (a pandas DataFrame keeps its own for validate_data)."""
    # Imported only for what can be one: `import dask.dataframe` costs 0.54 s, and the job's X never is.
    module = type(X).__module__
    if not module.startswith(("dask.dataframe", "dask_expr")):
        return X, None
    import dask.dataframe as dd

    if not isinstance(X, dd.DataFrame):
        return X, None
    return X.to_dask_array(lengths=True), list(X.columns)


def _with_columns(stand_in: np.ndarray, columns):
    if columns is None:
        return stand_in
    import pandas as pd

    return pd.DataFrame(stand_in, columns=columns)


def check_sample_weight(sample_weight, X: da.Array) -> da.Array | None:
    """sample_weight [n] as a float64 dask array chunked like X; None when absent. Negative weights and
    a length other than X's are refused with scikit-learn's messages."""
    if sample_weight is None:
        return None
    n = int(X.shape[0])
    if isinstance(sample_weight, numbers.Number):
        sample_weight = np.full(n, float(sample_weight))  # type: ignore[arg-type]  # a real number here
    if isinstance(sample_weight, da.Array):
        w = sample_weight.astype(np.float64)
        if w.ndim != 1:
            raise ValueError(f"Sample weights must be 1D array or scalar, got {w.ndim}D array.")
        if w.shape[0] != n:
            raise ValueError(f"sample_weight.shape == ({w.shape[0]},), expected ({n},)!")
        low, finite = dask.compute(w.min(), da.isfinite(w).all())
        if not finite:
            raise ValueError("Input sample_weight contains NaN or infinity.")
        if low < 0:
            raise ValueError("Negative values in data passed to `sample_weight`")
        return w.rechunk((X.chunks[0],))
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim != 1:
        raise ValueError(f"Sample weights must be 1D array or scalar, got {w.ndim}D array.")
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected ({n},)!")
    if not np.isfinite(w).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (w < 0).any():
        raise ValueError("Negative values in data passed to `sample_weight`")
    return da.from_array(w, chunks=(X.chunks[0],))


def check_rows_and_weights(estimator, X, sample_weight, *, reset: bool) -> tuple[da.Array, da.Array | None]:
    """check_features, then check_sample_weight against the checked X: (X, weights or None)."""
    X = check_features(estimator, X, reset=reset)
    return X, check_sample_weight(sample_weight, X)
