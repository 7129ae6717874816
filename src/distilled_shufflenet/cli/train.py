"""``dsn train`` and ``dsn finetune``: flags -> typed config -> the library's train() / finetune()."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from distilled_shufflenet.engine.config import FinetuneConfig, TrainConfig, run_config_from_args
from distilled_shufflenet.options import add_config_arguments

_TRAIN_EPILOG = """\
examples:
  dsn train --model r3d_18 --init r3d_18-kinetics.pth --drop-classifier --data-root UCF-101 --output runs/r3d18
  dsn train --model shufflenet2plus1d --data-root UCF-101 --splits-dir ucfTrainTestlist --output runs/baseline
  dsn train --resume runs/baseline              # continue exactly where the run stopped
  dsn train --data-root UCF-101 --val-fraction 0.1 --label-fraction 0.1 --label-seed 1 --output runs/scratch10
  torchrun --nproc_per_node 4 -m distilled_shufflenet train --config run.yaml --device cuda
"""

_FINETUNE_EPILOG = """\
examples:
  dsn finetune --checkpoint runs/distill/best.pt --data-root UCF-101 --output runs/finetune
  dsn finetune --checkpoint runs/distill/best.pt --linear-probe --data-root UCF-101 --output runs/probe
  # the labels of 10 % of each class's training videos (whole actor groups), validated on other groups
  dsn finetune --checkpoint runs/distill/best.pt --label-fraction 0.1 --label-seed 1 --val-fraction 0.1 --data-root UCF-101
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    for cls, epilog, text in (
        (TrainConfig, _TRAIN_EPILOG, "supervised training of any registered model on a labelled dataset"),
        (FinetuneConfig, _FINETUNE_EPILOG, "fine-tune a distilled student with labels (docs/method.md section 4)"),
    ):
        parser = subparsers.add_parser(cls.command, help=text, description=text[0].upper() + text[1:] + ".",
                                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_arguments(parser, cls)
        if cls is FinetuneConfig:  # the flag's earlier name, so that existing commands keep working
            parser.add_argument("--freeze-backbone", dest="freeze_backbone", action=argparse.BooleanOptionalAction,
                                default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        parser.set_defaults(func=_command(cls))


def _command(cls: type[TrainConfig]) -> Callable[[argparse.Namespace], int]:
    def library(config: TrainConfig):
        from distilled_shufflenet.engine import finetune, train

        return (finetune if isinstance(config, FinetuneConfig) else train)(config)  # type: ignore[arg-type]

    return run_command(cls, library)


def run_command(cls: type[TrainConfig], library: Callable[[Any], Any]) -> Callable[[argparse.Namespace], int]:
    """The body of a training-loop command: flags -> config -> ``library(config)`` -> a short report.
    A NaN loss exits 3, SIGINT / SIGTERM 128 + the signal, each with one line and no traceback."""

    def run(args: argparse.Namespace) -> int:
        from distilled_shufflenet.engine import NonFiniteLossError
        from distilled_shufflenet.engine.loop import RunInterrupted

        config = run_config_from_args(cls, args)
        try:
            result = library(config)
        except NonFiniteLossError as e:
            print(f"dsn {cls.command}: {e}", file=sys.stderr)
            return 3
        except RunInterrupted as e:
            print(f"dsn {cls.command}: {e}", file=sys.stderr)
            return e.exit_code
        if result.is_main:
            print(f"{result.stopped} after {result.epochs} epoch(s), {result.steps} step(s){_best(result)}")
            print(f"run folder: {result.run_dir}  (last: {result.last_checkpoint.name}"
                  + (f", best: {result.best_checkpoint.name})" if result.best_checkpoint else ")"))
        return 0

    return run


def _best(result: Any) -> str:
    if result.best_score is None:
        return ""
    top1 = getattr(result, "best_val_top1", None)
    return f"; best val top-1 {top1:.2f}%" if top1 is not None else f"; best val loss {-result.best_score:.4g}"
