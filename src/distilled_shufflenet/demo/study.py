"""``dsn demo --study``: the label-efficiency curve.

For each seed, the student is distilled once from both teachers and once from the 3D teacher (the label-free
part does not depend on the labels), then for each label fraction each distilled student is fine-tuned on
that share of the training videos and the student from scratch is trained on the same share for as many
steps as distillation and fine-tuning took together (equal compute). Per seed, one more student from
scratch sees every training label and is stopped by a validation split of actors no student trains on
(the upper reference). Everything is scored on the same test videos::

    RUN/stages/seed<S>/distill_{both,3d}, finetune_{both,3d}_<F>, scratch_equal_<F>, reference
    RUN/evaluate/seed<S>/<stage>/report.json
    -> RUN/study.json, study.md, study.png (video top-1 against the labelled share, 95 % intervals)
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from distilled_shufflenet.demo.config import STUDY_SETTINGS, DemoConfig
from distilled_shufflenet.demo.run import DemoSteps, check_run_folder, first_stages, stage_costs
from distilled_shufflenet.demo.stages import DemoResult, Progress
from distilled_shufflenet.engine.metrics import bootstrap_interval
from distilled_shufflenet.io import atomic_write_text, save_figure

__all__ = ["SETTINGS", "run_study", "study_chart", "study_markdown", "study_results"]

# (setting, its line on the chart), in the order of the config's STUDY_SETTINGS
SETTINGS = tuple(zip(STUDY_SETTINGS, ("distilled from both teachers + fine-tuned",
                                      "distilled from the 3D teacher + fine-tuned",
                                      "from scratch, same labels, equal compute")))
MODES = ("both", "3d")
VAL_GROUPS = 6  # validation actors of the reference, when the config names none


def _tag(fraction: float) -> str:
    """``0.05`` -> ``"f005"``: a stage-name-safe label fraction in percent."""
    return f"f{round(fraction * 100):03d}"


def _finetuned(settings: tuple[str, ...]) -> tuple[str, ...]:
    """The distillation modes whose fine-tuned students ``settings`` asks for."""
    return tuple(m for m in MODES if f"distilled_{m}" in settings)


def _modes(settings: tuple[str, ...]) -> tuple[str, ...]:
    """The distillations ``settings`` needs (equal-compute scratch counts the two-teacher one's steps)."""
    return tuple(m for m in MODES if m in _finetuned(settings) or (m == "both" and "scratch_equal" in settings))


def run_study(cfg: DemoConfig) -> DemoResult:
    """Run (or reuse) every stage of the study and write study.json, study.md and study.png."""
    cfg = dataclasses.replace(cfg, target_val_groups=cfg.target_val_groups or VAL_GROUPS,
                              distill_epochs=cfg.study_distill_epochs, distill_modes=_modes(cfg.study_settings))
    cfg.validate()
    run = Path(cfg.output)
    check_run_folder(run)
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps(cfg.to_dict(), indent=2) + "\n", run / "demo_config.json")
    progress = Progress(_plan(cfg))
    shared = DemoSteps(cfg, run, progress=progress)
    shared.data()
    teachers = shared.teachers()
    reports: dict[int, dict[str, Any]] = {}
    for seed in cfg.study_seeds:
        seeded = dataclasses.replace(cfg, seed=seed)
        steps = DemoSteps(seeded, run, stages=run / "stages" / f"seed{seed}", cache=run / "cache" / f"seed{seed}",
                          progress=progress, done=shared.done)
        distilled = steps.distil(teachers, cfg.distill_modes)
        models: dict[str, Path] = {"reference": steps.reference("reference")}
        for fraction in cfg.study_fractions:
            tag = _tag(fraction)
            for mode in _finetuned(cfg.study_settings):
                models[f"distilled_{mode}_{tag}"] = steps.finetune(f"finetune_{mode}_{tag}", distilled[mode], fraction)
            if "scratch_equal" in cfg.study_settings:
                models[f"scratch_equal_{tag}"] = steps.scratch_equal(f"scratch_equal_{tag}", distilled["both"], fraction)
        reports[seed] = steps.evaluate(models, where=run / "evaluate" / f"seed{seed}")
        reports[seed]["_labelled"] = {_tag(f): steps.labelled_videos(f) for f in cfg.study_fractions}
    results = study_results(cfg, reports, shared.training_videos())
    results["wall_seconds"] = time.perf_counter() - progress.start
    results["stage_seconds"] = progress.seconds
    shared.done.results = results
    atomic_write_text(json.dumps(results, indent=2) + "\n", run / "study.json")
    atomic_write_text(study_markdown(results), run / "study.md")
    study_chart(results, run / "study.png")
    print(study_markdown(results), end="")
    print(f"study folder: {run} (study.md, study.json, study.png, stages/seed*/)")
    return shared.done


