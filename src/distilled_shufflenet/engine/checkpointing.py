"""Run checkpoints that describe themselves, and rebuilding a model from one file.

A checkpoint written by a run holds everything needed to rebuild the model and to resume the run::

    format, command              "distilled_shufflenet.run/1", "train" | "finetune"
    model_name, model_kwargs     create_model(model_name, **model_kwargs) rebuilds the architecture
    state_dict                   the weights (no "module." prefix)
    classes, preprocess          class names; clip_len / crop_size / resize / mean / std used in training
    config                       the resolved config of the run
    epoch, epoch_step, step      epochs completed, batches done in the next epoch, optimiser steps in all
    metrics                      the last epoch's log row
    optimizer, scheduler, scaler the optimisation state
    rng                          per-rank Python / NumPy / torch (/ CUDA) generator states
    data                         where the (distributed) sampler stands: seed, epoch, position, batch size
    progress, meters             best monitored score, early-stopping counters, the current epoch's running sums

Every value is a tensor or a plain container, so ``torch.load(weights_only=True)`` reads it.
``last.pt`` and ``best.pt`` live in the run folder and are written atomically.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Protocol, Sequence

import torch
from torch import Tensor, nn

from distilled_shufflenet.checkpoint import CheckpointError, atomic_save, read_checkpoint
from distilled_shufflenet.engine.runtime import Runtime, all_gather_objects, rng_state, unwrap

if TYPE_CHECKING:
    from distilled_shufflenet.models import Preprocess

FORMAT = "distilled_shufflenet.run/1"
LAST = "last.pt"
BEST = "best.pt"
CONFIG = "config.yaml"


class RunConfig(Protocol):
    """What a run checkpoint reads of its run's config (``TrainConfig`` and the configs built on it).

    A protocol rather than the class itself, so that this module stays below ``engine.config``, which
    reads saved configs back from checkpoints when a run resumes."""

    command: str
    seed: int
    batch_size: int

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class TrainState:
    """Where a run stands; saved in every checkpoint."""

    epoch: int = 0  # epochs completed
    epoch_step: int = 0  # batches done in the epoch under way
    step: int = 0  # optimiser steps in all
    best_score: float = -math.inf  # the objective's monitored figure, negated where lower is better
    best_epoch: int = 0
    best_loss: float = math.inf  # lowest monitored loss (validation, else training), for early stopping
    bad_epochs: int = 0
    # running sums of the epoch under way: loss x clips, top-1 hits, clips (all ranks); seconds (this rank)
    meters: dict = field(default_factory=lambda: dict.fromkeys(("loss", "correct", "clips", "wait", "time"), 0.0))

    def ended(self, config: Any) -> str | None:
        """Why a run standing here under ``config`` is over, or ``None``: ``"early_stop"`` (its monitored
        loss has not improved for ``early_stop_patience`` epochs), ``"max_steps"`` (its step budget is
        spent), ``"completed"`` (every epoch done).  The training loop asks it before each epoch, so that a
        resumed run which ended stays ended, and the demo asks it of a saved run to reuse it."""
        patience = getattr(config, "early_stop_patience", 0)
        if patience and self.bad_epochs >= patience:
            return "early_stop"
        if config.max_steps and self.step >= config.max_steps:
            return "max_steps"
        return "completed" if self.epoch >= config.epochs else None


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the weights of ``model`` (unwrapped from DistributedDataParallel)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in unwrap(model).state_dict().items()}


def save_checkpoint(path: str | os.PathLike, checkpoint: Mapping[str, Any]) -> Path:
    """Write ``checkpoint`` atomically (a crash mid-write leaves the previous file whole)."""
    missing = [k for k in ("model_name", "model_kwargs", "state_dict") if k not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint for {path}: missing {', '.join(missing)}")
    return atomic_save({"format": FORMAT, **checkpoint}, path)


def resolve_checkpoint_path(path: str | os.PathLike) -> Path:
    """A run folder means its ``last.pt``; a file means itself."""
    path = Path(path)
    if path.is_dir():
        last = path / LAST
        if not last.is_file():
            raise CheckpointError(f"checkpoint {path}: the run folder holds no {LAST} to resume from")
        return last
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file or run folder")
    return path


def read_run_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by a run (a run folder means its ``last.pt``), checking it is one."""
    path = resolve_checkpoint_path(path)
    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model_name" not in ckpt or "state_dict" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(
            f"checkpoint {path}: not a run checkpoint of this project (expected 'model_name' and "
            f"'state_dict', found {keys}); bare weights load with load_pretrained(model, path)"
        )
    return ckpt


def read_run_config(path: str | os.PathLike) -> dict[str, Any]:
    """The resolved config saved in a run checkpoint (a run folder means its ``last.pt``)."""
    ckpt = read_run_checkpoint(path)
    config = ckpt.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {resolve_checkpoint_path(path)}: holds no run config to resume with")
    return dict(config)


