"""distributed's SSHCluster against a real OpenSSH server on a loopback port, with throwaway keys."""

import getpass
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from .cluster_processes import Processes, free_port, run_job, wait_for_port

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


@pytest.fixture
def sshd(tmp_path):
    """An sshd of our own: loopback only, public-key login with a key made for this test, no PAM."""
    assert Path(SSHD).exists(), "sshd is missing: .ci/run installs Debian's openssh-server"
    folder = tmp_path / "sshd"
    folder.mkdir()
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    (folder / "authorized_keys").write_text((folder / "user_key.pub").read_text())
    os.chmod(folder / "authorized_keys", 0o600)
    port = free_port()
    (folder / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {folder / 'host_key'}\nPidFile "
        f"{folder / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {folder / 'authorized_keys'}\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\n"
        "StrictModes no\nUsePAM no\nMaxStartups 50\nMaxSessions 50\n"
    )
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
    processes = Processes(tmp_path)
    server = processes.start([SSHD, "-D", "-e", "-f", str(folder / "sshd_config")], "sshd")
    wait_for_port(port, server, processes, "sshd")
    yield {"port": port, "key": folder / "user_key"}
    processes.stop()


def _dask_spec_processes() -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        if "distributed.cli.dask_spec" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


SECRET = "hunter2-not-for-logs"  # an SSH password (key authentication succeeds first, so it goes unused)


@pytest.mark.slow
def test_job_runs_on_an_ssh_cluster(sshd, mnist_store, tmp_path):
    config = tmp_path / "ssh.yaml"
    config.write_text(
        "kind: ssh\n"
        "hosts: [127.0.0.1, 127.0.0.1, 127.0.0.1]\n"
        f"connect_options: {{port: {sshd['port']}, username: {getpass.getuser()}, known_hosts: null,\n"
        f"                  client_keys: [{sshd['key']}], password: {SECRET}}}\n"
        "worker_options: {nthreads: 1, memory_limit: 2GiB}\n"
        "scheduler_options: {port: 0, dashboard_address: '127.0.0.1:0'}\n"
        "min_workers: 2\ntimeout: 60\n"
    )
    run = tmp_path / "run"
    proc = run_job(
        "--data",
        str(mnist_store),
        "--split",
        "test",
        "--out",
        str(run),
        "--silhouette-sample",
        "500",
        "--cluster-config",
        str(config),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cluster up (ssh)" in proc.stderr and "2 worker(s)" in proc.stderr
    assert (run / "metrics.json").exists()
    # The password in connect_options reaches no log line, metrics.json, summary or report (it is masked).
    written = [proc.stdout, proc.stderr] + [
        (run / name).read_text() for name in ("metrics.json", "summary.txt", "report.html")
    ]
    assert not [text for text in written if SECRET in text]
    connect_options = json.loads((run / "metrics.json").read_text())["config"]["cluster"]["connect_options"]
    assert connect_options["password"] == "***" and connect_options["port"] == sshd["port"]
    # The scheduler and workers it started over SSH are gone with it.
    deadline = time.monotonic() + 20
    while _dask_spec_processes():
        assert time.monotonic() < deadline, "processes started over SSH outlived the job"
        time.sleep(0.5)


def test_unreachable_ssh_host_is_a_clear_error(mnist_store, tmp_path):
    config = tmp_path / "ssh.yaml"
    config.write_text(f"kind: ssh\nhosts: [127.0.0.1, 127.0.0.1]\nconnect_options: {{port: {free_port()}}}\n")
    proc = run_job(
        "--data",
        str(mnist_store),
        "--split",
        "test",
        "--cluster-config",
        str(config),
        "--out",
        str(tmp_path / "run"),
    )
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert (
        "could not start an SSHCluster on 127.0.0.1, 127.0.0.1" in last and "Connect call failed" in last
    ), last
    assert "Traceback" not in proc.stderr
