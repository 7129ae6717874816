"""The results of ``dsn bench``: a row per (model, path, input) (:class:`BenchRow`), the report with its
speed-ups (:class:`BenchReport`), its table (:func:`format_report`) and its JSON file (:func:`write_json`)."""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from distilled_shufflenet import machine
from distilled_shufflenet.bench.config import BenchConfig
from distilled_shufflenet.bench.specs import TARGET_SPEEDUPS, format_value, input_text, model_labels
from distilled_shufflenet.inference.backends import SPECS
from distilled_shufflenet.io import atomic_write_text


# ---------------------------------------------------------------------------------------------- report
@dataclass
class BenchRow:
    """The figures of one (model, path) pair. ``macs`` / ``flops`` are per call (the whole batch)."""

    model: str
    path: str
    params: int
    macs: int
    flops: int
    times_ms: list[float]
    median_ms: float
    min_ms: float
    max_ms: float
    fps: float
    # frames per second of the fastest call: less sensitive to other processes on a shared machine
    best_fps: float
    # achieved GFLOP/s over the matmul ceiling of the same precision (None when no ceiling was measured)
    peak_share: float | None
    # (T, H, W) of the input this row was timed at
    input: tuple[int, int, int] | None = None

    @property
    def gmacs_per_fps(self) -> float:
        """Multiply-accumulates per call (G) over frames per second: cost and slowness in one figure."""
        return self.macs / 1e9 / self.fps


@dataclass
class BenchReport:
    """Everything ``dsn bench`` prints, and writes with ``--json``."""

    config: BenchConfig
    machine: dict[str, Any]
    # achieved GFLOP/s of a large matrix product, per precision
    ceilings_gflops: dict[str, float]
    skipped_paths: dict[str, str]
    rows: list[BenchRow]

    def row(self, model: str, path: str, input: tuple[int, int, int] | None = None) -> BenchRow:
        """The row of ``model`` in ``path``, at ``input`` (T, H, W) or else the first one timed."""
        for r in self.rows:
            if r.model == model and r.path == path and (input is None or r.input == input):
                return r
        raise KeyError(f"no row for model {model!r} in path {path!r}" + (f" at input {input}" if input else ""))

    def speedups(self, *, best: bool = False) -> dict[str, float]:
        """Per path: FPS of the first model over FPS of ``config.reference`` at the same input, where
        both were run (median FPS, or with ``best`` the FPS of the fastest calls)."""
        first = self.rows[0] if self.rows else None
        ref = self.config.reference
        if first is None or first.model == ref:
            return {}
        fps = (lambda r: r.best_fps) if best else (lambda r: r.fps)
        out = {}
        for r in self.rows:
            if r.model == first.model and r.input == first.input:
                with contextlib.suppress(KeyError):
                    out[r.path] = fps(r) / fps(self.row(ref, r.path, r.input))
        return out

    def best_row(self, model: str, input: tuple[int, int, int] | None = None) -> BenchRow:
        """The fastest path (median FPS) of ``model`` at ``input`` (default: its first input)."""
        rows = [r for r in self.rows if r.model == model]
        if not rows:
            raise KeyError(f"no row for model {model!r}")
        at = input or rows[0].input
        return max((r for r in rows if r.input == at), key=lambda r: r.fps)

    def best_vs_best(self) -> tuple[BenchRow, BenchRow] | None:
        """The first model's fastest path and ``config.reference``'s fastest path at the same input (both
        by median FPS), or ``None`` when the reference was not run there."""
        first = self.rows[0] if self.rows else None
        if first is None or first.model == self.config.reference:
            return None
        try:
            return self.best_row(first.model, first.input), self.best_row(self.config.reference, first.input)
        except (KeyError, ValueError):
            return None

    def over_eager(self, model: str) -> float | None:
        """FPS of ``model``'s fastest path over its ``fp32`` eager path (median FPS), where both ran."""
        try:
            return self.best_row(model).fps / self.row(model, "fp32", self.best_row(model).input).fps
        except KeyError:
            return None

    def to_dict(self) -> dict[str, Any]:
        pair = self.best_vs_best()
        return {
            "config": self.config.to_dict(),
            "machine": self.machine,
            "ceilings_gflops": self.ceilings_gflops,
            "skipped_paths": self.skipped_paths,
            "rows": [{**asdict(r), "gmacs_per_fps": r.gmacs_per_fps} for r in self.rows],
            "speedups_vs_reference": self.speedups(),
            "best_speedups_vs_reference": self.speedups(best=True),
            "best_path_vs_best_path": None if pair is None else {
                "model": pair[0].model, "path": pair[0].path, "fps": pair[0].fps, "reference": pair[1].model,
                "reference_path": pair[1].path, "reference_fps": pair[1].fps, "ratio": pair[0].fps / pair[1].fps},
            "best_path_over_fp32_eager": {m: self.over_eager(m) for m in dict.fromkeys(r.model for r in self.rows)},
        }



