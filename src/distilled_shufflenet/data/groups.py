"""Subsets by whole actor groups: held-out validation splits and labelled fractions of a training set.

UCF101-style names carry the actor group: ``v_Punch_g08_c02.avi`` is clip 2 of group 8, and the clips
of one group come from one long recording (same actor, same scene).  A validation split that takes
some clips of a group and leaves the others in training measures memory of that actor, not
generalisation, so :func:`holdout` holds out whole groups.  :func:`labelled_subset` draws the labelled
share of a training set the same way (whole groups), class by class::

    training records --holdout(val_fraction, seed)--> (kept, validation)
    kept --labelled_subset(label_fraction, label_seed)--> the labelled records (never a validation video)
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from distilled_shufflenet.data.splits import VideoRecord

__all__ = ["group_of", "holdout", "labelled_subset"]

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


def labelled_subset(records: Sequence[VideoRecord], fraction: float, seed: int, *,
                    classes: Sequence[str] | None = None) -> list[VideoRecord]:
    """The labelled share of a training set: about ``fraction`` of each class's videos, by whole actor
    groups where every name has one (else video by video), drawn with ``seed``; returned in the order of
    ``records``.

    One seeded order of the groups serves every class: each class takes the groups of that order that
    hold its videos, one by one, while a group brings its count nearer to ``fraction`` x its videos (a
    group exactly half-way is taken).  So the same groups are taken in every class where the groups hold
    alike many videos of each (SynthActions), a larger ``fraction`` with the same ``seed`` takes a
    superset (the points of a label-efficiency curve are nested), and ``fraction`` 1 takes every record.
    The draw depends only on the names (their groups), the labels, the order of ``records`` and
    ``seed``, not on where the videos are stored.

    Raises ``ValueError`` for a ``fraction`` outside (0, 1], a record without a label, or a fraction
    that leaves a class of ``records`` without a video (naming the class, by ``classes`` when given).
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction: expected a share of the videos in (0, 1], got {fraction}")
    records = list(records)
    unlabelled = [r for r in records if r.label is None]
    if unlabelled:
        raise ValueError(f"records: {len(unlabelled)} without a label, e.g. {unlabelled[0].path}")
    groups = [group_of(r.path) for r in records]
    by_group = bool(records) and all(g is not None for g in groups)
    units: list[str] = [str(g) for g in groups] if by_group else [str(i) for i in range(len(records))]
    names = sorted(set(units))
    rank = {names[j]: pos for pos, j in enumerate(np.random.default_rng(seed).permutation(len(names)))}
    sizes: dict[int, dict[str, int]] = {}  # class -> unit -> its videos of that class
    for r, u in zip(records, units):
        per_unit = sizes.setdefault(int(r.label), {})  # type: ignore[arg-type]
        per_unit[u] = per_unit.get(u, 0) + 1
    taken: set[tuple[int, str]] = set()
    for label, per_unit in sizes.items():
        total = sum(per_unit.values())
        count, target = 0, fraction * total
        ordered = sorted(per_unit, key=rank.__getitem__)
        for u in ordered:
            if count + per_unit[u] / 2 > target:  # this group would take the count further from the target
                break
            taken.add((label, u))
            count += per_unit[u]
        if count == 0:
            first = per_unit[ordered[0]]
            name = repr(classes[label]) if classes is not None and 0 <= label < len(classes) else f"#{label}"
            where = (f"in {len(per_unit)} actor groups; the first one drawn for it with seed {seed}, "
                     f"{ordered[0]}, holds {first}") if by_group else "each drawn alone"
            raise ValueError(
                f"fraction: {fraction} leaves class {name} without a labelled video (it has {total} video(s) "
                f"{where}); a fraction of at least {first / (2 * total):.3g} labels it"
            )
    return [r for r, u in zip(records, units) if (int(r.label), u) in taken]  # type: ignore[arg-type]
