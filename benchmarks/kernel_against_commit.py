"""The per-chunk Lloyd kernel of this checkout against the same kernel at another commit, interleaved.

    python benchmarks/kernel_against_commit.py [--commit 8d7e242] [--repeats 7]

The other commit's job/engine/kernels.py is read with `git show` and loaded beside ours; both run
lloyd_partial (no weights) on the same 35,000 MNIST rows (what one of two workers holds) at k = 10 and 64,
one BLAS thread, alternately, median of --repeats. A refactoring of the kernel (8d7e242 -> the one
weighted path) must leave the time and the sums and counts as they were; the machine's own speed
cancels in the ratio. Prints a table and writes benchmarks/results/kernel_against_commit.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from _common import REPO, print_table, save
from data_prep.idx import read_idx


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--commit", default="8d7e242", help="the commit to compare with")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    source = subprocess.run(
        ["git", "show", f"{args.commit}:job/engine/kernels.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "kernels_then.py").write_text(source)
        kernels = {
            "this checkout": _load(REPO / "job/engine/kernels.py", "kernels_now"),
            args.commit: _load(Path(tmp) / "kernels_then.py", "kernels_then"),
        }
        mnist = REPO.parent / "shared/data/mnist/train-images-idx3-ubyte.gz"
        X = read_idx(mnist)[:35000].reshape(35000, -1)
        rng = np.random.default_rng(0)
        rows = []
        for k in (10, 64):
            centers = X[rng.choice(len(X), k, replace=False)].astype(np.float64)
            times: dict[str, list[float]] = {name: [] for name in kernels}
            results = {name: module.lloyd_partial(X, centers) for name, module in kernels.items()}  # compiles
            with threadpool_limits(1):
                for _ in range(args.repeats):
                    for name, module in kernels.items():
                        started = time.perf_counter()
                        module.lloyd_partial(X, centers)
                        times[name].append(time.perf_counter() - started)
            now, then = (results[name] for name in kernels)
            same = bool(np.array_equal(now[0], then[0]) and np.array_equal(now[1], then[1]))
            ms = {name: statistics.median(t) * 1e3 for name, t in times.items()}
            now_ms, then_ms = ms.values()
            rows.append(
                {
                    "k": k,
                    "ms now": round(now_ms, 1),
                    f"ms at {args.commit}": round(then_ms, 1),
                    "ratio": round(now_ms / then_ms, 3),
                    "same sums and counts": same,
                }
            )
    print_table(rows, list(rows[0]))
    save("kernel_against_commit", {"commit": args.commit, "rows_per_call": 35000, "results": rows})


if __name__ == "__main__":
    main()
