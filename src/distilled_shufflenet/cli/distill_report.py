"""``dsn distill-report``: how much of each teacher's target a distilled student has learnt."""

from __future__ import annotations

import argparse
import json

from distilled_shufflenet.engine.target_fit import TargetFitConfig, format_target_fit, target_fit
from distilled_shufflenet.io import atomic_write_text
from distilled_shufflenet.options import add_config_arguments, config_from_args

EXAMPLES = """examples:
  dsn distill-report runs/distill                       # 60 of its training videos
  dsn distill-report runs/distill --on val --videos 200 --json fit.json
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "distill-report",
        help="how much of each teacher's target (tap x teacher) a distilled student explains",
        description=(
            "Score the student of a dsn distill run against its targets, part by part (the mid and final taps "
            "of the 2D and of the 3D teacher), on clips of the run's own unlabelled videos (centre clip and crop, "
            "the run's teachers and preprocessing; no label is read): the target's variance over the clips, the "
            "student's squared error and the share it explains (1 - error / variance). The 2D teacher sees one "
            "random frame the student is not told of; for its parts the report also gives the share of the "
            "target's variance between the frames of one clip (no student can predict it) and the student's fit "
            "to the clip's map averaged over its frames (the most it can learn)."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a dsn distill run folder (its last.pt) or checkpoint")
    add_config_arguments(p, TargetFitConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(TargetFitConfig, args)
    report = target_fit(args.run, videos=config.videos, on=config.on, progress=config.progress)
    print(format_target_fit(report))
    if config.json:
        atomic_write_text(json.dumps(report.to_dict(), indent=2) + "\n", config.json)
        print(f"wrote {config.json}")
    return 0
