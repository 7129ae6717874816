"""The demo's stages: whether a stage's run folder holds a finished run of its settings (reuse), one
that stopped part-way (resume) or none (run), the runner of one stage, and the progress line."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from distilled_shufflenet.engine.checkpointing import read_run_checkpoint, saved_state
from distilled_shufflenet.engine.config import RESUME_CHANGEABLE, resolve_config
from distilled_shufflenet.options import build_config, field_default, plain
from distilled_shufflenet.engine.loop import steps_per_epoch

__all__ = ["DemoResult", "Progress", "epochs_for_steps", "run_stage", "stage_config", "stage_state"]


@dataclass
class DemoResult:
    """What :func:`~distilled_shufflenet.demo.run_demo` produced: the run folder, the results (as in
    results.json) and which stages ran and which were reused."""

    run_dir: Path
    results: dict[str, Any]
    ran: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)


def _same(requested: Any, saved: Any) -> bool:
    """Whether a saved config value is what was asked for (None asks nothing; a mapping asks its keys)."""
    if requested is None:
        return True
    if isinstance(requested, dict):
        return isinstance(saved, dict) and all(_same(v, saved.get(k)) for k, v in requested.items())
    return plain(requested) == plain(saved)


def stage_state(folder: Path, config: Any) -> str:
    """``"new"`` (no run), ``"done"`` (a finished run of this config), ``"partial"`` (this config,
    stopped before its end: resume it).  A run of another config there is a ``ValueError``."""
    last = folder / "last.pt"
    if not last.is_file():
        return "new"
    ckpt = read_run_checkpoint(last)
    saved = ckpt.get("config") or {}
    # a config saved relative to its run folder is compared in that form: a moved demo folder holds the same runs
    wanted = config.portable(folder) if saved.get("paths_root") is not None else config
    # a setting the saved config lacks was added since that run: the run did what its default does
    defaults = {f.name: field_default(f) for f in dataclasses.fields(config)}
    saved = {**{k: v for k, v in defaults.items() if v is not dataclasses.MISSING}, **saved}
    differ = [k for k, v in wanted.to_dict().items()
              if k not in RESUME_CHANGEABLE and k != "resume" and not _same(v, saved.get(k))]
    if differ:
        raise ValueError(f"{folder}: holds a run made with other settings ({', '.join(differ[:5])}); delete that "
                         "folder to redo the stage, or choose another output")
    return "done" if saved_state(ckpt).ended(config) else "partial"


class Progress:
    """One line per stage with the run's ETA (from the time per unit of work of the stages run so far)."""

    def __init__(self, stages: list[tuple[str, float]]) -> None:
        self.stages = stages
        self.cost = dict(stages)  # a name may come back (the study runs each seed's stages): same cost
        self.start = time.perf_counter()
        self.spent = 0.0  # seconds in stages that ran
        self.units = 0.0  # their work units
        self.left = sum(cost for _, cost in stages)  # over the list, repeats included
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


def stage_config(cls: type, **values: Any) -> Any:
    """A stage's run config of class ``cls`` (TrainConfig, DistillConfig, ...), checked as a command's is."""
    return build_config(cls, values, source="dsn demo")


def run_stage(name: str, folder: Path, config: Any, library: Callable[[Any], Any], progress: Progress,
              done: DemoResult) -> Path:
    """Reuse, resume or run the stage ``name`` (``library(config)`` writes its run into ``folder``) and
    return its ``last.pt``."""
    state = stage_state(folder, config)
    progress.begin(name, {"done": "reused", "partial": "resumed", "new": "running"}[state])
    if state != "done":
        if state == "partial":  # the run's saved config, with what a resumed run may change
            changes = {k: getattr(config, k) for k in RESUME_CHANGEABLE if k != "output" and hasattr(config, k)}
            config = resolve_config(type(config), overrides={**changes, "resume": str(folder)})
        library(config)
        done.ran.append(name)
    else:
        done.reused.append(name)
    progress.end(name, ran=state != "done")
    return folder / "last.pt"


def epochs_for_steps(steps: int, videos: int, batch: int) -> int:
    """Epochs that hold ``steps`` steps (``max_steps`` stops the run there), counted as the training loop
    counts them (60 videos in batches of 8: 7 steps an epoch, not 8)."""
    return max(1, math.ceil(steps / max(1, steps_per_epoch(videos, batch))))
