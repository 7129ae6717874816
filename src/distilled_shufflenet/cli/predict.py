"""``dsn predict``: the top classes of videos, or a live label per window with ``--stream``."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from distilled_shufflenet.inference.predict import format_predictions
from distilled_shufflenet.inference.runner import PredictConfig, run_predict
from distilled_shufflenet.options import add_config_arguments, config_from_args

# the flags of the streaming group, by destination: without --stream they would be ignored
_STREAM_FLAGS = {"stream_config.hop": "--hop", "stream_config.smooth": "--smooth", "stream_config.realtime": "--realtime",
                 "stream_config.stall_timeout": "--stall-timeout", "output": "--output", "annotate": "--out",
                 "quiet": "--quiet"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="top classes of videos (files, folders, URLs, cameras); --stream for a label per window",
        description=(
            "Classify videos with a checkpoint or an exported model (.onnx, OpenVINO .xml, .ts). Without --stream: top-k "
            "classes per video, averaged over --clips clips. With --stream: a sliding window over the video "
            "as it decodes, one smoothed label per window, written while it runs; timings per stage at the end. "
            "Defaults < --config FILE.yaml < flags."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.pt or run folder) or exported file (.onnx, .xml, .ts)")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="video files, folders, URLs or capture devices")
    add_config_arguments(p, PredictConfig)
    streaming = next(g for g in p._action_groups if g.title == "streaming")
    streaming.add_argument("--quiet", action="store_true", help="no line per window on stdout")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(PredictConfig, args)
    given = [flag for dest, flag in _STREAM_FLAGS.items() if getattr(args, dest, None) not in (None, False)]
    if given and not config.stream:
        raise ValueError(f"{', '.join(given)}: {'go' if len(given) > 1 else 'goes'} with --stream (streaming "
                         "prediction), and would be ignored without it; add --stream or leave "
                         f"{'them' if len(given) > 1 else 'it'} out")
    # a window shows at most three classes
    config = dataclasses.replace(config, stream_config=dataclasses.replace(config.stream_config,
                                                                           topk=min(config.topk, 3)))
    quiet = args.quiet

    def log(line: str) -> None:
        if not (quiet and line.startswith(tuple(config.inputs))):
            print(line, flush=True)

    result = run_predict(config, log=log)
    if result.videos:
        print(format_predictions(result.videos))
    for report in result.streams:
        print(report.summary())
    for error in result.errors:
        print(f"dsn predict: error: {error}", file=sys.stderr)
    if config.json:
        print(f"wrote {config.json}")
    return 1 if result.errors else 0
