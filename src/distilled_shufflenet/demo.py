"""``dsn demo``: the method's whole story at CPU scale, on data the project generates.

::

    source SynthActions (own seed: other actors, scenes, clothes), labelled
        -> a narrow 3D teacher and a narrow 2D teacher          (or --teachers-from DIR: their files)
    target SynthActions (the default seed): the user's footage
        -> distil the student from both teachers on its training videos, no label read
           (and from each teacher alone: the ablation); one teacher cache of both teachers, built by
           the first distillation, serves them all
        -> fine-tune each on a labelled fraction of the training actor groups (fixed step budget)
        -> baselines: the student from scratch on the same labels, and on all target labels
    every model's last.pt scored on the target test split (clip and video level); nothing is selected
    on the test split
    bench: parameters, GMACs, CPU FPS of the student and the teachers at the demo input and 16x224x224
    -> RUN/results.md, RUN/results.json, RUN/accuracy_fps.png, RUN/stages/<stage>/ (every stage's run)

A stage whose run folder holds a finished ``last.pt`` made with the same config is reused; one that
stopped part-way is resumed; so a rerun (or an interrupted run) finishes quickly.  Every number of the
recipe is a field of :class:`DemoConfig`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from distilled_shufflenet.engine.config import _plain
from distilled_shufflenet.io import atomic_write_text

TEACHER_FILES = {"3d": "teacher3d.pt", "2d": "teacher2d.pt"}
# the demo teachers the project ships (made by `dsn demo --train-teachers DIR` with the default config)
SHIPPED_TEACHERS = Path(__file__).resolve().parent / "assets" / "demo_teachers"
DISTILL_MODES = ("both", "3d", "2d")


@dataclass
class DemoConfig:
    """Every setting of ``dsn demo``; :meth:`quick` is the tiny run of the test.

    The default recipe follows what earlier runs taught: many actors per class, teachers at the
    distillation clip, 16-frame clips (2 time slots at the final tap), a fixed fine-tuning step budget,
    20 % of the training actor groups labelled; a student whose final tap keeps the teachers' 4x4 grid
    (light stem, no stem max-pool); and the paper's plain MSE, which keeps where in the map the teacher
    responds (MSE between per-position normalised maps left the student's final map flat and its
    fine-tuned accuracy near scratch).  The README gives the measured runs and their spread over seeds.
    """

    output: str = "runs/demo"
    # data: the teachers' source and the user's target (SynthActions, UCF101 layout)
    classes: tuple[str, ...] | None = None  # None: every SynthActions class
    source_seed: int = 1
    target_seed: int = 0
    source_groups: int = 16
    target_groups: int = 16
    clips_per_group: int = 2
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
    # a light stem and no stem max-pool: the final tap keeps 4x4 positions at the 64 px crop (2x2 with
    # the pool), the teacher's own grid, and a 64-channel 7x7 stem would cost most of the student's MACs
    student_stem_channels: int = 24
    student_stem_pool: bool = False
    # teachers
    teacher3d: str = "r3d_18"
    teacher2d: str = "resnet18"
    teacher_width: float = 0.25
    teacher_epochs: int = 40
    teachers_from: str | None = None  # folder holding teacher3d.pt / teacher2d.pt: no teacher training
    export_teachers: str | None = None  # write the trained teachers there (dsn demo --train-teachers DIR)
    # distillation
    distill_epochs: int = 20
    distill_loss: str = "mse"
    # the paper's Adam rate, 1e-3, is for many epochs over UCF101; in this run's 600 steps it left the
    # student's error above the targets' own spread over clips (chosen on a development target: 1e-3,
    # 3e-3, 1e-2, 3e-2; the README gives the figures)
    distill_lr: float = 1e-2
    # the weights of the 2D and 3D teachers' slots in each tap's loss, in the two-teacher run (the paper:
    # equal). The one-frame 2D teacher is weak on the target's motion-defined classes; at a quarter of the
    # 3D teacher's weight the two-teacher student gained 5 and 9 points on held-out training groups of the
    # target (seeds 0 and 2) and lost 1 on a development target (the README gives the figures)
    distill_teacher_weights: tuple[float, float] = (0.25, 1.0)
    distill_modes: tuple[str, ...] = DISTILL_MODES
    cache_views: int = 4
    # fine-tuning and baselines: the same fixed step budget for every supervised student run
    labelled_fraction: float = 0.2
    finetune_steps: int = 300
    batch_size: int = 8
    lr: float = 1e-3
    # evaluation and bench
    eval_clips: int = 3
    eval_crops: int = 1
    bench_warmup: int = 1
    bench_repeats: int = 3
    bench_full_size: bool = True  # also bench at the paper's 16x224x224
    workers: int = 2
    seed: int = 0
    progress: bool = True

    @classmethod
    def quick(cls, **overrides: Any) -> "DemoConfig":
        """Tiny data and 1-2 epochs per stage: every stage runs, in a few CPU minutes."""
        values: dict[str, Any] = dict(
            classes=("JumpingJacks", "SquatDown", "WalkLeft", "Punch"), source_groups=4, target_groups=4,
            clips_per_group=1, frames=20, video_size=(64, 48), clip_len=16, frame_stride=1, crop_size=48,
            resize=48, teacher_width=0.125, teacher_epochs=1, distill_epochs=1, cache_views=1,
            finetune_steps=2, batch_size=4, eval_clips=1, bench_repeats=1, bench_full_size=False, workers=0,
        )
        values.update(overrides)
        return cls(**values)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        from distilled_shufflenet.distill import DistillLoss
        from distilled_shufflenet.engine.distill import LOSS_KINDS

        for name in ("source_groups", "target_groups", "clips_per_group", "frames", "clip_len", "frame_stride",
                     "crop_size", "teacher_epochs", "distill_epochs", "cache_views", "finetune_steps",
                     "batch_size", "eval_clips", "bench_repeats"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("lr", "distill_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected a learning rate > 0, got {getattr(self, name)}")
        if not 0 < self.labelled_fraction <= 1:
            raise ValueError(f"labelled_fraction: expected a share in (0, 1], got {self.labelled_fraction}")
        if len(self.distill_teacher_weights) != 2:
            raise ValueError(f"distill_teacher_weights: expected two weights (2D, 3D), got {self.distill_teacher_weights}")
        try:  # the loss's own check
            DistillLoss(teacher_weights=dict(zip(("2d", "3d"), self.distill_teacher_weights)))
        except ValueError as e:
            raise ValueError(f"distill_teacher_weights: {e}") from None
        if self.distill_loss not in LOSS_KINDS:
            raise ValueError(f"distill_loss: expected one of {', '.join(LOSS_KINDS)}, got {self.distill_loss!r}")
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
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


@dataclass
class DemoResult:
    """What :func:`run_demo` produced: the run folder, the results (as in results.json) and which
    stages ran and which were reused."""

    run_dir: Path
    results: dict[str, Any]
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- stages
def _same(requested: Any, saved: Any) -> bool:
    """Whether a saved config value is what was asked for (None asks nothing; a mapping asks its keys)."""
    if requested is None:
        return True
    if isinstance(requested, dict):
        return isinstance(saved, dict) and all(_same(v, saved.get(k)) for k, v in requested.items())
    return _plain(requested) == _plain(saved)


def stage_state(folder: Path, config: Any) -> str:
    """``"new"`` (no run), ``"done"`` (a finished run of this config), ``"partial"`` (this config,
    stopped before its end: resume it).  A run of another config there is a ``ValueError``."""
    from distilled_shufflenet.engine.checkpointing import read_run_checkpoint
    from distilled_shufflenet.engine.config import RESUME_CHANGEABLE

    last = folder / "last.pt"
    if not last.is_file():
        return "new"
    ckpt = read_run_checkpoint(last)
    saved = ckpt.get("config") or {}
    # a config saved with paths relative to its run folder is compared in that form: a moved or copied demo
    # folder holds the same runs
    wanted = config.portable(folder) if saved.get("paths_root") is not None else config
    differ = [k for k, v in wanted.to_dict().items()
              if k not in RESUME_CHANGEABLE and k != "resume" and not _same(v, saved.get(k))]
    if differ:
        raise ValueError(f"{folder}: holds a run made with other settings ({', '.join(differ[:5])}); delete that "
                         "folder to redo the stage, or choose another output")
    finished = int(ckpt.get("epoch", 0)) >= config.epochs or (
        config.max_steps and int(ckpt.get("step", 0)) >= config.max_steps)
    return "done" if finished else "partial"


class Progress:
    """One line per stage with the run's ETA (from the time per unit of work of the stages run so far)."""

    def __init__(self, stages: list[tuple[str, float]]) -> None:
        self.stages = stages
        self.cost = dict(stages)
        self.start = time.perf_counter()
        self.spent = 0.0  # seconds in stages that ran
        self.units = 0.0  # their work units
        self.left = sum(self.cost.values())
        self.index = 0
        self.seconds: dict[str, float] = {}  # wall time of each stage that ran here

    def begin(self, name: str, what: str) -> None:
        self.index += 1
        rate = self.spent / self.units if self.units else None
        stage = "unknown" if rate is None else f"{self.cost[name] * rate:.0f} s"
        run = "unknown" if rate is None else f"{self.left * rate:.0f} s"
        print(f"[{self.index}/{len(self.stages)}] {name}: {what} (stage ETA {stage}, run ETA {run}, elapsed "
              f"{time.perf_counter() - self.start:.0f} s)", flush=True)
        self._t = time.perf_counter()

    def end(self, name: str, *, ran: bool) -> None:
        if ran:
            self.seconds[name] = time.perf_counter() - self._t
            self.spent += self.seconds[name]
            self.units += self.cost[name]
        self.left -= self.cost[name]


