"""``dsn predict``: the top classes of videos, or a live label per window with ``--stream``."""

from __future__ import annotations

import argparse
import sys

from distilled_shufflenet.cli import name_list
from distilled_shufflenet.inference.backends import AUTO_CANDIDATES, BACKENDS, DEFAULT_TOLERANCE
from distilled_shufflenet.inference.predict import format_predictions
from distilled_shufflenet.inference.runner import PredictConfig, run_predict
from distilled_shufflenet.inference.stream import StreamConfig


def _backend_list(text: str) -> tuple[str, ...]:
    """``--candidates``: comma-separated backend names."""
    return name_list(text, BACKENDS, "backend")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "predict",
        help="top classes of videos (files, folders, URLs, cameras); --stream for a label per window",
        description=(
            "Classify videos with a checkpoint or an exported model (.onnx, OpenVINO .xml, .ts). Without --stream: top-k "
            "classes per video, averaged over --clips clips. With --stream: a sliding window over the video "
            "as it decodes, one smoothed label per window, written while it runs; timings per stage at the end."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="checkpoint (.pt or run folder) or exported file (.onnx, .xml, .ts)")
    p.add_argument("inputs", metavar="INPUT", nargs="+", help="video files, folders, URLs or capture devices")
    p.add_argument("--backend", default="auto", choices=("auto",) + BACKENDS,
                   help="how to run the model (default: %(default)s: time the candidates here, keep the fastest "
                        "that agrees with fp32). An exported file runs only in the backends made for it (an fp32 "
                        ".onnx in ort-fp32, ov-fp32, ov-bf16; an int8 one in ort-int8, ov-int8; an .xml in the ov-* "
                        "of its precision; a .ts in TorchScript); another is refused. Which to use on which CPU: "
                        "ov-int8 was the fastest measured on AVX-512 with VNNI and on AVX2 (see docs/inference.md)")
    p.add_argument("--candidates", default=",".join(AUTO_CANDIDATES), type=_backend_list, metavar="LIST",
                   help="comma-separated backends --backend auto times for a checkpoint (default: %(default)s; "
                        "torch-compile, torch-compile-bf16 and torch-int8 compile first, a minute or more for the "
                        "paper preset, so they are timed only when named here; bf16 ones only run on CPUs with "
                        "native bf16)")
    p.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                   help="largest class-probability difference to fp32 that --backend auto accepts, with the same "
                        "top-1 on every probe clip (default: %(default)s; int8 backends moved a trained demo "
                        "student's class probabilities by up to 0.08)")
    p.add_argument("--threads", type=int, default=None, help="threads for the model (default: torch's default)")
    p.add_argument("--clips", type=int, default=5, help="clips per video without --stream (default: %(default)s)")
    p.add_argument("--topk", type=int, default=5, help="classes shown (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", default=None, help="also write all results to this JSON file")
    s = p.add_argument_group("streaming")
    s.add_argument("--stream", action="store_true", help="label a sliding window as the video decodes")
    s.add_argument("--hop", type=int, default=None,
                   help="frames between windows, a multiple of the model's frame stride (default: half a window)")
    s.add_argument("--smooth", type=int, default=None,
                   help=f"windows averaged into the label (default: {StreamConfig.smooth})")
    s.add_argument("--realtime", action="store_true",
                   help="pace a file at its own frame rate, as a camera would, and report label latency")
    s.add_argument("--stall-timeout", type=float, default=None,
                   help=f"seconds without a frame before a stream counts as stalled and ends (default: "
                        f"{StreamConfig.stall_timeout:g})")
    s.add_argument("--output", metavar="PATH", default=None,
                   help="write the windows to this .jsonl or .csv file as they come")
    s.add_argument("--out", metavar="VIDEO.mp4", dest="annotate", default=None,
                   help="write the video with the label, score and a timeline of the top classes drawn on it")
    s.add_argument("--quiet", action="store_true", help="no line per window on stdout")
    p.set_defaults(func=run)


# the flags of the streaming group, by destination: without --stream they would be ignored
_STREAM_FLAGS = {"hop": "--hop", "smooth": "--smooth", "realtime": "--realtime", "stall_timeout": "--stall-timeout",
                 "output": "--output", "annotate": "--out", "quiet": "--quiet"}


def run(args: argparse.Namespace) -> int:
    given = [flag for dest, flag in _STREAM_FLAGS.items() if getattr(args, dest) not in (None, False)]
    if given and not args.stream:
        raise ValueError(f"{', '.join(given)}: {'go' if len(given) > 1 else 'goes'} with --stream (streaming "
                         "prediction), and would be ignored without it; add --stream or leave "
                         f"{'them' if len(given) > 1 else 'it'} out")
    window = {k: v for k, v in (("hop", args.hop), ("smooth", args.smooth), ("stall_timeout", args.stall_timeout))
              if v is not None}
    config = PredictConfig(
        model=args.model,
        inputs=tuple(args.inputs),
        backend=args.backend,
        threads=args.threads,
        clips=args.clips,
        topk=args.topk,
        json=args.json,
        stream=args.stream,
        stream_config=StreamConfig(topk=min(args.topk, 3), realtime=args.realtime, **window),
        output=args.output,
        annotate=args.annotate,
        auto_candidates=args.candidates,
        auto_tolerance=args.tolerance,
    )
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
