"""Out of core: streaming Lloyd iterations over 70,000, 1,000,000 and 8,100,000 images, with bounded memory.

    python benchmarks/out_of_core.py [--sizes 70000,1000000,8100000] [--iters 5] [--job]

Data: the MNIST-derived store from data_prep.generate (made first if missing: `--store`, default
data/mnist-8100000.zarr); size n is its first n training images. For each n, a fresh cluster of separate
processes: `dask scheduler` and 2 `dask worker --nthreads 1 --memory-limit 2GiB --no-nanny` (each one's peak
RSS is
the kernel's VmHWM, read just before it is stopped). On it, in this process (the client):

  read      one pass that reads and decompresses every chunk of the n images and does nothing else
  arith     one iteration's arithmetic (uint8 -> float32 / 255 and job.engine.kernels.lloyd_partial) on the
  same
            chunks, each read first and then timed from memory on its worker: the sum over chunks divided
            by the 2 worker threads
  floor     read + arith: what a streaming iteration cannot beat without overlapping the two
  iter      one Lloyd iteration on X streamed from Zarr (never persisted): job.kmeans.passes.lloyd_step, which
            is what every iteration of FusedKMeans's loop runs; the median of --iters
  bytes     bytes the workers read per iteration (/proc/<pid>/io rchar, summed over workers)
  RSS       peak RSS of the client (this process, measured from before the first n), the scheduler and
            each worker

--job also runs the whole job (`python -m job --split train`) on the largest n against such a cluster,
and reports the job's wall time and the peak RSS of each process. Writes benchmarks/results/out_of_core.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import REPO, mnist_store, print_table, save

DASK = str(Path(sys.executable).parent / "dask")
WORKERS = 2


class Cluster:
    """A scheduler and WORKERS workers as child processes; stop() returns each one's peak RSS (bytes)."""

    def __init__(self, memory_limit: str = "2GiB"):
        self.folder = tempfile.TemporaryDirectory()
        self.scheduler_file = Path(self.folder.name) / "scheduler.json"
        quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
        # What a Nanny would set before starting a worker (distributed.nanny.pre-spawn-environ): without
        # it each worker's BLAS starts a thread per core and two workers fight over two cores.
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MALLOC_TRIM_THRESHOLD_": "65536",
        }
        self.scheduler = subprocess.Popen(
            [
                DASK,
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--dashboard-address",
                "127.0.0.1:0",
                "--scheduler-file",
                str(self.scheduler_file),
            ],
            **quiet,
        )
        while not self.scheduler_file.exists():
            time.sleep(0.1)
        self.workers = [
            subprocess.Popen(
                [
                    DASK,
                    "worker",
                    "--scheduler-file",
                    str(self.scheduler_file),
                    "--nthreads",
                    "1",
                    "--memory-limit",
                    memory_limit,
                    "--no-nanny",
                    "--host",
                    "127.0.0.1",
                    "--no-dashboard",
                    "--name",
                    f"w{i}",
                ],
                env=env,
                **quiet,
            )
            for i in range(WORKERS)
        ]
        self.address = json.loads(self.scheduler_file.read_text())["address"]

    def stop(self) -> dict[str, int]:
        peaks = {}
        for name, proc in [
            *((f"worker {i}", w) for i, w in enumerate(self.workers)),
            ("scheduler", self.scheduler),
        ]:
            peaks[name] = vm_hwm(proc.pid)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.folder.cleanup()
        return peaks


