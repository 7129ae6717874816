"""``dsn data synth`` and ``dsn data prepare``: generate SynthActions, re-encode a dataset smaller."""

from __future__ import annotations

import argparse
import sys

from distilled_shufflenet.data.prepare import PrepareConfig, prepare_videos
from distilled_shufflenet.data.synth import SYNTH_CLASSES, SynthConfig, generate_synth_actions
from distilled_shufflenet.options import add_config_arguments, config_from_args

__all__ = ["add_prepare_parser", "add_synth_parser"]

_WORKERS = "parallel processes (default: min(2, CPUs))"


def add_synth_parser(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``synth`` to the ``dsn data`` subcommands."""
    p = data_subparsers.add_parser(
        "synth",
        help="generate SynthActions, a synthetic action dataset in the UCF101 layout",
        description=(
            "Write SynthActions (animated figures doing actions, as real video files) to OUT in the UCF101 "
            "layout: classInd.txt, trainlist0k.txt / testlist0k.txt, <Class>/v_<Class>_gXX_cYY.avi. "
            "Videos already there are kept, so an interrupted run resumes. "
            f"Classes, in order: {', '.join(SYNTH_CLASSES)}. Defaults < --config FILE.yaml < flags."
        ),
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to write")
    add_config_arguments(p, SynthConfig)
    p.add_argument("--workers", type=int, default=None, help=_WORKERS)
    p.set_defaults(func=_run_synth)
    return p


def _run_synth(args: argparse.Namespace) -> int:
    print(generate_synth_actions(args.out, config_from_args(SynthConfig, args), workers=args.workers))
    return 0


def add_prepare_parser(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``prepare`` to the ``dsn data`` subcommands."""
    p = data_subparsers.add_parser(
        "prepare",
        help="re-encode a video dataset with a smaller short side, keeping its layout",
        description=(
            "Re-encode every video under SRC into DST (same relative paths) with its short side scaled to "
            "--short-side (aspect kept, even sides, never enlarged); copy the other files (split lists) "
            "unchanged. Unreadable videos are skipped, the others converted, and the command then lists them "
            "and exits with code 1. Files already in DST are kept, so an interrupted run resumes (and first "
            "deletes the temporary files it left). A SRC without any video is an error. "
            "Defaults < --config FILE.yaml < flags."
        ),
    )
    p.add_argument("src", metavar="SRC", help="dataset folder to read")
    p.add_argument("dst", metavar="DST", help="folder to write (not inside SRC)")
    add_config_arguments(p, PrepareConfig)
    p.add_argument("--workers", type=int, default=None, help=_WORKERS)
    p.set_defaults(func=_run_prepare)
    return p


def _run_prepare(args: argparse.Namespace) -> int:
    report = prepare_videos(args.src, args.dst, config_from_args(PrepareConfig, args), workers=args.workers)
    print(report)
    if not report.ok:
        print(f"dsn data prepare: error: {len(report.failed)} of {report.videos} videos could not be read "
              "(listed above); the others were converted", file=sys.stderr)
        return 1
    return 0
