"""Figures: training curves from ``log.csv`` and the confusion matrix of an evaluation.

Drawn with matplotlib's Agg canvas on a private ``Figure`` (no pyplot state, no display needed) and
written atomically, so a reader (or a training run plotting at every epoch end) never sees half a PNG.
"""

from __future__ import annotations

import csv
import math
import os
import textwrap
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from distilled_shufflenet.io import save_figure

# log.csv columns drawn by plot_curves: (panel title, [(column, label), ...])
_CURVES = (
    ("loss", (("train_loss", "train"), ("val_loss", "val"))),
    ("top-1", (("train_top1", "train"), ("val_top1", "val"))),
)
# distillation logs: the loss of each tap, and of each tap's teacher
_TAP_CURVES = (
    ("loss per tap", tuple((f"{s}_{t}", f"{s} {t}") for t in ("mid", "final") for s in ("train", "val"))),
    ("loss per tap and teacher", tuple((f"{s}_{t}_{k}", f"{s} {t} {k.upper()}") for t in ("mid", "final")
                                       for k in ("2d", "3d") for s in ("train", "val"))),
)


def _panels(csv_path: Path) -> tuple:
    """The panels a log's header calls for: loss and top-1 (supervised), loss and the per-tap and
    per-teacher losses (distillation)."""
    with csv_path.open(newline="") as f:
        header = set(next(csv.reader(f), []))
    if "train_top1" in header or not any(c in header for _, pairs in _TAP_CURVES for c, _ in pairs):
        return _CURVES
    return (_CURVES[0],) + tuple((name, tuple(p for p in pairs if p[0] in header)) for name, pairs in _TAP_CURVES
                                 if any(c in header for c, _ in pairs))

# above this many classes the confusion matrix drops per-cell counts and class names on the axes
_NAMED_CLASSES = 40
_CELL_TEXT_CLASSES = 20


def _number(text: str | None) -> float:
    """A CSV cell as a float; empty or missing cells are NaN (validation does not run every epoch)."""
    if text is None or not text.strip():
        return math.nan
    return float(text)


def read_curves(csv_path: str | os.PathLike, columns: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The epoch-end value of each curve column of a training ``log.csv``, one entry per epoch.

    Returns ``{"epoch": (E,), "train_loss": (E,), ...}``; when an epoch has several rows (logging every few
    steps) the last non-empty value of each column in that epoch is taken.  Missing values are NaN.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: no such training log")
    columns = list(columns) if columns is not None else [c for _, pairs in _CURVES for c, _ in pairs]
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is None or "epoch" not in reader.fieldnames:
            raise ValueError(f"{csv_path}: expected a CSV header with an 'epoch' column, got {reader.fieldnames}")
        absent = [c for c in columns if c not in reader.fieldnames]
        if len(absent) == len(columns):
            raise ValueError(f"{csv_path}: none of the columns {columns} is present (header: {reader.fieldnames})")
        last: dict[float, dict[str, float]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                epoch = _number(row.get("epoch"))
                values = {c: _number(row.get(c)) for c in columns}
            except ValueError as e:
                raise ValueError(f"{csv_path}, line {line}: expected numbers in {['epoch', *columns]} ({e})") from None
            if math.isnan(epoch):
                continue
            kept = last.setdefault(epoch, {c: math.nan for c in columns})
            kept.update({c: v for c, v in values.items() if not math.isnan(v)})
    epochs = sorted(last)
    out = {"epoch": np.array(epochs, dtype=float)}
    for c in columns:
        out[c] = np.array([last[e][c] for e in epochs], dtype=float)
    return out


def plot_curves(csv_path: str | os.PathLike, png_path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw loss and top-1 against epoch, train and validation, from a training ``log.csv``; for a
    distillation log, the loss and the loss of each tap and of each tap's teacher instead of top-1.

    Columns read: ``epoch``, ``train_loss``, ``val_loss``, ``train_top1``, ``val_top1`` (validation cells
    may be empty), or ``train_mid``, ``val_final_2d``, ...  Writes ``png_path`` atomically and returns it.
    """
    panels = _panels(Path(csv_path)) if Path(csv_path).is_file() else _CURVES
    curves = read_curves(csv_path, [c for _, pairs in panels for c, _ in pairs])
    fig = Figure(figsize=(5 * len(panels), 4), layout="constrained")
    for ax, (name, pairs) in zip(fig.subplots(1, len(panels)), panels):
        drawn = False
        for column, label in pairs:
            y = curves.get(column, np.full(len(curves["epoch"]), np.nan))
            keep = ~np.isnan(y)
            if keep.any():
                ax.plot(curves["epoch"][keep], y[keep], marker="o", markersize=3, label=label)
                drawn = True
        ax.set_xlabel("epoch")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(True, alpha=0.3)
        if drawn:
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, color="gray")
    fig.suptitle(title or Path(csv_path).parent.name or "training")
    return save_figure(fig, png_path, dpi=100)


def plot_confusion(
    matrix: "np.ndarray | Sequence[Sequence[int]]",
    classes: Sequence[str],
    png_path: str | os.PathLike,
    title: str = "confusion matrix",
) -> Path:
    """Draw a ``(C, C)`` confusion matrix (row = true class, column = predicted) and write it atomically.

    Colours are row-normalised (the share of each true class predicted as each class), so rare and
    frequent classes read alike.  Class names label the axes up to 40 classes, and counts are written in
    the cells up to 20; larger matrices (UCF101's 101 classes) show class indices every 10 classes instead.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    num = len(classes)
    if counts.shape != (num, num):
        raise ValueError(f"matrix: expected shape ({num}, {num}) for {num} classes, got {counts.shape}")
    rows = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, rows, out=np.zeros(counts.shape, dtype=float), where=rows > 0)  # (C, C)

    side = min(max(5.0, 0.28 * num + 3.0), 16.0)
    fig = Figure(figsize=(side + 1.5, side), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the true class")
    if num <= _NAMED_CLASSES:
        ticks = np.arange(num)
        ax.set_xticks(ticks, labels=list(classes), rotation=90, fontsize=8)
        ax.set_yticks(ticks, labels=list(classes), fontsize=8)
    else:
        ticks = np.arange(0, num, 10)
        ax.set_xticks(ticks, labels=[str(t) for t in ticks])
        ax.set_yticks(ticks, labels=[str(t) for t in ticks])
    if num <= _CELL_TEXT_CLASSES:
        for i in range(num):
            for j in range(num):
                if counts[i, j]:
                    dark = share[i, j] > 0.5
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if dark else "black")
    named = "" if num <= _NAMED_CLASSES else " (class index)"
    ax.set_xlabel("predicted class" + named)
    ax.set_ylabel("true class" + named)
    ax.set_title(textwrap.fill(title, width=int(7 * side)), fontsize=10 if num <= _NAMED_CLASSES else 12)
    return save_figure(fig, png_path, dpi=120)
