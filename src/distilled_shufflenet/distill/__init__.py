"""Label-free dual-teacher feature distillation: the library pieces behind ``dsn distill``.

A frozen 2D teacher sees one frame of the student's clip, a frozen 3D teacher the whole clip; their maps,
laid out on the student's time slots at each tap, are the targets the student's adapted maps regress.
A few lines put it in any training loop::

    import torch
    from distilled_shufflenet.models import create_model
    from distilled_shufflenet.distill import (DistillLoss, TargetBuilder, TeacherSpec, build_teacher,
                                              student_maps)

    student = create_model("shufflenet2plus1d", widths=(16, 32, 64), units=(1, 2, 1),
                           adapter_channels=(64, 128), clip_len=16)
    teacher2d = build_teacher(TeacherSpec.parse("resnet18", ["widen_factor=0.25"]), kind="2d")
    teacher3d = build_teacher(TeacherSpec.parse("r3d_50", ["widen_factor=0.0625"]), kind="3d")
    # with weights: TeacherSpec.parse("resnet101:resnet101.pth"), TeacherSpec.parse("r3d_50:r3d50_K_200ep.pth")
    targets = TargetBuilder(student, teacher2d, teacher3d)   # paper split: first half of the slots to 2D
    layout = targets.plan((16, 64, 64))                     # checks slots, clip size and channels once
    loss_fn = DistillLoss()                                  # 0.1 * MSE(mid) + 0.9 * MSE(final)
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-3)

    clip = torch.randn(8, 3, 16, 64, 64)                    # the student's normalised clips
    loss, parts = loss_fn(student_maps(student, clip, layout), targets(clip))
    optimizer.zero_grad(); loss.backward(); optimizer.step()
    print({k: round(float(v), 4) for k, v in parts.items()})  # loss, mid, final, mid/2d, mid/3d, ...

Pieces: :mod:`~distilled_shufflenet.distill.teachers` (specs, building, re-normalisation),
:mod:`~distilled_shufflenet.distill.targets` (slot layout, targets, per-teacher adapters),
:mod:`~distilled_shufflenet.distill.loss`, :mod:`~distilled_shufflenet.distill.objective` (what one step
computes, for any loop), :mod:`~distilled_shufflenet.distill.views` (explicit augmented views),
:mod:`~distilled_shufflenet.distill.cache` (teacher feature cache, with its
:mod:`~distilled_shufflenet.distill.fingerprint` and :mod:`~distilled_shufflenet.distill.shards`),
:mod:`~distilled_shufflenet.distill.dataset`
(the cache's training clips) and :mod:`~distilled_shufflenet.distill.plots` (target / student heatmaps).
"""

from distilled_shufflenet.distill.cache import TeacherCache, TeacherCacheError, cache_fingerprint
from distilled_shufflenet.distill.dataset import CachedViews, collate_distill
from distilled_shufflenet.distill.loss import DEFAULT_TAP_WEIGHTS, LOSSES, DistillLoss
from distilled_shufflenet.distill.objective import Distillation
from distilled_shufflenet.distill.targets import (
    TAPS,
    TEACHER_MODES,
    PartLayout,
    SlotLayout,
    StudentMaps,
    TargetBuilder,
    TeacherAdapters,
    adapter_width,
    draw_frame_index,
    resample,
    student_maps,
)
from distilled_shufflenet.distill.teachers import (
    Renormalize,
    TeacherSpec,
    build_teacher,
    parse_teacher_args,
    teacher_kind,
)
from distilled_shufflenet.distill.views import View, ViewSpec, apply_view, make_view, read_view

__all__ = [
    "CachedViews",
    "DEFAULT_TAP_WEIGHTS",
    "DistillLoss",
    "Distillation",
    "LOSSES",
    "PartLayout",
    "Renormalize",
    "SlotLayout",
    "StudentMaps",
    "TAPS",
    "TEACHER_MODES",
    "TargetBuilder",
    "TeacherAdapters",
    "TeacherCache",
    "TeacherCacheError",
    "TeacherSpec",
    "View",
    "ViewSpec",
    "adapter_width",
    "apply_view",
    "build_teacher",
    "cache_fingerprint",
    "collate_distill",
    "draw_frame_index",
    "make_view",
    "parse_teacher_args",
    "read_view",
    "resample",
    "student_maps",
    "teacher_kind",
]
