"""``dsn distill``: flags -> DistillConfig -> the library's distill()."""

from __future__ import annotations

import argparse

from distilled_shufflenet.cli.train import run_command
from distilled_shufflenet.options import add_config_arguments
from distilled_shufflenet.engine.distill import DistillConfig, distill

_EPILOG = """\
what it does:
  A frozen 2D teacher sees one random frame of each (augmented) clip, a frozen 3D teacher the whole clip.
  At each student tap the targets are their maps laid along time (by default the first half of the slots
  from the 2D teacher, the rest from the 3D teacher); the student's adapted maps regress them with
  0.1 x MSE(mid) + 0.9 x MSE(final). No label is read. The output checkpoint (last.pt / best.pt) is the
  student without a classifier, as `dsn finetune --checkpoint` reads it.

examples:
  # the paper: ImageNet ResNet-101 + Kinetics 3D ResNet-50 on UCF101's training videos
  dsn distill --dataset ucf101 --data-root UCF-101 --splits-dir ucfTrainTestlist \\
      --teacher2d resnet101:resnet101-63fe2227.pth --teacher3d r3d_50:r3d50_K_200ep.pth --output runs/distill
  # any folder of videos, teachers trained with dsn train, targets cached for 4 views per video
  dsn distill --data-root my_footage/ --teacher2d resnet18:runs/r18/last.pt --teacher3d r3d_18:runs/r3d/last.pt \\
      --model-arg adapter_channels=[64,128] --cache-teachers cache/ --output runs/distill
  dsn distill --resume runs/distill                 # continue exactly where the run stopped
  torchrun --nproc_per_node 2 -m distilled_shufflenet distill --config distill.yaml
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "label-free distillation of the student from a frozen 2D and a frozen 3D teacher"
    parser = subparsers.add_parser("distill", help=text, description=text[0].upper() + text[1:] + ".",
                                   epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, DistillConfig)
    parser.set_defaults(func=run_command(DistillConfig, distill))
