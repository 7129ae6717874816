"""How much of each teacher's target a distilled student has learnt (``dsn distill-report RUN``).

The distillation loss says how far the student is from its targets, not how much of them it captured. This
report puts each part of the target (tap x teacher) on the scale of its own variance, over clips of the
run's own unlabelled videos (its data, preprocessing and teachers; centre window and crop; no label read):

- ``variance``: the target's variance over the clips (per element, averaged over channels and positions);
- ``error``: the student's mean squared error against it (the loss's term before its weights);
- ``explained``: ``1 - error / variance``, the share of the target the student predicts (0: no better
  than the target's mean; negative: worse).

The 2D teacher sees one frame drawn at random from the clip, and the student is not told which, so part of
its target cannot be predicted by any student. For each 2D part the report also gives ``between_frames``,
the share of the target's variance that lies between the frames of one clip, and the student's fit to the
clip's map averaged over its frames (the most it can learn): ``error_to_mean`` against ``mean_variance``
(the variance of those averages over the clips), ``explained_of_mean`` their ratio. ``error`` is
``error_to_mean`` plus the between-frame part, averaged over the frames the teacher can draw. A run
distilled with ``--teacher2d-frame middle`` is scored on its 2D parts against the middle frame's target,
the one it learnt (its ``variance`` and ``error`` are that target's; the between-frame share and the
clip-mean fit are measured as for the others).

>>> from distilled_shufflenet.engine.target_fit import target_fit
>>> report = target_fit("runs/distill", videos=60)
>>> report.parts["final/2d"].explained_of_mean
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from distilled_shufflenet.data import VideoClips, eval_transform
from distilled_shufflenet.distill import TargetBuilder, TeacherAdapters, student_maps
from distilled_shufflenet.engine.checkpointing import read_run_checkpoint, resolve_checkpoint_path, saved_preprocess
from distilled_shufflenet.engine.config import saved_run_config
from distilled_shufflenet.engine.distill import DistillConfig, build_teachers, distillation_paths
from distilled_shufflenet.models import create_model, load_pretrained
from distilled_shufflenet.options import option

__all__ = ["PartFit", "PartSums", "TargetFit", "TargetFitConfig", "add_clip", "format_target_fit", "part_fits",
           "target_fit"]

VIDEO_SETS = ("train", "val")


@dataclass
class TargetFitConfig:
    """Settings of ``dsn distill-report``."""

    videos: int = option(60, "videos to measure on, spread evenly over the set")
    on: str = option("train", "the run's training videos, or those it held out for validation", choices=VIDEO_SETS)
    json: str | None = option(None, "also write the report as JSON to this file", metavar="FILE")
    progress: bool = option(True, "a progress bar on stderr")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.on not in VIDEO_SETS:
            raise ValueError(f"on: expected one of {', '.join(VIDEO_SETS)}, got {self.on!r}")
        if isinstance(self.videos, bool) or not isinstance(self.videos, int) or self.videos < 2:
            raise ValueError(f"videos: expected an integer of at least 2 (a variance needs two clips), got {self.videos!r}")


@dataclass
class PartFit:
    """One part of the target (``"mid/2d"``, ...): see the module's text for each figure."""

    key: str
    variance: float
    error: float
    between_frames: float | None = None  # 2D parts only
    error_to_mean: float | None = None
    mean_variance: float | None = None

    @property
    def explained(self) -> float:
        return _share(self.error, self.variance)

    @property
    def explained_of_mean(self) -> float | None:
        return None if self.error_to_mean is None else _share(self.error_to_mean, self.mean_variance)

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "explained": self.explained, "explained_of_mean": self.explained_of_mean}


@dataclass
class TargetFit:
    """The report of :func:`target_fit`: the run, the videos it was measured on and every part's fit."""

    run: str
    videos: int
    on: str
    frame2d: str
    parts: dict[str, PartFit] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"run": self.run, "videos": self.videos, "on": self.on, "frame2d": self.frame2d,
                "parts": {k: p.to_dict() for k, p in self.parts.items()}, "skipped": self.skipped}


def _share(error: float, variance: float | None) -> float:
    return float("nan") if not variance else 1.0 - error / variance