def load_checkpoint(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a run checkpoint describes and load its weights (strictly).

    Returns ``(model, checkpoint)``: the model in eval mode on ``device``, its ``preprocess`` set to
    the one used in training; the checkpoint dict holds the rest (classes, config, metrics, ...).
    """
    from distilled_shufflenet.models import create_model

    ckpt = read_run_checkpoint(path)
    where = resolve_checkpoint_path(path)
    name, kwargs = ckpt["model_name"], dict(ckpt.get("model_kwargs") or {})
    try:
        model = create_model(name, **kwargs)
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"checkpoint {where}: cannot rebuild model {name!r} with {kwargs} ({e})") from None
    # a distilled student has no classifier yet: say so, rather than list the classifier's missing keys
    head, state = getattr(model, "classifier_name", "fc") + ".", ckpt["state_dict"]
    if (isinstance(state, Mapping) and any(k.startswith(head) for k in model.state_dict())
            and not any(k.startswith(head) for k in state)):
        what = "a distilled student" if ckpt.get("command") == "distill" else f"a {name} checkpoint"
        raise CheckpointError(
            f"checkpoint {where}: {what} without a classifier, so it cannot classify videos yet; fine-tune it "
            f"with labels first (dsn finetune --checkpoint {where} --data-root DIR --output RUN) and use the "
            f"checkpoint that writes"
        )
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise CheckpointError(f"checkpoint {where}: weights do not fit {name}: {' '.join(first[:4])}") from None
    if isinstance(ckpt.get("preprocess"), dict) and hasattr(model, "preprocess"):
        model.preprocess = saved_preprocess(ckpt)
    return model.to(device).eval(), ckpt


def saved_preprocess(ckpt: Mapping[str, Any]) -> "Preprocess":
    """The preprocessing a run checkpoint was trained with."""
    from distilled_shufflenet.models import Preprocess

    p = ckpt["preprocess"]
    return Preprocess(p["clip_len"], p["crop_size"], p["resize"], tuple(p["mean"]), tuple(p["std"]),
                      int(p.get("frame_stride", 1)))


# --------------------------------------------------------------------------- resumable run state
def run_checkpoint(net: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, rt: Runtime,
                   state: TrainState, config: RunConfig, classes: Sequence[str], preprocess: "Preprocess",
                   metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The checkpoint of a run at this point (see the module docstring).  Every rank must call it: the
    generator states of all ranks are gathered."""
    model = unwrap(net)
    return {
        "command": config.command,
        "model_name": model.model_name,
        "model_kwargs": dict(model.model_kwargs),
        "state_dict": model_state(model),
        "classes": list(classes),
        "preprocess": preprocess.to_dict(),
        "config": config.to_dict(),
        "epoch": state.epoch,
        "epoch_step": state.epoch_step,
        "step": state.step,
        "metrics": {k: v for k, v in metrics.items() if v is not None},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": rt.scaler.state_dict(),
        "rng": all_gather_objects(rng_state(), rt),
        "data": {"sampler": "EpochSampler", "seed": config.seed, "epoch": state.epoch, "position": state.epoch_step,
                 "batch_size": config.batch_size, "world_size": rt.world_size},
        "progress": {k: v for k, v in dataclasses.asdict(state).items() if k not in ("meters",)},
        "meters": dict(state.meters),
    }


def state_from_checkpoint(ckpt: Mapping[str, Any], *, batch_size: int, world_size: int) -> TrainState:
    """The :class:`TrainState` a checkpoint was written at.  A mid-epoch checkpoint can only be resumed
    with the same batch size and number of processes (the batches already done must be the same)."""
    data = ckpt.get("data") or {}
    if ckpt.get("epoch_step") and (data.get("batch_size"), data.get("world_size")) != (batch_size, world_size):
        raise ValueError(
            f"resume: the checkpoint stopped mid-epoch with batch_size={data.get('batch_size')} on "
            f"{data.get('world_size')} process(es); resume with the same values (got batch_size={batch_size} "
            f"on {world_size}) or from an epoch-end checkpoint"
        )
    return saved_state(ckpt)


def saved_state(ckpt: Mapping[str, Any]) -> TrainState:
    """The :class:`TrainState` a run checkpoint records, unchecked (:func:`state_from_checkpoint` checks
    that it can be resumed)."""
    progress = dict(ckpt.get("progress") or {})
    if "best_top1" in progress:  # checkpoints written before objectives other than top-1 existed
        progress.setdefault("best_score", progress.pop("best_top1"))
    state = TrainState(**{k: progress[k] for k in ("best_score", "best_epoch", "best_loss", "bad_epochs") if k in progress})
    state.epoch, state.epoch_step, state.step = int(ckpt["epoch"]), int(ckpt["epoch_step"]), int(ckpt["step"])
    state.meters.update(ckpt.get("meters") or {})
    return state
