"""``run_demo``: the demo's stages in order, each a short named step, and what they write.

::

    check the run folder -> demo_config.json
    data        SynthActions source (teachers only) and target (training, test and validation actors)
    teachers    trained on the source (or read from files) ; exported with --train-teachers
    distil      the student from both teachers (the study: and from the 3D teacher; one cache serves both)
    supervise   fine-tune it on a labelled share ; its linear probe ; equal-compute scratch on the same labels
    evaluate    every model on the target test split, with 95 % bootstrap intervals and paired margins
    bench       parameters, GMACs, CPU FPS ; annotate: dsn predict --stream on one test video
    -> results.json, results.md, accuracy_fps.png
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from distilled_shufflenet.bench import BenchConfig, ModelSpec, run_benchmark
from distilled_shufflenet.checkpoint import atomic_save
from distilled_shufflenet.data.groups import group_of, labelled_subset
from distilled_shufflenet.data.splits import read_ucf101_split
from distilled_shufflenet.data.synth import DEFAULT_CLASSES, SynthConfig, generate_synth_actions
from distilled_shufflenet.demo.config import TEACHER_FILES, DemoConfig
from distilled_shufflenet.demo.report import accuracy_fps_chart, collect_results, results_markdown
from distilled_shufflenet.demo.stages import DemoResult, Progress, epochs_for_steps, run_stage, stage_config
from distilled_shufflenet.engine import FinetuneConfig, TrainConfig, finetune, train
from distilled_shufflenet.engine.checkpointing import read_run_checkpoint
from distilled_shufflenet.engine.distill import DistillConfig, distill
from distilled_shufflenet.engine.evaluate import EvalConfig, evaluate_checkpoint
from distilled_shufflenet.inference.runner import PredictConfig, run_predict
from distilled_shufflenet.io import atomic_write_text

__all__ = ["DemoSteps", "annotate_test_video", "check_run_folder", "export_teacher", "first_stages", "run_demo",
           "stage_costs", "write_splits"]


def run_demo(cfg: DemoConfig) -> DemoResult:
    """``dsn demo``: run (or reuse) every stage and write the results into ``cfg.output`` (the study,
    ``cfg.study``, is :func:`~distilled_shufflenet.demo.study.run_study`)."""
    if cfg.study:
        raise ValueError("study: run_demo runs the single demo; the study is demo.run_study(cfg)")
    cfg.validate()
    run = Path(cfg.output)
    check_run_folder(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", run / "demo_config.json")
    steps = DemoSteps(cfg, run)
    steps.data()
    teachers = steps.teachers()
    distilled = steps.distil(teachers, cfg.distill_modes)
    students = steps.supervise(distilled, cfg.label_fraction)
    evaluations = steps.evaluate({"teacher3d": teachers["3d"], "teacher2d": teachers["2d"], **students})
    bench = steps.bench()
    annotated = steps.annotate(students)
    return steps.write_results(evaluations, bench, annotated)


class DemoSteps:
    """The steps of a demo run, sharing its config, folders, progress line and record of stages.

    ``stages`` (default ``RUN/stages``) and ``cache`` (default ``RUN/cache``) hold the training runs and the
    teacher cache of one seed; the study gives each seed its own and shares the data and the teachers."""

    def __init__(self, cfg: DemoConfig, run: Path, *, stages: Path | None = None, cache: Path | None = None,
                 progress: Progress | None = None, done: DemoResult | None = None) -> None:
        self.cfg = cfg
        self.run = run
        self.stages = stages or run / "stages"
        self.cache = cache or run / "cache"
        self.source = run / "data" / "source"
        self.target = run / "data" / "target"
        self.splits = run / "data" / "target_splits"  # training actors / test actors
        self.val_splits = run / "data" / "target_val_splits"  # training actors / validation actors
        self.train_teachers = cfg.teachers_from is None
        self.done = done or DemoResult(run_dir=run, results={})
        self.progress = progress or Progress(self._plan())
        # every stage saves the paths inside this folder relative to its own run folder: the whole folder may move
        self.common = dict(clip_len=cfg.clip_len, frame_stride=cfg.frame_stride, crop_size=cfg.crop_size,
                           resize=cfg.resize, num_workers=cfg.workers, seed=cfg.seed, progress=cfg.progress,
                           tensorboard=False, paths_root=str(run), batch_size=cfg.batch_size, optimizer="adam",
                           lr=cfg.lr, scheduler="cosine", early_stop_patience=0, weight_decay=0.0)
        # the adapters give the teachers' channels at mid / final (ResNet-18 layers 3 / 4: 256 / 512 x width)
        self.student_kwargs = {"widths": list(cfg.student_widths), "units": list(cfg.student_units),
                               "stem_channels": cfg.student_stem_channels, "stem_pool": cfg.student_stem_pool,
                               "adapter_channels": [int(256 * cfg.teacher_width), int(512 * cfg.teacher_width)],
                               "clip_len": cfg.clip_len}
        if cfg.student_stem != "3d":  # the paper's stem is the builder's default: runs of it keep their settings
            self.student_kwargs["stem"] = cfg.student_stem

    def _plan(self) -> list[tuple[str, float]]:
        """Every stage of the single run with its rough cost, in work units, for the ETA."""
        cfg, cost = self.cfg, stage_costs(self.cfg)
        plan = first_stages(cfg)
        plan += [(f"distill_{m}", cost["distill"]) for m in _distill_order(cfg.distill_modes)]
        plan += [(f"finetune_{m}", cost["finetune"]) for m in cfg.distill_modes]
        if cfg.linear_probe and "both" in cfg.distill_modes:
            plan.append(("probe_both", cost["probe"]))
        plan += [(name, cost[name]) for name in ("scratch_equal", "evaluate", "bench", "annotate")]
        return plan

    # ------------------------------------------------------------------ data and teachers
    def data(self) -> None:
        """The source (only to train teachers), the target (training, test and validation actors) and the
        split files every stage reads."""
        cfg = self.cfg
        what = "source (teachers) and target (the user's videos)" if self.train_teachers else "target (the user's videos)"
        self.progress.begin("data", f"SynthActions: {what}")
        if self.train_teachers:
            generate_synth_actions(self.source, SynthConfig(
                classes=tuple(cfg.classes or DEFAULT_CLASSES), groups=cfg.source_groups,
                clips_per_group=cfg.clips_per_group, frames=cfg.frames, size=cfg.video_size, seed=cfg.source_seed,
                cue_strength=cfg.source_cue_strength),
                progress=cfg.progress)
        groups = cfg.target_test_groups + cfg.target_val_groups + cfg.target_groups
        generate_synth_actions(self.target, SynthConfig(
            classes=tuple(cfg.classes or DEFAULT_CLASSES), groups=groups, test_groups=cfg.target_test_groups,
            clips_per_group=cfg.target_clips_per_group, frames=cfg.frames, size=cfg.video_size, seed=cfg.target_seed,
            cue_strength=cfg.target_cue_strength),
            progress=cfg.progress)
        write_splits(self.target, self.splits, self.val_splits, cfg.target_test_groups + cfg.target_groups,
                     cfg.target_val_groups)
        self.progress.end("data", ran=False)

    def labelled_videos(self, fraction: float) -> int:
        """How many training videos ``--label-fraction fraction`` labels (the draw the training run makes)."""
        return len(labelled_subset(read_ucf101_split(self.splits), fraction, self.cfg.seed))

    def training_videos(self) -> int:
        return len(read_ucf101_split(self.splits))

    def teachers(self) -> dict[str, Path]:
        """The teachers' files: trained on the labelled source, or read from ``teachers_from``."""
        cfg = self.cfg
        if not self.train_teachers:
            return {kind: Path(cfg.teachers_from) / name for kind, name in TEACHER_FILES.items()}  # type: ignore[arg-type]
        teachers: dict[str, Path] = {}
        for kind, model in (("3d", cfg.teacher3d), ("2d", cfg.teacher2d)):
            folder = self.run / "stages" / f"teacher{kind}"
            conf = stage_config(TrainConfig, model=model, model_kwargs={"widen_factor": cfg.teacher_width},
                                dataset="ucf101", data_root=str(self.source), validation=False,
                                epochs=cfg.teacher_epochs, output=str(folder), **self.common)
            teachers[kind] = run_stage(f"teacher{kind}", folder, conf, train, self.progress, self.done)
        if cfg.export_teachers is not None:
            for kind in ("3d", "2d"):
                export_teacher(teachers[kind], Path(cfg.export_teachers) / TEACHER_FILES[kind], cfg,
                               self.progress.seconds.get(f"teacher{kind}"))
        return teachers

    # ------------------------------------------------------------------ training
    def distil(self, teachers: dict[str, Path], modes: tuple[str, ...]) -> dict[str, Path]:
        """The student distilled on the target's training videos (labels unread) for each mode; the
        two-teacher run goes first and its cache of both teachers' maps serves the others."""
        cfg = self.cfg
        distilled: dict[str, Path] = {}
        shared_cache = "both" in modes
        for mode in _distill_order(modes):
            folder = self.stages / f"distill_{mode}"
            cache = self.cache / ("teachers" if shared_cache else mode)
            conf = stage_config(
                DistillConfig, model="shufflenet2plus1d", model_kwargs=self.student_kwargs, dataset="ucf101",
                data_root=str(self.target), splits_dir=str(self.splits), teacher2d=f"{cfg.teacher2d}:{teachers['2d']}",
                teacher3d=f"{cfg.teacher3d}:{teachers['3d']}", teachers=mode, loss=cfg.distill_loss,
                teacher_weights=tuple(cfg.distill_teacher_weights) if mode == "both" else (1.0, 1.0),
                val_fraction=0.0, validation=False, cache_teachers=str(cache), cache_views=cfg.cache_views,
                epochs=cfg.distill_epochs, maps_png=True, output=str(folder), **{**self.common, "lr": cfg.distill_lr})
            distilled[mode] = run_stage(f"distill_{mode}", folder, conf, distill, self.progress, self.done)
        return distilled

    def _supervised(self, fraction: float) -> dict[str, Any]:
        return dict(dataset="ucf101", data_root=str(self.target), splits_dir=str(self.splits), validation=False,
                    label_fraction=fraction, label_seed=self.cfg.seed, **self.common)

    def finetune(self, name: str, distilled: Path, fraction: float, *, probe: bool = False) -> Path:
        """``distilled`` fine-tuned (or, ``probe``, only a classifier on its frozen backbone) for the fixed
        step budget on the labels of ``fraction`` of the training videos."""
        steps = self.cfg.finetune_steps
        folder = self.stages / name
        conf = stage_config(FinetuneConfig, checkpoint=str(distilled), freeze_backbone=probe, max_steps=steps,
                            epochs=epochs_for_steps(steps, self.labelled_videos(fraction), self.cfg.batch_size),
                            output=str(folder), **self._supervised(fraction))
        return run_stage(name, folder, conf, finetune, self.progress, self.done)

    def scratch_equal(self, name: str, distilled: Path, fraction: float) -> Path:
        """The student from scratch on the same labels for as many optimiser steps as ``distilled`` took to
        distil plus its fine-tuning (equal compute)."""
        steps = int(read_run_checkpoint(distilled).get("step", 0)) + self.cfg.finetune_steps
        folder = self.stages / name
        conf = stage_config(TrainConfig, model="shufflenet2plus1d", model_kwargs=self.student_kwargs, max_steps=steps,
                            epochs=epochs_for_steps(steps, self.labelled_videos(fraction), self.cfg.batch_size),
                            output=str(folder), **self._supervised(fraction))
        return run_stage(name, folder, conf, train, self.progress, self.done)

    def reference(self, name: str) -> Path:
        """The student from scratch on every training label, validated each epoch on the validation actors
        (which no student trains on), its rate cut on a plateau and stopped once the validation loss stops
        improving; returns the checkpoint of the best validation loss."""
        cfg = self.cfg
        folder = self.stages / name
        conf = stage_config(TrainConfig, model="shufflenet2plus1d", model_kwargs=self.student_kwargs,
                            dataset="ucf101", data_root=str(self.target), splits_dir=str(self.val_splits),
                            validation=True, epochs=cfg.reference_max_epochs, output=str(folder),
                            **{**self.common, "scheduler": "plateau", "plateau_patience": max(1, cfg.reference_patience // 2),
                               "early_stop_patience": cfg.reference_patience})
        last = run_stage(name, folder, conf, train, self.progress, self.done)
        best = folder / "best.pt"
        return best if best.is_file() else last

    def supervise(self, distilled: dict[str, Path], fraction: float) -> dict[str, Path]:
        """The single run's supervised students: each distilled one fine-tuned, the two-teacher one also as a
        linear probe, and the equal-compute scratch baseline on the same labels."""
        students = {f"distilled_{m}": self.finetune(f"finetune_{m}", distilled[m], fraction) for m in self.cfg.distill_modes}
        if self.cfg.linear_probe and "both" in distilled:
            students["probe_both"] = self.finetune("probe_both", distilled["both"], fraction, probe=True)
        first = distilled["both"] if "both" in distilled else next(iter(distilled.values()))
        students["scratch_equal"] = self.scratch_equal("scratch_equal", first, fraction)
        return students

    # ------------------------------------------------------------------ scoring and speed
    def evaluate(self, models: dict[str, Path], *, where: Path | None = None) -> dict[str, Any]:
        """Every model on the target test split: its report.json, reused while newer than the model."""
        self.progress.begin("evaluate", f"top-1 of {len(models)} models on the target test split (clip and video "
                            "level, with 95 % bootstrap intervals)")
        reports = {}
        for name, checkpoint in models.items():
            out = (where or self.run / "evaluate") / name
            report = out / "report.json"
            if report.is_file() and report.stat().st_mtime >= checkpoint.stat().st_mtime:
                self.done.reused.append(f"evaluate_{name}")
            else:
                evaluate_checkpoint(checkpoint, EvalConfig(
                    dataset="ucf101", data_root=str(self.target), splits_dir=str(self.splits), clips=self.cfg.eval_clips,
                    crops=self.cfg.eval_crops, workers=self.cfg.workers, out=str(out), progress=self.cfg.progress))
                self.done.ran.append(f"evaluate_{name}")
            reports[name] = json.loads(report.read_text())
        self.progress.end("evaluate", ran=False)
        return reports

    def bench(self) -> dict[str, Any]:
        """Size and speed of the student, the teachers and X3D-S at the demo input (and the paper's)."""
        self.progress.begin("bench", "parameters, GMACs, CPU FPS of the student and the teachers")
        cfg = self.cfg
        out = self.run / "bench"
        models = (ModelSpec("shufflenet2plus1d", self.student_kwargs),
                  ModelSpec(cfg.teacher3d, {"widen_factor": cfg.teacher_width}),
                  ModelSpec(cfg.teacher2d, {"widen_factor": cfg.teacher_width}), ModelSpec("x3d_s"))
        shapes = {"demo": (cfg.clip_len, cfg.crop_size), **({"paper": (16, 224)} if cfg.bench_full_size else {})}
        results = {}
        for key, (frames, size) in shapes.items():
            bcfg = BenchConfig(models=models, frames=frames, size=size, paths=("fp32",), warmup=cfg.bench_warmup,
                               repeats=cfg.bench_repeats, reference=models[1].name, progress=False, seed=cfg.seed)
            path = out / f"{key}.json"
            if path.is_file() and json.loads(path.read_text()).get("config") == json.loads(json.dumps(bcfg.to_dict())):
                self.done.reused.append(f"bench_{key}")
            else:
                out.mkdir(parents=True, exist_ok=True)
                atomic_write_text(json.dumps(run_benchmark(bcfg).to_dict(), indent=2) + "\n", path)
                self.done.ran.append(f"bench_{key}")
            results[key] = json.loads(path.read_text())
        self.progress.end("bench", ran=False)
        return results

    def annotate(self, students: dict[str, Path]) -> dict[str, Any] | None:
        """The two-teacher student's running label drawn into one target test video (when it was trained)."""
        if "distilled_both" not in students:
            return None
        self.progress.begin("annotate", "dsn predict --stream on one target test video, with labels drawn in")
        annotated = annotate_test_video(students["distilled_both"], self.target,
                                        self.run / "annotated_test_video.mp4", self.done)
        self.progress.end("annotate", ran=False)
        return annotated

    def write_results(self, evaluations: dict[str, Any], bench: dict[str, Any],
                      annotated: dict[str, Any] | None) -> DemoResult:
        """results.json, results.md and accuracy_fps.png."""
        results = collect_results(self.cfg, evaluations, bench, self.labelled_videos(self.cfg.label_fraction),
                                  self.training_videos())
        results["annotated_video"] = annotated
        results["stage_seconds"] = self.progress.seconds  # this invocation's stages (reused ones are absent)
        results["wall_seconds"] = time.perf_counter() - self.progress.start
        self.done.results = results
        atomic_write_text(json.dumps(results, indent=2) + "\n", self.run / "results.json")
        atomic_write_text(results_markdown(results), self.run / "results.md")
        accuracy_fps_chart(results, self.run / "accuracy_fps.png")
        print(f"demo run folder: {self.run} (results.md, results.json, accuracy_fps.png, stages/)")
        return self.done


def stage_costs(cfg: DemoConfig) -> dict[str, float]:
    """The rough cost of each kind of stage in work units, for the ETA (the single run and the study alike)."""
    return {"data": 1.0, "teacher3d": 3.0 * cfg.teacher_epochs, "teacher2d": 1.0 * cfg.teacher_epochs,
            "distill": 2.0 * cfg.distill_epochs, "finetune": 0.05 * cfg.finetune_steps,
            "probe": 0.03 * cfg.finetune_steps, "scratch_equal": 0.05 * cfg.finetune_steps + 2.0 * cfg.distill_epochs,
            "reference": 1.4 * cfg.reference_max_epochs, "evaluate": 3.0, "bench": 2.0, "annotate": 0.5}


def first_stages(cfg: DemoConfig) -> list[tuple[str, float]]:
    """The data, then the teachers where they are trained here, with their costs."""
    cost = stage_costs(cfg)
    return [("data", cost["data"])] + ([("teacher3d", cost["teacher3d"]), ("teacher2d", cost["teacher2d"])]
                                       if cfg.teachers_from is None else [])


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


def write_splits(target: Path, splits: Path, val_splits: Path, before_val: int, val_groups: int) -> None:
    """The split files of the demo's stages, from the target's own (its test split is its first actor
    groups, the training ones follow): ``splits`` trains on the training actors, leaving out the last
    ``val_groups`` groups (after the first ``before_val``: the validation actors), and tests on the test
    actors; ``val_splits`` (written when there are validation actors) trains on the same actors and
    validates on those. The test and training actors do not depend on the validation ones."""
    lines = [ln for ln in (target / "trainlist01.txt").read_text().splitlines() if ln.strip()]
    val = {f"g{g:02d}" for g in range(before_val + 1, before_val + val_groups + 1)}
    train = [ln for ln in lines if group_of(Path(ln.split()[0])) not in val]
    classes = (target / "classInd.txt").read_text()
    splits.mkdir(parents=True, exist_ok=True)
    atomic_write_text("\n".join(train) + "\n", splits / "trainlist01.txt")
    atomic_write_text((target / "testlist01.txt").read_text(), splits / "testlist01.txt")
    atomic_write_text(classes, splits / "classInd.txt")
    if not val:
        return
    val_splits.mkdir(parents=True, exist_ok=True)
    atomic_write_text("\n".join(train) + "\n", val_splits / "trainlist01.txt")
    atomic_write_text("\n".join(ln.split()[0] for ln in lines if group_of(Path(ln.split()[0])) in val) + "\n",
                      val_splits / "testlist01.txt")
    atomic_write_text(classes, val_splits / "classInd.txt")


def export_teacher(last: Path, dest: Path, cfg: DemoConfig, seconds: float | None) -> Path:
    """A trained demo teacher as a file to ship: its run checkpoint without the optimisation state,
    the weights in fp16, and how it was made (the demo's source data and seed, its training time)."""
    ckpt = read_run_checkpoint(last)
    kept = {k: ckpt[k] for k in ("format", "command", "model_name", "model_kwargs", "classes", "preprocess", "config",
                                 "epoch", "step", "metrics") if k in ckpt}
    kept["state_dict"] = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()}
    kept["demo_teacher"] = {"source_seed": cfg.source_seed, "source_groups": cfg.source_groups,
                            "source_cue_strength": cfg.source_cue_strength,
                            "clips_per_group": cfg.clips_per_group, "seed": cfg.seed, "train_seconds": seconds,
                            "made_by": "dsn demo --train-teachers"}
    dest.parent.mkdir(parents=True, exist_ok=True)
    return atomic_save(kept, dest)


def annotate_test_video(checkpoint: Path, target: Path, dest: Path, done: DemoResult) -> dict[str, Any] | None:
    """Stream the first target test video through ``checkpoint`` with ``dsn predict``'s machinery and
    write it with the running label drawn in; returns its true class and the windows' labels."""
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


def _distill_order(modes: tuple[str, ...]) -> list[str]:
    """The two-teacher distillation first: its teacher cache holds both teachers and serves the others."""
    return sorted(modes, key=lambda m: m != "both")
