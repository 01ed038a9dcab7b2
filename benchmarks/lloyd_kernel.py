"""One Lloyd step's arithmetic on one core: the fused kernel against the alternatives it replaced.

    python benchmarks/lloyd_kernel.py

Times, per 35,000 MNIST-sized rows (half of MNIST, what one of two workers holds): a one-hot matrix
product for the sums (blocked and not), and job.engine.kernels.lloyd_partial (BLAS distances + compiled
accumulation) for several inner block sizes.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from _common import print_table, save, timed
from job.engine import kernels


def onehot_step(X, centers, block):
    k = len(centers)
    c = centers.astype(X.dtype)
    csq = kernels.squared_norms(c)
    sums = np.zeros((k, X.shape[1]))
    eye = np.eye(k, dtype=X.dtype)
    for s in range(0, len(X), block):
        xb = X[s : s + block]
        lab = kernels._block_distances(xb, c, csq).argmin(1)
        sums += eye[:, lab] @ xb
    return sums


def main():
    rng = np.random.default_rng(0)
    X = (rng.random((35_000, 784)) < 0.2).astype(np.float32) * rng.random((35_000, 784), dtype=np.float32)
    centers = X[rng.choice(len(X), 10, replace=False)].astype(np.float64)
    rows = []
    with threadpool_limits(1):
        kernels.lloyd_partial(X[:2000], centers)  # compile
        for block in (35_000, 2048):
            _, t = timed(lambda: onehot_step(X, centers, block), 5)
            rows.append({"variant": f"one-hot GEMM, block {block}", "ms": t * 1e3})
        default = kernels.BLOCK_ROWS
        for block in (256, 512, 1024, 2048, 4096):
            kernels.BLOCK_ROWS = block
            _, t = timed(lambda: kernels.lloyd_partial(X, centers), 5)
            rows.append({"variant": f"fused kernel, block {block}", "ms": t * 1e3})
        kernels.BLOCK_ROWS = default
    print_table(rows, ["variant", "ms"])
    save("lloyd_kernel", {"rows_per_call": len(X), "results": rows})


if __name__ == "__main__":
    main()
