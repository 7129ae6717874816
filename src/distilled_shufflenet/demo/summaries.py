"""Several demo runs (typically the same demo with other ``--seed`` values) summed up: every model's
top-1 as mean and min-max, the distilled students' margins over scratch paired by run, a table and a chart."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from distilled_shufflenet.demo.config import TEACHER_FILES
from distilled_shufflenet.demo.report import BASELINE, ROWS, accuracy_fps_axes
from distilled_shufflenet.io import save_figure

__all__ = ["seed_summary", "seed_summary_chart", "seed_summary_markdown"]


def seed_summary(runs: list[Path]) -> dict[str, Any]:
    """Mean and min-max of every model's top-1 over finished demo runs (one ``results.json`` each,
    typically the same demo with other ``--seed`` values), and of each trained student's margin over
    the equal-compute scratch student on the same labels (paired within each run), with each run's own
    95 % paired bootstrap interval of it."""
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
    rows, margins, per_run_margins = [], {}, {}
    for key, label, _ in ROWS:
        per_run = [named.get(key) for named in by_name]
        if any(r is None or r["video_top1"] is None for r in per_run):
            continue
        fps = sorted(r["fps_demo"] for r in per_run if r.get("fps_demo"))
        rows.append({"name": key, "model": label, "video_top1": spread([r["video_top1"] for r in per_run]),
                     "clip_top1": spread([r["clip_top1"] for r in per_run]),
                     "fps_demo": fps[len(fps) // 2] if fps else None})
        if key != BASELINE and not key.startswith("teacher") and all(BASELINE in named for named in by_name):
            margins[key] = spread([r["video_top1"] - named[BASELINE]["video_top1"]
                                   for r, named in zip(per_run, by_name)])
            found = [{m["name"]: m for m in res.get("margins", [])}.get(key) for res in loaded]
            if all(found):
                per_run_margins[key] = [{"points": m["points"], "ci95": m["ci95"]} for m in found]
    ignored = {"seed", "output", "progress"}
    settings = [{**res["config"], "teachers_from": _teachers(res["config"].get("teachers_from"))} for res in loaded]
    differ = sorted({k for c in settings for k, v in c.items() if k not in ignored and v != settings[0].get(k)})
    return {"runs": [str(r) for r in runs], "seeds": [res["config"].get("seed") for res in loaded],
            "differing_settings": differ,
            "test_videos": [res.get("test_videos") for res in loaded], "rows": rows,
            "margin_over_scratch_equal_compute": margins, "margin_ci95_per_run": per_run_margins,
            "wall_seconds": spread([res.get("wall_seconds", float("nan")) for res in loaded])}


def _teachers(folder: str | None) -> Any:
    """What a run's teachers were: the digests of its teacher files where they are still there (the same
    files in two copies of the project are the same teachers), else the folder as written."""
    if folder is None:
        return None
    files = [Path(folder) / name for name in sorted(TEACHER_FILES.values())]
    if not all(f.is_file() for f in files):
        return folder
    return [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]


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
    if summary["margin_over_scratch_equal_compute"]:
        seeds = ", ".join(str(s) for s in summary["seeds"])
        lines += ["", "Margin over the student from scratch on the same labels with equal compute, video top-1 "
                  f"points, paired by run; then each run's margin with its 95 % paired bootstrap interval (seeds {seeds}):",
                  "", "| student | margin, mean (min-max) | per run [95 % CI] |", "|---|---|---|"]
        labels = {key: label for key, label, _ in ROWS}
        per_run = summary.get("margin_ci95_per_run", {})
        for k, v in summary["margin_over_scratch_equal_compute"].items():
            runs = "; ".join(f"{m['points']:+.1f} [{m['ci95'][0]:+.1f}, {m['ci95'][1]:+.1f}]" for m in per_run.get(k, []))
            lines.append(f"| {labels[k]} | {cell(v)} | {runs or '-'} |")
    w = summary["wall_seconds"]
    lines += ["", f"Wall time per run: {w['mean'] / 60:.1f} min ({w['min'] / 60:.1f} to {w['max'] / 60:.1f})."]
    return "\n".join(lines) + "\n"


def seed_summary_chart(summary: dict[str, Any], path: Path) -> Path:
    """A PNG of each model's video top-1 (mean, with the min-max range as an error bar) against its CPU
    FPS at the demo input (the median over the runs)."""
    fig = Figure(figsize=(6.5, 4.2), layout="tight")
    ax = fig.add_subplot()
    for r in summary["rows"]:
        if not r.get("fps_demo"):
            continue
        v = r["video_top1"]
        ax.errorbar(r["fps_demo"], v["mean"], yerr=[[v["mean"] - v["min"]], [v["max"] - v["mean"]]], fmt="o",
                    capsize=3, label=f"{r['name']}: {_spread_text(v)}")
    accuracy_fps_axes(ax)
    ax.set_title(f"{len(summary['runs'])} runs (seeds {', '.join(str(s) for s in summary['seeds'])}): "
                 "mean, min-max", fontsize=9)
    ax.legend(fontsize=7, loc="best")
    return save_figure(fig, path, dpi=100)
