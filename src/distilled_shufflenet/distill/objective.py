"""What one distillation step computes, apart from the training loop that runs it.

::

    batch (clips; cached target parts, or none) -> targets on the student's slots
        cached:   the stored parts of the batch, laid on the slots (SlotLayout.expand)
        on the fly: TargetBuilder(clips, 2D frame)   frame: the view's, a seeded random draw, or the middle
    StudentMaps(student, adapters)(clips, layout) -> adapted maps ; DistillLoss -> total and every part

Its attributes and methods carry the names of the training loop's objectives (``train_columns``,
``network``, ``model_state``, ...), so the engine's distillation objective adds only the step and the
validation that need the loop's runtime.  No label is read anywhere here.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, ContextManager

import torch
from torch import Tensor, nn

from distilled_shufflenet.distill.dataset import collate_distill
from distilled_shufflenet.distill.targets import SlotLayout, StudentMaps

__all__ = ["Distillation", "column"]


def column(key: str) -> str:
    """A target part's (or tap's) name as a log column: ``"mid/2d"`` -> ``"mid_2d"``."""
    return key.replace("/", "_")


class Distillation:
    """Regress the student's adapted maps on the frozen teachers' target parts (see
    :class:`~distilled_shufflenet.distill.TargetBuilder`).  Reports the loss of every tap and of every
    tap's teacher; ``best.pt`` is the lowest held-out distillation loss.  The checkpoint holds the
    student without its classifier; the per-teacher adapters (if any) are saved apart."""

    monitor = "val_loss"
    higher_is_better = False
    collate = staticmethod(collate_distill)

    def __init__(self, targets: nn.Module, loss: nn.Module, layout: SlotLayout, adapters: nn.Module | None = None,
                 *, description: dict[str, Any] | None = None) -> None:
        self.targets = targets
        self.loss = loss
        self.layout = layout
        self.adapters = adapters if adapters is not None and len(adapters) else None
        self.description = dict(description or {})
        self.parts = (*layout.taps, *layout.keys)
        self.part_columns = tuple(column(k) for k in self.parts)
        # teacher_s: seconds per clip spent computing (or reading) the targets, to see where time goes
        self.train_columns = (*self.part_columns, "teacher_s")
        self.val_columns = ("val_loss", *(f"val_{c}" for c in self.part_columns))

    def network(self, model: nn.Module) -> nn.Module:
        """The student with the per-teacher adapters: what the loop trains and calls with the clips."""
        return StudentMaps(model, self.adapters)

    def batch_targets(self, batch: dict[str, Any], clips: Tensor, device: torch.device, *, frame: str,
                      autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> dict[str, Tensor]:
        """The targets of ``clips`` on the student's slots, float32: from the teacher cache as stored (2D on
        one slot, 3D at the teacher's steps) when the batch carries them, else from the teachers, the 2D one
        seeing the batch's ``frame2d``, the middle frame (``frame="middle"``) or a random one."""
        if "targets" in batch:
            stored = {k: v.to(device, non_blocking=True).float() for k, v in batch["targets"].items()}
            return self.layout.expand(stored)
        if "frame2d" in batch:
            index = batch["frame2d"]
        elif frame == "middle":
            index = torch.full((clips.shape[0],), clips.shape[2] // 2, dtype=torch.long)
        else:  # the global generator: restored on resume, so the frames drawn are the same
            index = torch.randint(0, clips.shape[2], (clips.shape[0],))
        self.targets.to(device)
        with autocast():
            parts = self.targets(clips, index.to(clips.device))
        return {k: v.float() for k, v in parts.items()}

    def regress(self, net: nn.Module, clips: Tensor, target: dict[str, Tensor],
                autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> tuple[Tensor, dict[str, float]]:
        """The loss of ``net``'s adapted maps of ``clips`` against ``target``, and each part's loss summed
        over the batch (the loop's running sums), keyed by :attr:`part_columns`."""
        with autocast():
            maps = net(clips, self.layout)
        total, parts = self.loss(maps, target)
        n = clips.shape[0]
        return total, {column(k): float(parts[k]) * n for k in self.parts}

    def model_state(self, state: dict[str, Tensor]) -> dict[str, Tensor]:
        return {k: v for k, v in state.items() if not k.startswith("fc.")}  # the student has no classifier yet

    def load_model_state(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        result = model.load_state_dict(state, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith("fc.")]
        if missing or result.unexpected_keys:
            raise ValueError(f"resume: the checkpoint does not fit the student (missing {missing[:5]}, "
                             f"unexpected {result.unexpected_keys[:5]})")

    def state_dict(self) -> dict[str, Any]:
        return {"adapters": self.adapters.state_dict()} if self.adapters is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.adapters is not None and state.get("adapters"):
            self.adapters.load_state_dict(state["adapters"])

    def checkpoint_extras(self) -> dict[str, Any]:
        return {"distillation": self.description}
