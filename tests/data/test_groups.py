"""Held-out splits by whole actor groups."""

from __future__ import annotations

from pathlib import Path

from distilled_shufflenet.data.groups import group_of, holdout


def test_group_names_and_a_holdout_of_whole_groups() -> None:
    assert group_of("UCF-101/Punch/v_Punch_g08_c02.avi") == "g08" and group_of("clip.mp4") is None
    paths = [Path(f"{c}/v_{c}_g{g:02d}_c{k:02d}.avi") for c in ("A", "B") for g in range(1, 11) for k in (1, 2)]
    train, val = holdout(paths, 0.05, seed=0)
    held = {group_of(p) for p in val}
    assert len(val) >= 2 and len(train) + len(val) == len(paths)
    assert held.isdisjoint(group_of(p) for p in train)  # no actor on both sides
    assert holdout(paths, 0.05, seed=0) == (train, val)  # deterministic
    loose = [Path(f"clip{i}.mp4") for i in range(40)]
    t2, v2 = holdout(loose, 0.05, seed=1)
    assert len(v2) == 2 and set(t2).isdisjoint(v2)
    assert holdout(loose, 0.0, seed=1) == (loose, [])
