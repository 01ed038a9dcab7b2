"""The job across separate network hosts: Linux network namespaces joined by veth pairs on a bridge.

The scheduler, each worker and the job each run in a namespace of their own, talk only over addresses
inside 10.213.0.0/24, and share only the filesystem (the "shared filesystem" a real cluster would mount).
Needs root; under CI=true it always runs (and fails without root), it never skips there.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import zarr

from .cluster_processes import Processes, run_job, start_scheduler, start_worker

pytestmark = pytest.mark.skipif(
    (os.geteuid() != 0 or not shutil.which("ip")) and os.environ.get("CI") != "true",
    reason="network namespaces need root and iproute2; under CI=true this always runs",
)

SUBNET = "10.213.0"
HOSTS = ("sched", "w1", "w2", "job")


def _ip(*args) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class Network:
    """A bridge in a 'switch' namespace and one namespace per host, each with a veth pair to the bridge."""

    def __init__(self, hosts, tag: str):
        self.switch = f"kmj{tag}-switch"
        self.namespaces = {host: f"kmj{tag}-{host}" for host in hosts}
        self.addresses = {host: f"{SUBNET}.{i + 1}" for i, host in enumerate(hosts)}
        self.tag = tag

    def create(self) -> None:
        _ip("netns", "add", self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i, (host, ns) in enumerate(self.namespaces.items()):
            inside, outside = f"k{self.tag}h{i}", f"k{self.tag}s{i}"  # interface names: <= 15 characters
            _ip("netns", "add", ns)
            _ip("link", "add", inside, "type", "veth", "peer", "name", outside)
            _ip("link", "set", inside, "netns", ns)
            _ip("link", "set", outside, "netns", self.switch)
            _ip("-n", ns, "addr", "add", f"{self.addresses[host]}/24", "dev", inside)
            _ip("-n", ns, "link", "set", inside, "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", self.switch, "link", "set", outside, "master", "br0")
            _ip("-n", self.switch, "link", "set", outside, "up")

    def remove(self) -> None:
        for ns in [*self.namespaces.values(), self.switch]:  # deleting a namespace deletes its veth ends
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)

    def exec_prefix(self, host: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", self.namespaces[host])


@pytest.fixture
def network():
    net = Network(HOSTS, tag=str(os.getpid() % 100000))
    try:
        net.create()
        yield net
    finally:
        net.remove()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert f"kmj{net.tag}-" not in listed, "namespaces were left behind"


def _labels(run: Path) -> np.ndarray:
    return zarr.open_array(str(run / "labels.zarr"), mode="r")[:]


@pytest.mark.slow
def test_job_on_separate_hosts_matches_a_local_cluster(network, mnist_store, tmp_path):
    processes = Processes(tmp_path)
    try:
        scheduler_file = tmp_path / "scheduler.json"
        sched = network.addresses["sched"]
        start_scheduler(
            processes,
            scheduler_file,
            host=sched,
            port=8786,
            prefix=network.exec_prefix("sched"),
            dashboard=f"{sched}:8787",
        )
        for name in ("w1", "w2"):
            start_worker(
                processes,
                f"tcp://{sched}:8786",
                host=network.addresses[name],
                prefix=network.exec_prefix(name),
                name=name,
            )
        settings = [
            "--data",
            str(mnist_store),
            "--split",
            "test",
            "--seed",
            "7",
            "--silhouette-sample",
            "500",
        ]
        remote = run_job(
            *settings,
            "--out",
            str(tmp_path / "remote"),
            "--scheduler",
            f"tcp://{sched}:8786",
            prefix=network.exec_prefix("job"),
        )
        assert remote.returncode == 0, remote.stderr[-3000:] + processes.log("w1")
        assert f"cluster up (scheduler): tcp://{sched}:8786, 2 worker(s)" in remote.stderr
        # Separate hosts indeed: the scheduler, the workers and this test each have a network stack of their
        # own.
        stacks = {os.readlink(f"/proc/{p.pid}/ns/net") for p in processes.started} | {
            os.readlink("/proc/self/ns/net")
        }
        assert len(stacks) == 4
        info = json.loads(scheduler_file.read_text())
        assert info["address"] == f"tcp://{sched}:8786"
        local = run_job(*settings, "--out", str(tmp_path / "local"), "--dashboard-address", "127.0.0.1:0")
        assert local.returncode == 0, local.stderr[-3000:]
        np.testing.assert_array_equal(_labels(tmp_path / "remote"), _labels(tmp_path / "local"))
        m_remote = json.loads((tmp_path / "remote" / "metrics.json").read_text())
        m_local = json.loads((tmp_path / "local" / "metrics.json").read_text())
        assert m_remote["fit"]["inertia"] == pytest.approx(m_local["fit"]["inertia"], rel=1e-6)
        assert sorted(w["host"] for w in m_remote["cluster"]["workers"]) == [
            network.addresses[w] for w in ("w1", "w2")
        ]
    finally:
        processes.stop()
