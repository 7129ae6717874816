"""``dsn export``: a checkpoint as an ONNX or TorchScript file, checked against PyTorch; int8 with
``--quantize int8``."""

from __future__ import annotations

import argparse

from distilled_shufflenet.inference.export import ExportConfig, run_export
from distilled_shufflenet.options import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX, OpenVINO IR or TorchScript (class names and preprocessing inside), "
             "optionally int8",
        description=(
            "Export a checkpoint with BatchNorm folded: ONNX (clean graph with shapes fixed for the model's clip "
            "size, dynamic batch), the same graph as an OpenVINO IR (.xml + .bin, --format openvino), or "
            "TorchScript. The file is run beside PyTorch on random clips (and on real "
            "ones with --data-root) and the largest absolute difference printed; it is written only if fp32 "
            "agrees within 1e-4. --quantize int8 writes a QDQ int8 model (ONNX, or an IR for OpenVINO's int8 "
            "kernels with --format openvino) calibrated on clips of "
            "your videos (no labels needed: a dataset's train subset, a list, or any folder of videos with "
            "--dataset folder) and prints its top-1 agreement with fp32 on clips it was not calibrated on. "
            "An existing file is replaced only when it is an earlier export (or with --force); the "
            "checkpoint itself never is. Defaults < --config FILE.yaml < flags."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run checkpoint (.pt) or run folder")
    add_config_arguments(p, ExportConfig)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    for report in run_export(config_from_args(ExportConfig, args)):
        print(report.summary())
    return 0
