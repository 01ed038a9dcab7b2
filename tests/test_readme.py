"""The README's "From Python / a notebook" example, executed as written (in a scratch folder whose
data/mnist.zarr is the real MNIST store the other tests use)."""

import re
import subprocess
import sys

import pytest

from . import REPO


def _notebook_example() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## From Python / a notebook", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_readme_library_example_runs_as_written(mnist_store, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "mnist.zarr").symlink_to(mnist_store)
    proc = subprocess.run(
        [sys.executable, "-c", _notebook_example()], cwd=tmp_path, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("dashboard: http://")
    assert "(10, 784)" in lines and "[8, 10, 12]" in proc.stdout
    assert (tmp_path / "runs" / "notebook" / "report.html").stat().st_size > 0
    # A notebook that set up no logging still sees the job's progress (phases, Lloyd, the result's unit)
    assert "[4/7] fit ..." in proc.stderr and "Lloyd iteration" in proc.stderr, proc.stderr[-2000:]
    assert "with pixels in [0, 1], as every figure and file reports it" in proc.stderr
    assert (tmp_path / "runs" / "notebook-sweep" / "sweep.json").stat().st_size > 0


def test_every_public_name_resolves_and_workers_import_no_pipeline():
    """job's public names all import; importing job alone (as each worker does before job.engine.kernels)
    pulls in none of the pipeline (scikit-learn, matplotlib, the estimator)."""
    import job

    assert all(getattr(job, name) is not None for name in job.__all__)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, job, job.engine.kernels; "
            "print(sorted(m for m in ('sklearn', 'matplotlib', 'job.kmeans.estimator', 'job.pipeline') if m "
            "in sys.modules))",
        ],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    assert proc.stdout.strip() == "[]"


def test_the_readme_says_which_python_before_its_first_python_command():
    """A fresh machine has no `job` for the system python: the README names .venv's interpreter (or its
    activation) before the first command line that starts with `python`."""
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", readme, re.S)
    first = next(line for block in blocks for line in block.splitlines() if line.startswith("python "))
    note = readme.index(". .venv/bin/activate")
    assert note < readme.index(first)
    assert ".venv/bin/python -m job" in readme
