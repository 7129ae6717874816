"""The demo's results: one row per model (accuracy on the target test split, size, speed), written as
results.json, the paper-style table of results.md and the accuracy-against-speed chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from distilled_shufflenet.demo.config import DemoConfig
from distilled_shufflenet.engine.eval_report import paired_top1_margin
from distilled_shufflenet.io import save_figure

__all__ = ["BASELINE", "ROWS", "accuracy_fps_axes", "accuracy_fps_chart", "collect_results", "interval_text",
           "results_markdown"]

# (name, what it is, its row in the bench: 0 the student, 1 the 3D teacher, 2 the 2D teacher)
ROWS = (("teacher3d", "3D teacher (trained on other actors)", 1), ("teacher2d", "2D teacher (trained on other actors)", 2),
        ("distilled_both", "student distilled from both teachers + fine-tuned", 0),
        ("distilled_3d", "student distilled from the 3D teacher + fine-tuned", 0),
        ("distilled_2d", "student distilled from the 2D teacher + fine-tuned", 0),
        ("probe_both", "student distilled from both teachers, linear probe (backbone frozen)", 0),
        ("scratch_equal", "student from scratch, same labels, equal compute (distillation + fine-tuning steps)", 0))
X3D_ROW = 3  # the efficient peer, benched beside the student but not trained here
BASELINE = "scratch_equal"  # the margins are paired against it, video by video


def _bench_cells(bench: dict[str, Any], index: int) -> dict[str, Any]:
    """A model's parameters, GMACs and FPS at each benched input shape."""
    cells: dict[str, Any] = {}
    for shape, rep in bench.items():
        b = rep["rows"][index]
        cells.update({"params": b["params"], f"gmacs_{shape}": b["macs"] / 1e9, f"fps_{shape}": b["fps"]})
    return cells


def collect_results(cfg: DemoConfig, evaluations: dict[str, Any], bench: dict[str, Any], labelled: int,
                    all_train: int) -> dict[str, Any]:
    """results.json: the config, the data's counts, one row per model scored (then X3D-S, speed only), and
    the machine and rows of the bench."""
    rows = []
    for key, label, model_index in ROWS:
        if key not in evaluations:
            continue
        ev = evaluations[key]
        ci = ev["video_level"].get("top1_ci95")
        rows.append({"name": key, "model": label,
                     "clip_top1": _pct(ev["clip_level"]["top1"]) if ev.get("clip_level") else None,
                     "video_top1": _pct(ev["video_level"]["top1"]),
                     "video_top1_ci95": None if ci is None else [_pct(ci[0]), _pct(ci[1])],
                     **_bench_cells(bench, model_index)})
    rows.append({"name": "x3d_s", "model": "X3D-S (speed only, not trained here)", "clip_top1": None,
                 "video_top1": None, "video_top1_ci95": None, **_bench_cells(bench, X3D_ROW)})
    return {"config": cfg.to_dict(), "labelled_videos": labelled, "training_videos": all_train,
            "test_videos": evaluations["teacher3d"]["video_level"]["videos"],
            "rows": rows, "margins": margins(evaluations), "machine": next(iter(bench.values()))["machine"],
            "bench_rows": {k: v["rows"] for k, v in bench.items()}}


def margins(evaluations: dict[str, Any]) -> list[dict[str, Any]]:
    """Each trained student's video top-1 minus the equal-compute scratch student's on the same test videos,
    in points, with its 95 % paired bootstrap interval."""
    if BASELINE not in evaluations:
        return []
    out = []
    for key, label, _ in ROWS:
        if key in evaluations and key != BASELINE and not key.startswith("teacher"):
            m = paired_top1_margin(evaluations[key], evaluations[BASELINE])
            out.append({"name": key, "over": BASELINE, "model": label, "points": 100 * m.estimate,
                        "ci95": [100 * m.low, 100 * m.high]})
    return out


def interval_text(value: float | None, ci: list[float] | None, digits: int = 1) -> str:
    """``"72.5 [66.0, 78.5]"``, or the value alone without an interval."""
    if value is None:
        return "-"
    return f"{value:.{digits}f}" + ("" if ci is None else f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]")


def results_markdown(results: dict[str, Any]) -> str:
    """The paper-style table of ``results`` (accuracy on the target test split, size and speed)."""
    shapes = [k for k in ("demo", "paper") if any(f"fps_{k}" in r for r in results["rows"])]
    head = ["model", "clip top-1 %", "video top-1 % [95 % CI]", "params (M)"]
    for s in shapes:
        head += [f"GMACs ({s} input)", f"CPU FPS ({s} input)"]
    lines = ["# Demo results", "",
             f"Target test split: {results['test_videos']} videos of unseen actors; labelled: "
             f"{results['labelled_videos']} of {results['training_videos']} training videos. Every figure scores "
             "last.pt (nothing is chosen on the test split); intervals: 95 % percentile bootstrap over the test "
             "videos.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results["rows"]:
        cells = [r["model"], _num(r["clip_top1"]), interval_text(r["video_top1"], r.get("video_top1_ci95")),
                 _num(r.get("params", 0) / 1e6, 2)]
        for s in shapes:
            cells += [_num(r.get(f"gmacs_{s}"), 3), _num(r.get(f"fps_{s}"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    if results.get("margins"):
        lines += ["", "Margin over the equal-compute scratch student on the same labels (video top-1, points, "
                  "paired over the same test videos, 95 % bootstrap interval):", ""]
        lines += [f"- {m['model']}: {m['points']:+.1f} [{m['ci95'][0]:+.1f}, {m['ci95'][1]:+.1f}]"
                  for m in results["margins"]]
    m = results["machine"]
    lines += ["", f"Machine: {m.get('cpu_model')} ({m.get('cpu_capability')}, {m.get('threads')} threads, load "
              f"average {m.get('load_average')}); FPS: median of batch-1 fp32 calls."]
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
    """A PNG of video top-1 (with its 95 % interval) against CPU FPS at the demo input, one point per model."""
    fig = Figure(figsize=(6, 4), layout="tight")
    ax = fig.add_subplot()
    points: dict[tuple[float, float], list[dict[str, Any]]] = {}  # models at the same point share one label
    for r in results["rows"]:
        if r["video_top1"] is None:  # speed only
            continue
        points.setdefault((r["fps_demo"], r["video_top1"]), []).append(r)
    for (fps, top1), rows in points.items():
        ci = rows[0].get("video_top1_ci95")
        err = None if ci is None else [[top1 - ci[0]], [ci[1] - top1]]
        ax.errorbar(fps, top1, yerr=err, fmt="o", capsize=3)
        ax.annotate("\n".join(r["name"] for r in rows), (fps, top1), fontsize=7, xytext=(4, 2),
                    textcoords="offset points")
    accuracy_fps_axes(ax)
    return save_figure(fig, path, dpi=100)


def accuracy_fps_axes(ax: Any) -> None:
    """The axes of every accuracy-against-speed chart of the demo: log FPS, top-1 in %."""
    ax.set_xscale("log")
    ax.set_xlabel("CPU FPS at the demo input (batch 1)")
    ax.set_ylabel("video top-1 on the target test split (%)")
    ax.grid(alpha=0.3)
