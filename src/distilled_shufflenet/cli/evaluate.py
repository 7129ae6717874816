"""``dsn evaluate``: clip and video level top-1 / top-5 of a checkpoint or an exported model on a test
split, with a JSON report and a confusion-matrix PNG."""

from __future__ import annotations

import argparse

from distilled_shufflenet.engine.evaluate import CONFUSION_NAME, REPORT_NAME, EvalConfig, default_out_dir
from distilled_shufflenet.options import add_config_arguments, config_from_args


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
    p.add_argument("checkpoint", help="checkpoint written by 'dsn train' / 'dsn finetune' (a run folder means its "
                   "last.pt), or a file written by 'dsn export'")
    add_config_arguments(p, EvalConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(EvalConfig, args)
    out = config.out if config.out is not None else str(default_out_dir(args.checkpoint, config))
    from distilled_shufflenet.inference.evaluate import evaluate_file  # the backends load only when needed

    report = evaluate_file(args.checkpoint, config, out=out)
    print(report.summary())
    print(f"wrote {out}/{REPORT_NAME} and {out}/{CONFUSION_NAME}")
    return 0