class _Moments:
    """Running per-element sums of samples of one shape, for their variance over the samples."""

    def __init__(self) -> None:
        self.n, self.s1, self.s2 = 0, None, None

    def add(self, x: Tensor) -> None:  # (M, ...) M samples
        x = x.double()
        s1, s2 = x.sum(0), (x * x).sum(0)
        self.s1 = s1 if self.s1 is None else self.s1 + s1
        self.s2 = s2 if self.s2 is None else self.s2 + s2
        self.n += x.shape[0]

    def variance(self) -> float:
        if self.n < 2:
            return float("nan")
        mean = self.s1 / self.n
        return float((self.s2 / self.n - mean * mean).clamp_min(0).mean())


def load_distilled_run(run: str | Path) -> tuple[Any, DistillConfig, dict[str, Any]]:
    """The student of a ``dsn distill`` run (a folder means its ``last.pt``), in eval mode, its run config
    with paths as seen from here, and the checkpoint."""
    ckpt = read_run_checkpoint(run)
    where = resolve_checkpoint_path(run)
    if ckpt.get("command") != "distill":
        raise ValueError(f"{where}: not a dsn distill run (written by dsn {ckpt.get('command') or 'an unknown command'});"
                         " give the folder or last.pt of a distillation")
    config = saved_run_config(DistillConfig, where)
    student = create_model(ckpt["model_name"], **dict(ckpt.get("model_kwargs") or {}))
    load_pretrained(student, where, drop_classifier=True)  # a distilled student has every weight but the classifier
    student.preprocess = saved_preprocess(ckpt)
    return student.eval(), config, ckpt