def _quiet_config(cls: type, **values: Any) -> Any:
    from distilled_shufflenet.engine.config import build_config

    return build_config(cls, values, source="dsn demo")


def _run_training(name: str, folder: Path, config: Any, library: Callable[[Any], Any], progress: Progress,
                  done: DemoResult) -> Path:
    state = stage_state(folder, config)
    progress.begin(name, {"done": "reused", "partial": "resumed", "new": "running"}[state])
    if state != "done":
        if state == "partial":  # the run's saved config, with what a resumed run may change
            from distilled_shufflenet.engine.config import RESUME_CHANGEABLE, resolve_config

            changes = {k: getattr(config, k) for k in RESUME_CHANGEABLE if k != "output" and hasattr(config, k)}
            config = resolve_config(type(config), overrides={**changes, "resume": str(folder)})
        library(config)
        done.ran.append(name)
    else:
        done.reused.append(name)
    progress.end(name, ran=state != "done")
    return folder / "last.pt"


# --------------------------------------------------------------------------- the run
def _synth(root: Path, cfg: DemoConfig, seed: int, groups: int) -> Path:
    from distilled_shufflenet.data.synth import DEFAULT_CLASSES, SynthConfig, generate_synth_actions

    synth = SynthConfig(classes=tuple(cfg.classes or DEFAULT_CLASSES), groups=groups,
                        clips_per_group=cfg.clips_per_group, frames=cfg.frames, size=cfg.video_size, seed=seed)
    generate_synth_actions(root, synth, progress=cfg.progress)
    return root


