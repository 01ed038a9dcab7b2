"""How long the command lines take to answer before any work: --help and a mistyped flag.

Each command runs as a fresh process, 5 times, median wall seconds; the anchor is `python -c pass`
(the interpreter's own start) in the same run. Target (issue "As a user would", item 7): `python -m job
--help` under 1 s on the 2-core machine: the arguments are parsed before the pipeline's imports.

    .venv/bin/python benchmarks/cli_start.py
"""

from __future__ import annotations

import subprocess
import sys

from _common import REPO, print_table, save, timed

COMMANDS = {
    "python -c pass (anchor)": ["-c", "pass"],
    "python -m job --help": ["-m", "job", "--help"],
    "python -m job --kk 3 (mistyped flag)": ["-m", "job", "--kk", "3"],
    "python -m job.predict --help": ["-m", "job.predict", "--help"],
    "python -m data_prep --help": ["-m", "data_prep", "--help"],
}


def main() -> None:
    rows = []
    for name, args in COMMANDS.items():
        _, seconds = timed(
            lambda: subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True), repeats=5
        )
        rows.append({"command": name, "median s": seconds})
    anchor = rows[0]["median s"]
    for row in rows:
        row["vs anchor"] = row["median s"] / anchor
    print_table(rows, ["command", "median s", "vs anchor"])
    save("cli_start", {"rows": rows})


if __name__ == "__main__":
    main()
