"""``dsn data synth`` and ``dsn data prepare``: generate SynthActions, re-encode a dataset smaller."""

from __future__ import annotations

import argparse
import sys

from distilled_shufflenet.cli import name_list
from distilled_shufflenet.data.prepare import PrepareConfig, prepare_videos
from distilled_shufflenet.data.synth import DEFAULT_CLASSES, SYNTH_CLASSES, SynthConfig, generate_synth_actions

__all__ = ["add_prepare_parser", "add_synth_parser"]

_DEFAULTS = SynthConfig()


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 160x120, got {text!r}") from None
    return w, h


def _classes(text: str) -> tuple[str, ...]:
    """``N`` (the first N classes of the list) or comma-separated class names."""
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= len(SYNTH_CLASSES):
            raise argparse.ArgumentTypeError(f"expected 1..{len(SYNTH_CLASSES)} classes, got {n}")
        return SYNTH_CLASSES[:n]
    return name_list(text, SYNTH_CLASSES, "class")


def add_synth_parser(data_subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``synth`` to the ``dsn data`` subcommands."""
    p = data_subparsers.add_parser(
        "synth",
        help="generate SynthActions, a synthetic action dataset in the UCF101 layout",
        description=(
            "Write SynthActions (animated figures doing actions, as real video files) to OUT in the UCF101 "
            "layout: classInd.txt, trainlist0k.txt / testlist0k.txt, <Class>/v_<Class>_gXX_cYY.avi. "
            "Videos already there are kept, so an interrupted run resumes. "
            f"Classes, in order: {', '.join(SYNTH_CLASSES)}."
        ),
    )
    p.add_argument("out", metavar="OUT", help="dataset folder to write")
    p.add_argument("--classes", type=_classes, default=_DEFAULTS.classes, metavar="N|NAMES",
                   help=f"the first N classes, or a comma-separated list (default: the first {len(DEFAULT_CLASSES)})")
    p.add_argument("--groups", type=int, default=_DEFAULTS.groups,
                   help="actors per class (gXX); a quarter of them are test groups (default: %(default)s)")
    p.add_argument("--clips-per-group", type=int, default=_DEFAULTS.clips_per_group,
                   help="clips per actor and class (cYY) (default: %(default)s)")
    p.add_argument("--frames", type=int, default=_DEFAULTS.frames, help="frames per video (default: %(default)s)")
    p.add_argument("--size", type=_size, default=_DEFAULTS.size, metavar="WxH",
                   help="frame size (default: %dx%d)" % _DEFAULTS.size)
    p.add_argument("--fps", type=int, default=_DEFAULTS.fps, help="frame rate (default: %(default)s)")
    p.add_argument("--seed", type=int, default=_DEFAULTS.seed, help="random seed (default: %(default)s)")
    p.add_argument("--format", choices=("avi", "mp4"), default=_DEFAULTS.format,
                   help="avi: MPEG-4 Part 2 like UCF101; mp4: H.264 (default: %(default)s)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: min(2, CPUs))")
    p.set_defaults(func=_run_synth)
    return p


def _run_synth(args: argparse.Namespace) -> int:
    config = SynthConfig(
        classes=args.classes,
        groups=args.groups,
        clips_per_group=args.clips_per_group,
        frames=args.frames,
        size=args.size,
        fps=args.fps,
        seed=args.seed,
        format=args.format,
    )
    print(generate_synth_actions(args.out, config, workers=args.workers))
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
            "deletes the temporary files it left). A SRC without any video is an error."
        ),
    )
    p.add_argument("src", metavar="SRC", help="dataset folder to read")
    p.add_argument("dst", metavar="DST", help="folder to write (not inside SRC)")
    p.add_argument("--short-side", type=int, default=PrepareConfig.short_side,
                   help="target short side in pixels (default: %(default)s)")
    p.add_argument("--codec", default=None,
                   help="encoder, e.g. mpeg4 or libx264 (default: from the extension, mpeg4 for .avi)")
    p.add_argument("--quality", type=int, default=None,
                   help="constant quality on the codec's scale, lower is better (default: mpeg4 4, x264 CRF 18)")
    p.add_argument("--workers", type=int, default=None, help="parallel processes (default: min(2, CPUs))")
    p.set_defaults(func=_run_prepare)
    return p


def _run_prepare(args: argparse.Namespace) -> int:
    config = PrepareConfig(short_side=args.short_side, codec=args.codec, quality=args.quality)
    report = prepare_videos(args.src, args.dst, config, workers=args.workers)
    print(report)
    if not report.ok:
        print(f"dsn data prepare: error: {len(report.failed)} of {report.videos} videos could not be read "
              "(listed above); the others were converted", file=sys.stderr)
        return 1
    return 0
