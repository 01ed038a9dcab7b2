"""TLS between client, scheduler and workers: certificates made with the README's openssl commands, a
cluster started with the `dask` CLI that only speaks TLS, a client without certificates refused."""

import shutil
import subprocess
from pathlib import Path

import pytest

from job.deploy.base import SecurityConfig
from job.deploy.files import load_cluster_config
from job.deploy.lifecycle import connect
from job.deploy.local import LocalConfig
from job.deploy.scheduler import SchedulerConfig
from job.errors import ClusterError, ConfigError

from .cluster_processes import Processes, run_job, start_scheduler, start_worker, wait_for_workers

# The README's "Securing the cluster" commands, verbatim.
MAKE_CERTS = """
openssl req -x509 -newkey rsa:2048 -nodes -days 365 -subj "/CN=dask-ca" -keyout ca.key -out ca.pem
openssl req -newkey rsa:2048 -nodes -subj "/CN=dask-node" -keyout node.key -out node.csr
openssl x509 -req -in node.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 365 -out node.pem
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> dict:
    assert shutil.which("openssl"), "openssl is needed to make the test certificates"
    folder = tmp_path_factory.mktemp("certs")
    subprocess.run(["bash", "-euc", MAKE_CERTS], cwd=folder, check=True, capture_output=True)
    return {"ca_file": folder / "ca.pem", "cert": folder / "node.pem", "key": folder / "node.key"}


@pytest.fixture
def tls_cluster(tmp_path, certs):
    processes = Processes(tmp_path)
    scheduler_file = tmp_path / "scheduler.json"
    start_scheduler(processes, scheduler_file, certs=certs)
    for i in range(2):
        start_worker(processes, str(scheduler_file), certs=certs, name=f"worker-{i}")
    security = SecurityConfig(**{k: str(v) for k, v in certs.items()})
    wait_for_workers(scheduler_file, 2, security=security.to_security())
    yield scheduler_file
    processes.stop()


def _security_yaml(certs) -> str:
    return "security:\n" + "".join(f"  {key}: {path}\n" for key, path in certs.items())


def test_client_without_certificates_is_refused(tls_cluster, certs):
    import json

    address = json.loads(tls_cluster.read_text())["address"]
    assert address.startswith("tls://")
    with pytest.raises(ConfigError, match="speaks TLS: add a security section"):
        SchedulerConfig(address=address)
    # Even pretending it is plain TCP gets nowhere: the scheduler does not speak it.
    with pytest.raises(ClusterError, match="did not answer"):
        with connect(SchedulerConfig(address=address.replace("tls://", "tcp://"), timeout=3)):
            pass


def test_a_client_with_a_certificate_from_another_ca_is_refused(tls_cluster, tmp_path):
    subprocess.run(["bash", "-euc", MAKE_CERTS], cwd=tmp_path, check=True, capture_output=True)
    stranger = SecurityConfig(
        ca_file=str(tmp_path / "ca.pem"), cert=str(tmp_path / "node.pem"), key=str(tmp_path / "node.key")
    )
    with pytest.raises(ClusterError, match="did not answer"):
        with connect(SchedulerConfig(scheduler_file=str(tls_cluster), security=stranger, timeout=3)):
            pass


def test_job_runs_over_tls(tls_cluster, certs, mnist_store, tmp_path):
    config = tmp_path / "tls.yaml"
    config.write_text(
        f"kind: scheduler\nscheduler_file: {tls_cluster}\nmin_workers: 2\n" + _security_yaml(certs)
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
    assert "tls://127.0.0.1:" in proc.stderr and (run / "metrics.json").exists()


def test_local_cluster_with_tls(certs):
    security = SecurityConfig(**{k: str(v) for k, v in certs.items()})
    with connect(
        LocalConfig(n_workers=1, memory_limit="1GiB", dashboard_address="127.0.0.1:0", security=security)
    ) as client:
        assert client.scheduler.address.startswith("tls://")
        assert all(w.startswith("tls://") for w in client.scheduler_info()["workers"])
        assert client.submit(sum, [1, 2], pure=False).result() == 3


def test_security_section_mistakes_name_the_file(tmp_path, certs):
    path = tmp_path / "c.yaml"
    path.write_text("kind: scheduler\naddress: tls://10.0.0.1:8786\nsecurity:\n  ca_file: /nope/ca.pem\n")
    with pytest.raises(ConfigError, match=r"c.yaml: security: missing cert, key"):
        load_cluster_config(path)
    path.write_text("kind: local\n" + _security_yaml({**certs, "ca_file": Path("/nope/ca.pem")}))
    with pytest.raises(ConfigError, match=r"c.yaml: security.ca_file: /nope/ca.pem is not a readable file"):
        load_cluster_config(path)
    path.write_text("kind: local\n" + _security_yaml(certs) + "  cipher: rc4\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) cipher"):
        load_cluster_config(path)
