"""Command line: python -m job [--data STORE] [--source DIR|download] [--k 10] ... (see --help).

May use: job.pipeline, job.config, job.deploy.files, job.errors, data_prep (conversion, the CLI runtime).
"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Only light modules here: the arguments are parsed (and --help answered, an unknown flag refused) before
# the pipeline's imports (numpy, dask, distributed, scikit-learn, numba, matplotlib: 5-8 s) in main().
from data_prep.cli import (
    SuggestingParser,
    add_source_arguments,
    default_source,
    prep_config_from_args,
    run_cli,
    setup_logging,
)
from data_prep.digits import DEFAULT_CHUNK_SIZE
from data_prep.locations import is_url
from job.config import JobConfig, parse_k
from job.deploy.files import add_cluster_arguments, cluster_from_args
from job.errors import DataError, JobError

log = logging.getLogger(__name__)

# A setting's option type by its default's: None is a count that is unset by default; text (auto, a
# number) goes to JobConfig as it is.
_OPTION_TYPES: dict[type, Callable[[str], Any]] = {int: int, float: float, type(None): int}


def build_parser() -> argparse.ArgumentParser:
    defaults = JobConfig()
    p = SuggestingParser(
        "python -m job",
        "Cluster MNIST-style images with K-Means on a Dask cluster, evaluate and plot the result.",
    )
    data = p.add_argument_group("data")
    add_settings(data, "data")
    add_source_arguments(data, source_default=None)  # None: not given (a missing --data is then an error)
    data.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="images per chunk when converting"
    )
    add_settings(data, "split")

    model = p.add_argument_group("model")
    model.add_argument(
        "--k",
        default=str(defaults.k),
        help="number of clusters; a range (5..15, 10..50+10 with a step, 16..256x2 with a factor) or a "
        "list (5,8,10) runs a k sweep: every k on "
        "data loaded once, scored, plotted, and a k suggested",
    )
    add_settings(model, "seed", "n_init", "sample_size", "polish_passes", "engine", "max_iter", "tol")
    add_settings(model, "oversampling_factor", "init_max_iter", "persist")

    ev = p.add_argument_group("evaluation and output")
    add_settings(ev, "silhouette_sample", "examples_per_cluster")
    ev.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    ev.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue a killed or interrupted run from its last checkpoint (same settings)",
    )
    add_settings(ev, "checkpoint_every")

    add_cluster_arguments(p.add_argument_group("cluster"))
    return p


def add_settings(group: argparse._ActionsContainer, *names: str) -> None:
    """The options of JobConfig's settings `names`, from what each field declares (job.config): its
    help, metavar, choices and default; a count (int) when its default is an int or None, a float for a
    float, else text (numbers or auto, for JobConfig to convert)."""
    settings = {f.name: f for f in dataclasses.fields(JobConfig)}
    for name in names:
        meta, default = settings[name].metadata, settings[name].default
        group.add_argument(
            meta.get("flag") or "--" + name.replace("_", "-"),
            dest=name,
            type=_OPTION_TYPES.get(type(default), str),
            default=default,
            choices=meta.get("choices"),
            metavar=meta.get("metavar"),
            help=meta["help"],
        )


def check_store_may_be_created(data: Path, source_given: bool) -> None:
    """A missing --data store is made (from --source) only when asked for: it is the default path, or
    --source was given. Otherwise a typo (data/mnsit.zarr) would silently become a new copy of MNIST:
    raise a DataError naming the nearest existing store instead."""
    if source_given or data == Path(JobConfig().data):
        return
    near = nearest_store(data)
    hint = f"did you mean {near}? " if near else ""
    raise DataError(
        f"data={data} does not exist: {hint}to create it from MNIST, give --source DIR or --source download",
        option="data",
    )


def nearest_store(data: Path) -> Path | None:
    """The existing *.zarr store whose path is closest to `data` (beside it, or under ./data), or None."""
    import difflib

    folders = {folder for folder in (data.parent, Path("data")) if folder.is_dir()}
    stores = sorted({p for folder in folders for p in folder.iterdir() if p.suffix == ".zarr"})
    names = {str(p): p for p in stores}
    match = difflib.get_close_matches(str(data), list(names), n=1, cutoff=0.6)
    return names[match[0]] if match else None


def config_from_args(args: argparse.Namespace) -> JobConfig:
    cluster = cluster_from_args(args)
    names = {f.name for f in dataclasses.fields(JobConfig)} - {"cluster", "resume", "k"}
    values = {name: getattr(args, name) for name in names if hasattr(args, name)}
    values["k"] = parse_k(args.k)[0]
    if args.resume is not None:
        values.update(out=args.resume, resume=True)
    return JobConfig(cluster=cluster, **values)


def flags(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each setting's command-line flag, by the JobConfig field (or argparse dest) it sets."""
    return {action.dest: action.option_strings[0] for action in parser._actions if action.option_strings}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and a mistyped flag end here, before the heavy imports
    # Imported before our logging is set up: importing distributed configures its own "distributed"
    # logger (a handler of its own), which would otherwise override setup_logging's and print its
    # tracebacks (a lost scheduler's) on stderr.
    from data_prep.convert import prepare_dataset
    from job.deploy.faults import quiet_cluster_logs
    from job.pipeline import run_job, run_sweep

    setup_logging(args.debug)
    quiet_cluster_logs(args.debug)

    def body():
        try:
            config = config_from_args(args)
            if not is_url(config.data) and not os.path.lexists(
                config.data
            ):  # a broken symlink is named, never converted into
                check_store_may_be_created(Path(config.data), args.source is not None)
                source = default_source() if args.source is None else args.source
                log.info("%s does not exist yet: creating it from %s", config.data, source)
                prepare_dataset(
                    prep_config_from_args(args, Path(config.data), source=source, overwrite=False)
                )
            ks = parse_k(args.k)
            result = run_sweep(config, ks) if len(ks) > 1 else run_job(config)
        except JobError as exc:  # the library names its settings; the user typed flags
            raise exc.for_flags(flags(parser)) from exc
        print(result.summary)

    return run_cli(body, args.debug)


def console_main() -> None:
    """`python -m job` and the mnist-kmeans script: main(), then exit without the interpreter's teardown.

    Once everything is written, the atexit handlers run (logging, multiprocessing, distributed), the
    streams are flushed, and the process ends. CPython's finalisation of the ~2,500 modules the job
    imports (numpy, scipy, scikit-learn, dask, distributed, numba, matplotlib) then costs another 1.1 s
    here (measured on MNIST: 17.6 s -> 16.5 s wall for the whole job), time in which nothing is done.
    Library callers use main() or job.run_job and keep their interpreter.
    """
    code = main()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
