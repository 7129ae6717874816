"""Atomic writes leave nothing behind, and the leftovers of a killed process are recognised and removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from distilled_shufflenet.io import atomic_write, check_writable_folder, remove_stale_temporaries


def test_a_killed_writers_temporaries_are_removed_and_a_running_ones_kept(tmp_path: Path, dead_pid: int) -> None:
    gone, alive = dead_pid, os.getppid()
    (tmp_path / "sub").mkdir()
    stale = [tmp_path / f".v_a.avi.{gone}.0f3a9c21.part", tmp_path / "sub" / f".classInd.txt.{gone}.part",
             tmp_path / f".last.pt.{gone}.k2_x9q.tmp", tmp_path / f".v.1.avi.{gone}.12345678.part"]
    kept = [tmp_path / f".v_b.avi.{alive}.0f3a9c21.part", tmp_path / f".w.avi.{os.getpid()}.ab.part",
            tmp_path / "v_c.avi", tmp_path / ".hidden", tmp_path / f"v.{gone}.part"]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
    assert remove_stale_temporaries(tmp_path / "nowhere") == []


def test_not_recursive_leaves_subfolders(tmp_path: Path, dead_pid: int) -> None:
    (tmp_path / "sub").mkdir()
    inner = tmp_path / "sub" / f".x.avi.{dead_pid}.aa.part"
    inner.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path, recursive=False) == [] and inner.exists()


def test_atomic_write_names_its_temporary_after_its_process(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "out.txt", "w") as f:
        names = [p.name for p in tmp_path.iterdir()]
        f.write("x")
    assert len(names) == 1 and names[0].startswith(f".out.txt.{os.getpid()}.") and names[0].endswith(".tmp")
    assert remove_stale_temporaries(tmp_path) == [] and (tmp_path / "out.txt").read_text() == "x"


def test_check_writable_folder(tmp_path: Path) -> None:
    assert check_writable_folder(tmp_path / "a" / "b", "out").is_dir()
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="out: .*f is a file"):
        check_writable_folder(tmp_path / "f", "out")
    with pytest.raises(ValueError, match=r"out: cannot write into /proc/nope \(.*\); choose a folder"):
        check_writable_folder("/proc/nope", "out")
