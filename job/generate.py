"""python -m job.generate: make the large MNIST-derived store (data_prep.generate) on a Dask cluster.

The generation itself is data_prep's (data_prep.generate.generate_dataset, on any distributed Client);
this command only brings the cluster: any kind job.deploy knows (--cluster-config, --scheduler, or a
LocalCluster sized from the machine), as `python -m job` does. MNIST is converted first if missing.
May use: data_prep, job.deploy, job.errors.
"""

from __future__ import annotations

from pathlib import Path

from data_prep.cli import (
    SuggestingParser,
    add_source_arguments,
    prep_config_from_args,
    run_cli,
    setup_logging,
)
from data_prep.convert import prepare_dataset
from data_prep.digits import DEFAULT_CHUNK_SIZE
from data_prep.generate import GenerateConfig, generate_dataset
from job.deploy.files import add_cluster_arguments, cluster_from_args
from job.deploy.lifecycle import connect


def main(argv: list[str] | None = None) -> int:
    """python -m job.generate --n 8100000 [--seed 0] [--out data/mnist-8100000.zarr] [cluster flags]"""
    p = SuggestingParser("python -m job.generate", __doc__.splitlines()[0])
    p.add_argument("--n", type=int, required=True, help="images to generate, e.g. 8100000")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="default data/mnist-<n>.zarr")
    p.add_argument(
        "--mnist",
        type=Path,
        default=Path("data/mnist.zarr"),
        help="the MNIST store to deform (made from --source first if missing)",
    )
    add_source_arguments(p)
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="images per chunk")
    p.add_argument("--overwrite", action="store_true")
    add_cluster_arguments(p)
    args = p.parse_args(argv)
    from job.deploy.faults import quiet_cluster_logs  # imports distributed, which configures its loggers

    setup_logging(args.debug)
    quiet_cluster_logs(args.debug)

    def body():
        if not args.mnist.exists():
            prepare_dataset(prep_config_from_args(args, args.mnist, name="mnist", overwrite=False))
        out = args.out or Path("data") / f"mnist-{args.n}.zarr"
        config = GenerateConfig(
            out=out,
            source=args.mnist,
            n=args.n,
            seed=args.seed,
            chunk_size=args.chunk_size,
            overwrite=args.overwrite,
        )
        with connect(cluster_from_args(args)) as client:
            print(generate_dataset(config, client))

    return run_cli(body, args.debug)


if __name__ == "__main__":
    raise SystemExit(main())
