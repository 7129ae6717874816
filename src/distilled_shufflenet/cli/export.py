"""``dsn export``: a checkpoint as an ONNX or TorchScript file, checked against PyTorch; int8 with
``--quantize int8``."""

from __future__ import annotations

import argparse

from distilled_shufflenet.inference.export import DEFAULT_OPSET, FORMATS
from distilled_shufflenet.inference.export import ExportConfig, run_export


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript (class names and preprocessing inside), optionally int8",
        description=(
            "Export a checkpoint with BatchNorm folded: ONNX (clean graph with shapes fixed for the model's clip "
            "size, dynamic batch) or TorchScript. The file is run beside PyTorch on random clips (and on real "
            "ones with --data-root) and the largest absolute difference printed; it is written only if fp32 "
            "agrees within 1e-4. --quantize int8 writes an ONNX Runtime QDQ int8 model calibrated on clips of "
            "a dataset and prints its top-1 agreement with fp32 on the test set."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run checkpoint (.pt) or run folder")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="(default: %(default)s)")
    p.add_argument("--output", "-o", default=None,
                   help="file to write (default: beside the checkpoint, .onnx / .int8.onnx / .ts)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 17 or newer (default: %(default)s)")
    p.add_argument("--quantize", choices=("int8",), default=None, help="ONNX Runtime static int8 quantisation")
    p.add_argument("--data-root", default=None,
                   help="dataset for the real check clips, int8 calibration (train subset) and agreement (test)")
    p.add_argument("--dataset", default="ucf101", help="dataset kind of --data-root (default: %(default)s)")
    p.add_argument("--split", type=int, default=1, help="official split (default: %(default)s)")
    p.add_argument("--calibration-clips", type=int, default=32, help="clips to calibrate on (default: %(default)s)")
    p.add_argument("--test-clips", type=int, default=None, help="test clips for the agreement (default: all)")
    p.add_argument("--threads", type=int, default=None, help="threads for the checks (default: torch's default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = ExportConfig(
        checkpoint=args.checkpoint,
        format=args.format,
        output=args.output,
        opset=args.opset,
        quantize=args.quantize,
        data_root=args.data_root,
        dataset=args.dataset,
        split=args.split,
        calibration_clips=args.calibration_clips,
        test_clips=args.test_clips,
        threads=args.threads,
    )
    for report in run_export(config):
        print(report.summary())
    return 0
