"""Cluster configuration files: every file in cluster_config/ loads; mistakes are clear errors."""

import dataclasses
import re
from pathlib import Path

import pytest

from job.cli import build_parser, config_from_args, flags
from job.config import JobConfig, parse_k
from job.deploy.files import kinds, load_cluster_config
from job.errors import ConfigError

from . import REPO

CONFIGS = REPO / "cluster_config"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load_with_every_setting_they_show(path):
    """Each shipped file is the kind it says, and each of its settings is what the loaded config holds
    (a key read under another name, or dropped, would leave the default in its place)."""
    import yaml

    written = yaml.safe_load(path.read_text())
    config = load_cluster_config(path)
    assert type(config) is kinds()[written.pop("kind")]
    for key, value in written.items():
        held = getattr(config, key)
        if value == "auto":  # sized for this machine when the cluster starts (job.deploy.sizing)
            assert held is None, (key, held)
        else:
            assert held == (tuple(value) if isinstance(value, list) else value), (key, held, value)


def test_local_defaults_keep_the_dashboard_on_loopback():
    config = load_cluster_config(CONFIGS / "local.yaml")
    assert config.kind == "local" and config.dashboard_address.startswith("127.0.0.1:")


def test_unknown_keys_are_errors(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: local\nn_worker: 3\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key\(s\) n_worker"):
        load_cluster_config(path)


def test_bad_yaml_and_missing_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: [local\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cluster_config(path)
    path.write_text("kind: scheduler\n")
    with pytest.raises(ConfigError, match="needs an address or a scheduler_file"):
        load_cluster_config(path)


def test_cli_flags_override_the_file():
    args = build_parser().parse_args(["--n-workers", "3", "--k", "12", "--seed", "5"])
    config = config_from_args(args)
    assert config.cluster.n_workers == 3 and config.k == 12 and config.seed == 5
    args = build_parser().parse_args(["--scheduler", "tcp://127.0.0.1:9999"])
    assert config_from_args(args).cluster.kind == "scheduler"


def test_the_command_line_options_are_made_from_the_settings():
    """Each setting that declares its --help is an option of python -m job with that help; no flags give
    JobConfig's defaults, and a value typed reaches its field, converted as the library converts it."""
    parser = build_parser()
    documented = [f.name for f in dataclasses.fields(JobConfig) if f.metadata.get("help")]
    assert len(documented) == 15
    help_of = {action.dest: action.help for action in parser._actions}
    assert all(help_of[name] == JobConfig.__dataclass_fields__[name].metadata["help"] for name in documented)
    assert config_from_args(parser.parse_args([])) == JobConfig()
    for argv, name, value in [
        (["--data", "s3://bucket/mnist.zarr"], "data", "s3://bucket/mnist.zarr"),
        (["--data", "stores/mnist.zarr"], "data", Path("stores/mnist.zarr")),
        (["--split", "train"], "split", "train"),
        (["--seed", "7"], "seed", 7),
        (["--n-init", "3"], "n_init", 3),
        (["--sample-size", "all"], "sample_size", None),
        (["--sample-size", "50000"], "sample_size", 50_000),
        (["--polish-passes", "2"], "polish_passes", 2),
        (["--engine", "dask-ml"], "engine", "dask-ml"),
        (["--max-iter", "7"], "max_iter", 7),
        (["--tol", "0.01"], "tol", 0.01),
        (["--init-max-iter", "4"], "init_max_iter", 4),
        (["--oversampling-factor", "3"], "oversampling_factor", 3.0),
        (["--persist", "never"], "persist", "never"),
        (["--silhouette-sample", "0"], "silhouette_sample", 0),
        (["--examples", "3"], "examples_per_cluster", 3),
        (["--checkpoint-every", "5"], "checkpoint_every", 5),
    ]:
        assert getattr(config_from_args(parser.parse_args(argv)), name) == value, argv
    for argv in (["--max-iter", "x"], ["--engine", "gpu"], ["--init-max-iter", "2.5"], ["--tol", "small"]):
        with pytest.raises(SystemExit):
            parser.parse_args(argv)


def test_job_config_validates_in_one_place_and_the_cli_names_the_flags():
    """The library's errors name the field; the CLI's the flag it was given as (derived from the parser)."""
    flag_of = flags(build_parser())
    for changes, field, flag in [
        ({"split": "validation"}, "split", "--split"),
        ({"engine": "gpu"}, "engine", "--engine"),
        ({"k": 0}, "k", "--k"),
        ({"k": "ten"}, "k", "--k"),
        ({"examples_per_cluster": 8, "sample_size": "lots"}, "sample_size", "--sample-size"),
        ({"n_init": 0}, "n_init", "--n-init"),
        ({"polish_passes": -1}, "polish_passes", "--polish-passes"),
    ]:
        with pytest.raises(ConfigError, match=f"^{field} ") as caught:
            JobConfig(**changes)
        assert caught.value.option == field
        assert str(caught.value.for_flags(flag_of)).startswith(flag + " ")
    # the settings the estimator takes are checked by its own declared constraints, defaults included
    from job.config import _estimator_problem

    for f in dataclasses.fields(JobConfig):
        if f.metadata.get("estimator"):
            assert _estimator_problem(f.metadata["estimator"], f.default) is None, f.name
    assert JobConfig(sample_size="all").sample_size is None and JobConfig(n_init="3").n_init == 3
    assert JobConfig(polish_passes="2").polish_passes == 2
    assert JobConfig().to_dict()["cluster"]["kind"] == "local"


def test_the_result_determining_settings_are_declared_on_the_fields():
    assert JobConfig.result_fields() == (
        "split",
        "k",
        "seed",
        "n_init",
        "sample_size",
        "polish_passes",
        "engine",
        "max_iter",
        "tol",
        "init_max_iter",
        "oversampling_factor",
    )


def test_each_kind_checks_its_own_keys_and_fields(tmp_path):
    path = tmp_path / "c.yaml"
    cases = {
        "kind: ssh\n": "needs hosts",
        "kind: ssh\nhosts: [only-one]\n": "needs hosts",
        "kind: slurm\njobs: 2\n": "needs cores and memory",
        "kind: slurm\ncores: 4\nmemory: 8GiB\nhosts: [a, b]\n": r"unknown key\(s\) hosts for kind slurm",
        "kind: scheduler\naddress: tcp://h:8786\nn_workers: "
        "3\n": r"unknown key\(s\) n_workers for kind scheduler",
        "kind: kubernetes\n": "kind must be one of local, scheduler, slurm, ssh",
        "kind: local\nsecurity: yes\n": "security must be a mapping",
        "kind: scheduler\naddress: tcp://h:8786\nmin_workers: 0\n": "min_workers must be a whole number",
    }
    for text, message in cases.items():
        path.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_cluster_config(path)


def test_flags_that_do_not_apply_to_the_kind_are_errors():
    args = build_parser().parse_args(
        ["--cluster-config", str(CONFIGS / "scheduler.yaml"), "--n-workers", "3"]
    )
    with pytest.raises(ConfigError, match="--n-workers does not apply to a 'scheduler' cluster"):
        config_from_args(args)
    # --scheduler with a LocalCluster flag names the two flags, not the default file the user never gave
    args = build_parser().parse_args(["--scheduler", "tcp://127.0.0.1:8786", "--n-workers", "4"])
    with pytest.raises(ConfigError, match="with --scheduler the job joins a running cluster") as caught:
        config_from_args(args)
    assert "local.yaml" not in str(caught.value)
    # --scheduler-file switches any file to an existing cluster, keeping nothing kind-specific.
    args = build_parser().parse_args(
        ["--cluster-config", str(CONFIGS / "ssh.yaml"), "--scheduler-file", "/s.json"]
    )
    cluster = config_from_args(args).cluster
    assert cluster.kind == "scheduler" and cluster.scheduler_file == "/s.json"


def test_slurm_config_becomes_the_batch_script_it_describes(tmp_path):
    """No SLURM controller runs here: what can be checked is the script sbatch would receive."""
    from job.deploy.slurm import slurm_cluster

    path = tmp_path / "slurm.yaml"
    path.write_text(
        (CONFIGS / "slurm.yaml")
        .read_text()
        .replace("# queue: normal", "queue: gpu-short")
        .replace("job_extra_directives: []", 'job_extra_directives: ["--constraint=skylake"]')
    )
    config = load_cluster_config(path)
    cluster = slurm_cluster(config)
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in (
        "#SBATCH -p gpu-short",
        "#SBATCH --cpus-per-task=8",
        "#SBATCH --mem=32G",
        "#SBATCH -t 01:00:00",
        "#SBATCH --constraint=skylake",
        "--nworkers 4",
        "--nthreads 2",
    ):
        assert line in script, (line, script)


def test_shipped_configs_are_found_by_name_and_the_default_ignores_the_working_folder(tmp_path, monkeypatch):
    from job.deploy.files import resolve_config_path, shipped_configs

    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.yaml").write_text("kind: nonsense\n")  # a file of the user's that happens to be here
    assert shipped_configs() == ["local.yaml", "scheduler.yaml", "slurm.yaml", "ssh.yaml"]
    assert load_cluster_config(None).kind == "local"  # the default is the shipped file, not ./local.yaml
    assert resolve_config_path("ssh.yaml").read_text() == (CONFIGS / "ssh.yaml").read_text()
    assert resolve_config_path("local.yaml") == Path("local.yaml")  # a name that is a file here: that file
    with pytest.raises(ConfigError, match=r"cluster config not found .*local.yaml, scheduler.yaml"):
        load_cluster_config("nosuch.yaml")


def test_a_backwards_k_range_says_so():
    for text, right in (("5..3", "3..5"), ("50..10+10", "10..50+10"), ("256..16x2", "16..256x2")):
        with pytest.raises(ConfigError, match=f"runs backwards: write it {re.escape(right)}"):
            parse_k(text)
