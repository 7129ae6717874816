"""What the student is learning: channel-mean heatmaps of the targets and of the student's adapted maps,
per tap and time slot, for one clip.

::

                 slot 0 (2D)   slot 1 (2D)   slot 2 (3D)   slot 3 (3D)
    mid target     [heat]        [heat]        [heat]        [heat]
    mid student    [heat]        [heat]        [heat]        [heat]
    final target   [heat]        [heat]
    final student  [heat]        [heat]

A tap's two rows share one colour scale, so the student's row reads directly against its target's.
Drawn with matplotlib's Agg canvas and written atomically, like the training curves.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import torch
from matplotlib.figure import Figure
from torch import Tensor

from distilled_shufflenet.distill.targets import SlotLayout, TargetBuilder, TeacherAdapters, student_maps
from distilled_shufflenet.io import save_figure
from distilled_shufflenet.models import TapModel

__all__ = ["plot_distillation", "plot_maps"]


def _slot_means(parts: Mapping[str, Tensor], layout: SlotLayout, tap: str, sample: int) -> list[tuple[str, Tensor]]:
    """``[(teacher, (H, W) channel mean)]`` for every slot of ``tap``, in slot order."""
    out = []
    for p in layout.tap_parts(tap):
        x = parts[p.key][sample].detach().float().cpu()  # (C, slots, H, W)
        out += [(p.teacher, x[:, s].mean(0)) for s in range(p.slots)]
    return out


def plot_maps(student: Mapping[str, Tensor], targets: Mapping[str, Tensor], layout: SlotLayout,
              png_path: str | os.PathLike, *, sample: int = 0, title: str | None = None, dpi: int = 100) -> Path:
    """Heatmaps of ``targets`` and ``student`` parts (``{"mid/2d": (N, C, slots, H, W), ...}``) for clip
    ``sample`` of the batch: two rows per tap (target, student), one column per time slot, each column
    labelled with the teacher of its slot. Returns the PNG's path."""
    taps = layout.taps
    columns = max(layout.student_taps[t][1] for t in taps)
    fig = Figure(figsize=(1.9 * columns + 1.2, 1.8 * 2 * len(taps) + 0.6))
    axes = fig.subplots(2 * len(taps), columns, squeeze=False)
    for row, tap in enumerate(taps):
        rows = [("target", _slot_means(targets, layout, tap, sample)),
                ("student", _slot_means(student, layout, tap, sample))]
        values = torch.stack([m for _, pairs in rows for _, m in pairs])
        vmin, vmax = float(values.min()), float(values.max())
        for r, (who, pairs) in enumerate(rows):
            for col in range(columns):
                ax = axes[2 * row + r][col]
                ax.set_xticks([])
                ax.set_yticks([])
                if col >= len(pairs):
                    ax.axis("off")
                    continue
                teacher, heat = pairs[col]
                image = ax.imshow(heat.numpy(), cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
                if r == 0:
                    ax.set_title(f"{tap} slot {col} ({teacher.upper()})", fontsize=8)
                if col == 0:
                    ax.set_ylabel(f"{tap}\n{who}", fontsize=8)
            fig.colorbar(image, ax=[axes[2 * row + r][c] for c in range(len(pairs))], shrink=0.8, pad=0.02)
    fig.suptitle(title or "channel means: teachers' targets vs the student's adapted maps", fontsize=9)
    return save_figure(fig, png_path, dpi=dpi)


@torch.no_grad()
def plot_distillation(student: TapModel, builder: TargetBuilder, clip: Tensor, png_path: str | os.PathLike, *,
                      frame_index: Tensor | int = 0, adapters: TeacherAdapters | None = None, sample: int = 0,
                      title: str | None = None) -> Path:
    """Compute the targets and the student's adapted maps of ``clip`` ``(N, 3, T, H, W)`` (the student
    in eval mode for this, then put back) and draw them with :func:`plot_maps`."""
    layout = builder.plan(clip.shape[2:])
    was_training = student.training, adapters.training if adapters is not None else False
    student.eval()
    if adapters is not None:
        adapters.eval()
    try:
        maps = student_maps(student, clip, layout, adapters)
    finally:
        student.train(was_training[0])
        if adapters is not None:
            adapters.train(was_training[1])
    targets = builder(clip, frame_index)
    return plot_maps(maps, targets, layout, png_path, sample=sample, title=title)