def _plan(cfg: DemoConfig) -> list[tuple[str, float]]:
    """The study's stages with their rough cost in work units (as the single run counts them)."""
    cost = stage_costs(cfg)
    plan = first_stages(cfg)
    for _ in cfg.study_seeds:
        plan += [(f"distill_{m}", cost["distill"]) for m in cfg.distill_modes] + [("reference", cost["reference"])]
        for fraction in cfg.study_fractions:
            tag = _tag(fraction)
            plan += [(f"finetune_{m}_{tag}", cost["finetune"]) for m in _finetuned(cfg.study_settings)]
            if "scratch_equal" in cfg.study_settings:
                plan.append((f"scratch_equal_{tag}", cost["scratch_equal"]))
        plan.append(("evaluate", cost["evaluate"]))
    return plan


def study_results(cfg: DemoConfig, reports: dict[int, dict[str, Any]], training_videos: int) -> dict[str, Any]:
    """study.json: per setting and fraction, each seed's video top-1 with its bootstrap interval over the
    test videos, and the mean over seeds with an interval that resamples the test videos within every seed
    (the seeds' mean on each resampling); the same for the validation-stopped reference."""
    seeds = list(reports)
    curve = []
    for setting, label in _lines(cfg.study_settings):
        for fraction in cfg.study_fractions:
            key = f"{setting}_{_tag(fraction)}"
            curve.append(_point(setting, label, fraction, [reports[s][key] for s in seeds],
                                [reports[s]["_labelled"][_tag(fraction)] for s in seeds]))
    reference = _point("reference", "from scratch, all labels, stopped on the validation actors", 1.0,
                       [reports[s]["reference"] for s in seeds], [training_videos] * len(seeds))
    any_report = reports[seeds[0]]["reference"]
    return {"config": cfg.to_dict(), "seeds": seeds, "fractions": list(cfg.study_fractions),
            "training_videos": training_videos, "test_videos": any_report["video_level"]["videos"],
            "curve": curve, "reference": reference, "margins": _margins(cfg, reports)}


