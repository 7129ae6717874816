"""``dsn evaluate``: clip and video level top-1 / top-5 of a checkpoint on a test split, with a JSON report
and a confusion-matrix PNG."""

from __future__ import annotations

import argparse
from dataclasses import fields

from distilled_shufflenet.engine.evaluate import (
    AVERAGES,
    CONFUSION_NAME,
    REPORT_NAME,
    EvalConfig,
    default_out_dir,
    evaluate_checkpoint,
)
from distilled_shufflenet.engine.runtime import DEVICES, PRECISIONS

_DEFAULTS = {f.name: f.default for f in fields(EvalConfig)}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "evaluate",
        help="top-1 / top-5 of a checkpoint on a test split, clip and video level",
        description=(
            "Evaluate a checkpoint of any registered model on a test split: clip level (one centre clip, "
            "centre crop) and video level (softmax probabilities averaged over --clips x --crops views), "
            "per-class accuracy and a confusion matrix. Videos that cannot be read count as wrong in the "
            "headline figures, which are also given over the scored videos alone. Clip length, crop and "
            "normalisation come from the checkpoint unless overridden."
        ),
    )

    def option(flag: str, help: str, **kwargs) -> None:
        name = flag.lstrip("-").replace("-", "_")
        p.add_argument(flag, default=_DEFAULTS[name], help=f"{help} (default: %(default)s)", **kwargs)

    p.add_argument("checkpoint", help="checkpoint written by 'dsn train' (a run folder means its last.pt)")
    option("--dataset", "dataset layout, e.g. ucf101 or hmdb51")
    p.add_argument("--data-root", required=True, help="folder holding the dataset's videos")
    p.add_argument("--splits-dir", default=None, help="folder of the official split files (default: in --data-root)")
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
        default=None,
        help=f"folder for {REPORT_NAME} and {CONFUSION_NAME} "
        "(default: eval-<dataset>-split<k>-<subset> beside the checkpoint)",
    )
    p.add_argument(
        "--skip-missing",
        action="store_true",
        help="count listed videos missing from disk as unscored instead of stopping with an error",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    g = p.add_argument_group("preprocessing (default: the checkpoint's)")
    g.add_argument("--clip-len", type=int, default=None, help="frames per clip")
    g.add_argument("--crop-size", type=int, default=None, help="square crop side in pixels")
    g.add_argument("--resize", type=int, default=None, help="short side in pixels before cropping")
    g.add_argument("--mean", type=float, nargs=3, default=None, metavar=("R", "G", "B"), help="normalisation mean")
    g.add_argument("--std", type=float, nargs=3, default=None, metavar=("R", "G", "B"), help="normalisation std")
    g.add_argument("--frame-stride", type=int, default=_DEFAULTS["frame_stride"],
                   help="take every n-th frame (default: the stride the checkpoint was trained with)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = EvalConfig(
        dataset=args.dataset,
        data_root=args.data_root,
        splits_dir=args.splits_dir,
        split=args.split,
        subset=args.subset,
        clips=args.clips,
        crops=args.crops,
        frame_stride=args.frame_stride,
        batch_size=args.batch_size,
        workers=args.workers,
        device=args.device,
        precision=args.precision,
        average=args.average,
        skip_missing=args.skip_missing,
        progress=not args.no_progress,
        clip_len=args.clip_len,
        crop_size=args.crop_size,
        resize=args.resize,
        mean=None if args.mean is None else tuple(args.mean),
        std=None if args.std is None else tuple(args.std),
    )
    out = args.out if args.out is not None else str(default_out_dir(args.checkpoint, config))
    report = evaluate_checkpoint(args.checkpoint, config, out=out)
    print(report.summary())
    print(f"wrote {out}/{REPORT_NAME} and {out}/{CONFUSION_NAME}")
    return 0
