"""Label-free dual-teacher distillation (``dsn distill``): its config and the run.

::

    distill(config)
        unlabelled videos (data.unlabelled_videos): a folder (or a labelled dataset's training videos,
                           labels dropped) + --extra-unlabelled folders (+ the test videos, only when asked)
            -> held out for validation: ~5 % of them, by whole actor groups where names have them
        student (+ --init weights) ; frozen teachers from files ; TargetBuilder.plan(clip) checks all
        loop.fit(student, ..., DistillationObjective)   the same loop as dsn train: resume, torchrun, NaN stop
            step: clip -> teachers' target parts (or the teacher cache: distill.CachedViews) ; student's
                  adapted maps -> loss (distill.Distillation)
        last.pt / best.pt: the student (backbone + adapters, no classifier), as dsn finetune reads it

No label is read anywhere on this path: the datasets are :class:`~distilled_shufflenet.data.VideoClips`
of paths alone, whose samples have no ``"label"`` key.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distilled_shufflenet.data import FailureLog, VideoClips, eval_transform, train_transform
from distilled_shufflenet.data.groups import holdout
from distilled_shufflenet.data.collection import unlabelled_videos
from distilled_shufflenet.data.datasets import OFFICIAL_SPLITS
from distilled_shufflenet.data.factory import LABELLED_KINDS
from distilled_shufflenet.distill import DistillLoss, TargetBuilder, TeacherAdapters, TeacherSpec, build_teacher
from distilled_shufflenet.distill.cache import TeacherCache
from distilled_shufflenet.distill.dataset import CachedViews
from distilled_shufflenet.distill.loss import LOSSES
from distilled_shufflenet.distill.objective import Distillation
from distilled_shufflenet.distill.plots import plot_distillation
from distilled_shufflenet.distill.targets import TEACHER_MODES
from distilled_shufflenet.distill.views import FRAME2D, ViewSpec
from distilled_shufflenet.engine.checkpointing import read_run_checkpoint
from distilled_shufflenet.engine.config import TrainConfig
from distilled_shufflenet.engine.lock import RunLock
from distilled_shufflenet.engine.loop import FitResult, fit
from distilled_shufflenet.engine.objective import Objective, StepResult
from distilled_shufflenet.engine.runtime import Runtime, all_reduce_sums, seed_everything, setup_runtime, teardown_runtime
from distilled_shufflenet.engine.train import check_model_input, resolve_preprocess
from distilled_shufflenet.models import Preprocess, create_model, load_pretrained
from distilled_shufflenet.options import need_path, option

DISTILL_DATASETS = ("folder", *LABELLED_KINDS)
MAPS_PNG = "maps.png"


@dataclass
class DistillConfig(TrainConfig):
    """Settings of ``dsn distill``; the defaults are the paper's (Adam lr 1e-3, batch 8, x0.1 on a
    10-epoch plateau of the loss; resnet101 and r3d_50 teachers; 0.9 x final + 0.1 x mid MSE)."""

    # teachers and targets
    teacher2d: str = option("resnet101", "the 2D teacher, NAME[:WEIGHTS_FILE] (ImageNet ResNet-101 in the paper)")
    teacher3d: str = option("r3d_50", "the 3D teacher, NAME[:WEIGHTS_FILE] (a 3D ResNet-50 in the paper)")
    teacher2d_kwargs: dict = option({}, "2D teacher builder argument KEY=VALUE, repeatable (e.g. widen_factor=0.25)",
                                    flag="--teacher2d-arg")
    teacher3d_kwargs: dict = option({}, "3D teacher builder argument KEY=VALUE, repeatable", flag="--teacher3d-arg")
    allow_random_teachers: bool = option(False, "distil from a teacher given without a weights file (random "
                                              "weights: its maps teach nothing; for tests and timing only)")
    teacher3d_frame_stride: int = option(1, "the 3D teacher sees every n-th frame of the student's clip (e.g. 2 "
                                          "for a teacher trained at twice the student's --frame-stride)")
    teachers: str = option("both", "distil from both teachers (the paper) or from one alone (ablation)",
                           choices=TEACHER_MODES)
    teacher2d_frame: str = option("random", "the clip frame the 2D teacher sees: random (the paper: one frame per "
                                  "view, which the student is not told) or middle (the clip's middle frame; "
                                  "worse in the demo's study)", choices=FRAME2D)
    teacher_split: float = option(0.5, "the 2D teacher's share of each tap's time slots (the paper: the first half)")
    tap_weights: tuple[float, float] = option((0.1, 0.9), "loss weights of the mid and final taps")
    teacher_weights: tuple[float, float] = option((1.0, 1.0), "weights of the 2D and 3D teachers' slots in each "
                                                  "tap's loss, a weighted mean (the paper: equal)")
    loss: str = option("mse", "regression loss: MSE (the paper), MSE on channel-L2-normalised maps, smooth L1",
                       choices=LOSSES)
    per_teacher_adapters: bool = option(False, "where a teacher's channels differ from the student's adapters, "
                                             "regress it through an adapter of its own")
    # data: unlabelled videos
    dataset: str = option("folder", "where the unlabelled videos come from: every video under --data-root, or "
                          "the training videos of a dataset (its labels are not read)", choices=DISTILL_DATASETS)
    extra_unlabelled: list[str] = option([], "another folder of unlabelled videos, repeatable")
    include_test: bool = option(False, "also distil on the dataset's TEST videos (the authors' variant; the "
                                     "student then sees the test videos before it is evaluated on them)")
    validation: bool = option(True, "validate the distillation loss after every epoch on the held-out videos "
                              "(--val-fraction of them; never a test split)")
    val_fraction: float = option(0.05, "share of the videos held out to validate the distillation loss (whole "
                                     "actor groups where the names have them, gXX); 0: no validation")
    # teacher cache
    cache_teachers: str | None = option(None, "folder of the teacher feature cache: targets of K views per video "
                                            "computed once, reused every epoch and by later runs")
    cache_views: int = option(4, "K: augmented views per video in the teacher cache")
    maps_png: bool = option(True, "draw maps.png (targets and the student's maps of one clip) every epoch")
    # the paper's optimisation
    optimizer: str = option("adam", "optimiser", choices=("sgd", "adam"))
    batch_size: int = option(8, "clips per step and process")
    weight_decay: float = option(0.0, "weight decay")
    scheduler: str = option("plateau", "learning-rate schedule: x gamma on a loss plateau (validation loss, "
                            "else training loss), every step_size epochs, cosine to zero, or constant",
                            choices=("plateau", "step", "cosine", "none"))
    early_stop_patience: int = option(0, "stop after this many epochs without a lower loss (0: off)")
    output: str = option("runs/distill", "run folder: student checkpoints, log.csv, curves.png, maps.png, config.yaml")

    command = "distill"
    # supervised settings with no meaning here, and where dsn demo roots its stages' paths
    cli_hidden = ("drop_classifier", "label_smoothing", "val_list", "label_fraction", "label_seed", "paths_root")
    path_fields = (*TrainConfig.path_fields, "extra_unlabelled", "cache_teachers")
    spec_fields = ("teacher2d", "teacher3d")

    def validate(self) -> None:
        if self.label_smoothing:
            raise ValueError("label_smoothing: distillation reads no labels; leave it at 0")
        if self.label_fraction != 1.0:
            raise ValueError("label_fraction: distillation reads no labels and uses every training video; "
                             "leave it at 1 (dsn finetune and dsn train take --label-fraction)")
        if self.drop_classifier:
            raise ValueError("drop_classifier: not used by distill (the student's classifier is never trained "
                             "or saved here)")
        if not 0.0 < self.teacher_split < 1.0:
            raise ValueError(f"teacher_split: expected the 2D teacher's share in (0, 1), got {self.teacher_split}")
        if any(w < 0 for w in self.tap_weights) or not any(self.tap_weights):
            raise ValueError(f"tap_weights: expected two weights >= 0, not both 0, got {list(self.tap_weights)}")
        if any(w < 0 for w in self.teacher_weights):
            raise ValueError(f"teacher_weights: expected two weights >= 0, got {list(self.teacher_weights)}")
        used = {"both": (0, 1), "2d": (0,), "3d": (1,)}.get(self.teachers, (0, 1))
        if not any(self.teacher_weights[i] for i in used):
            raise ValueError(f"teacher_weights: the weight of the teacher(s) distilled from (--teachers "
                             f"{self.teachers}) must be > 0, got {list(self.teacher_weights)}")
        if self.teacher3d_frame_stride < 1:
            raise ValueError(f"teacher3d_frame_stride: expected a positive integer, got {self.teacher3d_frame_stride}")
        if self.cache_views < 1:
            raise ValueError(f"cache_views: expected a positive integer, got {self.cache_views}")
        if self.include_test and self.dataset not in OFFICIAL_SPLITS:
            raise ValueError(f"include_test: only with --dataset ucf101 or hmdb51 (they have a test split), "
                             f"got dataset {self.dataset!r}")
        for i, folder in enumerate(self.extra_unlabelled):
            need_path(f"extra_unlabelled[{i}]", folder, folder=True)
        for kind in ("2d", "3d"):
            if self.teachers in ("both", kind):
                TeacherSpec.parse(getattr(self, f"teacher{kind}"), getattr(self, f"teacher{kind}_kwargs"),
                                  field_name=f"teacher{kind}")
                spec = TeacherSpec.parse(getattr(self, f"teacher{kind}"))
                if spec.path is not None:
                    need_path(f"teacher{kind}", str(spec.path))
                elif not self.allow_random_teachers:
                    raise ValueError(
                        f"teacher{kind}: {spec.name} is given without a weights file, so it would be built with "
                        f"random weights and its maps would teach the student nothing; give its weights with "
                        f"--teacher{kind} {spec.name}:FILE (config field teacher{kind}: {spec.name}:FILE), or pass "
                        "--allow-random-teachers (config field allow_random_teachers: true) to distil from random "
                        "teachers on purpose (tests, timing)")
        super().validate()


def distillation_paths(config: DistillConfig) -> tuple[list[Path], list[Path]]:
    """The run's unlabelled training videos and the ones it holds out for validation (none without)."""
    paths = unlabelled_videos(config.dataset, config.data_root, extra=config.extra_unlabelled,
                              include_test=config.include_test, splits_dir=config.splits_dir, split=config.split,
                              list_file=config.train_list, skip_missing=config.skip_missing)
    return holdout(paths, config.val_fraction if config.validation else 0.0, config.seed)