def labelled_split(target: Path, out: Path, fraction: float, seed: int) -> int:
    """Write a splits folder whose training list holds ``fraction`` of the target's training actor
    groups (whole groups, drawn with ``seed``) and whose test list is the target's; returns the number
    of labelled videos."""
    import numpy as np

    from distilled_shufflenet.data.groups import group_of

    lines = [ln for ln in (target / "trainlist01.txt").read_text().splitlines() if ln.strip()]
    groups = sorted({group_of(Path(ln.split()[0])) for ln in lines})
    want = max(1, math.ceil(fraction * len(groups)))
    chosen = {str(g) for g in np.random.default_rng(seed).permutation(groups)[:want]}
    kept = [ln for ln in lines if group_of(Path(ln.split()[0])) in chosen]
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text("\n".join(kept) + "\n", out / "trainlist01.txt")
    for name in ("testlist01.txt", "classInd.txt"):
        atomic_write_text((target / name).read_text(), out / name)
    return len(kept)


def _hooks() -> dict[str, bool]:
    """Parts built elsewhere, used when present: the X3D peers and ``dsn predict``."""
    from distilled_shufflenet.models import list_models

    return {"x3d": "x3d_s" in list_models(),
            "predict": importlib.util.find_spec("distilled_shufflenet.inference") is not None}


