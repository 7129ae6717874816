"""Training engine: supervised training, fine-tuning, run checkpoints, devices and torch.distributed.

>>> from distilled_shufflenet.engine import TrainConfig, train, load_checkpoint
>>> result = train(TrainConfig(model="r3d_18", data_root="data/UCF-101", output="runs/r3d18"))
>>> model, ckpt = load_checkpoint(result.best_checkpoint)   # rebuilt from the file alone
"""

from distilled_shufflenet.engine.checkpointing import load_checkpoint, read_run_checkpoint, save_checkpoint
from distilled_shufflenet.engine.config import FinetuneConfig, TrainConfig, resolve_config
from distilled_shufflenet.engine.finetune import finetune
from distilled_shufflenet.engine.runtime import Runtime, setup_runtime, teardown_runtime
from distilled_shufflenet.engine.train import NonFiniteLossError, TrainResult, fit, train

__all__ = [
    "FinetuneConfig",
    "NonFiniteLossError",
    "Runtime",
    "TrainConfig",
    "TrainResult",
    "finetune",
    "fit",
    "load_checkpoint",
    "read_run_checkpoint",
    "resolve_config",
    "save_checkpoint",
    "setup_runtime",
    "teardown_runtime",
    "train",
]