def distillation_datasets(config: DistillConfig, preprocess: Preprocess) -> tuple[VideoClips, VideoClips | None]:
    """The unlabelled training clips (random windows, training augmentation) and the held-out
    validation clips (centre window, centre crop), or ``None`` without validation."""
    p = preprocess
    train_paths, val_paths = distillation_paths(config)
    common: dict[str, Any] = dict(clip_len=p.clip_len, frame_stride=config.frame_stride, on_error=config.on_error,
                                  seed=config.seed)
    train_set = VideoClips(train_paths, source=f"{len(train_paths)} unlabelled videos", sampling="random",
                           transform=train_transform(p.crop_size, p.resize, p.mean, p.std), **common)
    val_set = None
    if val_paths:
        val_set = VideoClips(val_paths, source=f"{len(val_paths)} held-out videos", sampling="center",
                             transform=eval_transform(p.crop_size, p.resize, p.mean, p.std),
                             **{**common, "on_error": "report"})  # reported by name, never replaced
    return train_set, val_set


class DistillationObjective(Distillation, Objective):
    """:class:`~distilled_shufflenet.distill.objective.Distillation` as an objective of the training loop:
    the step and the validation, on the loop's device and precision and summed over its processes;
    ``frame2d`` is the 2D teacher's frame in a step without a cache (a cached view carries its own)."""

    def __init__(self, *args: Any, frame2d: str = "random", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frame2d = frame2d

    def step(self, net: nn.Module, batch: dict[str, Any], rt: Runtime) -> StepResult:
        clips = rt.to_device(batch["clip"])  # (N, 3, T, H, W)
        start = time.perf_counter()
        target = self.batch_targets(batch, clips, rt.device, frame=self.frame2d, autocast=rt.autocast)
        teacher_s = time.perf_counter() - start
        total, figures = self.regress(net, clips, target, rt.autocast)
        return StepResult(total, clips.shape[0], {**figures, "teacher_s": teacher_s})

    @torch.no_grad()
    def validate(self, model: nn.Module, loader: DataLoader, rt: Runtime) -> dict[str, float]:
        model.eval()
        sums = dict.fromkeys(self.part_columns, 0.0)
        total = count = 0.0
        failures = FailureLog()
        for batch in loader:
            failures.add(batch)
            if "clip" not in batch:
                continue
            clips = rt.to_device(batch["clip"])
            target = self.batch_targets(batch, clips, rt.device, frame="middle", autocast=rt.autocast)
            loss, figures = self.regress(model, clips, target, rt.autocast)
            total += float(loss) * clips.shape[0]
            count += clips.shape[0]
            for k, v in figures.items():
                sums[k] += v
        if len(failures):
            print(f"validation: {failures.summary()}", file=sys.stderr)
        reduced = all_reduce_sums([total, count, *sums.values()], rt)
        if reduced[1] == 0:
            raise ValueError("validation: no held-out clip could be read")
        row = {"val_loss": reduced[0] / reduced[1]}
        row.update({f"val_{k}": v / reduced[1] for k, v in zip(sums, reduced[2:])})
        return row


# --------------------------------------------------------------------------- the run
def build_teachers(config: DistillConfig, device: torch.device) -> tuple[nn.Module | None, nn.Module | None]:
    """The frozen teachers ``config.teachers`` asks for, built from their names, files and arguments."""
    out = []
    for kind in ("2d", "3d"):
        if config.teachers not in ("both", kind):
            out.append(None)
            continue
        spec = TeacherSpec.parse(getattr(config, f"teacher{kind}"), getattr(config, f"teacher{kind}_kwargs"),
                                 field_name=f"teacher{kind}")
        out.append(build_teacher(spec, kind=kind, device=device, field_name=f"teacher{kind}"))
    return out[0], out[1]


def distill(config: DistillConfig) -> FitResult:
    """``dsn distill``: distil the student from frozen teachers on unlabelled videos.

    Every check (config values, paths, teachers' files, whether the teachers' maps can fill the
    student's slots at this clip size, channel counts) happens before the first step.
    """
    config.validate()
    resume = read_run_checkpoint(config.resume) if config.resume else None
    name, kwargs = config.model, dict(config.model_kwargs)
    if resume is not None:
        name, kwargs = resume["model_name"], dict(resume["model_kwargs"])
    rt = setup_runtime(config.device, config.precision, channels_last=config.channels_last)
    # the run folder is taken before any work: a second run into a busy folder must not build a cache first
    lock = RunLock(config.output, command="dsn distill") if rt.is_main else None
    try:
        if lock is not None:
            lock.acquire()
        try:
            with torch.device("meta"):
                probe = create_model(name, **kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model_kwargs: {name} cannot be built with {kwargs}: {e}") from None
        preprocess = resolve_preprocess(probe, config)
        check_model_input(probe, preprocess)
        config = dataclasses.replace(config, clip_len=preprocess.clip_len, crop_size=preprocess.crop_size,
                                     resize=preprocess.resize)
        seed_everything(config.seed)
        student = create_model(name, **kwargs)
        student.preprocess = preprocess
        teacher2d, teacher3d = build_teachers(config, rt.device)
        random = [f"teacher{kind}" for kind, t in (("2d", teacher2d), ("3d", teacher3d))
                  if t is not None and TeacherSpec.parse(getattr(config, f"teacher{kind}")).path is None]
        if random and rt.is_main:
            print(f"warning: --allow-random-teachers: {' and '.join(random)} {'has' if len(random) == 1 else 'have'} "
                  "random weights; the student learns nothing useful from them", file=sys.stderr)
        targets = TargetBuilder(student, teacher2d, teacher3d, teachers=config.teachers, split=config.teacher_split,
                                per_teacher_adapters=config.per_teacher_adapters,
                                stride3d=config.teacher3d_frame_stride)
        layout = targets.plan((preprocess.clip_len, preprocess.crop_size, preprocess.crop_size))
        adapters = TeacherAdapters(student, layout) if config.per_teacher_adapters else None
        loss = DistillLoss({"mid": config.tap_weights[0], "final": config.tap_weights[1]}, kind=config.loss,
                           teacher_weights={"2d": config.teacher_weights[0], "3d": config.teacher_weights[1]})
        train_set, val_set = distillation_datasets(config, preprocess)
        if rt.is_main:
            print(layout.describe())
            held = f", {len(val_set)} held out for validation" if val_set is not None else ", no validation"
            print(f"distilling on {len(train_set)} unlabelled videos{held}")
            if config.include_test:
                print("warning: include_test: the TEST videos are distilled on too (the authors' variant); "
                      "accuracy on that test split is then not that of unseen videos", file=sys.stderr)
        if config.init and resume is None:
            load_pretrained(student, config.init, strict=True, drop_classifier=True)
        description = {
            "teachers": config.teachers,
            "teacher2d": {"spec": config.teacher2d, "kwargs": dict(config.teacher2d_kwargs)} if teacher2d else None,
            "teacher3d": {"spec": config.teacher3d, "kwargs": dict(config.teacher3d_kwargs),
                          "frame_stride": config.teacher3d_frame_stride} if teacher3d else None,
            "layout": layout.describe(),
            "loss": config.loss,
            "tap_weights": list(config.tap_weights),
            "teacher_weights": list(config.teacher_weights),
        }
        if config.cache_teachers:
            train_set = cached_training_set(config, train_set, targets, preprocess, rt)
            description["cache"] = str(config.cache_teachers)
        objective = DistillationObjective(targets, loss, layout, adapters, description=description,
                                          frame2d=config.teacher2d_frame)
        fixed = _fixed_clip(val_set if val_set is not None else train_set)
        on_epoch_end = None
        if config.maps_png and fixed is not None:
            on_epoch_end = _maps_png(Path(config.output) / MAPS_PNG, targets, adapters, fixed, rt.device)
        return fit(student, train_set, val_set, config, objective, classes=[], preprocess=preprocess, runtime=rt,
                   resume=resume, trainable=lambda n: not n.startswith("fc."), on_epoch_end=on_epoch_end)
    finally:
        if lock is not None:
            lock.release()
        teardown_runtime(rt)


def cached_training_set(config: DistillConfig, train_set: VideoClips, targets: nn.Module, preprocess: Preprocess,
                        rt: Runtime) -> CachedViews:
    """Build (or reuse, or finish) the teacher cache of the training videos and read the training clips
    from it.  A cache built for other teachers, views, preprocessing or videos is refused."""
    spec = ViewSpec.from_preprocess(preprocess, views=config.cache_views, seed=config.seed,
                                    frame_stride=config.frame_stride, frame2d=config.teacher2d_frame)
    cache = TeacherCache.build(config.cache_teachers, train_set.paths, targets, spec, batch_size=config.batch_size,
                               device=rt.device, progress=config.progress and rt.is_main,
                               log=(lambda msg: print(msg, flush=True)) if rt.is_main else (lambda msg: None))
    return CachedViews(cache, config.seed)


def _fixed_clip(dataset: Any) -> Tensor | None:
    """The clip every epoch's maps.png shows: the first readable one of the (validation) set."""
    for i in range(min(len(dataset), 8)):
        try:
            sample = dataset[i]
        except Exception:  # a picture is not worth stopping for
            continue
        if "clip" in sample:
            return sample["clip"].unsqueeze(0)  # (1, 3, T, H, W)
    return None


def _maps_png(path: Path, targets: nn.Module, adapters: nn.Module | None, clip: Tensor,
              device: torch.device) -> Callable[[nn.Module, dict[str, Any]], None]:
    """The end-of-epoch hook that draws maps.png: the teachers' targets and the student's maps of ``clip``."""

    def draw(student: nn.Module, row: dict[str, Any]) -> None:
        x = clip.to(device)
        plot_distillation(student, targets, x, path, frame_index=x.shape[2] // 2, adapters=adapters,
                          title=f"epoch {row['epoch']}: channel means of the teachers' targets (top) and the "
                                f"student's adapted maps (bottom), one held-out clip")

    return draw
