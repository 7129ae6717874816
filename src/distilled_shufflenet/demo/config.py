"""The settings of ``dsn demo`` (:class:`DemoConfig`) and their checks, the teacher files included."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from distilled_shufflenet.distill import LOSSES, DistillLoss
from distilled_shufflenet.options import option, plain

__all__ = ["DISTILL_MODES", "SHIPPED_TEACHERS", "TEACHER_FILES", "DemoConfig", "check_teacher_files"]

TEACHER_FILES = {"3d": "teacher3d.pt", "2d": "teacher2d.pt"}
# the demo teachers the project ships (made by `dsn demo --train-teachers DIR` with the default config)
SHIPPED_TEACHERS = Path(__file__).resolve().parents[1] / "assets" / "demo_teachers"
DISTILL_MODES = ("both", "3d", "2d")
STEMS = ("3d", "2plus1d")
STUDY_SETTINGS = ("distilled_both", "distilled_3d", "scratch_equal")  # the study's lines, in this order


def _fractions(value: Any) -> tuple[float, ...]:
    """``"0.05,0.1,1"`` (or a list) -> label fractions, each in (0, 1]."""
    try:
        values = tuple(float(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"study_fractions: expected comma-separated shares such as 0.1,0.2,1, got {value!r}") from None
    if not values or not all(0 < v <= 1 for v in values):
        raise ValueError(f"study_fractions: expected shares in (0, 1], got {value!r}")
    return values


def _seeds(value: Any) -> tuple[int, ...]:
    """``"0,1,2"`` (or a list) -> seeds >= 0."""
    try:
        values = tuple(int(v) for v in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        raise ValueError(f"study_seeds: expected comma-separated seeds such as 0,1,2, got {value!r}") from None
    if not values or min(values) < 0:
        raise ValueError(f"study_seeds: expected seeds >= 0, got {value!r}")
    return values


def _settings(value: Any) -> tuple[str, ...]:
    """``"distilled_both,scratch_equal"`` (or a list) -> some of :data:`STUDY_SETTINGS`, in that order."""
    values = [v.strip() for v in value.split(",")] if isinstance(value, str) else list(value or ())
    bad = [v for v in values if v not in STUDY_SETTINGS]
    if bad or not values:
        raise ValueError(f"study_settings: expected some of {','.join(STUDY_SETTINGS)}, got {value!r}")
    return tuple(v for v in STUDY_SETTINGS if v in values)


@dataclass
class DemoConfig:
    """Every setting of ``dsn demo``; the defaults are the recipe docs/demo.md gives and explains,
    :meth:`quick` is the tiny run of the test.  The fields with help text are ``dsn demo``'s flags; a
    ``--config FILE.yaml`` may set any field."""

    output: str = option("runs/demo", "run folder (default: runs/demo, runs/demo_quick with --quick; with --study "
                         "runs/study, runs/study_quick)")
    # data: the teachers' source and the user's target (SynthActions, UCF101 layout)
    classes: tuple[str, ...] | None = None  # None: every SynthActions class
    source_seed: int = 1
    target_seed: int = 0
    source_groups: int = 16
    clips_per_group: int = 2  # the source's (the shipped teachers were trained on 16 groups x 2 clips)
    # the target: training actors (the videos distilled on, a share of them labelled), test actors and
    # validation actors (only for the validation-stopped reference of the study); one clip per actor and
    # class, so that a label fraction can take one actor at a time
    target_groups: int = 24
    target_test_groups: int = 20
    target_val_groups: int = 0
    target_clips_per_group: int = 1
    # class-typical props (SynthActions' cue_strength): the share of videos that show their class's prop,
    # which gives the one-frame 2D teacher something to see; 0 (the default): classes defined by motion alone
    source_cue_strength: float = 0.0
    target_cue_strength: float = 0.0
    frames: int = 40
    video_size: tuple[int, int] = (160, 120)
    # clips (students and teachers alike)
    clip_len: int = 16
    frame_stride: int = 2
    crop_size: int = 64
    resize: int | None = None  # None: the crop size's model default
    # the small student (its adapters take the teachers' channels at mid / final)
    student_widths: tuple[int, int, int] = (16, 32, 64)
    student_units: tuple[int, int, int] = (1, 2, 1)
    # a light stem without max-pool: the final tap keeps the teachers' 4x4 grid at the 64 px crop
    student_stem_channels: int = 24
    student_stem_pool: bool = False
    student_stem: str = option("3d", "the student's stem: 3d (the paper's 3x7x7 convolution) or 2plus1d (1x7x7 then "
                               "3x1x1, fewer MACs)", choices=STEMS)
    # teachers
    teacher3d: str = "r3d_18"
    teacher2d: str = "resnet18"
    teacher_width: float = 0.25
    teacher_epochs: int = 40
    # a folder holding teacher3d.pt / teacher2d.pt: no teacher training
    teachers_from: str | None = option(None, "read the teachers from DIR/teacher3d.pt and DIR/teacher2d.pt "
                                       "(default: the demo teachers the project ships; --quick trains its own)",
                                       metavar="DIR")
    export_teachers: str | None = option(None, "train the teachers on the source data and write them to DIR "
                                         "(teacher3d.pt, teacher2d.pt)", flag="--train-teachers", metavar="DIR")
    # distillation: Adam at 1e-2, as 1e-3 (the paper's, for many UCF101 epochs) is too slow for 600 steps
    distill_epochs: int = 20
    distill_loss: str = "mse"
    distill_lr: float = 1e-2
    # the 2D and 3D teachers' slot weights in the two-teacher loss: the one-frame 2D teacher weighs less
    distill_teacher_weights: tuple[float, float] = (0.25, 1.0)
    distill_modes: tuple[str, ...] = ("both",)  # the study adds "3d"; "2d" alone is a further ablation
    cache_views: int = 4
    # fine-tuning: a seeded share of the training videos labelled (stratified by class, by whole actors)
    label_fraction: float = option(0.2, "share of the target's training videos whose labels the students see")
    finetune_steps: int = 300
    linear_probe: bool = True  # also score the distilled backbone frozen, with only a classifier trained
    # the scratch baseline gets as many optimiser steps as distillation + fine-tuning (equal compute)
    # the study's validation-stopped reference: all labels, stopped when the validation loss has not improved
    # for reference_patience epochs (its rate cut x0.1 after half of that); patient, as 60 validation videos
    # give a noisy loss and a student from scratch learns slowly at first
    reference_max_epochs: int = 150
    reference_patience: int = 15
    batch_size: int = 8
    lr: float = 1e-3
    # evaluation and bench
    eval_clips: int = 3
    eval_crops: int = 1
    bench_warmup: int = 1
    bench_repeats: int = 3
    bench_full_size: bool = True  # also bench at the paper's 16x224x224
    workers: int = 2
    seed: int = option(0, "seed of the training runs and of the labelled groups")
    progress: bool = option(True, "progress bars")
    # the label-efficiency study (dsn demo --study)
    study: bool = option(False, "run the label-efficiency study instead of the single run: every label fraction x "
                         "{distilled from both teachers, from the 3D teacher, equal-compute scratch} x seed, one "
                         "distillation per seed and teacher setting, and a validation-stopped scratch reference "
                         "on all labels; writes study.md, study.json and study.png")
    study_fractions: tuple[float, ...] = option((0.05, 0.1, 0.2, 0.5, 1.0), "label fractions of the study",
                                                parse=_fractions, metavar="F,F,...")
    study_seeds: tuple[int, ...] = option((0, 1, 2), "seeds of the study", parse=_seeds, metavar="S,S,...")
    study_settings: tuple[str, ...] = option(STUDY_SETTINGS, "the study's students: distilled_both, distilled_3d "
                                             "(each distilled once per seed, fine-tuned at every fraction) and "
                                             "scratch_equal (from scratch with equal compute); the validation-"
                                             "stopped reference always runs", parse=_settings, metavar="S,S,...")
    # the study distils longer than the single run, whose 15-minute budget caps distill_epochs: 20 epochs
    # leave the distillation loss still falling, and 60 lift the student fine-tuned on 10 % of the labels
    # from 73 to 87.5 % (seed 0; docs/demo.md)
    study_distill_epochs: int = option(60, "distillation epochs of the study, per seed and teacher setting "
                                       "(the single run distils distill_epochs, 20, to fit its time budget)",
                                       metavar="N")

    @classmethod
    def quick(cls, **overrides: Any) -> "DemoConfig":
        """Tiny data and 1-2 epochs per stage: every stage runs, in a few CPU minutes."""
        values: dict[str, Any] = dict(
            classes=("JumpingJacks", "SquatDown", "WalkLeft", "Punch"), source_groups=4, target_groups=3,
            target_test_groups=1, clips_per_group=1, frames=20, video_size=(64, 48), clip_len=16, frame_stride=1, crop_size=48,
            resize=48, teacher_width=0.125, teacher_epochs=1, distill_epochs=1, cache_views=1,
            finetune_steps=2, batch_size=4, eval_clips=1, bench_repeats=1, bench_full_size=False, workers=0,
            reference_max_epochs=2, reference_patience=1, study_fractions=(0.5, 1.0), study_seeds=(0,),
            study_distill_epochs=1,
            output="runs/demo_quick",
        )
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        for name in ("source_groups", "target_groups", "target_test_groups", "target_clips_per_group",
                     "clips_per_group", "frames", "clip_len", "frame_stride", "crop_size", "teacher_epochs",
                     "distill_epochs", "cache_views", "finetune_steps", "batch_size", "eval_clips", "bench_repeats",
                     "reference_max_epochs", "reference_patience", "study_distill_epochs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("lr", "distill_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a learning rate > 0, got {getattr(self, name)}")
        if not 0 < self.label_fraction <= 1:
            raise ValueError(f"label_fraction: expected a share in (0, 1] (--label-fraction), got {self.label_fraction}")
        for name in ("source_cue_strength", "target_cue_strength"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}: expected a probability in 0..1, got {getattr(self, name)}")
        if self.target_val_groups < 0:
            raise ValueError(f"target_val_groups: expected a count >= 0, got {self.target_val_groups}")
        if self.target_groups + self.target_test_groups + self.target_val_groups > 99:
            raise ValueError("target_groups, target_test_groups, target_val_groups: at most 99 actor groups in all, "
                             f"got {self.target_groups + self.target_test_groups + self.target_val_groups}")
        if self.student_stem not in STEMS:
            raise ValueError(f"student_stem: expected one of {', '.join(STEMS)} (--student-stem), got {self.student_stem!r}")
        _fractions(self.study_fractions)
        _seeds(self.study_seeds)
        _settings(self.study_settings)
        if len(self.distill_teacher_weights) != 2:
            raise ValueError(f"distill_teacher_weights: expected two weights (2D, 3D), got {self.distill_teacher_weights}")
        try:  # the loss's own check
            DistillLoss(teacher_weights=dict(zip(("2d", "3d"), self.distill_teacher_weights)))
        except ValueError as e:
            raise ValueError(f"distill_teacher_weights: {e}") from None
        if self.distill_loss not in LOSSES:
            raise ValueError(f"distill_loss: expected one of {', '.join(LOSSES)}, got {self.distill_loss!r}")
        bad = [m for m in self.distill_modes if m not in DISTILL_MODES]
        if bad or not self.distill_modes:
            raise ValueError(f"distill_modes: expected some of {', '.join(DISTILL_MODES)}, got {list(self.distill_modes)}")
        if self.source_seed == self.target_seed:
            raise ValueError("source_seed: must differ from target_seed (the teachers come from other actors)")
        if self.teachers_from is not None:
            for kind, name in TEACHER_FILES.items():
                if not (Path(self.teachers_from) / name).is_file():
                    raise FileNotFoundError(f"teachers_from: {Path(self.teachers_from) / name}: no such file "
                                            f"(the {kind} teacher; make them with dsn demo --train-teachers DIR)")
            if self.export_teachers is not None:
                raise ValueError("export_teachers: not with teachers_from (nothing is trained to export)")
            check_teacher_files(self)
        if self.crop_size > min(self.video_size):
            raise ValueError(f"crop_size: {self.crop_size} exceeds the videos' {self.video_size[0]}x{self.video_size[1]}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def check_teacher_files(cfg: DemoConfig) -> None:
    """Refuse teacher files that are not the teachers ``cfg`` describes (model, width), naming the field."""
    for kind, name in TEACHER_FILES.items():
        path = Path(cfg.teachers_from) / name  # type: ignore[arg-type]
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ValueError(f"teachers_from: {path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
        want = cfg.teacher3d if kind == "3d" else cfg.teacher2d
        got = ckpt.get("model_name")
        width = (ckpt.get("model_kwargs") or {}).get("widen_factor", 1.0)
        if got != want:
            raise ValueError(f"teachers_from: {path} holds {got!r}, the demo's {kind} teacher is {want!r} "
                             f"(teacher{kind}); train matching ones with dsn demo --train-teachers DIR")
        cues = float((ckpt.get("demo_teacher") or {}).get("source_cue_strength", 0.0))
        if cues != float(cfg.source_cue_strength):
            raise ValueError(f"source_cue_strength: {path} was trained on a source with cue strength {cues:g}, the demo "
                             f"asks for {cfg.source_cue_strength:g}; train matching teachers with "
                             "dsn demo --train-teachers DIR")
        if float(width) != float(cfg.teacher_width):
            raise ValueError(f"teacher_width: {path} has widen_factor {width}, the demo asks for "
                             f"{cfg.teacher_width}; train matching ones with dsn demo --train-teachers DIR")
