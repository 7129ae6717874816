"""``dsn data``: check a folder or dataset of videos, benchmark the data pipeline, and (from
:mod:`distilled_shufflenet.cli.data_synth`) generate SynthActions and re-encode datasets."""

from __future__ import annotations

import argparse
import sys

from distilled_shufflenet.data.factory import DATASET_KINDS

__all__ = ["register"]


def _add_dataset_flags(p: argparse.ArgumentParser, default_subset: str, subsets: tuple[str, ...]) -> None:
    p.add_argument("--dataset", choices=DATASET_KINDS, default="folder",
                   help="how to find the videos: every video under ROOT (folder), an official split (ucf101, "
                        "hmdb51) or a list file (default: %(default)s)")
    p.add_argument("--splits-dir", default=None, help="folder of the official split files (ucf101, hmdb51)")
    p.add_argument("--split", type=int, default=1, help="official split 1, 2 or 3 (default: %(default)s)")
    p.add_argument("--subset", choices=subsets, default=default_subset, help="split subset (default: %(default)s)")
    p.add_argument("--list-file", default=None, help="CSV or text file of 'path,label' lines (--dataset list)")


def _run_check(args: argparse.Namespace) -> int:
    from distilled_shufflenet.data.check import check_dataset

    report = check_dataset(
        args.dataset,
        args.root,
        splits_dir=args.splits_dir,
        split=args.split,
        subset=args.subset,
        list_file=args.list_file,
        min_frames=args.min_frames,
        full=args.full,
        progress=not args.no_progress,
    )
    print(report.to_json() if args.json else report.format())
    return 0 if report.ok else 1


def _run_bench(args: argparse.Namespace) -> int:
    from distilled_shufflenet.data.bench import BenchConfig, format_results, run_data_bench

    if args.dataset != "folder" and args.root is None and args.list_file is None:
        raise ValueError(f"--dataset {args.dataset} needs ROOT (or --list-file)")
    cfg = BenchConfig(
        root=args.root,
        dataset=args.dataset,
        splits_dir=args.splits_dir,
        split=args.split,
        subset=args.subset,
        list_file=args.list_file,
        clip_len=args.clip_len,
        crop_size=args.crop_size,
        batch_size=args.batch_size,
        workers=tuple(args.workers),
        batches=args.batches,
        videos=args.videos,
        frames=args.frames,
    )
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
                    "Exit code 1 if any bad video is found.",
    )
    p.add_argument("root", metavar="ROOT", nargs="?", default=None, help="folder of videos / dataset root")
    _add_dataset_flags(p, "all", ("train", "test", "all"))
    p.add_argument("--min-frames", type=int, default=16,
                   help="videos with fewer frames are reported as too short (default: %(default)s)")
    p.add_argument("--full", action="store_true",
                   help="decode every frame (finds truncated and corrupt files; slower)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_check)


def _add_bench_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="training clips per second of the data pipeline with 0, 1 and 2 workers",
        description="Time the training data pipeline (decode a random 16-frame window, crop 224, flip, "
                    "normalise, batch 8) with several DataLoader worker counts. Without ROOT, a few UCF101-like "
                    "videos are generated in a temporary folder.",
    )
    p.add_argument("root", metavar="ROOT", nargs="?", default=None,
                   help="folder of videos / dataset root (default: generate videos)")
    _add_dataset_flags(p, "train", ("train", "test"))
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2], help="worker counts (default: 0 1 2)")
    p.add_argument("--batch-size", type=int, default=8, help="default: %(default)s")
    p.add_argument("--batches", type=int, default=10, help="timed batches per setting (default: %(default)s)")
    p.add_argument("--clip-len", type=int, default=16, help="default: %(default)s")
    p.add_argument("--crop-size", type=int, default=224, help="default: %(default)s")
    p.add_argument("--videos", type=int, default=6, help="videos to generate without ROOT (default: %(default)s)")
    p.add_argument("--frames", type=int, default=150, help="frames per generated video (default: %(default)s)")
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