@torch.no_grad()
def target_fit(run: str | Path, *, videos: int = 60, on: str = "train", progress: bool = True) -> TargetFit:
    """Measure how much of each target part the distilled student of ``run`` explains, on ``videos`` of its
    training videos (``on="train"``, spread evenly over them) or of those it held out (``on="val"``)."""
    TargetFitConfig(videos=videos, on=on)  # checks both
    student, config, ckpt = load_distilled_run(run)
    teacher2d, teacher3d = build_teachers(config, torch.device("cpu"))
    targets = TargetBuilder(student, teacher2d, teacher3d, teachers=config.teachers, split=config.teacher_split,
                            per_teacher_adapters=config.per_teacher_adapters, stride3d=config.teacher3d_frame_stride)
    pre = student.preprocess
    layout = targets.plan((pre.clip_len, pre.crop_size, pre.crop_size))
    adapters = None
    if config.per_teacher_adapters:
        adapters = TeacherAdapters(student, layout)
        adapters.load_state_dict((ckpt.get("objective") or {}).get("adapters") or {})
        adapters.eval()
    train_paths, val_paths = distillation_paths(config)
    paths = train_paths if on == "train" else val_paths
    if not paths:
        raise ValueError(f"on: the run {resolve_checkpoint_path(run).parent} held no videos out for validation; "
                         "measure it on its training videos (--on train)")
    picked = [paths[i * len(paths) // min(videos, len(paths))] for i in range(min(videos, len(paths)))]
    clips = VideoClips(picked, source=f"{len(picked)} {'training' if on == 'train' else 'held-out'} videos",
                       clip_len=pre.clip_len, frame_stride=config.frame_stride, sampling="center",
                       transform=eval_transform(pre.crop_size, pre.resize, pre.mean, pre.std), on_error="report",
                       seed=config.seed)
    sums: dict[str, PartSums] = {}
    report = TargetFit(run=str(resolve_checkpoint_path(run)), videos=0, on=on, frame2d=config.teacher2d_frame)
    for i in tqdm(range(len(clips)), desc="target fit", unit="clip", disable=not progress):
        sample = clips[i]
        if "clip" not in sample:  # unreadable: counted and named, never fatal
            report.skipped += [f"{f['path']}: {f['reason']}" for f in sample["failures"]]
            continue
        clip = sample["clip"].unsqueeze(0)  # (1, 3, T, H, W)
        report.videos += 1
        fixed = targets(clip, clip.shape[2] // 2)  # for the 3D parts (the 2D ones come from every frame below)
        frames = targets.frame_targets(clip) if targets.teacher2d is not None else {}
        add_clip(sums, student_maps(student, clip, layout, adapters), fixed, frames, frame2d=config.teacher2d_frame)
    if report.videos < 2:
        raise ValueError(f"{report.videos} of {len(picked)} videos could be read; at least 2 are needed: "
                         + "; ".join(report.skipped[:3]))
    report.parts = part_fits(sums)
    return report


class PartSums:
    """What :func:`add_clip` gathers of one target part over the clips."""

    def __init__(self) -> None:
        self.target, self.means, self.frames = _Moments(), _Moments(), _Moments()
        self.error = self.error_to_mean = self.within = 0.0
        self.clips = 0


def add_clip(sums: dict[str, PartSums], student: dict[str, Tensor], fixed: dict[str, Tensor],
             frames: dict[str, Tensor], *, frame2d: str = "random") -> None:
    """Add one clip: the student's parts ``(1, C, slots, H, W)``, the targets of the parts that do not depend on
    a frame (same shapes), and for the 2D parts the target of every frame ``(1, C, T, H, W)``. A run distilled
    on random frames is scored on the 2D parts against every frame (the expectation of its loss), one
    distilled on the middle frame (index ``T // 2``, as ``--teacher2d-frame middle`` takes it) against that
    frame's target."""
    for key, s in student.items():
        acc = sums.setdefault(key, PartSums())
        if key in frames:
            every = frames[key]
            mean = every.mean(2, keepdim=True)  # (1, C, 1, H, W): the clip's map averaged over its frames
            if frame2d == "middle":
                middle = every[:, :, every.shape[2] // 2].unsqueeze(2)  # (1, C, 1, H, W)
                acc.target.add(middle[:, :, 0])
                acc.error += float(((s - middle) ** 2).mean())
            else:  # its target is every frame's (acc.frames below)
                acc.error += float(((s.unsqueeze(3) - every.unsqueeze(2)) ** 2).mean())  # over slots and frames
            acc.means.add(mean[:, :, 0])
            acc.frames.add(every[0].transpose(0, 1))  # T samples of (C, H, W): every target the frame can give
            acc.error_to_mean += float(((s - mean) ** 2).mean())
            acc.within += float(((every - mean) ** 2).mean())
        else:
            acc.target.add(fixed[key])
            acc.error += float(((s - fixed[key]) ** 2).mean())
        acc.clips += 1


def part_fits(sums: dict[str, PartSums]) -> dict[str, PartFit]:
    """Each part's :class:`PartFit` from what :func:`add_clip` gathered."""
    out = {}
    for key, acc in sums.items():
        n = acc.clips
        part = PartFit(key, variance=(acc.target if acc.target.n else acc.frames).variance(), error=acc.error / n)
        if acc.means.n:
            part.between_frames = acc.within / n / acc.frames.variance() if acc.frames.n > 1 else float("nan")
            part.error_to_mean, part.mean_variance = acc.error_to_mean / n, acc.means.variance()
        out[key] = part
    return out


def format_target_fit(report: TargetFit) -> str:
    """The report as a table, one row per target part, with what its columns mean."""
    def pct(v: float | None) -> str:
        return "" if v is None else ("n/a" if math.isnan(v) else f"{100 * v:.0f} %")

    def num(v: float | None) -> str:
        return "" if v is None else f"{v:.3g}"

    lines = [f"target fit of {report.run}: {report.videos} {report.on} videos (centre clip and crop), "
             f"2D teacher's frame: {report.frame2d} during distillation, every frame here",
             "",
             "| part | target variance | student's error | explained | between frames | clip-mean variance "
             "| error to the clip mean | explained of the clip mean |",
             "|---|---|---|---|---|---|---|---|"]
    for key, p in report.parts.items():
        lines.append(f"| {key} | {num(p.variance)} | {num(p.error)} | {pct(p.explained)} | {pct(p.between_frames)} "
                     f"| {num(p.mean_variance)} | {num(p.error_to_mean)} | {pct(p.explained_of_mean)} |")
    lines += ["", "explained: 1 - error / variance (0 %: no better than the target's mean). between frames: the share "
              "of a 2D target's variance that lies between the frames of one clip, which no student can predict from "
              "the clip; explained of the clip mean: the student's fit to the clip's 2D map averaged over its frames."]
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} unreadable videos: " + "; ".join(report.skipped[:3]))
    return "\n".join(lines)