def vm_hwm(pid: int | str = "self") -> int:
    """Peak resident set size of a live process, in bytes: the kernel's high-water mark (VmHWM).

    Not getrusage/wait4's ru_maxrss: on Linux a child's ru_maxrss keeps the parent's RSS from before its
    exec (subprocess forks from this 300 MB process), which made every child look at least that large.
    """
    with open(f"/proc/{pid}/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1]) * 1024


def _rchar() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar")).split()[1])


def _read_only(block: np.ndarray) -> np.ndarray:
    return np.zeros((1,), dtype=np.int64) + block.shape[0]


def _timed_arithmetic(block: np.ndarray, centers: np.ndarray) -> np.ndarray:
    from job.engine.kernels import lloyd_partial

    started = time.perf_counter()
    X = block.reshape(len(block), -1).astype(np.float32) / np.float32(255)
    lloyd_partial(X, centers)
    return np.array([time.perf_counter() - started])


def measure(address: str, store: Path, n: int, centers: np.ndarray, iters: int) -> dict:
    from distributed import Client

    from job.dataset import open_dataset, to_features
    from job.deploy.lifecycle import reduce_batching_latency
    from job.kmeans.passes import lloyd_step

    with Client(address) as client:
        client.wait_for_workers(WORKERS)
        reduce_batching_latency(client)
        images = open_dataset(store, "train").images[:n]
        X = to_features(images)
        client.submit(
            _timed_arithmetic, np.zeros((8, 28, 28), np.uint8), centers, pure=False
        ).result()  # warm

        read_pass = images.map_blocks(
            _read_only, drop_axis=(1, 2), chunks=((1,) * images.numblocks[0],), dtype=np.int64
        ).sum()
        read_pass.compute()  # the first pass also opens the store and imports the codecs on each worker
        started = time.perf_counter()
        read_pass.compute()
        read_s = time.perf_counter() - started

        per_chunk = images.map_blocks(
            _timed_arithmetic,
            centers,
            drop_axis=(1, 2),
            chunks=((1,) * images.numblocks[0],),
            dtype=np.float64,
        ).compute()
        arith_s = float(per_chunk.sum()) / WORKERS

        lloyd_step(X, centers)  # warm the path (numba, imports)
        before = sum(client.run(_rchar).values())
        times = []
        for _ in range(iters):  # exactly what each iteration of FusedKMeans's loop runs on X
            started = time.perf_counter()
            lloyd_step(X, centers)
            times.append(time.perf_counter() - started)
        read_bytes = (sum(client.run(_rchar).values()) - before) / iters
    return {
        "n": n,
        "read s": read_s,
        "arith s": arith_s,
        "floor s": read_s + arith_s,
        "iter s": statistics.median(times),
        "iter/floor": statistics.median(times) / (read_s + arith_s),
        "MiB read/iter": read_bytes / 2**20,
        "iter times": times,
    }


def start_centers(store: Path) -> np.ndarray:
    """The same start for every n: k-means|| (seed 0) on the first 70,000 images, on a cluster of its own."""
    from distributed import Client

    from job.dataset import open_dataset, to_features
    from job.kmeans.kmeans_parallel import kmeans_parallel

    cluster = Cluster()
    try:
        with Client(cluster.address) as client:
            client.wait_for_workers(WORKERS)
            X = to_features(open_dataset(store, "train").images[:70_000]).persist()
            centers, _ = kmeans_parallel(X, 10, seed=0)
    finally:
        cluster.stop()
    return centers


def ensure_store(store: Path, n: int) -> Path:
    if store.exists():
        return store
    from distributed import Client, LocalCluster

    from data_prep.generate import GenerateConfig, generate_dataset

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            memory_limit="2GiB",
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
        ) as cluster,
        Client(cluster) as client,
    ):
        return generate_dataset(GenerateConfig(out=store, source=mnist_store(), n=n, seed=0), client)


