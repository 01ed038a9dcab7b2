"""The job's settings: one frozen dataclass, every field's rule declared beside it, checked in one place.

A field's metadata says what values it takes (`check`, with the `problem` a user reads, and `convert`
for the forms it accepts, e.g. "all" for sample_size), whether the clustering's result depends on it
(`result`: what a checkpoint must match to be resumed) and, for a setting the command line sets as it is,
what its --help says (`help`, `metavar`, `choices`; job.cli makes the option from them). Errors name the
field (`k must be at least 1`); the CLI renames it to its flag (`--k must be ...`, job.cli). Unknown keys
are errors, never ignored.
May use: job.deploy (the cluster's config), job.kmeans (the estimator's parameter constraints), job.errors,
data_prep (paths and redaction).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from data_prep.locations import is_url
from data_prep.redact import redact
from job.deploy.base import ClusterSpec
from job.deploy.local import LocalConfig
from job.errors import ConfigError

ENGINES = ("fused", "dask-ml")
SPLITS = ("all", "train", "test")
PERSIST_POLICIES = ("auto", "always", "never")


_RULES = {"check", "problem", "convert", "result", "estimator", "metavar", "choices", "flag"}


def _setting(default, help: str = "", **rule):
    """A JobConfig field: its default, its --help text, and its rule: what its value must meet (`check`,
    with the `problem` a user reads, or the constraint the estimator declares on its parameter
    `estimator`), how a given value is `convert`ed, whether the result depends on it (`result`; so does
    every estimator parameter), and its option's `metavar`, `choices`, and `flag` when not --<name>."""
    if set(rule) - _RULES:
        raise TypeError(f"unknown setting rules: {sorted(set(rule) - _RULES)}")
    result = bool(rule.pop("result", False) or rule.get("estimator"))
    return field(default=default, metadata={"help": help, "result": result, **rule})


def _estimator_problem(parameter: str, value) -> str | None:
    """What FusedKMeans's declared constraint on `parameter` says of `value` ("must be ..."), or None
    when the value meets it: one rule for the job's settings and the estimator's parameters."""
    from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

    from job.kmeans.estimator import FusedKMeans

    constraint = {parameter: FusedKMeans._parameter_constraints[parameter]}
    try:
        validate_parameter_constraints(constraint, {parameter: value}, caller_name="FusedKMeans")
    except InvalidParameterError as exc:  # "The 'tol' parameter of FusedKMeans must be ... Got -1 instead."
        return "must be " + str(exc).split(" must be ", 1)[1].rsplit(". Got ", 1)[0]
    return None


def _count_or_auto(value):
    return value if value == "auto" else int(value)


# a number or auto, as the estimator's parameter
_COUNT_OR_AUTO = {"problem": "must be a number or auto", "convert": _count_or_auto, "metavar": "N|auto"}


def _rows_or_auto(value):
    return None if value in ("all", "none", None) else _count_or_auto(value)


# a number of rows, auto, or all (None): every pass on all rows
_ROWS_OR_AUTO = {
    "problem": "must be a number of rows, auto or all",
    "convert": _rows_or_auto,
    "metavar": "ROWS|auto|all",
}


def _one_of(options: tuple[str, ...]) -> dict[str, Any]:
    return {
        "check": lambda value: value in options,
        "problem": f"must be one of {', '.join(options)}",
        "choices": options,
    }


def _at_least(low: int) -> dict[str, Any]:
    return {"check": lambda value: value >= low, "problem": f"must be at least {low}"}


