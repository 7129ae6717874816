"""Subsets by whole actor groups: held-out validation splits and labelled fractions."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from distilled_shufflenet.data import VideoRecord
from distilled_shufflenet.data.groups import group_of, holdout, labelled_subset


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


# --------------------------------------------------------------------------- labelled subsets
def ucf_records(classes: int = 3, groups: int = 12, clips: int = 2) -> list[VideoRecord]:
    """UCF101-style records: every class filmed by every actor group, ``clips`` videos each."""
    return [VideoRecord(Path(f"C{c}/v_C{c}_g{g:02d}_c{k:02d}.avi"), c)
            for c in range(classes) for g in range(1, groups + 1) for k in range(1, clips + 1)]


def per_class(records: list[VideoRecord]) -> Counter:
    return Counter(r.label for r in records)


def test_a_labelled_subset_is_stratified_by_class_and_takes_whole_groups() -> None:
    records = ucf_records(classes=3, groups=12, clips=2)
    # one class with groups of unequal size: 5 videos in g01, 1 in each other group
    records += [VideoRecord(Path(f"D/v_D_g01_c{k:02d}.avi"), 3) for k in range(1, 5)]
    records += [VideoRecord(Path(f"D/v_D_g{g:02d}_c01.avi"), 3) for g in range(1, 13)]
    chosen = labelled_subset(records, 0.25, seed=0)
    counts, totals = per_class(chosen), per_class(records)
    for label, total in totals.items():  # within half a group of a quarter of each class's videos
        assert abs(counts[label] - 0.25 * total) <= 2.5, (label, counts[label], total)
    assert [counts[c] for c in range(3)] == [6, 6, 6]  # 3 of 12 groups of 2 videos
    # whole groups: a (class, group) is either all chosen or not at all
    for label in totals:
        for g in {group_of(r.path) for r in records if r.label == label}:
            cell = [r for r in records if r.label == label and group_of(r.path) == g]
            taken = [r for r in cell if r in chosen]
            assert taken in ([], cell), (label, g)
    # where the groups hold alike many videos of every class, every class takes the same groups (the actors)
    assert len({frozenset(group_of(r.path) for r in chosen if r.label == c) for c in range(3)}) == 1
    assert [r for r in records if r in chosen] == chosen  # in the order of the records


def test_a_labelled_subset_is_seeded_and_nested_across_fractions() -> None:
    records = ucf_records()
    a = labelled_subset(records, 0.25, seed=1)
    assert labelled_subset(list(records), 0.25, seed=1) == a  # same seed, same subset
    assert labelled_subset(records, 0.25, seed=2) != a  # another seed, another subset
    # the draw follows the names, not the folder they are in
    moved = [VideoRecord(Path("/elsewhere") / r.path, r.label) for r in records]
    assert [r.path.relative_to("/elsewhere") for r in labelled_subset(moved, 0.25, seed=1)] == [r.path for r in a]
    previous: set = set()
    for fraction in (0.05, 0.1, 0.25, 0.5, 1.0):
        subset = set(labelled_subset(records, fraction, seed=1))
        assert previous <= subset  # the points of a label-efficiency curve are nested
        previous = subset
    assert labelled_subset(records, 1.0, seed=1) == records
    # groups of unequal sizes (1 to 6 videos): a group too large for a small fraction is not skipped for a
    # smaller one drawn after it, which a larger fraction would then leave out
    uneven = [VideoRecord(Path(f"C{c}/v_C{c}_g{g:02d}_c{k:02d}.avi"), c)
              for c in range(2) for g in range(1, 13) for k in range(1, 1 + (g * (c + 5)) % 6 + 1)]
    for seed in range(10):
        previous = set()
        for fraction in np.linspace(0.05, 1.0, 20):
            try:
                subset = set(labelled_subset(uneven, float(fraction), seed=seed))
            except ValueError:  # too small a share for a class's first group: only before any subset was taken
                subset = set()
            assert previous <= subset, (seed, fraction)
            previous = subset


def test_a_labelled_subset_without_groups_is_drawn_video_by_video() -> None:
    loose = [VideoRecord(Path(f"clip{i:03d}.mp4"), i % 4) for i in range(80)]
    chosen = labelled_subset(loose, 0.1, seed=0)
    assert per_class(chosen) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert labelled_subset(loose, 0.1, seed=3) != chosen


def test_a_labelled_subset_never_takes_a_held_out_validation_video() -> None:
    records = ucf_records(classes=4, groups=12, clips=3)
    kept, held = holdout([r.path for r in records], 0.2, seed=0)
    pool = [r for r in records if r.path in set(kept)]
    held_groups = {group_of(p) for p in held}
    for seed in range(5):
        for fraction in (0.1, 0.5, 1.0):
            chosen = labelled_subset(pool, fraction, seed=seed)
            assert {r.path for r in chosen}.isdisjoint(held)
            assert {group_of(r.path) for r in chosen}.isdisjoint(held_groups)  # not even another clip of those actors


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5, float("nan")])
def test_a_labelled_fraction_outside_0_1_is_refused(fraction: float) -> None:
    with pytest.raises(ValueError, match=r"fraction: expected a share of the videos in \(0, 1\]"):
        labelled_subset(ucf_records(), fraction, seed=0)


def test_a_fraction_that_leaves_a_class_without_a_video_is_refused_naming_the_class() -> None:
    records = ucf_records(classes=2, groups=12, clips=2)  # 24 videos per class, 2 per group
    assert per_class(labelled_subset(records, 1 / 24, seed=0)) == {0: 2, 1: 2}  # half a group rounds up
    # class A: 40 groups of one video; class B: 12 groups of two
    records = [VideoRecord(Path(f"A/v_A_g{g:02d}_c01.avi"), 0) for g in range(1, 41)] + records[24:]
    assert per_class(labelled_subset(records, 0.05, seed=0)) == {0: 2, 1: 2}
    with pytest.raises(ValueError, match=r"fraction: 0.03 leaves class 'B' without a labelled video \(it has 24 "
                                         r"video\(s\) in 12 actor groups.*at least 0.0417 labels it"):
        labelled_subset(records, 0.03, seed=0, classes=["A", "B"])
    with pytest.raises(ValueError, match="without a label"):
        labelled_subset([VideoRecord(Path("a_g01_c01.avi"), None)], 0.5, seed=0)
