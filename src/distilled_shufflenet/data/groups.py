"""Held-out splits by whole actor groups, for datasets (UCF101, SynthActions) that have no validation split.

UCF101-style names carry the actor group: ``v_Punch_g08_c02.avi`` is clip 2 of group 8, and the clips
of one group come from one long recording (same actor, same scene).  A validation split that takes
some clips of a group and leaves the others in training measures memory of that actor, not
generalisation, so :func:`holdout` holds out whole groups.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = ["group_of", "holdout"]

_GROUP = re.compile(r"_g(\d+)_c\d+", re.IGNORECASE)


def group_of(path: str | Path) -> str | None:
    """The actor group of a UCF101-style name (``v_Punch_g08_c02.avi`` -> ``"g08"``), else ``None``."""
    m = _GROUP.search(Path(path).stem)
    return f"g{int(m.group(1)):02d}" if m else None


def holdout(paths: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Split ``paths`` into (kept, held out): at least ``fraction`` of the videos held out, by
    whole actor groups when every name has one (so no actor is on both sides), else video by video.
    The choice depends only on the names and ``seed``."""
    if fraction <= 0 or len(paths) < 2:
        return list(paths), []
    rng = np.random.default_rng(seed)
    want = max(1, math.ceil(fraction * len(paths)))
    groups = [group_of(p) for p in paths]
    if all(g is not None for g in groups) and len(set(groups)) > 1:
        names = sorted(set(groups))  # type: ignore[arg-type]
        held: set[str] = set()
        for g in rng.permutation(names):
            if sum(x in held for x in groups) >= want or len(held) == len(names) - 1:
                break
            held.add(str(g))
        val = [p for p, g in zip(paths, groups) if g in held]
        return [p for p, g in zip(paths, groups) if g not in held], val
    chosen = set(rng.choice(len(paths), size=min(want, len(paths) - 1), replace=False).tolist())
    return [p for i, p in enumerate(paths) if i not in chosen], [p for i, p in enumerate(paths) if i in chosen]
