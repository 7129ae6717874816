"""The optimiser and the learning-rate schedule of a training run, built from its config, and the
schedule's exact restore on resume (a cosine schedule follows a changed run length)."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

__all__ = ["build_optimizer", "build_scheduler", "cosine_factor", "restore_scheduler"]


def build_optimizer(params: Sequence[nn.Parameter], config: Any) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov) or Adam, as ``config.optimizer`` says, with its learning rate and weight decay."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def cosine_factor(epochs: int) -> Callable[[int], float]:
    """The learning-rate factor of epoch ``e`` of a cosine schedule of ``epochs`` epochs (1 at 0, 0 at the end)."""
    return lambda e: 0.5 * (1.0 + math.cos(math.pi * min(e, epochs) / epochs))


def build_scheduler(optimizer: torch.optim.Optimizer, config: Any) -> Any:
    """Stepped once per epoch; ``plateau`` is given the monitored loss.  The cosine schedule depends on
    ``config.epochs`` in closed form, so a resumed run with another length follows the new one."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.gamma,
                                                          patience=config.plateau_patience)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, cosine_factor(config.epochs))
    return None


def restore_scheduler(scheduler: Any, state: dict[str, Any] | None, optimizer: torch.optim.Optimizer) -> None:
    """Load a saved schedule; a closed-form (cosine) one then sets the learning rate of the current
    epoch under the config's length, which may differ from the saved run's."""
    if scheduler is None or state is None:
        return
    if isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
        epoch = int(state.get("last_epoch", 0))
        base = list(state.get("base_lrs") or scheduler.base_lrs)
        scheduler.last_epoch = epoch
        scheduler.base_lrs = base
        for group, lr, factor in zip(optimizer.param_groups, base, scheduler.lr_lambdas):
            group["lr"] = lr * factor(epoch)
        scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]
        return
    scheduler.load_state_dict(state)
