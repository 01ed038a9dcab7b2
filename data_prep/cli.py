"""Command line: python -m data_prep --source DIR|download --out data/mnist.zarr

May use: every data_prep module; job's commands use its runtime (run_cli, setup_logging).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .digits import DEFAULT_CHUNK_SIZE
from .errors import UserError
from .redact import RedactingFilter, redact_text
from .registry import MNIST_MIRRORS

if TYPE_CHECKING:
    from .convert import PrepConfig


def setup_logging(debug: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s" if debug else "%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        force=True,
    )
    for handler in logging.getLogger().handlers:  # secrets in URLs never reach the log
        handler.addFilter(RedactingFilter())
    if not debug:  # the libraries' own INFO chatter drowns ours (job.deploy.faults quiets the cluster's)
        for noisy in ("numba", "matplotlib"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def run_cli(body: Callable[[], int | None], debug: bool) -> int:
    """Run a CLI body: our errors (UserError) become one line on stderr and exit 1, Ctrl-C exit 130."""
    try:
        return body() or 0
    except UserError as exc:
        if debug:
            raise
        print(f"error: {redact_text(str(exc))}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


class DefaultsFormatter(argparse.HelpFormatter):
    """Help that ends with each option's default, unless its help already says it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if "default" in text or unset or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


class SuggestingParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are two lines, not the whole usage: the error, with the nearest
    known flag for a mistyped one (--kk -> --k), and where the full help is. Its usage line names the
    command as the user called it (program_name), its help ends with the defaults (DefaultsFormatter), and
    it has --debug, which run_cli reads."""

    def __init__(self, command: str, description: str, **kwargs):
        super().__init__(
            prog=program_name(command), description=description, formatter_class=DefaultsFormatter, **kwargs
        )
        self.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")

    def error(self, message):
        import difflib
        import re

        hint = ""
        if message.startswith("unrecognized arguments"):
            known = [flag for action in self._actions for flag in action.option_strings]
            words = re.findall(r"--?[\w-]+(?:=\S*)?", message.split(":", 1)[1])
            typed = [word.split("=")[0] for word in words]
            guesses = [(word, difflib.get_close_matches(word, known, n=1, cutoff=0.6)) for word in typed]
            hint = "".join(f"; did you mean {close[0]} for {word}?" for word, close in guesses if close)
        self.exit(2, f"{self.prog}: error: {message}{hint}\n(see {self.prog} --help)\n")


def program_name(fallback: str) -> str:
    """How the user called the command, for its usage line: the console script's name (mnist-kmeans),
    or `fallback` under `python -m` (sys.argv[0] is then the package's __main__.py)."""
    name = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else ""
    return fallback if not name or name.endswith(".py") or name.startswith("-") else name


def default_source() -> str:
    """Where MNIST comes from when --source is not given: $MNIST_SOURCE, else download."""
    return os.environ.get("MNIST_SOURCE", "download")


def add_source_arguments(parser: argparse._ActionsContainer, source_default: str | None = "") -> None:
    """--source and its companions. source_default: "" for default_source(); None leaves --source None
    when not given (the caller tells "asked for" from "defaulted")."""
    parser.add_argument(
        "--source",
        default=default_source() if source_default == "" else source_default,
        help="folder with the four IDX files (gzipped or not), or 'download' "
        "(default: $MNIST_SOURCE, else download)",
    )
    parser.add_argument("--name", default="mnist", help="dataset name; only 'mnist' has known checksums")
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="download cache (default: $MNIST_CACHE or the user cache folder)",
    )
    parser.add_argument(
        "--mirror",
        action="append",
        dest="mirrors",
        metavar="URL",
        help="base URL to download from, tried in the order given (repeatable)",
    )


def prep_config_from_args(
    args: argparse.Namespace,
    out: Path,
    *,
    source=None,
    name: str | None = None,
    overwrite: bool | None = None,
) -> PrepConfig:
    """The conversion's config from the arguments add_source_arguments declared; a caller converting on
    the way to something else (job, job.generate) gives what its own flags do not say."""
    from .convert import PrepConfig  # zarr and numpy: imported once the arguments are parsed

    return PrepConfig(
        out=out,
        source=args.source if source is None else source,
        name=args.name if name is None else name,
        chunk_size=args.chunk_size,
        cache_dir=args.cache_dir,
        mirrors=tuple(args.mirrors or MNIST_MIRRORS),
        overwrite=args.overwrite if overwrite is None else overwrite,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = SuggestingParser(
        "python -m data_prep",
        "Convert MNIST-style IDX files into a Zarr v3 store.",
        epilog="python -m data_prep verify STORE checks every chunk of an existing store.",
    )
    add_source_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("data/mnist.zarr"), help="store to write")
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, help="images per chunk")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing store")
    return parser


def verify_main(argv: list[str]) -> int:
    """python -m data_prep verify STORE: decode every chunk; exit 1 and one line per damaged chunk."""
    from .zarr_store import verify_store

    parser = argparse.ArgumentParser(
        prog="python -m data_prep verify",
        description="Check every chunk of a dataset store (layout, CRC32C, decoding).",
    )
    parser.add_argument("store", help="the store to check (a path or an fsspec URL)")
    parser.add_argument("--debug", action="store_true", help="debug logging and full tracebacks")
    args = parser.parse_args(argv)
    setup_logging(args.debug)
    log = logging.getLogger(__name__)

    def progress(done: int, total: int) -> None:
        if done % 100 == 0 or done == total:
            log.info("verified %d/%d chunks", done, total)

    def body():
        result = verify_store(args.store, progress)
        for line in result.problems:
            print(f"error: {line}", file=sys.stderr)
        if result.problems:
            print(
                f"{args.store}: {len(result.problems)} problem(s) found; re-create the store "
                "(python -m data_prep --overwrite ...)",
                file=sys.stderr,
            )
            return 1
        print(f"{args.store}: every chunk is present and decodes; checksums match; labels lie in 0-9")
        for line in result.proven:
            print(f"  {line}")
        if not result.proven:
            print(
                "  (this store records no chunk digests or source checksums, so its rows cannot be proven to "
                "be the ones written: re-create it to record them)"
            )
        return 0

    return run_cli(body, args.debug)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:
        return verify_main(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.debug)

    def body():
        from .convert import prepare_dataset

        out = prepare_dataset(prep_config_from_args(args, args.out))
        print(out)

    return run_cli(body, args.debug)
