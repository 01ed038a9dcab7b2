"""What polishing a large-k sample fit over all rows buys, and what it costs.

    python benchmarks/polish_passes.py [--store data/mnist-1000000.zarr] [--ks 32,64,128] [--repeats 2]

From 32 clusters on the fused estimator fits a sample with bounded Lloyd, then makes one pass over all
rows that assigns them. Before that pass it can polish the sample's centers with Lloyd passes over all
rows (`polish_passes`). On the store's train split, persisted on the job's own LocalCluster (2
single-threaded workers here, its worker malloc setting), `FusedKMeans(k, random_state=0)` fits with
polish_passes=0 (no polishing) and polish_passes=max_iter (until a pass gains less than tol, the rule of
the polishing passes), the two interleaved, `--repeats` times each. Prints the fit's seconds (median),
the passes over all rows it polished with, the inertia over all rows (pixels in [0, 1]), and what
polishing changed: the inertia (relative) and the time. Writes benchmarks/results/polish_passes.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from _common import REPO, print_table, save

SETTINGS = {"not polished": 0, "polished until a pass gains < tol": 300}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=REPO / "data" / "mnist-1000000.zarr")
    parser.add_argument("--ks", default="32,64,128")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from job.dataset import flat_pixels, open_dataset
    from job.deploy.lifecycle import connect
    from job.deploy.local import LocalConfig
    from job.engine.persist import persist_balanced
    from job.kmeans.estimator import FusedKMeans

    rows = []
    with connect(LocalConfig(dashboard_address="127.0.0.1:0")) as client:
        X = persist_balanced(client, flat_pixels(open_dataset(args.store, "train").images))
        n = int(X.shape[0])
        for k in (int(v) for v in args.ks.split(",")):
            runs: dict[str, list] = {name: [] for name in SETTINGS}
            for _ in range(args.repeats):
                for name, passes in SETTINGS.items():
                    started = time.perf_counter()
                    model = FusedKMeans(k, random_state=0, polish_passes=passes).fit(X)
                    seconds = time.perf_counter() - started
                    runs[name].append((seconds, int(model.n_iter_), float(model.inertia_) / 255**2))
                    print(f"k={k} {name}: {seconds:.2f} s, {model.n_iter_} passes", flush=True)
            plain = statistics.median(s for s, _, _ in runs["not polished"])
            plain_inertia = runs["not polished"][0][2]
            for name, results in runs.items():
                seconds = statistics.median(s for s, _, _ in results)
                rows.append(
                    {
                        "k": k,
                        "setting": name,
                        "fit s": seconds,
                        "runs s": [round(s, 2) for s, _, _ in results],
                        "polishing passes": results[0][1],
                        "inertia": results[0][2],
                        "inertia change %": 100 * (results[0][2] / plain_inertia - 1),
                        "time vs not polished": seconds / plain,
                    }
                )
    print(f"\n{n:,} rows of {args.store.name}, 2 workers; medians of {args.repeats} fits")
    print_table(
        rows,
        ["k", "setting", "fit s", "polishing passes", "inertia", "inertia change %", "time vs not polished"],
    )
    save(
        "polish_passes", {"store": str(args.store.name), "rows": n, "repeats": args.repeats, "results": rows}
    )


if __name__ == "__main__":
    main()
