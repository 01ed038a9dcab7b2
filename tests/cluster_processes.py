"""Real Dask clusters for tests: a scheduler and workers started with the `dask` command-line tools as
separate processes (optionally inside a network namespace, or with TLS), killed with their process group."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import run_module

DASK = str(Path(sys.executable).parent / "dask")


class Processes:
    """Processes started for one test; `stop()` kills each one's whole process group."""

    def __init__(self, log_dir: Path):
        self.started: list[subprocess.Popen] = []
        self.log_dir = log_dir

    def start(self, args, name: str, **kwargs) -> subprocess.Popen:
        with open(self.log_dir / f"{name}.log", "wb") as log:
            proc = subprocess.Popen(
                list(args), stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
            )
        self.started.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        for proc in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def wait_for(path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


def tls_args(certs: dict | None) -> list[str]:
    if not certs:
        return []
    return [
        "--tls-ca-file",
        str(certs["ca_file"]),
        "--tls-cert",
        str(certs["cert"]),
        "--tls-key",
        str(certs["key"]),
    ]


def start_scheduler(
    processes: Processes,
    scheduler_file: Path,
    host: str = "127.0.0.1",
    port: int = 0,
    prefix=(),
    certs: dict | None = None,
    dashboard: str | None = None,
) -> None:
    protocol = ["--protocol", "tls"] if certs else []
    processes.start(
        [
            *prefix,
            DASK,
            "scheduler",
            "--host",
            host,
            "--port",
            str(port),
            *protocol,
            "--dashboard-address",
            dashboard or f"{host}:0",
            "--scheduler-file",
            str(scheduler_file),
            *tls_args(certs),
        ],
        "scheduler",
    )
    wait_for(scheduler_file)


def start_worker(
    processes: Processes,
    scheduler: str,
    host: str = "127.0.0.1",
    prefix=(),
    certs: dict | None = None,
    name: str = "worker",
    memory_limit: str = "2GiB",
) -> None:
    target = (
        ["--scheduler-file", scheduler] if not scheduler.startswith(("tcp://", "tls://")) else [scheduler]
    )
    processes.start(
        [
            *prefix,
            DASK,
            "worker",
            *target,
            "--host",
            host,
            "--nthreads",
            "1",
            "--memory-limit",
            memory_limit,
            "--no-dashboard",
            "--name",
            name,
            *tls_args(certs),
        ],
        name,
    )


def wait_for_workers(scheduler_file: Path, n: int, security=None) -> None:
    from distributed import Client

    with Client(scheduler_file=str(scheduler_file), timeout=30, security=security) as client:
        client.wait_for_workers(n, timeout=60)


def run_job(*args, prefix=(), env=None, timeout=600) -> subprocess.CompletedProcess:
    return run_module("job", *args, prefix=prefix, env=env, timeout=timeout)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, server: subprocess.Popen, processes: Processes, name: str, timeout: float = 30
) -> None:
    """Until something accepts connections on 127.0.0.1:port; fails with the server's log if it dies."""
    deadline = time.monotonic() + timeout
    while True:
        assert server.poll() is None, processes.log(name)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{name} did not listen on port {port}"
            time.sleep(0.1)


def listening(pid: int, with_children: bool = True) -> dict[int, set[str]]:
    """{port: {addresses}} of the TCP sockets a process (and its children) listens on: what is really
    bound, whatever a config says."""
    import psutil

    procs = [psutil.Process(pid)]
    if with_children:
        procs += procs[0].children(recursive=True)
    found: dict[int, set[str]] = {}
    for proc in procs:
        try:
            connections = proc.net_connections(kind="tcp")
        except psutil.Error:
            continue
        for conn in connections:
            if conn.status == psutil.CONN_LISTEN:
                found.setdefault(conn.laddr.port, set()).add(conn.laddr.ip)
    return found


LOOPBACK = {"127.0.0.1", "::1"}
