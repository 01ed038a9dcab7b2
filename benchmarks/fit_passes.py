"""Where a large-k fit's time goes, from distributed's task stream: arithmetic on the workers against the
time between passes.

    python benchmarks/fit_passes.py --store data/mnist-1000000.zarr --k 64 [--repeats 2]

The store's train split is persisted as the job holds it on the job's LocalCluster, then
`FusedKMeans(k, random_state=0)` fits it 1 + repeats times, each under `get_task_stream`: the first fit on
fresh workers (as in a job), the others on the same, warm ones. For each bounded loop (a coarse level, the
sample; each starts with a `bounds_init` pass) it reports the passes, their median span (first task start
to last task end), the median compute of the slowest worker thread in a pass, and the median gap from
one pass's end to the next one's start (the round trip: the client adds the sums, sends the centers and
the next pass, the scheduler hands it out); and the compute of every kind of task, all workers together.
Writes benchmarks/results/fit_passes-<rows>-k<k>.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from contextlib import ExitStack
from itertools import pairwise
from pathlib import Path

from _common import REPO, job_cluster_with_x, print_table, save

sys.path.insert(0, str(REPO))

from distributed import get_task_stream

from job.dataset import open_dataset
from job.kmeans.estimator import FusedKMeans


def _prefix(key) -> str:
    name = key[0] if isinstance(key, tuple) else key
    for kind in ("bounds_step-sums", "bounds_init-sums", "assign-sums"):
        if name.startswith(kind):
            return kind
    return name.split("-")[0]


def _pass_token(key: str) -> str:
    return key.rsplit("-", 1)[0]  # "bounds_step-<token>-<thread>" -> one pass


def _loops(records: list[dict], labels: list[str]) -> list[dict]:
    """Per bounded loop: its passes' spans, slowest-thread compute and the gaps between them."""
    passes: dict[str, list] = defaultdict(list)
    inits: dict[str, float] = {}
    for r in records:
        kind = _prefix(r["key"])
        for ss in r["startstops"]:
            if ss["action"] != "compute":
                continue
            if kind == "bounds_step":
                passes[_pass_token(r["key"])].append((ss["start"], ss["stop"]))
            elif kind == "bounds_init":
                token = _pass_token(r["key"])
                inits[token] = min(inits.get(token, ss["start"]), ss["start"])
    spans = sorted(
        (min(s for s, _ in v), max(e for _, e in v), max(e - s for s, e in v)) for v in passes.values()
    )
    starts = sorted(inits.values())  # each loop begins with its init pass
    rows = []
    for i, begin in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else float("inf")
        loop = [s for s in spans if begin <= s[0] < end]
        if not loop:
            continue
        gaps = [b[0] - a[1] for a, b in pairwise(loop)]
        rows.append(
            {
                "loop": labels[i] if i < len(labels) else f"loop {i + 1}",
                "passes": len(loop),
                "wall s": loop[-1][1] - loop[0][0],
                "span ms": 1000 * statistics.median(e - s for s, e, _ in loop),
                "slowest thread compute ms": 1000 * statistics.median(c for _, _, c in loop),
                "gap ms": 1000 * statistics.median(gaps) if gaps else 0.0,
            }
        )
    return rows


def _by_kind(records: list[dict]) -> list[dict]:
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    for r in records:
        for ss in r["startstops"]:
            seconds[(_prefix(r["key"]), ss["action"])] += ss["stop"] - ss["start"]
    kinds = sorted({k for k, _ in seconds}, key=lambda k: -seconds[(k, "compute")])
    return [
        {"task": k, "compute s": seconds[(k, "compute")], "transfer s": seconds[(k, "transfer")]}
        for k in kinds
        if seconds[(k, "compute")] + seconds[(k, "transfer")] >= 0.005
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--k", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=2, help="warm fits after the first")
    args = parser.parse_args()
    data = open_dataset(args.store, "train")
    fits = []
    with ExitStack() as stack:
        client, X = job_cluster_with_x(stack, args.store)
        workers = len(client.nthreads())
        for i in range(1 + args.repeats):
            with get_task_stream(client) as stream:
                started = time.perf_counter()
                model = FusedKMeans(args.k, random_state=0).fit(X)
                seconds = time.perf_counter() - started
            sample = model.sample_ or {}
            labels = [f"coarse level {level['rows']:,} rows" for level in sample.get("coarse", [])]
            labels.append(f"the sample, {sample['rows']:,} rows" if "rows" in sample else "all rows")
            fit = {
                "workers": "fresh" if i == 0 else "warm",
                "fit s": seconds,
                "inertia": float(model.inertia_),
                "loops": _loops(stream.data, labels),
                "tasks": _by_kind(stream.data),
            }
            fits.append(fit)
            print(f"\nfit {i + 1} ({fit['workers']} workers): {seconds:.2f} s, inertia {fit['inertia']:,.0f}")
            print_table(
                fit["loops"], ["loop", "passes", "wall s", "span ms", "slowest thread compute ms", "gap ms"]
            )
            print_table(fit["tasks"], ["task", "compute s", "transfer s"])
    save(
        f"fit_passes-{data.n}-k{args.k}",
        {"store": str(args.store), "rows": data.n, "k": args.k, "workers": workers, "fits": fits},
    )


if __name__ == "__main__":
    main()
