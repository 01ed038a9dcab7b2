"""The package as a user installs it: a wheel built from the checkout, installed into a fresh virtual
environment, run from a folder that has nothing of the repository in it."""

import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from . import REPO


def _run(cmd, cwd, timeout=900, env=None):
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    assert proc.returncode == 0, (cmd, proc.stdout[-3000:], proc.stderr[-3000:])
    return proc


def _tracked_copy(dest: Path) -> Path:
    """The checkout's tracked files, copied: the wheel is built from what git holds (nothing ignored or
    left over), and the build's own build/ folder lands in the copy, not in the checkout."""
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, names.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(the fresh venv's bin folder, an unrelated working folder, the wheel build's output)."""
    root = tmp_path_factory.mktemp("packaging")
    source = _tracked_copy(root / "source")
    build = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", root / "dist", source], cwd=root)
    (wheel,) = (root / "dist").glob("mnist_kmeans-*.whl")
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    # The repository's pinned versions, so that the installed package runs what CI tests.
    _run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", "-c", REPO / "constraints.txt", wheel],
        cwd=root,
    )
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    return bin_dir, elsewhere, build.stdout + build.stderr


def _clean_env():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MPLBACKEND"] = "Agg"
    return env


@pytest.mark.slow
def test_the_wheel_builds_without_warnings(installed):
    _, _, output = installed
    assert "warning" not in output.lower() and "deprecat" not in output.lower(), output


def test_the_installed_package_is_the_wheel_not_the_checkout(installed):
    bin_dir, elsewhere, _ = installed
    proc = _run(
        [bin_dir / "python", "-c", "import job, data_prep; print(job.__file__); print(data_prep.__file__)"],
        cwd=elsewhere,
        env=_clean_env(),
    )
    for line in proc.stdout.split():
        assert str(bin_dir.parent) in line and str(REPO) not in line
    assert not (REPO / "build").exists()  # the build ran in a copy


def test_console_scripts_answer_help(installed):
    bin_dir, elsewhere, _ = installed
    job_help = " ".join(
        _run([bin_dir / "mnist-kmeans", "--help"], cwd=elsewhere, env=_clean_env()).stdout.split()
    )
    assert job_help.startswith("usage: mnist-kmeans ")  # the name the user typed, not python -m job
    assert (
        "local.yaml, scheduler.yaml, slurm.yaml, ssh.yaml" in job_help
    )  # the shipped configs, found by name
    assert "--cluster-config" in job_help
    assert "--source" in _run([bin_dir / "mnist-prep", "--help"], cwd=elsewhere, env=_clean_env()).stdout


@pytest.mark.slow
def test_a_small_run_from_an_unrelated_folder(installed, tiny_dir):
    """mnist-prep converts a tiny IDX folder, mnist-kmeans clusters it on a LocalCluster sized by the
    shipped local.yaml, and the run folder has what a run leaves."""
    bin_dir, elsewhere, _ = installed
    env = _clean_env()
    _run(
        [bin_dir / "mnist-prep", "--source", tiny_dir, "--name", "tiny", "--out", "tiny.zarr"],
        cwd=elsewhere,
        env=env,
    )
    _run(
        [
            bin_dir / "mnist-kmeans",
            "--data",
            "tiny.zarr",
            "--k",
            "3",
            "--silhouette-sample",
            "50",
            "--out",
            "run",
            "--n-workers",
            "1",
            "--dashboard-address",
            "127.0.0.1:0",
        ],
        cwd=elsewhere,
        env=env,
    )
    metrics = json.loads((elsewhere / "run" / "metrics.json").read_text())
    assert metrics["fit"]["n_iter"] >= 1 and metrics["dataset"]["n"] == 400
    assert metrics["config"]["cluster"]["kind"] == "local"
    for name in ("report.html", "centers.png", "model.npz", "summary.txt"):
        assert (elsewhere / "run" / name).stat().st_size > 0
