"""Latency of one task round trip on a 2-worker LocalCluster, with distributed's default message
batching and with job.deploy.lifecycle.reduce_batching_latency.

    python benchmarks/round_trip.py
"""

from __future__ import annotations

from distributed import Client, LocalCluster

from _common import print_table, save, timed
from job.deploy.lifecycle import reduce_batching_latency


def main():
    rows = []
    with (
        LocalCluster(
            n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0"
        ) as cluster,
        Client(cluster) as client,
    ):
        noop = lambda: client.submit(int, 1, pure=False).result()  # noqa: E731
        two = lambda: client.gather(client.map(int, range(2), pure=False))  # noqa: E731
        for label in ("default batching", "1 ms batching"):
            if label.startswith("1 ms"):
                reduce_batching_latency(client)
            for name, fn in (("submit+result", noop), ("map 2 tasks+gather", two)):
                fn()
                _, t = timed(fn, 200)
                rows.append({"setting": label, "round trip": name, "ms": t * 1e3})
    print_table(rows, ["setting", "round trip", "ms"])
    save("round_trip", {"results": rows})


if __name__ == "__main__":
    main()