def run_demo(cfg: DemoConfig) -> DemoResult:
    """``dsn demo``: run (or reuse) every stage and write the results into ``cfg.output``."""
    from distilled_shufflenet.engine import FinetuneConfig, TrainConfig, finetune, train
    from distilled_shufflenet.engine.distill import DistillConfig, distill

    cfg.validate()
    run = Path(cfg.output)
    stages_dir = run / "stages"
    check_run_folder(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", run / "demo_config.json")
    done = DemoResult(run_dir=run, results={})
    train_teachers = cfg.teachers_from is None
    plan: list[tuple[str, float]] = [("data", 1.0)]
    if train_teachers:
        plan += [("teacher3d", 3.0 * cfg.teacher_epochs), ("teacher2d", 1.0 * cfg.teacher_epochs)]
    plan += [(f"distill_{m}", 2.0 * cfg.distill_epochs) for m in _distill_order(cfg.distill_modes)]
    plan += [(f"finetune_{m}", 0.05 * cfg.finetune_steps) for m in cfg.distill_modes]
    plan += [("scratch_labelled", 0.05 * cfg.finetune_steps), ("scratch_all", 0.05 * cfg.finetune_steps),
             ("evaluate", 2.0), ("bench", 2.0), ("annotate", 0.5)]
    progress = Progress(plan)

    what = "source (teachers) and target (the user's videos)" if train_teachers else "target (the user's videos)"
    progress.begin("data", f"SynthActions: {what}")
    # the source is only for training teachers
    source = _synth(run / "data" / "source", cfg, cfg.source_seed, cfg.source_groups) if train_teachers else None
    target = _synth(run / "data" / "target", cfg, cfg.target_seed, cfg.target_groups)
    labelled = labelled_split(target, run / "data" / "target_labelled_splits", cfg.labelled_fraction, cfg.seed)
    progress.end("data", ran=False)

    # every stage saves the paths inside this folder relative to its own run folder: the whole folder may move
    clip = dict(clip_len=cfg.clip_len, frame_stride=cfg.frame_stride, crop_size=cfg.crop_size, resize=cfg.resize,
                num_workers=cfg.workers, seed=cfg.seed, progress=cfg.progress, tensorboard=False,
                paths_root=str(run))
    common = dict(batch_size=cfg.batch_size, optimizer="adam", lr=cfg.lr, scheduler="cosine",
                  early_stop_patience=0, weight_decay=0.0, **clip)

    # teachers: trained on the labelled source, or read from files
    teachers: dict[str, Path] = {}
    for kind, model in (("3d", cfg.teacher3d), ("2d", cfg.teacher2d)):
        if not train_teachers:
            teachers[kind] = Path(cfg.teachers_from) / TEACHER_FILES[kind]  # type: ignore[arg-type]
            continue
        folder = stages_dir / f"teacher{kind}"
        conf = _quiet_config(TrainConfig, model=model, model_kwargs={"widen_factor": cfg.teacher_width},
                             dataset="ucf101", data_root=str(source), validation=False, epochs=cfg.teacher_epochs,
                             output=str(folder), **common)
        teachers[kind] = _run_training(f"teacher{kind}", folder, conf, train, progress, done)
    if cfg.export_teachers is not None:
        for kind in ("3d", "2d"):
            export_teacher(teachers[kind], Path(cfg.export_teachers) / TEACHER_FILES[kind], cfg,
                           progress.seconds.get(f"teacher{kind}"))

    # distillation on the target's training videos (labels unread); the cache of both teachers' maps, built by
    # the two-teacher run (first), serves each teacher alone too: the teachers run once per view in all
    # the adapters give the teachers' channels at mid / final (ResNet-18 layers 3 / 4: 256 / 512 x width)
    adapters = [int(256 * cfg.teacher_width), int(512 * cfg.teacher_width)]
    student_kwargs = {"widths": list(cfg.student_widths), "units": list(cfg.student_units),
                      "stem_channels": cfg.student_stem_channels, "stem_pool": cfg.student_stem_pool,
                      "adapter_channels": adapters, "clip_len": cfg.clip_len}
    distilled: dict[str, Path] = {}
    shared_cache = "both" in cfg.distill_modes
    for mode in _distill_order(cfg.distill_modes):
        folder = stages_dir / f"distill_{mode}"
        cache = run / "cache" / ("teachers" if shared_cache else mode)
        conf = _quiet_config(
            DistillConfig, model="shufflenet2plus1d", model_kwargs=student_kwargs, dataset="ucf101",
            data_root=str(target), teacher2d=f"{cfg.teacher2d}:{teachers['2d']}",
            teacher3d=f"{cfg.teacher3d}:{teachers['3d']}", teachers=mode, loss=cfg.distill_loss,
            teacher_weights=tuple(cfg.distill_teacher_weights) if mode == "both" else (1.0, 1.0),
            val_fraction=0.0, validation=False, cache_teachers=str(cache), cache_views=cfg.cache_views,
            epochs=cfg.distill_epochs, maps_png=True, output=str(folder), **{**common, "lr": cfg.distill_lr})
        distilled[mode] = _run_training(f"distill_{mode}", folder, conf, distill, progress, done)

    # supervised students: a fixed step budget on the labelled groups (and on all labels: the upper reference)
    all_train = sum(1 for ln in (target / "trainlist01.txt").read_text().splitlines() if ln.strip())
    supervised = dict(dataset="ucf101", data_root=str(target), validation=False, max_steps=cfg.finetune_steps, **common)
    students: dict[str, Path] = {}
    for mode in cfg.distill_modes:
        folder = stages_dir / f"finetune_{mode}"
        conf = _quiet_config(FinetuneConfig, checkpoint=str(distilled[mode]), splits_dir=str(run / "data" / "target_labelled_splits"),
                             epochs=_epochs(cfg.finetune_steps, labelled, cfg.batch_size), output=str(folder), **supervised)
        students[f"distilled_{mode}"] = _run_training(f"finetune_{mode}", folder, conf, finetune, progress, done)
    for name, splits, videos in (("scratch_labelled", run / "data" / "target_labelled_splits", labelled),
                                 ("scratch_all", None, all_train)):
        folder = stages_dir / name
        conf = _quiet_config(TrainConfig, model="shufflenet2plus1d", model_kwargs=student_kwargs,
                             splits_dir=None if splits is None else str(splits),
                             epochs=_epochs(cfg.finetune_steps, videos, cfg.batch_size), output=str(folder), **supervised)
        students[name] = _run_training(name, folder, conf, train, progress, done)

    # every model's last.pt on the target test split
    progress.begin("evaluate", "top-1 of every model on the target test split (clip and video level)")
    scored = {"teacher3d": teachers["3d"], "teacher2d": teachers["2d"], **students}
    evaluations = {name: _evaluate(name, path, target, run / "evaluate" / name, cfg, done) for name, path in scored.items()}
    progress.end("evaluate", ran=False)

    progress.begin("bench", "parameters, GMACs, CPU FPS of the student and the teachers")
    hooks = _hooks()
    bench = _bench(run / "bench", cfg, student_kwargs, hooks, done)
    progress.end("bench", ran=False)
    annotated = None
    if hooks["predict"] and "distilled_both" in students:
        progress.begin("annotate", "dsn predict --stream on one target test video, with labels drawn in")
        annotated = annotate_test_video(students["distilled_both"], target, run / "annotated_test_video.mp4", done)
        progress.end("annotate", ran=False)

    done.results = _results(cfg, evaluations, bench, hooks, labelled, all_train)
    done.results["annotated_video"] = annotated
    done.results["stage_seconds"] = progress.seconds  # this invocation's stages (reused ones are absent)
    done.results["wall_seconds"] = time.perf_counter() - progress.start
    atomic_write_text(json.dumps(done.results, indent=2) + "\n", run / "results.json")
    atomic_write_text(results_markdown(done.results), run / "results.md")
    accuracy_fps_chart(done.results, run / "accuracy_fps.png")
    print(f"demo run folder: {run} (results.md, results.json, accuracy_fps.png, stages/)")
    return done


def check_run_folder(run: Path) -> None:
    """Refuse a run folder that holds files and is not a demo run (no ``demo_config.json``): a dataset, say.
    The demo writes its data, stages and results there, and would mix them with the user's files."""
    if not run.exists():
        return
    if not run.is_dir():
        raise ValueError(f"output: {run} is a file; dsn demo --output takes a folder (a new one, or a demo run)")
    if (run / "demo_config.json").is_file():
        return  # a demo run: its finished stages are reused
    found = sorted(p.name for p in run.iterdir() if not p.name.startswith("."))
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise ValueError(f"output: {run} holds other files ({shown}) and no demo run (no demo_config.json); the demo "
                         "writes its data, stages and results into its folder: give dsn demo --output a new or empty "
                         "folder, or an earlier demo run to continue it")


def check_teacher_files(cfg: DemoConfig) -> None:
    """Refuse teacher files that are not the teachers ``cfg`` describes (model, width), naming the field."""
    import torch

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
        if float(width) != float(cfg.teacher_width):
            raise ValueError(f"teacher_width: {path} has widen_factor {width}, the demo asks for "
                             f"{cfg.teacher_width}; train matching ones with dsn demo --train-teachers DIR")


def export_teacher(last: Path, dest: Path, cfg: DemoConfig, seconds: float | None) -> Path:
    """A trained demo teacher as a file to ship: its run checkpoint without the optimisation state,
    the weights in fp16, and how it was made (the demo's source data and seed, its training time)."""
    import torch

    from distilled_shufflenet.checkpoint import atomic_save
    from distilled_shufflenet.engine.checkpointing import read_run_checkpoint

    ckpt = read_run_checkpoint(last)
    kept = {k: ckpt[k] for k in ("format", "command", "model_name", "model_kwargs", "classes", "preprocess", "config",
                                 "epoch", "step", "metrics") if k in ckpt}
    kept["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    kept["demo_teacher"] = {"source_seed": cfg.source_seed, "source_groups": cfg.source_groups,
                            "clips_per_group": cfg.clips_per_group, "seed": cfg.seed, "train_seconds": seconds,
                            "made_by": "dsn demo --train-teachers"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(kept, dest)


def annotate_test_video(checkpoint: Path, target: Path, dest: Path, done: DemoResult) -> dict[str, Any] | None:
    """Stream the first target test video through ``checkpoint`` with ``dsn predict``'s machinery and
    write it with the running label drawn in; returns its true class and the windows' labels."""
    from distilled_shufflenet.inference.runner import PredictConfig, run_predict

    first = next(ln.split()[0] for ln in (target / "testlist01.txt").read_text().splitlines() if ln.strip())
    video = target / first
    if dest.is_file() and dest.stat().st_mtime >= checkpoint.stat().st_mtime:
        done.reused.append("annotate")
    else:
        result = run_predict(PredictConfig(model=str(checkpoint), inputs=(str(video),), backend="torch-fp32",
                                           stream=True, annotate=str(dest)), log=lambda line: None)
        if result.errors or not result.streams:
            print(f"annotated video: skipped ({'; '.join(result.errors) or 'no window'})", flush=True)
            return None
        done.ran.append("annotate")
        windows = result.streams[0].windows
        summary = {"path": dest.name, "video": first, "true_class": Path(first).parent.name,
                   "window_labels": [w.to_dict().get("label") for w in windows]}
        atomic_write_text(json.dumps(summary, indent=2) + "\n", dest.with_suffix(".json"))
    return json.loads(dest.with_suffix(".json").read_text())


def _distill_order(modes: Sequence[str]) -> list[str]:
    """The two-teacher distillation first: its teacher cache holds both teachers and serves the others."""
    return sorted(modes, key=lambda m: m != "both")


def _epochs(steps: int, videos: int, batch: int) -> int:
    """Epochs that hold ``steps`` steps (``max_steps`` stops the run there), counted as the training loop
    counts them (60 videos in batches of 8: 7 steps an epoch, not 8)."""
    from distilled_shufflenet.engine.loop import steps_per_epoch

    return max(1, math.ceil(steps / max(1, steps_per_epoch(videos, batch))))


def _evaluate(name: str, checkpoint: Path, target: Path, out: Path, cfg: DemoConfig, done: DemoResult) -> dict[str, Any]:
    from distilled_shufflenet.engine.evaluate import EvalConfig, evaluate_checkpoint

    report = out / "report.json"
    if report.is_file() and report.stat().st_mtime >= checkpoint.stat().st_mtime:
        done.reused.append(f"evaluate_{name}")
        return json.loads(report.read_text())
    evaluate_checkpoint(checkpoint, EvalConfig(dataset="ucf101", data_root=str(target), clips=cfg.eval_clips,
                                               crops=cfg.eval_crops, workers=cfg.workers, out=str(out),
                                               progress=cfg.progress))
    done.ran.append(f"evaluate_{name}")
    return json.loads(report.read_text())


def _bench(out: Path, cfg: DemoConfig, student_kwargs: dict, hooks: dict[str, bool], done: DemoResult) -> dict[str, Any]:
    from distilled_shufflenet.bench import BenchConfig, ModelSpec, run_benchmark

    models = [ModelSpec("shufflenet2plus1d", student_kwargs),
              ModelSpec(cfg.teacher3d, {"widen_factor": cfg.teacher_width}),
              ModelSpec(cfg.teacher2d, {"widen_factor": cfg.teacher_width})]
    if hooks["x3d"]:
        models.append(ModelSpec("x3d_s"))  # hook: the X3D peer, once registered
    shapes = {"demo": (cfg.clip_len, cfg.crop_size)}
    if cfg.bench_full_size:
        shapes["paper"] = (16, 224)
    results = {}
    for key, (frames, size) in shapes.items():
        bcfg = BenchConfig(models=tuple(models), frames=frames, size=size, paths=("fp32",), warmup=cfg.bench_warmup,
                           repeats=cfg.bench_repeats, reference=models[1].name, progress=False, seed=cfg.seed)
        path = out / f"{key}.json"
        if path.is_file() and json.loads(path.read_text()).get("config") == json.loads(json.dumps(bcfg.to_dict())):
            done.reused.append(f"bench_{key}")
        else:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(json.dumps(run_benchmark(bcfg).to_dict(), indent=2) + "\n", path)
            done.ran.append(f"bench_{key}")
        results[key] = json.loads(path.read_text())
    return results


ROWS = (("teacher3d", "3D teacher (trained on other actors)", 1), ("teacher2d", "2D teacher (trained on other actors)", 2),
        ("distilled_both", "student distilled from both teachers + fine-tuned", 0),
        ("distilled_3d", "student distilled from the 3D teacher + fine-tuned", 0),
        ("distilled_2d", "student distilled from the 2D teacher + fine-tuned", 0),
        ("scratch_labelled", "student from scratch, same labels", 0),
        ("scratch_all", "student from scratch, all target labels (upper reference)", 0))


def _results(cfg: DemoConfig, evaluations: dict, bench: dict, hooks: dict, labelled: int, all_train: int) -> dict[str, Any]:
    rows = []
    for key, label, model_index in ROWS:
        if key not in evaluations:
            continue
        ev = evaluations[key]
        row: dict[str, Any] = {"name": key, "model": label,
                               "clip_top1": _pct(ev["clip_level"]["top1"]) if ev.get("clip_level") else None,
                               "video_top1": _pct(ev["video_level"]["top1"])}
        for shape, rep in bench.items():
            b = rep["rows"][model_index]
            row.update({"params": b["params"], f"gmacs_{shape}": b["macs"] / 1e9, f"fps_{shape}": b["fps"]})
        rows.append(row)
    if hooks["x3d"]:  # the efficient peer, untrained: its size and speed beside the student's
        row = {"name": "x3d_s", "model": "X3D-S (speed only, not trained here)", "clip_top1": None, "video_top1": None}
        for shape, rep in bench.items():
            b = rep["rows"][3]
            row.update({"params": b["params"], f"gmacs_{shape}": b["macs"] / 1e9, f"fps_{shape}": b["fps"]})
        rows.append(row)
    return {"config": cfg.to_dict(), "labelled_videos": labelled, "training_videos": all_train,
            "test_videos": evaluations["teacher3d"]["video_level"]["videos"],
            "rows": rows, "machine": next(iter(bench.values()))["machine"],
            "bench_rows": {k: v["rows"] for k, v in bench.items()},
            "not_run": [n for n, ok in (("X3D peers (no x3d_s registered)", hooks["x3d"]),
                                        ("annotated test video (no dsn predict)", hooks["predict"])) if not ok]}


def results_markdown(results: dict[str, Any]) -> str:
    """The paper-style table of ``results`` (accuracy on the target test split, size and speed)."""
    shapes = [k for k in ("demo", "paper") if any(f"fps_{k}" in r for r in results["rows"])]
    head = ["model", "clip top-1 %", "video top-1 %", "params (M)"]
    for s in shapes:
        head += [f"GMACs ({s} input)", f"CPU FPS ({s} input)"]
    lines = ["# Demo results", "",
             f"Target test split: {results['test_videos']} videos; labelled: {results['labelled_videos']} of "
             f"{results['training_videos']} training videos. Every figure scores last.pt.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        cells = [r["model"], _num(r["clip_top1"]), _num(r["video_top1"]), _num(r.get("params", 0) / 1e6, 2)]
        for s in shapes:
            cells += [_num(r.get(f"gmacs_{s}"), 3), _num(r.get(f"fps_{s}"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    m = results["machine"]
    lines += ["", f"Machine: {m.get('cpu_model')} ({m.get('cpu_capability')}, {m.get('threads')} threads, load "
              f"average {m.get('load_average')}); FPS: median of batch-1 fp32 calls.", *(f"Not run: {n}." for n in results["not_run"])]
    video = results.get("annotated_video")
    if video:
        lines += ["", f"{video['path']}: {video['video']} (true class {video['true_class']}) with the distilled "
                  f"student's running label; its windows said {', '.join(video['window_labels'])}."]
    return "\n".join(lines) + "\n"


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


def _num(x: Any, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def accuracy_fps_chart(results: dict[str, Any], path: Path) -> Path:
    """A PNG of video top-1 against CPU FPS at the demo input, one point per model."""
    from matplotlib.figure import Figure

    from distilled_shufflenet.io import save_figure

    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    points: dict[tuple[float, float], list[str]] = {}  # models at the same point share one label
    for r in results["rows"]:
        if r["video_top1"] is None:  # speed only
            continue
        points.setdefault((r["fps_demo"], r["video_top1"]), []).append(r["name"])
    for (fps, top1), names in points.items():
        ax.scatter(fps, top1)
        ax.annotate("\n".join(names), (fps, top1), fontsize=7, xytext=(4, 2), textcoords="offset points")
    _accuracy_fps_axes(ax)
    return save_figure(fig, path, dpi=100)


def _accuracy_fps_axes(ax: Any) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("CPU FPS at the demo input (batch 1)")
    ax.set_ylabel("video top-1 on the target test split (%)")
    ax.grid(alpha=0.3)


# --------------------------------------------------------------------------- several runs
def seed_summary(runs: list[Path]) -> dict[str, Any]:
    """Mean and min-max of every model's top-1 over finished demo runs (one ``results.json`` each,
    typically the same demo with other ``--seed`` values), and of each distilled student's margin over
    the student trained from scratch on the same labels (paired within each run)."""
    loaded = []
    for run in runs:
        path = Path(run) / "results.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file (not a finished demo run folder)")
        try:
            loaded.append(json.loads(path.read_text()))
        except (OSError, ValueError) as e:
            raise ValueError(f"{path}: not a readable results file ({e})") from None

    def spread(values: list[float]) -> dict[str, float]:
        return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}

    by_name = [{r["name"]: r for r in res["rows"]} for res in loaded]
    rows, margins = [], {}
    for key, label, _ in ROWS:
        per_run = [named.get(key) for named in by_name]
        if any(r is None or r["video_top1"] is None for r in per_run):
            continue
        fps = sorted(r["fps_demo"] for r in per_run if r.get("fps_demo"))
        rows.append({"name": key, "model": label, "video_top1": spread([r["video_top1"] for r in per_run]),
                     "clip_top1": spread([r["clip_top1"] for r in per_run]),
                     "fps_demo": fps[len(fps) // 2] if fps else None})
        if key.startswith("distilled_") and all("scratch_labelled" in named for named in by_name):
            margins[key] = spread([r["video_top1"] - named["scratch_labelled"]["video_top1"]
                                   for r, named in zip(per_run, by_name)])
    ignored = {"seed", "output", "progress"}
    differ = sorted({k for res in loaded for k, v in res["config"].items()
                     if k not in ignored and v != loaded[0]["config"].get(k)})
    return {"runs": [str(r) for r in runs], "seeds": [res["config"].get("seed") for res in loaded],
            "differing_settings": differ,
            "test_videos": [res.get("test_videos") for res in loaded], "rows": rows,
            "margin_over_scratch_same_labels": margins,
            "wall_seconds": spread([res.get("wall_seconds", float("nan")) for res in loaded])}


def _spread_text(s: dict[str, float]) -> str:
    """``"69.6 (60.0 to 78.8)"``: "to", as a hyphen would read as a minus sign beside a negative margin."""
    return f"{s['mean']:.1f} ({s['min']:.1f} to {s['max']:.1f})"


def seed_summary_markdown(summary: dict[str, Any]) -> str:
    """The table of :func:`seed_summary`: mean (min-max) per model, then the paired margins."""
    cell = _spread_text
    lines = [f"# Demo over {len(summary['runs'])} runs (seeds {', '.join(str(s) for s in summary['seeds'])})", "",
             "Top-1 on the target test split, mean (min-max) over the runs.", "",
             *([f"Warning: the runs differ in more than the seed: {', '.join(summary['differing_settings'])}.", ""]
               if summary["differing_settings"] else []),
             "| model | video top-1 % | clip top-1 % |", "|---|---|---|"]
    lines += [f"| {r['model']} | {cell(r['video_top1'])} | {cell(r['clip_top1'])} |" for r in summary["rows"]]
    if summary["margin_over_scratch_same_labels"]:
        lines += ["", "Margin over the student from scratch on the same labels, video top-1 points, paired by run:", "",
                  "| student | margin, mean (min-max) |", "|---|---|"]
        labels = {key: label for key, label, _ in ROWS}
        lines += [f"| {labels[k]} | {cell(v)} |" for k, v in summary["margin_over_scratch_same_labels"].items()]
    w = summary["wall_seconds"]
    lines += ["", f"Wall time per run: {w['mean'] / 60:.1f} min ({w['min'] / 60:.1f} to {w['max'] / 60:.1f})."]
    return "\n".join(lines) + "\n"


def seed_summary_chart(summary: dict[str, Any], path: Path) -> Path:
    """A PNG of each model's video top-1 (mean, with the min-max range as an error bar) against its CPU
    FPS at the demo input (the median over the runs)."""
    from matplotlib.figure import Figure

    from distilled_shufflenet.io import save_figure

    fig = Figure(figsize=(6.5, 4.2), layout="tight")
    ax = fig.add_subplot()
    for r in summary["rows"]:
        if not r.get("fps_demo"):
            continue
        v = r["video_top1"]
        ax.errorbar(r["fps_demo"], v["mean"], yerr=[[v["mean"] - v["min"]], [v["max"] - v["mean"]]], fmt="o",
                    capsize=3, label=f"{r['name']}: {_spread_text(v)}")
    _accuracy_fps_axes(ax)
    ax.set_title(f"{len(summary['runs'])} runs (seeds {', '.join(str(s) for s in summary['seeds'])}): "
                 "mean, min-max", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, dpi=100)