def _margins(cfg: DemoConfig, reports: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """The paired differences the study is for, per label fraction: two teachers minus the 3D teacher alone,
    minus scratch on the same labels with equal compute, and minus the validation-stopped reference on all
    labels (those whose settings ran); each per seed and for the seeds' mean, paired over the same test
    videos (95 % bootstrap interval, points)."""
    if "distilled_both" not in cfg.study_settings:
        return []
    # (what is compared, the setting it needs, if any, the model it is compared with at a fraction's tag)
    kinds = [("two teachers minus the 3D teacher alone", "distilled_3d", "distilled_3d_{}"),
             ("two teachers minus scratch on the same labels, equal compute", "scratch_equal", "scratch_equal_{}"),
             ("two teachers minus scratch on all labels (validation-stopped)", None, "reference")]
    pairs = [(label, fraction, f"distilled_both_{_tag(fraction)}", other.format(_tag(fraction)))
             for label, setting, other in kinds if setting is None or setting in cfg.study_settings
             for fraction in cfg.study_fractions]
    out = []
    for label, fraction, a, b in pairs:
        hits = {k: np.array([reports[s][k]["video_level"]["top1_by_video"] for s in reports], dtype=np.float64)
                for k in (a, b)}  # (seeds, M)
        per_seed = [bootstrap_interval(x - y) for x, y in zip(hits[a], hits[b])]
        mean = bootstrap_interval(hits[a].mean(0) - hits[b].mean(0))
        out.append({"margin": label, "fraction": fraction, "a": a, "b": b,
                    "points": 100 * mean.estimate, "ci95": [100 * mean.low, 100 * mean.high],
                    "per_seed": [{"points": 100 * i.estimate, "ci95": [100 * i.low, 100 * i.high]} for i in per_seed]})
    return out


def _point(setting: str, label: str, fraction: float, seed_reports: list[dict[str, Any]],
           labelled: list[int]) -> dict[str, Any]:
    hits = np.array([r["video_level"]["top1_by_video"] for r in seed_reports], dtype=np.float64)  # (seeds, M)
    per_seed = [{"top1": 100 * float(h.mean()), "ci95": [100 * v for v in r["video_level"]["top1_ci95"]]}
                for h, r in zip(hits, seed_reports)]
    mean = bootstrap_interval(hits.mean(0))  # the seeds' mean per test video, resampled over the videos
    return {"setting": setting, "model": label, "fraction": fraction, "labelled_videos": labelled,
            "top1_mean": 100 * mean.estimate, "ci95": [100 * mean.low, 100 * mean.high], "per_seed": per_seed}


def study_markdown(results: dict[str, Any]) -> str:
    """The study's table: video top-1 per setting and label fraction, mean over seeds [95 % interval]."""
    fractions = results["fractions"]
    head = ["student"] + [f"{100 * f:g} % labels" for f in fractions]
    by = {(p["setting"], p["fraction"]): p for p in results["curve"]}
    lines = [f"# Label-efficiency study ({_seeds_text(results['seeds'])})", "",
             f"Video top-1 % on {results['test_videos']} test videos of unseen actors, mean over the seeds "
             "[95 % bootstrap interval over the test videos]; the labelled share is of the "
             f"{results['training_videos']} training videos, stratified by class, whole actors. Each seed distils "
             f"{results['config']['distill_epochs']} epochs on the training videos without their labels, once per "
             f"teacher setting; fine-tuning takes {results['config']['finetune_steps']} steps; scratch on the same "
             "labels takes as many steps as both together.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, label in _lines(results["config"].get("study_settings", STUDY_SETTINGS)):
        cells = [label]
        for f in fractions:
            p = by[(setting, f)]
            cells.append(f"{p['top1_mean']:.1f} [{p['ci95'][0]:.1f}, {p['ci95'][1]:.1f}]")
        lines.append("| " + " | ".join(cells) + " |")
    ref = results["reference"]
    lines += ["", f"Upper reference, {ref['model']}: {ref['top1_mean']:.1f} [{ref['ci95'][0]:.1f}, "
              f"{ref['ci95'][1]:.1f}] (per seed: " + ", ".join(f"{p['top1']:.1f}" for p in ref["per_seed"]) + ")."]
    if results.get("margins"):
        lines += ["", "Paired over the same test videos (points, 95 % interval; per seed in brackets after the mean):", ""]
        for m in results["margins"]:
            seeds = "; ".join(f"{p['points']:+.1f} [{p['ci95'][0]:+.1f}, {p['ci95'][1]:+.1f}]" for p in m["per_seed"])
            lines.append(f"- {m['margin']}, {100 * m['fraction']:g} % labels: **{m['points']:+.1f} "
                         f"[{m['ci95'][0]:+.1f}, {m['ci95'][1]:+.1f}]** (seeds: {seeds})")
    if "wall_seconds" in results:
        lines += ["", f"Wall time: {results['wall_seconds'] / 60:.1f} min."]
    return "\n".join(lines) + "\n"


def _lines(names: Any) -> list[tuple[str, str]]:
    """``(setting, label)`` of :data:`SETTINGS` that ``names`` holds, in the table's order."""
    return [(setting, label) for setting, label in SETTINGS if setting in names]


def _seeds_text(seeds: list[int]) -> str:
    return ("seed " if len(seeds) == 1 else "seeds ") + ", ".join(str(s) for s in seeds)


def study_chart(results: dict[str, Any], path: Path) -> Path:
    """study.png: video top-1 against the labelled share (log axis), one line per setting with its 95 %
    band, and the validation-stopped reference as a horizontal band."""
    fig = Figure(figsize=(6.5, 4.2), layout="tight")
    ax = fig.add_subplot()
    for setting, label in _lines(results["config"].get("study_settings", STUDY_SETTINGS)):
        points = sorted((p for p in results["curve"] if p["setting"] == setting), key=lambda p: p["fraction"])
        x = [100 * p["fraction"] for p in points]
        y = [p["top1_mean"] for p in points]
        line = ax.plot(x, y, marker="o", label=label)[0]
        ax.fill_between(x, [p["ci95"][0] for p in points], [p["ci95"][1] for p in points], alpha=0.15,
                        color=line.get_color())
    ref = results["reference"]
    ax.axhline(ref["top1_mean"], color="grey", linestyle="--", label="scratch, all labels, validation-stopped")
    ax.axhspan(ref["ci95"][0], ref["ci95"][1], color="grey", alpha=0.1)
    ax.set_xscale("log")
    shares = [100 * f for f in results["fractions"]]
    ax.set_xticks(shares, [f"{v:g}" for v in shares])  # the measured shares, not the log axis's decades
    ax.minorticks_off()
    ax.set_xlabel("labelled share of the training videos (%)")
    ax.set_ylabel("video top-1 on the test split (%)")
    ax.set_title(f"{_seeds_text(results['seeds'])}: mean, 95 % interval", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, dpi=100)
