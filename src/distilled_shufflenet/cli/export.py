"""``dsn export``: a checkpoint as an ONNX or TorchScript file, checked against PyTorch; int8 with
``--quantize int8``."""

from __future__ import annotations

import argparse

from distilled_shufflenet.data import DATASET_KINDS
from distilled_shufflenet.inference.export import DEFAULT_OPSET, FORMATS
from distilled_shufflenet.inference.export import ExportConfig, run_export
from distilled_shufflenet.inference.source import EXPORT_FORMATS


def _suffixes() -> str:
    return "; ".join(f"{fmt} {' or '.join(EXPORT_FORMATS[fmt])}" for fmt in FORMATS)


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
            "checkpoint itself never is."
        ),
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a run checkpoint (.pt) or run folder")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="(default: %(default)s)")
    p.add_argument("--output", "-o", default=None,
                   help=f"file to write, named with its format's suffix ({_suffixes()}; default: beside the "
                        "checkpoint, with the int8 model as NAME.int8.onnx or NAME.int8.xml)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing --output file even if it is not an earlier export")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset, 17 or newer (default: %(default)s)")
    p.add_argument("--quantize", choices=("int8",), default=None, help="static int8 quantisation (QDQ), for ONNX Runtime (--format onnx) or OpenVINO (--format openvino)")
    p.add_argument("--data-root", default=None,
                   help="videos for the real check clips, the int8 calibration and the int8 agreement: a dataset "
                        "(train subset calibrates, test subset checks), or any folder of videos with --dataset folder")
    p.add_argument("--dataset", default=None, choices=DATASET_KINDS,
                   help="kind of --data-root: ucf101, hmdb51 (official splits), folder (every video under it, no "
                        "labels) or list (--list-file) (default: list with --list-file, else ucf101)")
    p.add_argument("--list-file", default=None,
                   help="CSV or text file of 'path,label' lines (paths relative to --data-root, default the list's "
                        "folder); calibrates on videos spread over it, checks on the others")
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
        dataset=args.dataset or ("list" if args.list_file else "ucf101"),
        list_file=args.list_file,
        force=args.force,
        split=args.split,
        calibration_clips=args.calibration_clips,
        test_clips=args.test_clips,
        threads=args.threads,
    )
    for report in run_export(config):
        print(report.summary())
    return 0
