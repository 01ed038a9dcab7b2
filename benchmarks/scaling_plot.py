"""One picture of the 2- and 16-core runs of benchmarks/large_k.py: where each run's time goes.

    python benchmarks/scaling_plot.py [--rows 8100000]

Reads benchmarks/results/large_k-<rows>-k<k>-<cores>cores.json (written by large_k.py --cores N) for
k = 10 and 256 at 2 and 16 cores and draws, per run, its load, its fit split into the sample's stage and
the passes over all rows (the job) or the fit and the assignment of every row (faiss), as stacked bars.
Writes docs/images/scaling-<rows>.png.
"""

from __future__ import annotations

import argparse
import json

from _common import REPO, RESULTS

PARTS = {  # label: colour
    "load": "#9e9e9e",
    "sample's stage (draw, starts, Lloyd on the sample)": "#4c72b0",
    "passes over all rows": "#dd8452",
    "faiss fit": "#55a868",
    "faiss assignment of every row": "#c44e52",
}


def parts(anchor: dict) -> dict[str, float]:
    if anchor["anchor"] != "job":
        return {
            "load": anchor["load s"],
            "faiss fit": anchor["fit s"],
            "faiss assignment of every row": anchor["assign s"],
        }
    detail = anchor["fit detail"]
    return {
        "load": anchor["load s"],
        "sample's stage (draw, starts, Lloyd on the sample)": detail["init_seconds"],
        "passes over all rows": detail["lloyd_seconds"],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=8_100_000)
    args = parser.parse_args()
    from matplotlib.figure import Figure

    bars = []
    for k in (10, 256):
        for cores in (2, 16):
            path = RESULTS / f"large_k-{args.rows}-k{k}-{cores}cores.json"
            if not path.exists():
                continue
            for anchor in json.loads(path.read_text())["anchors"]:
                bars.append((f"k={k}, {cores} cores: {anchor['anchor']}", parts(anchor)))
    fig = Figure(figsize=(9, 0.55 * len(bars) + 1.6))
    ax = fig.add_subplot()
    for y, (_, times) in enumerate(reversed(bars)):
        left = 0.0
        for part, seconds in times.items():
            ax.barh(y, seconds, left=left, color=PARTS[part], label=part)
            left += seconds
        ax.text(left + 1, y, f"{left:.1f} s", va="center", fontsize=8)
    ax.set_yticks(range(len(bars)), [label for label, _ in reversed(bars)], fontsize=8)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=8, loc="lower right")
    ax.set_xlabel("seconds (load + fit; the job's fit assigns every row in its last pass)")
    ax.set_title(f"{args.rows:,} images: 2 and 16 cores of one machine (large_k.py --cores N)")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    out = REPO / "docs" / "images" / f"scaling-{args.rows}.png"
    fig.savefig(out, dpi=110)
    print(f"wrote {out.relative_to(REPO)}")


if __name__ == "__main__":
    main()
