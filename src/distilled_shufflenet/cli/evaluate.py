"""``dsn evaluate``: clip and video level top-1 / top-5 of a checkpoint or an exported model on a test
split, with a JSON report and a confusion-matrix PNG."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import fields

from distilled_shufflenet.engine.eval_report import AVERAGES, CONFUSION_NAME, REPORT_NAME
from distilled_shufflenet.engine.evaluate import EVAL_DATASETS, EvalConfig, default_out_dir
from distilled_shufflenet.engine.runtime import DEVICES, PRECISIONS

_DEFAULTS = {f.name: f.default if f.default_factory is dataclasses.MISSING else f.default_factory()
             for f in fields(EvalConfig)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="top-1 / top-5 of a checkpoint or exported model on a test split, clip and video level",
        description=(
            "Evaluate a checkpoint of any registered model, or a model exported by dsn export (.onnx, int8 "
            ".onnx, OpenVINO .xml, .ts: run on the CPU in their own backend), on a test split: clip level (one "
            "centre clip, centre crop) and video level (softmax probabilities averaged over --clips x --crops views), "
            "per-class accuracy and a confusion matrix. Each level's top-1 comes with its 95 % interval (a "
            "percentile bootstrap over the test videos, seeded) and report.json says which videos it got right, "
            "so that two models on the same split can be compared video by video. "
            "Videos that cannot be read count as wrong in the "
            "headline figures, which are also given over the scored videos alone. Clip length, crop and "
            "normalisation come from the checkpoint unless overridden. Defaults < --config FILE.yaml < flags."
        ),
    )

    # flags default to "not given", so that only what was typed overrides the --config file
    def option(flag: str, help: str, **kwargs) -> None:
        name = flag.lstrip("-").replace("-", "_")
        shown = _DEFAULTS[name]
        p.add_argument(flag, dest=name, default=argparse.SUPPRESS, help=f"{help} (default: {shown})", **kwargs)

    p.add_argument("checkpoint", help="checkpoint written by 'dsn train' / 'dsn finetune' (a run folder means its "
                   "last.pt), or a file written by 'dsn export'")
    p.add_argument("--config", metavar="FILE.yaml",
                   help="YAML file of evaluation settings, keys as the flags with '_' (flags override it)")
    option("--dataset", "dataset layout: official split files (ucf101, hmdb51) or a list file", choices=EVAL_DATASETS)
    p.add_argument("--data-root", dest="data_root", default=argparse.SUPPRESS,
                   help="folder holding the dataset's videos (--dataset list: default the list file's folder)")
    p.add_argument("--list-file", dest="list_file", default=argparse.SUPPRESS,
                   help="with --dataset list: CSV or text file of 'path,label' lines")
    p.add_argument("--splits-dir", dest="splits_dir", default=argparse.SUPPRESS,
                   help="folder of the official split files (default: in --data-root)")
    option("--split", "official split", type=int, choices=(1, 2, 3))
    option("--subset", "side of the split", choices=("train", "test"))
    option("--clips", "clips per video at video level", type=int)
    option("--crops", "crops per clip at video level", type=int, choices=(1, 3))
    option("--batch-size", "videos per batch, and clips per forward pass", type=int)
    option("--workers", "data-loading processes", type=int)
    option("--device", "auto = cuda when a GPU is visible", choices=DEVICES)
    option("--precision", "autocast precision", choices=PRECISIONS)
    option("--average", "what is averaged over the views of a video", choices=tuple(AVERAGES))
    p.add_argument(
        "--out",
        default=argparse.SUPPRESS,
        help=f"folder for {REPORT_NAME} and {CONFUSION_NAME} "
        "(default: eval-<dataset>-split<k>-<subset> beside the checkpoint)",
    )
    p.add_argument(
        "--skip-missing",
        dest="skip_missing",
        action="store_true",
        default=argparse.SUPPRESS,
        help="count listed videos missing from disk as unscored instead of stopping with an error",
    )
    p.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                   help="no progress bar on stderr")
    g = p.add_argument_group("preprocessing (default: the checkpoint's)")
    for flag, help in (("--clip-len", "frames per clip"), ("--crop-size", "square crop side in pixels"),
                       ("--resize", "short side in pixels before cropping")):
        g.add_argument(flag, dest=flag[2:].replace("-", "_"), type=int, default=argparse.SUPPRESS, help=help)
    for flag, help in (("--mean", "normalisation mean"), ("--std", "normalisation std")):
        g.add_argument(flag, dest=flag[2:], type=float, nargs=3, default=argparse.SUPPRESS, metavar=("R", "G", "B"),
                       help=help)
    g.add_argument("--frame-stride", dest="frame_stride", type=int, default=argparse.SUPPRESS,
                   help="take every n-th frame (default: the stride the checkpoint was trained with)")
    p.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EvalConfig:
    """Defaults < ``--config FILE.yaml`` < the flags typed; every value is checked."""
    from distilled_shufflenet.engine.config import build_config, load_yaml

    names = {f.name for f in fields(EvalConfig)}
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in vars(args).items() if k in names}
    from_file = load_yaml(args.config) if args.config else {}
    # flags are typed by argparse already, so a wrong type or an unknown key comes from the file
    return build_config(EvalConfig, {**from_file, **given}, source=str(args.config or "command line"))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    out = config.out if config.out is not None else str(default_out_dir(args.checkpoint, config))
    from distilled_shufflenet.inference.evaluate import evaluate_file  # the backends load only when needed

    report = evaluate_file(args.checkpoint, config, out=out)
    print(report.summary())
    print(f"wrote {out}/{REPORT_NAME} and {out}/{CONFUSION_NAME}")
    return 0
