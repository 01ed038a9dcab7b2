"""Cluster configuration files: every file in cluster_config/ loads; mistakes are clear errors."""

from pathlib import Path

import pytest

from job.cli import build_parser, config_from_args
from job.cluster_config import KINDS, load_cluster_config
from job.config import JobConfig
from job.errors import ConfigError

CONFIGS = Path(__file__).resolve().parent.parent / "cluster_config"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_load(path):
    assert isinstance(load_cluster_config(path), tuple(KINDS.values()))


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


def test_job_config_validates_in_one_place():
    with pytest.raises(ConfigError, match="--split"):
        JobConfig(split="validation")
    with pytest.raises(ConfigError, match="--engine"):
        JobConfig(engine="gpu")
    assert JobConfig().to_dict()["cluster"]["kind"] == "local"