def run_whole_job(store: Path, n: int, extra: list[str]) -> dict:
    """python -m job on the store's n training images against a fresh process cluster; peaks by VmHWM."""
    cluster = Cluster()
    out = Path(tempfile.mkdtemp()) / "run"
    started = time.perf_counter()
    job = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "job",
            "--data",
            str(store),
            "--split",
            "train",
            "--scheduler",
            cluster.address,
            "--out",
            str(out),
            *extra,
        ],
        cwd=REPO,
    )
    job_peak = 0
    while job.poll() is None:  # VmHWM only grows: the last reading before exit is the peak (to 0.2 s)
        with contextlib.suppress(FileNotFoundError, StopIteration, ProcessLookupError):
            job_peak = max(job_peak, vm_hwm(job.pid))
        time.sleep(0.2)
    status = job.returncode
    wall = time.perf_counter() - started
    peaks = cluster.stop()
    peaks["client (job)"] = job_peak
    metrics = json.loads((out / "metrics.json").read_text()) if status == 0 else {}
    return {
        "n": n,
        "exit status": status,
        "wall s": wall,
        "peaks": peaks,
        "run": str(out),
        "timings": metrics.get("timings"),
        "fit": metrics.get("fit"),
        "evaluation": {
            key: metrics.get("evaluation", {}).get(key)
            for key in ("ari", "nmi", "accuracy_hungarian", "silhouette")
        },
        "held_out": {key: (metrics.get("held_out") or {}).get(key) for key in ("accuracy_hungarian",)},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="70000,1000000,8100000")
    parser.add_argument("--store", type=Path, default=REPO / "data" / "mnist-8100000.zarr")
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--job", action="store_true", help="also run the whole job on the largest n")
    parser.add_argument(
        "--job-only",
        default=None,
        metavar="SIZES",
        help="only run the whole job, on stores of these sizes (data/mnist-<n>.zarr, generated with "
        "the same seed: the first n rows of the big store); saves out_of_core_job_<n>.json each",
    )
    parser.add_argument("--job-args", default="", help="extra arguments for the job, e.g. '--max-iter 50'")
    args = parser.parse_args()
    if args.job_only:
        for n in [int(s) for s in args.job_only.split(",")]:
            whole = run_whole_job(
                ensure_store(REPO / "data" / f"mnist-{n}.zarr", n), n, args.job_args.split()
            )
            print(
                f"whole job on n={n:,}: exit {whole['exit status']}, {whole['wall s']:.0f} s; peak RSS MiB: "
                + ", ".join(f"{k} {v / 2**20:,.0f}" for k, v in whole["peaks"].items())
            )
            save(f"out_of_core_job_{n}", {"args": {k: str(v) for k, v in vars(args).items()}, "job": whole})
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    store = ensure_store(args.store, max(sizes))

    centers = start_centers(store)

    rows, peaks = [], {}
    for n in sizes:
        cluster = Cluster()
        try:
            row = measure(cluster.address, store, n, centers, args.iters)
        finally:
            peaks[n] = cluster.stop()
        peaks[n]["client (this process)"] = vm_hwm()
        row.update({f"{name} peak MiB": value / 2**20 for name, value in peaks[n].items()})
        rows.append(row)
        print(f"  n={n:,}: {row['iter s']:.2f} s/iter, floor {row['floor s']:.2f} s", flush=True)

    logs = np.log([r["n"] for r in rows]), np.log([r["iter s"] for r in rows])
    exponent = float(np.polyfit(*logs, 1)[0]) if len(rows) > 1 else float("nan")
    print(f"\nStreaming Lloyd iterations ({WORKERS} workers x 1 thread, 2 GiB limit each; k=10)")
    print_table(
        rows,
        [
            "n",
            "read s",
            "arith s",
            "floor s",
            "iter s",
            "iter/floor",
            "MiB read/iter",
            "scheduler peak MiB",
            "worker 0 peak MiB",
            "worker 1 peak MiB",
            "client (this process) peak MiB",
        ],
    )
    print(f"time per iteration ~ n^{exponent:.3f} (least squares on log-log)")
    result = {"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "exponent": exponent}
    if args.job:
        whole = run_whole_job(store, max(sizes), args.job_args.split())
        print(
            f"\nwhole job on n={whole['n']:,}: exit {whole['exit status']}, {whole['wall s']:.0f} s; peak "
            f"RSS MiB: " + ", ".join(f"{k} {v / 2**20:,.0f}" for k, v in whole["peaks"].items())
        )
        result["job"] = whole
    save("out_of_core", result)


if __name__ == "__main__":
    main()
