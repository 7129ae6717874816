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

import dataclasses

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.engine.config import FinetuneConfig
from distilled_shufflenet.engine.train import ModelInit, TrainResult, run


def with_checkpoint_defaults(config: FinetuneConfig) -> FinetuneConfig:
    """``config`` with what it leaves unset taken from the checkpoint: the model and its builder
    arguments (``model_kwargs`` given add to / override the checkpoint's), the clip length, crop, resize
    and frame stride the checkpoint was trained with.  So ``config.yaml`` records what is really used."""
    model, kwargs = config.model, dict(config.model_kwargs)
    values: dict = {}
    if config.checkpoint is not None:
        ckpt = read_checkpoint(config.checkpoint)
        if isinstance(ckpt, dict) and isinstance(ckpt.get("model_name"), str):
            if model is None or model == ckpt["model_name"]:
                model = ckpt["model_name"]
                kwargs = {**dict(ckpt.get("model_kwargs") or {}), **kwargs}
            pre = ckpt.get("preprocess") if isinstance(ckpt.get("preprocess"), dict) else {}
            trained = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
            values = {"clip_len": pre.get("clip_len"), "crop_size": pre.get("crop_size"), "resize": pre.get("resize"),
                      "frame_stride": trained.get("frame_stride")}
    kwargs.pop("num_classes", None)  # the head is sized for the dataset's classes
    updates = {k: v for k, v in values.items() if getattr(config, k) is None and v is not None}
    return dataclasses.replace(config, model=model or "shufflenet2plus1d", model_kwargs=kwargs,
                               frame_stride=updates.pop("frame_stride", config.frame_stride or 1), **updates)


def student_spec(config: FinetuneConfig) -> ModelInit:
    """The model to fine-tune, from a config completed by :func:`with_checkpoint_defaults`."""
    return ModelInit(config.model, dict(config.model_kwargs), weights=config.checkpoint, drop_classifier=True)


def finetune(config: FinetuneConfig) -> TrainResult:
    """``dsn finetune``: load the distilled student, attach the classifier, train with labels."""
    if config.resume is None:
        config = with_checkpoint_defaults(config)
        config.validate()
        return run(config, student_spec(config))
    config.validate()
    return run(config, ModelInit(config.model))
