"""The record of a training run: ``log.csv``, TensorBoard events and ``curves.png`` (:class:`RunLog`), the
figures of an epoch (:func:`epoch_row`) and its one-line summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from distilled_shufflenet.engine.checkpointing import TrainState
from distilled_shufflenet.engine.objective import Objective

__all__ = ["RunLog", "epoch_row", "summary"]

# the figures of the one-line epoch summary (log.csv has them all)
_SUMMARY = ("train_top1", "train_mid", "train_final", "val_loss", "val_top1", "val_top5", "val_mid", "val_final")


# --------------------------------------------------------------------------- logging
class RunLog:
    """``log.csv`` (one row per epoch), TensorBoard events when available, ``curves.png``.

    A run that stops at its step budget mid-epoch logs that partial epoch too (training figures only); a
    resumed run keeps the rows of the epochs its checkpoint had finished (``resume_epoch``) and drops the rest,
    the partial row included, as they are written again. ``curves.png`` is redrawn at most every
    ``plot_every`` seconds (a drawing takes about 0.25 s, a short epoch not much more) and when the log
    is closed."""

    plot_every = 10.0

    def __init__(self, run_dir: Path, columns: Sequence[str], *, enabled: bool, tensorboard: bool, plots: bool,
                 resume_step: int | None, resume_epoch: int | None = None, previous_csv: Path | None = None) -> None:
        self.csv = run_dir / "log.csv"
        self.png = run_dir / "curves.png"
        self.columns = tuple(columns)
        self.enabled = enabled
        self.plots = plots
        self._drawn_at: float | None = None  # monotonic time of the last drawing
        self._stale = False
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        source = self.csv if previous_csv is None or not previous_csv.exists() else previous_csv
        if resume_step is not None and source.exists():
            # rows written after the checkpoint we resume from would be written again
            lines = source.read_text().splitlines()
            def before(ln: str) -> bool:
                epoch, step = (int(float(v)) for v in ln.split(",")[:2])
                return step <= resume_step and (resume_epoch is None or epoch <= resume_epoch)

            kept = lines[:1] + [ln for ln in lines[1:] if ln and before(ln)]
            self.csv.write_text("\n".join(kept) + "\n")
        if not self.csv.exists() or resume_step is None:
            self.csv.write_text(",".join(self.columns) + "\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def row(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        cells = ["" if row.get(c) is None else str(int(row[c])) if c in ("epoch", "step") else f"{row[c]:.6g}"
                 for c in self.columns]
        with self.csv.open("a") as f:
            f.write(",".join(cells) + "\n")
        for key in self.columns[2:]:
            if row.get(key) is not None:
                self.scalar(f"epoch/{key}", row[key], int(row["step"]))
        if not self.plots:
            return
        self._stale = True
        if self._drawn_at is None or time.monotonic() - self._drawn_at >= self.plot_every:
            self.draw()

    def draw(self) -> None:
        """Redraw ``curves.png`` from ``log.csv`` now."""
        self._stale = False
        self._drawn_at = time.monotonic()
        try:
            from distilled_shufflenet.engine.plots import plot_curves

            plot_curves(self.csv, self.png)
        except Exception as e:  # a figure must never stop a training run
            print(f"warning: could not draw {self.png}: {e}", file=sys.stderr)

    def close(self) -> None:
        if self._stale:  # only set by rows a log that draws has written
            self.draw()
        if self.writer is not None:
            self.writer.close()


def epoch_row(state: TrainState, objective: Objective, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The training figures of the epoch so far (validation columns empty)."""
    m = state.meters
    clips = max(m["clips"], 1.0)
    row: dict[str, Any] = {"epoch": state.epoch + 1, "step": state.step, "train_loss": m["loss"] / clips}
    for c in objective.train_columns:
        row[f"train_{c}"] = m.get(c, 0.0) / clips
    row.update(dict.fromkeys(objective.val_columns))
    row.update({
        "lr": optimizer.param_groups[0]["lr"],
        "clips_per_s": m["clips"] / m["time"] if m["time"] else None,
        "data_wait_share": m["wait"] / m["time"] if m["time"] else None,
    })
    return row


def summary(row: dict[str, Any], epochs: int) -> str:
    """One line per epoch: every logged figure, compactly."""
    text = f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f}"
    for key, value in row.items():
        if value is None or key not in _SUMMARY:
            continue
        label = key.replace("_", " ")
        text += f"  {label} {value:.1f}%" if key.endswith(("top1", "top5")) else f"  {label} {value:.4g}"
    text += f"  lr {row['lr']:.3g}"
    if row.get("clips_per_s") is not None:
        text += f"  {row['clips_per_s']:.1f} clips/s  data wait {row['data_wait_share']:.0%}"
        if row.get("train_teacher_s") is not None:
            text += f"  teachers {row['train_teacher_s'] * row['clips_per_s']:.0%}"
    return text
