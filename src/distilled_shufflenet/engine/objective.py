"""What one step of the training loop computes: an :class:`Objective` (supervised classification,
feature distillation) and the :class:`StepResult` of a step.  The loop (:func:`~distilled_shufflenet.engine.loop.fit`)
owns everything else."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

from torch import Tensor, nn
from torch.utils.data import DataLoader

from distilled_shufflenet.data import collate_clips
from distilled_shufflenet.engine.runtime import Runtime

__all__ = ["RUN_COLUMNS", "Objective", "StepResult"]

RUN_COLUMNS = ("lr", "clips_per_s", "data_wait_share")


@dataclass
class StepResult:
    """What one step of an objective computed on this process's batch."""

    loss: Tensor  # scalar, the one backpropagated
    clips: int  # clips in the batch
    sums: dict[str, float]  # per-batch sums of the objective's figures (keys: objective.train_columns)


class Objective:
    """What one training step computes and which figures it reports (a base to subclass).

    ``train_columns`` name running sums that :meth:`step` returns for each batch; the loop adds them
    up over the epoch (and over processes) and logs ``train_<name> = sum / clips``. :meth:`validate`
    returns the ``val_*`` figures of the epoch end (``val_loss`` among them when there is one).
    ``monitor`` is the figure that chooses ``best.pt`` (``higher_is_better`` says its direction).
    """

    train_columns: tuple[str, ...] = ()
    val_columns: tuple[str, ...] = ("val_loss",)
    monitor: str = "val_loss"
    higher_is_better: bool = False
    collate: Callable[[Sequence[Any]], dict[str, Any]] = staticmethod(collate_clips)  # batches of samples

    def network(self, model: nn.Module) -> nn.Module:
        """The module the loop trains, wraps in DDP and calls with the batch's clips."""
        return model

    def step(self, net: nn.Module, batch: dict[str, Any], rt: Runtime) -> StepResult:
        raise NotImplementedError

    def validate(self, model: nn.Module, loader: DataLoader, rt: Runtime) -> dict[str, float]:
        raise NotImplementedError

    def set_train_mode(self, net: nn.Module) -> None:
        net.train()

    def state_dict(self) -> dict[str, Any]:
        """Trainable state the objective owns beside the model (saved in every checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def model_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        """The model weights a checkpoint stores (all of them by default)."""
        return state

    def load_model_state(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        """Restore what :meth:`model_state` stored, for an exact resume."""
        model.load_state_dict(state, strict=True)

    def checkpoint_extras(self) -> dict[str, Any]:
        """Extra self-describing entries of the checkpoint (e.g. the teachers a student was distilled from)."""
        return {}

    @property
    def log_columns(self) -> tuple[str, ...]:
        return ("epoch", "step", "train_loss", *(f"train_{c}" for c in self.train_columns), *self.val_columns,
                *RUN_COLUMNS)
