"""``dsn train`` and ``dsn finetune``: flags -> typed config -> the library's train() / finetune()."""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from distilled_shufflenet.engine.config import FinetuneConfig, TrainConfig, add_config_arguments, config_from_args

_TRAIN_EPILOG = """\
examples:
  dsn train --model r3d_18 --init r3d_18-kinetics.pth --drop-classifier --data-root UCF-101 --output runs/r3d18
  dsn train --model shufflenet2plus1d --data-root UCF-101 --splits-dir ucfTrainTestlist --output runs/baseline
  dsn train --resume runs/baseline              # continue exactly where the run stopped
  torchrun --nproc_per_node 4 -m distilled_shufflenet train --config run.yaml --device cuda
"""

_FINETUNE_EPILOG = """\
examples:
  dsn finetune --checkpoint runs/distill/best.pt --data-root UCF-101 --output runs/finetune
  dsn finetune --checkpoint runs/distill/best.pt --freeze-backbone --data-root UCF-101 --output runs/probe
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    for cls, epilog, text in (
        (TrainConfig, _TRAIN_EPILOG, "supervised training of any registered model on a labelled dataset"),
        (FinetuneConfig, _FINETUNE_EPILOG, "fine-tune a distilled student with labels (docs/method.md section 4)"),
    ):
        parser = subparsers.add_parser(cls.command, help=text, description=text[0].upper() + text[1:] + ".",
                                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_arguments(parser, cls)
        parser.set_defaults(func=_command(cls))


def _command(cls: type[TrainConfig]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from distilled_shufflenet.engine import NonFiniteLossError, finetune, train

        config = config_from_args(cls, args)
        try:
            result = (finetune if isinstance(config, FinetuneConfig) else train)(config)  # type: ignore[arg-type]
        except NonFiniteLossError as e:
            print(f"dsn {cls.command}: {e}", file=sys.stderr)
            return 3
        if result.is_main:
            best = "" if result.best_val_top1 is None else f"; best val top-1 {result.best_val_top1:.2f}%"
            print(f"{result.stopped} after {result.epochs} epoch(s), {result.steps} step(s){best}")
            print(f"run folder: {result.run_dir}  (last: {result.last_checkpoint.name}"
                  + (f", best: {result.best_checkpoint.name})" if result.best_checkpoint else ")"))
        return 0

    return run
