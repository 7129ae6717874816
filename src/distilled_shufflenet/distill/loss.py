"""The distillation loss: a weighted sum over taps of a regression loss between the student's adapted
maps and the teachers' targets, with every part reported for logging.

``loss = sum_tap w_tap * loss(tap)``; the paper's is ``0.9 * MSE(final) + 0.1 * MSE(mid)``. A tap's loss
is the mean over all elements of its target (both teachers' slots together), so with one adapter width
it is exactly the loss of the time-concatenated maps. Teacher weights make that mean a weighted one: an
element of the 2D teacher's slots counts ``w_2d``, one of the 3D teacher's ``w_3d``, divided by the sum of
the weights, so equal weights (the paper) give the plain mean and a tap's loss keeps its scale.
"""

from __future__ import annotations

from typing import Dict, Mapping

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DEFAULT_TAP_WEIGHTS", "DEFAULT_TEACHER_WEIGHTS", "LOSSES", "DistillLoss"]

LOSSES = ("mse", "mse_normalized", "smooth_l1")
DEFAULT_TAP_WEIGHTS = {"mid": 0.1, "final": 0.9}
DEFAULT_TEACHER_WEIGHTS = {"2d": 1.0, "3d": 1.0}


def _checked_weights(name: str, weights: Mapping[str, float]) -> dict[str, float]:
    """``weights`` as a dict, after checking that each is a number >= 0 and one at least is > 0."""
    for key, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, (int, float)) or w < 0:
            raise ValueError(f"{name}: the weight of {key!r} must be a number >= 0, got {w!r}")
    if not any(weights.values()):
        raise ValueError(f"{name}: at least one weight must be > 0, got {dict(weights)}")
    return dict(weights)


class DistillLoss(nn.Module):
    """``forward(student_parts, target_parts) -> (total, parts)``.

    Args:
        weights: ``{tap: weight}`` (default ``{"mid": 0.1, "final": 0.9}``); the taps of the parts
            given to ``forward`` must all have one.
        kind: ``"mse"`` (default); ``"mse_normalized"``, MSE between maps L2-normalised along channels at
            every position (insensitive to each teacher's scale, but blind to how strongly each position
            responds: on the demo's data the student then learned flat maps); ``"smooth_l1"`` (Huber, ``beta``).
        teacher_weights: ``{teacher: weight}`` (default ``{"2d": 1.0, "3d": 1.0}``): within a tap, the
            weight of each element of that teacher's slots in the tap's weighted mean. A tap whose
            teachers all weigh 0 adds nothing.

    ``student_parts`` and ``target_parts`` are ``{"<tap>/<teacher>": (N, C, slots, H, W)}`` with the same
    keys and shapes (:func:`~distilled_shufflenet.distill.student_maps` and
    :class:`~distilled_shufflenet.distill.TargetBuilder` give them). ``total`` is a scalar with the
    student's graph, computed in float32; ``parts`` holds detached scalars: one per tap (``"mid"``), one
    per tap and teacher (``"mid/2d"``, the mean over that teacher's slots) and ``"loss"`` (the total).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, kind: str = "mse", *, beta: float = 1.0,
                 teacher_weights: Mapping[str, float] | None = None) -> None:
        super().__init__()
        if kind not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {kind!r}")
        weights = _checked_weights("tap_weights", DEFAULT_TAP_WEIGHTS if weights is None else weights)
        teacher_weights = _checked_weights("teacher_weights",
                                           DEFAULT_TEACHER_WEIGHTS if teacher_weights is None else teacher_weights)
        if not beta > 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.weights = weights
        self.teacher_weights = teacher_weights
        self.kind = kind
        self.beta = float(beta)

    def elementwise(self, student: Tensor, target: Tensor) -> Tensor:
        """The per-element loss of one part, in float32."""
        s, t = student.float(), target.float()
        if self.kind == "mse_normalized":
            s, t = F.normalize(s, dim=1), F.normalize(t, dim=1)
        if self.kind == "smooth_l1":
            return F.smooth_l1_loss(s, t, reduction="none", beta=self.beta)
        return F.mse_loss(s, t, reduction="none")

    def forward(self, student: Mapping[str, Tensor], targets: Mapping[str, Tensor]) -> tuple[Tensor, Dict[str, Tensor]]:
        if set(student) != set(targets):
            raise ValueError(f"the student's maps and the targets have different parts: "
                             f"{sorted(student)} vs {sorted(targets)}")
        sums: Dict[str, Tensor] = {}
        counts: Dict[str, float] = {}
        parts: Dict[str, Tensor] = {}
        for key in targets:
            tap, _, teacher = key.partition("/")
            s, t = student[key], targets[key]
            if tuple(s.shape) != tuple(t.shape):
                raise ValueError(f"part {key}: the student's map has shape {tuple(s.shape)}, the target "
                                 f"{tuple(t.shape)}")
            if tap not in self.weights:
                raise ValueError(f"tap_weights has no weight for tap {tap!r} (weights: {self.weights})")
            w = float(self.teacher_weights.get(teacher, 1.0))
            total = self.elementwise(s, t.detach()).sum()
            sums[tap] = sums[tap] + w * total if tap in sums else w * total
            counts[tap] = counts.get(tap, 0.0) + w * t.numel()
            parts[key] = total.detach() / max(t.numel(), 1)
        loss = None
        for tap, total in sums.items():
            value = total / counts[tap] if counts[tap] > 0 else total * 0.0
            parts[tap] = value.detach()
            term = self.weights[tap] * value
            loss = term if loss is None else loss + term
        if loss is None:
            raise ValueError("no target parts given to the distillation loss")
        parts["loss"] = loss.detach()
        return loss, parts

