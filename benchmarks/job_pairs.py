"""The job at this checkout against another commit, run by run, alternating: the fit's phases and
whether both wrote the same results.

    python benchmarks/job_pairs.py --commit c4deb54 --pairs 4 --name job_pairs-k64 \\
        -- --data data/mnist-1000000.zarr --split train --k 64

The other commit is checked out in a temporary git worktree and run with this checkout's interpreter (its
own `job` package first on the path, as `python -m job` from its folder does); --warmup untimed runs per
side come first (default 1: the worktree's numba cache starts empty). Each pair runs
`python -m job <args> --out <temp>` once per side, the side that goes first alternating from pair to
pair, so that the machine's drift (tens of percent over a day here) falls on both. From each run's
metrics.json: the load, the draw of the sample, the sample's stage (start, coarse levels and the
sample's loop), its coarse levels, the pass over all rows, the whole fit and the inertia; and per pair
whether the two runs wrote the same centers.npy and model.npz (to the bit) and the same metrics.json but
for its times, memory, addresses, paths and the keys the newer code adds. Prints the table and the
medians, writes benchmarks/results/<--name>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from _common import REPO, print_table, save

# metrics.json keys (anywhere in it) that differ from run to run or say where it ran, not what it found.
VOLATILE = (
    "second",
    "time",
    "timing",
    "started",
    "dashboard",
    "address",
    "scheduler",
    "memory",
    "peak",
    "path",
    "out",
    "elapsed",
)


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if not any(word in k.lower() for word in VOLATILE)}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _differences(old, new, where: str = "") -> list[str]:
    """Where `new` differs from `old` (keys only `new` has are what the newer code adds: left out)."""
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for key in old for d in _differences(old[key], new.get(key), f"{where}.{key}")]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new)) for d in _differences(a, b, f"{where}[{i}]")]
    if isinstance(old, float) and isinstance(new, float):
        return [] if np.isclose(old, new, rtol=1e-9, atol=0.0) else [where]  # the last bits of a float sum
    return [] if old == new else [where]


def _phases(metrics: dict) -> dict:
    fit, sample = metrics["fit"], metrics["fit"].get("sample") or {}
    return {
        "load s": metrics["timings"]["load data"],
        "draw s": sample.get("draw_seconds"),
        "sample stage s": sample.get("fit_seconds"),
        "levels s": sum(level["seconds"] for level in sample.get("coarse", [])),
        "all rows s": fit["lloyd_seconds"],
        "fit s": metrics["timings"]["fit"],
        "inertia": fit["inertia"],
    }


def _run(folder: Path, args: list[str], out: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "job", *args, "--out", str(out)], cwd=folder, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the job in {folder} failed: {proc.stderr[-3000:]}")
    return json.loads((out / "metrics.json").read_text())


def _same_files(a: Path, b: Path) -> bool:
    if (a / "centers.npy").read_bytes() != (b / "centers.npy").read_bytes():
        return False
    with np.load(a / "model.npz") as x, np.load(b / "model.npz") as y:
        return x.files == y.files and all(np.array_equal(x[k], y[k]) for k in x.files)


def _absolute(args: list[str]) -> list[str]:
    """--data (and any other existing relative path) made absolute, so both sides read the same store."""
    return [
        str((REPO / arg).resolve()) if (REPO / arg).exists() and not arg.startswith("-") else arg
        for arg in args
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commit", required=True, help="the commit to run against (any git revision)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed runs per side first (the worktree's numba cache is empty)",
    )
    parser.add_argument("--name", default="job_pairs")
    parser.add_argument("job_args", nargs=argparse.REMAINDER, help="after --: the job's arguments")
    args = parser.parse_args()
    job_args = _absolute([a for a in args.job_args if a != "--"])
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.commit], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp) / "other"
        subprocess.run(["git", "worktree", "add", "--detach", str(other), commit], cwd=REPO, check=True)
        try:
            sides = {"this checkout": REPO, commit: other}
            for i in range(args.warmup):
                for side, folder in sides.items():
                    _run(folder, job_args, Path(tmp) / f"warmup-{i}-{'this' if folder == REPO else 'other'}")
                    print(f"warm-up {i + 1}/{args.warmup}: {side} done", flush=True)
            for pair in range(args.pairs):
                order = list(sides) if pair % 2 == 0 else list(sides)[::-1]
                runs = {}
                for side in order:
                    out = Path(tmp) / f"run-{pair}-{'this' if sides[side] == REPO else 'other'}"
                    runs[side] = (_run(sides[side], job_args, out), out)
                    print(f"pair {pair + 1}/{args.pairs}: {side} done", flush=True)
                (new, new_out), (old, old_out) = runs["this checkout"], runs[commit]
                # the cluster's record (workers' names and addresses, sizing) says where it ran
                differ = _differences(
                    _stable({k: v for k, v in old.items() if k != "cluster"}),
                    _stable({k: v for k, v in new.items() if k != "cluster"}),
                )
                same = _same_files(old_out, new_out) and not differ
                for side, (metrics, _) in runs.items():
                    first = "first" if side == order[0] else "second"
                    rows.append(
                        {"pair": pair + 1, "side": side, "ran": first, **_phases(metrics), "same": same}
                    )
                if differ:
                    print(f"pair {pair + 1}: metrics.json differs at {differ[:5]}", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=REPO, check=False)
    columns = ["pair", "side", "ran", "load s", "draw s", "sample stage s", "levels s", "all rows s", "fit s"]
    print_table(rows, [*columns, "inertia", "same"])
    medians = [
        {
            "side": side,
            **{
                c: statistics.median(r[c] for r in rows if r["side"] == side and r[c] is not None)
                for c in columns[3:]
                if any(r["side"] == side and r[c] is not None for r in rows)
            },
        }
        for side in ("this checkout", commit)
    ]
    print("\nmedians")
    print_table(medians, ["side", *columns[3:]])
    save(args.name, {"commit": commit, "job_args": args.job_args, "runs": rows, "medians": medians})


if __name__ == "__main__":
    main()