# ---------------------------------------------------------------------------------------------- output
def format_report(report: BenchReport) -> str:
    """The report as one table plus notes, readable in a 100-column terminal."""
    cfg, m = report.config, report.machine
    lines = [
        f"input {tuple(cfg.input_shape)} (N, C, T, H, W); {m['threads']} threads; {machine.describe(m)}; "
        f"torch {m['torch_version']}",
        f"warm-up {cfg.warmup}, {cfg.repeats} repeats, interleaved round-robin; load average (1, 5, 15 min) "
        f"at start {_loads(m.get('load_average'))}, at end {_loads(m.get('load_average_end'))}",
        "",
    ]
    width = max([5] + [len(r.model) for r in report.rows])
    path_width = max([12] + [len(r.path) for r in report.rows])
    common = tuple(cfg.input_shape[2:])
    # an input column only when some model was timed at another input than the common one
    shapes = {r.input or common for r in report.rows}
    in_width = max(len(input_text(t)) for t in shapes) if shapes != {common} else 0
    in_head = f"{'input':<{in_width}}  " if in_width else ""
    header = (
        f"{'model':<{width}}  {in_head}{'path':<{path_width}} {'params M':>8} {'GMACs':>7} {'GFLOPs':>7} "
        f"{'median ms':>9} {'min ms':>8} {'max ms':>8} {'FPS':>7} {'best FPS':>8} {'%peak':>5} {'GMACs/FPS':>9}"
    )
    lines += [header, "-" * len(header)]
    previous = None
    for r in report.rows:
        first = (r.model, r.input) != previous
        new_model = previous is None or r.model != previous[0]
        previous = (r.model, r.input)
        size = f"{_num(r.params / 1e6, 8)} {_num(r.macs / 1e9, 7)} {_num(r.flops / 1e9, 7)}" if first else " " * 24
        share = f"{100 * r.peak_share:>5.1f}" if r.peak_share is not None else f"{'-':>5}"
        shown_input = f"{input_text(r.input or common) if first else '':<{in_width}}  " if in_width else ""
        lines.append(
            f"{r.model if first and new_model else '':<{width}}  {shown_input}{r.path:<{path_width}} {size} "
            f"{r.median_ms:>9.2f} {r.min_ms:>8.2f} {r.max_ms:>8.2f} {r.fps:>7.1f} {r.best_fps:>8.1f} {share} "
            f"{_num(r.gmacs_per_fps, 9)}"
        )
    lines.append("")
    for spec, label in zip(cfg.models, model_labels(cfg.models)):
        if spec.kwargs:
            kwargs = ", ".join(f"{k}={format_value(v)}" for k, v in spec.kwargs.items())
            lines.append(f"{label} built with {kwargs}")
    lines.append(
        "GMACs: multiply-accumulates per call by torch.utils.flop_counter (convolutions and matrix "
        "products); GFLOPs = 2 x GMACs."
    )
    lines.append(
        f"FPS = batch x frames / median seconds per call (batch {cfg.batch}, {cfg.frames} frames"
        + (", or the row's input" if in_width else "") + "); best FPS: the same from the fastest call. "
        "GMACs/FPS: GMACs per call over FPS, lower is better (fewer MACs and faster both lower it)."
    )
    sizes = m.get("ceiling_matmul_n", {})
    ceilings = ", ".join(
        f"{k} {v:.1f} GFLOP/s ({sizes.get(k, '?')}^2 matmul)" for k, v in report.ceilings_gflops.items()
    )
    lines.append(
        f"%peak = GFLOP/s at the median time / this CPU's ceiling of the same precision, the best of "
        f"interleaved matrix products: {ceilings}."
    )
    busy = _busy_warning(m)
    if busy:
        lines.append(busy)
    for name, why in report.skipped_paths.items():
        force = SPECS[name].engine == "torch" and SPECS[name].precision == "bf16" and "emulated" in why
        lines.append(f"skipped {name}: {why}{' (force with --force-bf16)' if force else ''}")
    speedups = report.speedups()
    if speedups:
        first = report.rows[0]
        best = report.speedups(best=True)
        ratios = ", ".join(f"{p} {s:.2f}x" for p, s in speedups.items())
        target = TARGET_SPEEDUPS.get(cfg.reference)
        verdict = "" if target is None else (
            f"(target >= {target:g}x: {'met' if min(speedups.values()) >= target else 'NOT met in every path'}); ")
        at = f" at {input_text(first.input)}" if in_width and first.input else ""
        lines.append(
            f"{first.model} FPS / {cfg.reference} FPS in the same path{at}: {ratios} {verdict}from best FPS: "
            + ", ".join(f"{p} {s:.2f}x" for p, s in best.items())
        )
    pair = report.best_vs_best()
    if pair is not None:
        mine, theirs = pair
        ratio = mine.fps / theirs.fps
        target = TARGET_SPEEDUPS.get(cfg.reference)
        verdict = "" if target is None else f" (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"
        lines.append(f"best path against best path: {mine.model} {mine.path} {mine.fps:.1f} FPS / {theirs.model} "
                     f"{theirs.path} {theirs.fps:.1f} FPS = {ratio:.2f}x{verdict}")
    for model in dict.fromkeys(r.model for r in report.rows):
        gain = report.over_eager(model)
        if gain is not None and len([r for r in report.rows if r.model == model]) > 1:
            lines.append(f"fastest path of {model}: {report.best_row(model).path}, {gain:.2f}x its fp32 eager FPS")
    return "\n".join(lines)