@dataclass(frozen=True)
class JobConfig:
    """Everything one run of the job depends on (recorded in metrics.json)."""

    data: Path | str = _setting(  # noqa: RUF009
        Path("data/mnist.zarr"),
        "Zarr store to cluster: a path or an fsspec URL such as s3://bucket/mnist.zarr that every worker can "
        "read. A missing store is made from --source only at the default path or when --source is given; "
        "another missing path is an error (default: %(default)s)",
        convert=lambda v: v if is_url(v) else Path(v),
    )
    split: str = _setting(
        "all",
        "which images to cluster (train also reports held-out accuracy on test)",
        **_one_of(SPLITS),
        result=True,
    )
    k: int = _setting(10, estimator="n_clusters")
    seed: int = _setting(
        0,
        "seeds every random draw (sample, starts, k-means||): the same seed gives the same clustering for "
        "any chunking and number of workers",
        result=True,
    )
    n_init: int | str = _setting(
        "auto",
        "starts seeded seed, seed+1, ...; the lowest inertia is kept, all are reported. auto (default): 4 "
        "starts on a subsample when the fit is sampled (1 with many clusters), else 1",
        estimator="n_init",
        **_COUNT_OR_AUTO,
    )
    sample_size: int | str | None = _setting(
        "auto",
        "fused: fit a seeded sample of this many rows first (the best of --n-init starts on a subsample of "
        "it, then Lloyd on the sample, in memory), then run Lloyd over all rows from its centers until a "
        "pass gains less than tol. auto (default): 200,000 rows or 1,000 per cluster, all rows when there "
        "are fewer; all: every pass on all rows (plain Lloyd)",
        estimator="sample_size",
        **_ROWS_OR_AUTO,
    )
    polish_passes: int | str = _setting(
        "auto",
        "fused, sampled: most Lloyd passes over all rows after the sample's fit, before the pass that "
        "assigns every row. auto (default): until a pass gains less than tol below 32 clusters; none from "
        "32 on (the sample's fit with bounds ends within about a thousandth of the polished inertia)",
        estimator="polish_passes",
        **_COUNT_OR_AUTO,
    )
    engine: str = _setting(
        "fused",
        "fused: our single-pass Lloyd loop (default, faster); dask-ml: the stock estimator",
        **_one_of(ENGINES),
        result=True,
    )
    max_iter: int = _setting(
        300, "most Lloyd iterations (on the sample, and over all rows)", estimator="max_iter"
    )
    tol: float = _setting(
        1e-4,
        "fused: relative to the mean feature variance (as scikit-learn); dask-ml: absolute",
        estimator="tol",
    )
    init_max_iter: int | None = _setting(
        None,
        "k-means|| rounds (fused: default 5; dask-ml: round(ln(cost)) by default)",
        estimator="init_max_iter",
    )
    oversampling_factor: float = _setting(
        2.0,
        "k-means||: about factor*k points drawn per round (fused; as in the paper, default 2); dask-ml reads "
        "it its own way (~2 points per round)",
        estimator="oversampling_factor",
    )
    silhouette_sample: int = _setting(
        10_000, "rows in the silhouette's random sample (0: skip)", **_at_least(0)
    )
    examples_per_cluster: int = _setting(8, "example images per cluster in the figures", flag="--examples")
    out: Path | None = None
    overwrite: bool = False
    persist: str = _setting(
        "auto",
        "keep X in the workers' memory (auto: when it fits the cluster's memory)",
        **_one_of(PERSIST_POLICIES),
    )
    # of the cluster's memory X may take when persisted
    memory_fraction: float = _setting(0.5, check=lambda v: 0 < v <= 1, problem="must be in (0, 1]")
    checkpoint_every: int = _setting(1, "Lloyd iterations between checkpoints", **_at_least(1))
    resume: bool = False  # continue the run in `out` from its last checkpoint
    cluster: ClusterSpec = field(default_factory=LocalConfig)

    def __post_init__(self):
        for f in fields(self):
            rule, value = f.metadata, getattr(self, f.name)
            if rule.get("convert") is not None:
                try:
                    value = rule["convert"](value)
                except (TypeError, ValueError) as exc:
                    raise ConfigError(f"{f.name} {rule['problem']}; got {value!r}", option=f.name) from exc
                object.__setattr__(self, f.name, value)
            if rule.get("estimator"):
                # A default meets the estimator's constraint (tested); not asking spares `--help` the
                # 2 s import of dask and scikit-learn that the check needs.
                problem = None if value == f.default else _estimator_problem(rule["estimator"], value)
            else:
                problem = None if rule.get("check") is None or rule["check"](value) else rule["problem"]
            if problem:
                raise ConfigError(f"{f.name} {problem}, got {value!r}", option=f.name)
        # Rules between fields.
        if isinstance(self.sample_size, int) and self.sample_size < self.k:
            raise ConfigError(
                f"sample_size must be at least k ({self.k}), got {self.sample_size}", option="sample_size"
            )
        if isinstance(self.n_init, int) and self.n_init > 1 and (self.resume or self.engine != "fused"):
            raise ConfigError(
                "n_init above 1 works with the fused engine, and not with resume", option="n_init"
            )
        if self.resume and (self.out is None or self.engine != "fused"):
            raise ConfigError(
                "resume needs the run folder (out), and works with the fused engine only", option="resume"
            )

    @classmethod
    def result_fields(cls) -> tuple[str, ...]:
        """The settings a clustering's result depends on; the cluster, output and evaluation options
        do not."""
        return tuple(f.name for f in fields(cls) if f.metadata.get("result"))

    def replace(self, **changes) -> JobConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain JSON values, secrets masked (data_prep.redact): this is what metrics.json,
        the report and the checkpoint record, never what the job runs with."""

        def plain(value):
            if isinstance(value, Path):
                return str(value)
            if value is not self and hasattr(value, "to_dict"):
                return value.to_dict()
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in fields(value)}
            return value

        return redact(plain(self))


def parse_k(text: str) -> tuple[int, ...]:
    """'10' -> (10,); '5..15' -> (5, 6, ..., 15); '10..50+10' -> (10, 20, ..., 50) (a step);
    '16..256x2' -> (16, 32, 64, 128, 256) (a factor); '5,8,10' -> (5, 8, 10); parts combine with commas
    ('10,16..256x2'); sorted, without repeats."""
    try:
        values: set[int] = set()
        for part in str(text).replace(" ", "").split(","):
            if ".." in part:
                values.update(_k_range(part))
            else:
                values.add(int(part))
    except ValueError as exc:
        raise ConfigError(
            f"k must be a number, a range like 5..15, 10..50+10 (a step) or 16..256x2 (a factor), "
            f"or a list like 5,8,10; got {text!r}",
            option="k",
        ) from exc
    if min(values) < 2 and len(values) > 1:
        raise ConfigError(f"a k sweep needs every k >= 2; got {text!r}")
    return tuple(sorted(values))


def _k_range(part: str) -> list[int]:
    lo_text, rest = part.split("..")
    step_text, factor_text, tail = "1", None, ""
    if "x" in rest:
        rest, factor_text = rest.split("x")
        tail = f"x{factor_text}"
    elif "+" in rest:
        rest, step_text = rest.split("+")
        tail = f"+{step_text}"
    lo, hi, step = int(lo_text), int(rest), int(step_text)
    if hi < lo:  # said as it is, not as "k must be a number"
        raise ConfigError(f"k range {part!r} runs backwards: write it {hi}..{lo}{tail}", option="k")
    if step < 1:
        raise ValueError
    if factor_text is None:
        return list(range(lo, hi + 1, step))
    factor = int(factor_text)
    if factor < 2 or lo < 1:
        raise ValueError
    values = [lo]
    while values[-1] * factor <= hi:
        values.append(values[-1] * factor)
    return values
