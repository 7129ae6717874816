"""``dsn data``: check a folder or dataset of videos, benchmark the data pipeline, and (from
:mod:`distilled_shufflenet.cli.data_synth`) generate SynthActions and re-encode datasets."""

from __future__ import annotations

import argparse
import sys

from distilled_shufflenet.data.bench import DataBenchConfig, format_results, run_data_bench
from distilled_shufflenet.data.check import CheckConfig, check_dataset
from distilled_shufflenet.options import add_config_arguments, config_from_args

__all__ = ["register"]


def _run_check(args: argparse.Namespace) -> int:
    report = check_dataset(config_from_args(CheckConfig, args))
    print(report.to_json() if args.json else report.format())
    return 0 if report.ok else 1


def _run_bench(args: argparse.Namespace) -> int:
    cfg = config_from_args(DataBenchConfig, args)
    if cfg.root is None and cfg.list_file is None:
        print(f"writing {cfg.videos} UCF101-like videos (320x240 MPEG-4 AVI, {cfg.frames} frames) ...",
              file=sys.stderr)
    print(format_results(run_data_bench(cfg), cfg))
    return 0


def _add_check_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check",
        help="list unreadable, empty or too-short videos of a folder or dataset",
        description="Open every video (of a folder, an official split or a list) and list each one that is "
                    "missing, empty, unreadable, too short, or (with --full) corrupt, with the reason. "
                    "Exit code 1 if any bad video is found. Defaults < --config FILE.yaml < flags.",
    )
    p.add_argument("root", metavar="ROOT", nargs="?", default=argparse.SUPPRESS, help="folder of videos / dataset root")
    add_config_arguments(p, CheckConfig)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_run_check)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="training clips per second of the data pipeline with 0, 1 and 2 workers",
        description="Time the training data pipeline (decode a random 16-frame window, crop 224, flip, "
                    "normalise, batch 8) with several DataLoader worker counts. Without ROOT, a few UCF101-like "
                    "videos are generated in a temporary folder. Defaults < --config FILE.yaml < flags.",
    )
    p.add_argument("root", metavar="ROOT", nargs="?", default=argparse.SUPPRESS,
                   help="folder of videos / dataset root (default: generate videos)")
    add_config_arguments(p, DataBenchConfig)
    p.set_defaults(func=_run_bench)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``dsn data`` and its subcommands."""
    p = subparsers.add_parser("data", help="check, benchmark, synthesise and prepare video data",
                              description="Tools for video data.")
    sub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _add_check_parser(sub)
    _add_bench_parser(sub)
    from distilled_shufflenet.cli.data_synth import add_prepare_parser, add_synth_parser

    add_synth_parser(sub)
    add_prepare_parser(sub)