def _busy_warning(machine: dict[str, Any]) -> str | None:
    """A warning when other processes competed for the cores this run used (from the load averages).

    At the end the 1-minute load includes this process's own threads, so those are taken off.
    """
    start, end = machine.get("load_average"), machine.get("load_average_end")
    cpus, threads = machine.get("logical_cpus") or 0, machine.get("threads") or 0
    if not start or not end or not cpus:
        return None
    others = max(start[0], end[0] - threads)
    if others <= cpus - threads + 0.5:
        return None
    advice = "best FPS" + (" (or --threads 1, which suffers less from contention)" if threads > 1 else "")
    return (
        f"WARNING: the machine was busy (a load of about {others:.1f} from other processes on {cpus} logical "
        f"CPUs, {threads} threads used here): latencies are inflated and noisy; compare paths and models "
        f"within this run only, and prefer {advice}."
    )




def _loads(values: list[float] | None) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "n/a"


def _num(value: float, width: int) -> str:
    """Two decimals, or three significant digits for small values (tiny models would all read 0.00)."""
    return f"{value:>{width}.2f}" if value >= 1 or value == 0 else f"{value:>{width}.3g}"


def write_json(report: BenchReport, path: str | os.PathLike) -> Path:
    """Write ``report.to_dict()`` as JSON atomically."""
    return atomic_write_text(json.dumps(report.to_dict(), indent=2) + "\n", path)
