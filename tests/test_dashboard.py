"""The Dask dashboard while the job fits: on loopback, its link printed, our tasks visible in /status."""

import os
import subprocess
import sys
import time
import urllib.request

import pytest

from job.checkpoint import CHECKPOINT_FILE, partial_dir

from . import REPO, run_module
from .cluster_processes import LOOPBACK, free_port, listening
from .conftest import ARTIFACTS
from .hold_fit import hold_env

# Every Bokeh data source on the page, as JSON: the progress bars and the task stream name task prefixes.
PAGE_DATA = """() => {
  const out = [];
  for (const doc of (window.Bokeh ? Bokeh.documents : [])) for (const model of doc.all_models) {
    if (!('data' in model)) continue;
    const data = model.data instanceof Map ? Object.fromEntries(model.data) : model.data;
    try { out.push(JSON.stringify(data)); } catch (e) {}
  }
  return out.join('\\n');
}"""


def _wait_until_serving(url: str, proc, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        try:
            urllib.request.urlopen(url, timeout=2).close()
            return
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.2)


@pytest.mark.slow
def test_dashboard_shows_our_tasks_while_the_fit_runs(browser, mnist_store, tmp_path):
    port, release = free_port(), tmp_path / "release"
    # The workers hold the fit after its second Lloyd iteration until `release` exists (tests/hold_fit.py):
    # the page is looked at while the fit is running, however fast the machine.
    hold = hold_env(partial_dir(tmp_path / "run") / CHECKPOINT_FILE, at=2, release=release)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "job",
            "--data",
            str(mnist_store),
            "--out",
            str(tmp_path / "run"),
            "--tol",
            "0",
            "--max-iter",
            "300",
            "--silhouette-sample",
            "500",
            "--dashboard-address",
            f"127.0.0.1:{port}",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **hold},
    )
    try:
        status = f"http://127.0.0.1:{port}/status"
        _wait_until_serving(status, proc)
        # The job's own sockets (scheduler, dashboard, workers): loopback only, the dashboard's included.
        bound = listening(proc.pid)
        assert bound.get(port) and all(addresses <= LOOPBACK for addresses in bound.values()), bound
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(status)
        page.wait_for_function("() => window.Bokeh && Bokeh.documents.length > 0", timeout=30_000)
        deadline, seen = time.monotonic() + 60, ""
        while "lloyd_partial" not in seen:
            assert time.monotonic() < deadline, "our Lloyd tasks never appeared on /status"
            assert proc.poll() is None, "the fit ended before the dashboard showed it"
            seen = page.evaluate(PAGE_DATA)
            time.sleep(0.5)
        # While the run is live, its progress page beside the checkpoint links to the dashboard.
        live = partial_dir(tmp_path / "run") / "report.html"
        assert f"http://127.0.0.1:{port}/status" in live.read_text() and "(running)" in live.read_text()
        # ... says where the full report will be, and how far the fit is
        assert (tmp_path / "run" / "report.html").resolve().as_uri() in live.read_text()
        while "Lloyd iteration" not in live.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, (
                "the live page never showed Lloyd's progress"
            )
            time.sleep(0.2)
        assert "over all rows: inertia" in live.read_text()
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-status.png"))
        assert (ARTIFACTS / "dashboard-status.png").stat().st_size > 10_000
        assert not errors, errors
        page.close()
        release.touch()
        _out, err = proc.communicate(timeout=600)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert f"dashboard: http://127.0.0.1:{port}/status" in err
    assert not live.exists()  # the finished run keeps only its full report
    assert (tmp_path / "run" / "report.html").exists()


def test_dashboard_is_on_loopback_unless_exposed(caplog):
    """The default config's cluster binds its dashboard to loopback; --dashboard-address 0.0.0.0 binds it
    to every interface (with a warning). Checked on the listening sockets of this process."""
    import dataclasses
    import os
    import urllib.parse

    from job.cli import build_parser, config_from_args
    from job.deploy.lifecycle import connect

    for flags, expected in (([], LOOPBACK), (["--dashboard-address", "0.0.0.0:0"], {"0.0.0.0", "::"})):
        config = config_from_args(build_parser().parse_args(flags)).cluster
        config = dataclasses.replace(config, n_workers=1, memory_limit="1GiB")
        with connect(config) as client:
            port = urllib.parse.urlparse(client.dashboard_link).port
            bound = listening(os.getpid(), with_children=False)
            assert bound.get(port) and bound[port] <= expected, (flags, bound)
    assert "anyone who can reach this machine" in caplog.text


def test_a_busy_dashboard_port_is_one_line_and_the_dashboard_moves(mnist_store, tmp_path):
    """Another program on the dashboard's port: one log line says where the dashboard went (distributed's
    own 4-line UserWarning does not reach the user), and the printed link is the port it serves on."""
    import re
    import socket

    port = free_port()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        proc = run_module(
            "job",
            "--data",
            str(mnist_store),
            "--split",
            "test",
            "--k",
            "3",
            "--silhouette-sample",
            "0",
            "--out",
            str(tmp_path / "run"),
            "--n-workers",
            "1",
            "--dashboard-address",
            f"127.0.0.1:{port}",
            timeout=600,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (
        "UserWarning" not in proc.stderr and "Perhaps you already have a cluster running" not in proc.stderr
    )
    moved = re.search(
        rf"dashboard: port {port} is busy \(another cluster or program\), so it is on port (\d+)", proc.stderr
    )
    assert moved, proc.stderr[-3000:]
    assert f"dashboard: http://127.0.0.1:{moved[1]}/status" in proc.stderr
