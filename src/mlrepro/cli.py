"""The `mlrepro` command: one subcommand per workload.

    mlrepro verify-gpu [--require-gpu]
    mlrepro train-resnet-tf --epochs 1 --train-limit 1000
    mlrepro train-distilgpt2 --output-dir outputs/distilgpt2
    mlrepro infer-resnet-torch --image cat.jpg

Every workload prints a metrics summary, writes it as JSON with --output, and
keeps a run record under runs/ unless --no-record is given.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from types import ModuleType

from mlrepro import __version__, runs
from mlrepro.errors import CheckFailed, UsageError
from mlrepro.runs import DEFAULT_RUNS_DIR, RunRecord
from mlrepro.seeding import DEFAULT_SEED

logger = logging.getLogger("mlrepro")

# Subcommand -> module with add_arguments(parser) and run(args, record) -> summary dict.
WORKLOADS = {
    "verify-gpu": "mlrepro.workloads.verify_gpu",
    "train-resnet-tf": "mlrepro.workloads.train_resnet_tf",
    "train-distilgpt2": "mlrepro.workloads.train_distilgpt2",
    "infer-resnet-torch": "mlrepro.workloads.infer_resnet_torch",
}


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]

# Python's, NumPy's and TensorFlow's seeds must fit in 32 bits.
MAX_SEED = 2**32 - 1


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (docker stop, timeout, CI cancel)."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("run options")
    group.add_argument("--output", type=Path, metavar="PATH", help="also write the metrics summary to this JSON file")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help="seed for Python, NumPy, TensorFlow and torch (default: %(default)s)")
    group.add_argument("--deterministic", action="store_true", help="turn on TensorFlow op determinism and torch deterministic algorithms (slower)")
    group.add_argument(
        "--runs-dir", type=Path, default=Path(os.environ.get("MLREPRO_RUNS_DIR", DEFAULT_RUNS_DIR)),
        help="folder for run records (default: $MLREPRO_RUNS_DIR or %(default)s)",
    )  # fmt: skip
    group.add_argument("--no-record", action="store_true", help="keep no run record")
    # Also accepted after the subcommand; SUPPRESS keeps the value given before it.
    group.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS, help="logging level (default: INFO)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlrepro",
        description="Run TensorFlow and PyTorch demo workloads reproducibly, on Apple Silicon GPUs or on the CPU.",
    )
    parser.add_argument("--version", action="version", version=f"mlrepro {__version__}")
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS, help="logging level (default: %(default)s)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    for command, module_name in WORKLOADS.items():
        module = importlib.import_module(module_name)
        summary_line = (module.__doc__ or "").strip().splitlines()[0]
        subparser = subparsers.add_parser(
            command, help=summary_line, description=module.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )  # fmt: skip
        module.add_arguments(subparser)
        add_common_arguments(subparser)
        subparser.set_defaults(handler=lambda args, module=module: run_workload(module, args))

    add_runs_commands(subparsers)
    add_env_command(subparsers)
    return parser


def add_runs_commands(subparsers) -> None:
    runs_parser = subparsers.add_parser("runs", help="list run records or compare two of them")
    runs_parser.add_argument(
        "--runs-dir", type=Path, default=Path(os.environ.get("MLREPRO_RUNS_DIR", DEFAULT_RUNS_DIR)),
        help="folder of run records (default: $MLREPRO_RUNS_DIR or %(default)s)",
    )  # fmt: skip
    actions = runs_parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="one line per run: name, workload, status, final metrics")
    compare = actions.add_parser("compare", help="show the config, environment and metric differences of two runs")
    compare.add_argument("first", help="run folder, its name, or a unique prefix of its name")
    compare.add_argument("second", help="run folder, its name, or a unique prefix of its name")
    for action in (listing, compare):
        # Also accepted after the action; SUPPRESS keeps the value given before it.
        action.add_argument("--runs-dir", type=Path, default=argparse.SUPPRESS, help="folder of run records")
    runs_parser.set_defaults(handler=show_runs)


def show_runs(args: argparse.Namespace) -> int:
    if args.action == "list":
        rows = runs.list_runs(args.runs_dir)
        if not rows:
            print(f"No run records in {args.runs_dir}")
        for row in rows:
            metrics = ", ".join(f"{key}={value:.4g}" for key, value in list(row["metrics"].items())[:4])
            print(f"{row['run']:<45} {row['workload']:<20} {row['status']:<12} {metrics}")
        return 0

    first = runs.find_run(args.runs_dir, args.first)
    second = runs.find_run(args.runs_dir, args.second)
    print(f"A: {first}\nB: {second}")
    for section, differences in runs.compare_runs(first, second).items():
        print(f"\n{section}: {len(differences) or 'no'} difference(s)")
        for key, (a, b) in differences.items():
            print(f"  {key}: A={a!r} B={b!r}")
    return 0


def add_env_command(subparsers) -> None:
    env_parser = subparsers.add_parser(
        "env", help="print the environment report: OS, CPU, Python, locked versus installed packages, devices",
        description="Print what this environment runs on: OS, CPU, Python, every locked package's installed "
        "version with the drift from the lock, and TensorFlow's and torch's devices. Keeps no run record.",
    )  # fmt: skip
    env_parser.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    env_parser.set_defaults(handler=show_env)


def show_env(args: argparse.Namespace) -> int:
    from mlrepro import report

    facts = report.collect(include_frameworks=True)
    print(report.render_json(facts) if args.json else report.render_text(facts))
    return 0


def configure_logging(level: str) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    # TensorFlow's C++ INFO lines (oneDNN notices and the like) drown the progress output.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")


def start_record(args: argparse.Namespace) -> RunRecord:
    config = {key: value for key, value in vars(args).items() if key != "handler"}
    if args.no_record:
        return RunRecord.disabled(args.command)
    return RunRecord.create(args.runs_dir, args.command, config)


def print_summary(command: str, summary: dict) -> None:
    print(f"\n{command} summary")
    for key, value in summary.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, default=str)
        print(f"  {key}: {value}")


def write_output(path: Path | None, summary: dict) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2, default=str) + "\n", encoding="utf-8")
    logger.info("Wrote %s", path)


def check_run_options(args: argparse.Namespace) -> None:
    """Reject a bad --seed, --output or --runs-dir before any work starts."""
    if not 0 <= args.seed <= MAX_SEED:
        raise UsageError(f"--seed {args.seed} is out of range; pass a whole number from 0 to {MAX_SEED}")
    if args.output is not None:
        if args.output.is_dir():
            raise UsageError(f"--output {args.output} is a folder; pass a file path such as {args.output / 'summary.json'}")
        require_writable_folder(args.output.parent, "--output")
    if not args.no_record:
        require_writable_folder(args.runs_dir, "--runs-dir")


def require_writable_folder(path: Path, flag: str) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise UsageError(f"{flag}: cannot create the folder {path} ({error.strerror}); pass a writable location") from error
    if not os.access(path, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}: the folder {path} is not writable; pass a writable location")


def raise_terminated(signum, frame) -> None:
    raise Terminated


def run_workload(module: ModuleType, args: argparse.Namespace) -> int:
    """Run one workload inside its run record; return the exit code."""
    check_run_options(args)
    record = start_record(args)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, raise_terminated) if in_main_thread else None
    try:
        summary = module.run(args, record)
    except (KeyboardInterrupt, Terminated) as interrupt:
        record.close("interrupted")
        name = "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"
        logger.error("Interrupted by %s; the run record is marked interrupted", name)
        return 143 if isinstance(interrupt, Terminated) else 130
    except CheckFailed as failure:
        record.close("failed", failure.summary)
        print_summary(args.command, failure.summary)
        write_output(args.output, failure.summary)
        logger.error("%s", failure)
        return 1
    except BaseException as error:
        record.close("failed", {"error": f"{type(error).__name__}: {error}"})
        raise

    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)

    record.close("finished", summary)
    print_summary(args.command, summary)
    write_output(args.output, summary)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"mlrepro {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
