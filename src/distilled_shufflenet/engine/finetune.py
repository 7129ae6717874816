"""Fine-tuning a distilled student with labels (``dsn finetune``, docs/method.md section 4).

::

    distilled checkpoint (backbone + adapters, with or without fc)
        -> the model it describes (its name and builder arguments; --model-arg overrides them)
        -> + a classifier head for the dataset's classes (a checkpoint fc of another size is left out)
        -> the supervised loop of dsn train: SGD Nesterov 0.9, lr 1e-3, batch 16,
           x0.1 on a validation-loss plateau of 10 epochs, early stopping

``freeze_backbone`` makes it a linear probe: only ``fc`` trains and the backbone (BatchNorm included)
stays in eval mode.
"""

from __future__ import annotations

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.engine.config import FinetuneConfig
from distilled_shufflenet.engine.train import ModelSpec, TrainResult, run


def student_spec(config: FinetuneConfig) -> ModelSpec:
    """The model to fine-tune: the one the checkpoint describes (``model_name`` / ``model_kwargs``), else
    ``config.model`` with ``config.model_kwargs``; ``config.model_kwargs`` override the checkpoint's."""
    name, kwargs = config.model, dict(config.model_kwargs)
    if config.checkpoint is not None:
        ckpt = read_checkpoint(config.checkpoint)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("model_name"), str):
            name = ckpt["model_name"]
            kwargs = {**dict(ckpt.get("model_kwargs") or {}), **config.model_kwargs}
    kwargs.pop("num_classes", None)  # the head is sized for the dataset's classes
    return ModelSpec(name, kwargs, weights=config.checkpoint, drop_classifier=True)


def finetune(config: FinetuneConfig) -> TrainResult:
    """``dsn finetune``: load the distilled student, attach the classifier, train with labels."""
    config.validate()
    spec = student_spec(config) if config.resume is None else ModelSpec(config.model)
    return run(config, spec)
