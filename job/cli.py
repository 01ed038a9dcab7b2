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
from pathlib import Path

# Only light modules here: the arguments are parsed (and --help answered, an unknown flag refused) before
# the pipeline's imports (numpy, dask, distributed, scikit-learn, numba, matplotlib: 5-8 s) in main().
from data_prep.cli import (
    DefaultsFormatter,
    SuggestingParser,
    add_source_arguments,
    default_source,
    prep_config_from_args,
    program_name,
    run_cli,
    setup_logging,
)
from data_prep.digits import DEFAULT_CHUNK_SIZE
from data_prep.locations import is_url
from job.config import ENGINES, PERSIST_POLICIES, SPLITS, JobConfig, parse_k
from job.deploy.files import add_cluster_arguments, cluster_from_args
from job.errors import DataError, JobError

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    defaults = JobConfig()
    p = SuggestingParser(
        prog=program_name("python -m job"),
        description="Cluster MNIST-style images with K-Means on a Dask cluster, evaluate and plot the "
        "result.",
        formatter_class=DefaultsFormatter,
    )
    data = p.add_argument_group("data")
    data.add_argument(
        "--data",
        default=str(defaults.data),
        help="Zarr store to cluster: a path or an fsspec URL such as s3://bucket/mnist.zarr that "
        "every worker can read. A missing store is made from --source only at the default path or when "
        "--source is given; another missing path is an error (default: %(default)s)",
    )
    add_source_arguments(data, source_default=None)  # None: not given (a missing --data is then an error)
    data.add_argument(
        "--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="images per chunk when converting"
    )
    data.add_argument(
        "--split",
        choices=SPLITS,
        default=defaults.split,
        help="which images to cluster (train also reports held-out accuracy on test)",
    )

    model = p.add_argument_group("model")
    model.add_argument(
        "--k",
        default=str(defaults.k),
        help="number of clusters; a range (5..15, 10..50+10 with a step, 16..256x2 with a factor) or a "
        "list (5,8,10) runs a k sweep: every k on "
        "data loaded once, scored, plotted, and a k suggested",
    )
    model.add_argument(
        "--seed",
        type=int,
        default=defaults.seed,
        help="seeds every random draw (sample, starts, k-means||): the same seed gives the same "
        "clustering for any chunking and number of workers",
    )
    model.add_argument(
        "--n-init",
        default=str(defaults.n_init),
        metavar="N|auto",
        help="starts seeded seed, seed+1, ...; the lowest inertia is kept, all are reported. auto "
        "(default): 4 starts on a subsample when the fit is sampled (1 with many clusters), else 1",
    )
    model.add_argument(
        "--sample-size",
        default=str(defaults.sample_size),
        metavar="ROWS|auto|all",
        help="fused: fit a seeded sample of this many rows first (the best of --n-init starts on a "
        "subsample of it, then Lloyd on the sample, in memory), then run Lloyd over all rows from "
        "its centers until a pass gains less than tol. auto (default): 200,000 rows or 1,000 "
        "per cluster, all rows when there are fewer; all: every pass on all rows (plain Lloyd)",
    )
    model.add_argument(
        "--polish-passes",
        default=str(defaults.polish_passes),
        metavar="N|auto",
        help="fused, sampled: most Lloyd passes over all rows after the sample's fit, before the "
        "pass that assigns every row. auto (default): until a pass gains less than tol, below 32 "
        "clusters or while a pass is at most 2**28 row-centers (rows x k); else none",
    )
    model.add_argument(
        "--engine",
        choices=ENGINES,
        default=defaults.engine,
        help="fused: our single-pass Lloyd loop (default, faster); dask-ml: the stock estimator",
    )
    model.add_argument(
        "--max-iter",
        type=int,
        default=defaults.max_iter,
        help="most Lloyd iterations (on the sample, and over all rows)",
    )
    model.add_argument(
        "--tol",
        type=float,
        default=defaults.tol,
        help="fused: relative to the mean feature variance (as scikit-learn); dask-ml: absolute",
    )
    model.add_argument(
        "--oversampling-factor",
        type=float,
        default=defaults.oversampling_factor,
        help="k-means||: about factor*k points drawn per round (fused; as in the paper, "
        "default 2); dask-ml reads it its own way (~2 points per round)",
    )
    model.add_argument(
        "--init-max-iter",
        type=int,
        default=defaults.init_max_iter,
        help="k-means|| rounds (fused: default 5; dask-ml: round(ln(cost)) by default)",
    )
    model.add_argument(
        "--persist",
        choices=PERSIST_POLICIES,
        default=defaults.persist,
        help="keep X in the workers' memory (auto: when it fits the cluster's memory)",
    )

    ev = p.add_argument_group("evaluation and output")
    ev.add_argument(
        "--silhouette-sample",
        type=int,
        default=defaults.silhouette_sample,
        help="rows in the silhouette's random sample (0: skip)",
    )
    ev.add_argument(
        "--examples",
        type=int,
        default=defaults.examples_per_cluster,
        dest="examples_per_cluster",
        help="example images per cluster in the figures",
    )
    ev.add_argument("--out", type=Path, help="run folder (default: runs/<timestamp>)")
    ev.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    ev.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue a killed or interrupted run from its last checkpoint (same settings)",
    )
    ev.add_argument(
        "--checkpoint-every",
        type=int,
        default=defaults.checkpoint_every,
        help="Lloyd iterations between checkpoints",
    )

    add_cluster_arguments(p.add_argument_group("cluster"))
    p.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    return p


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
