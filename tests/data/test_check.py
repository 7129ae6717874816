"""``dsn data check`` (and its library) finds bad videos; ``dsn data bench`` runs and prints a table."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from distilled_shufflenet.cli import main
from distilled_shufflenet.data.bench import DataBenchConfig, format_results, run_data_bench
from distilled_shufflenet.data.check import CheckConfig, check_dataset, check_video, check_videos


@pytest.fixture
def mixed_folder(tmp_path, broken_videos, odd_videos, synth_videos) -> Path:
    """Good videos, every broken file, and a 5-frame video, in nested folders."""
    root = tmp_path / "videos"
    (root / "bad").mkdir(parents=True)
    (root / "good").mkdir()
    for name, path in broken_videos.items():
        shutil.copy(path, root / "bad" / f"{name}{path.suffix}")
    shutil.copy(odd_videos["short"], root / "good" / "short.avi")
    shutil.copy(synth_videos["avi_mpeg4"], root / "good" / "clip 1.avi")
    shutil.copy(synth_videos["webm_vp9"], root / "good" / "clip.webm")
    (root / "notes.txt").write_text("not a video, not checked")
    return root


def test_check_video_kinds(broken_videos, odd_videos, synth_videos, tmp_path):
    assert check_video(synth_videos["avi_mpeg4"]) is None
    assert check_video(tmp_path / "gone.avi").kind == "missing"
    assert check_video(broken_videos["zero_byte"]).kind == "empty"
    assert check_video(broken_videos["text"]).kind == "unreadable"
    p = check_video(broken_videos["audio_only"])
    assert (p.kind, p.reason) == ("unreadable", "no video stream (streams: audio)")
    p = check_video(odd_videos["short"], min_frames=16)
    assert (p.kind, p.reason) == ("too_short", "5 frames, fewer than 16")
    assert check_video(odd_videos["short"], min_frames=5) is None


def test_full_check_finds_truncated_files(make_video):
    path = make_video("cut.mp4", 40, codec="libx264", container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    assert check_video(path) is None  # the header looks fine
    problem = check_video(path, full=True)
    assert problem.kind == "corrupt" and "failed to decode" in problem.reason


def test_check_videos_report(mixed_folder):
    from distilled_shufflenet.data import find_videos

    report = check_videos(find_videos(mixed_folder), progress=False, source=str(mixed_folder))
    assert report.checked == 8 and not report.ok
    by_name = {Path(p.path).name: p.kind for p in report.problems}
    assert by_name == {
        "zero_byte.avi": "empty",
        "text.avi": "unreadable",
        "truncated.avi": "unreadable",
        "header_only.avi": "unreadable",
        "audio_only.avi": "unreadable",
        "short.avi": "too_short",
    }
    d = report.to_dict()
    assert d["bad"] == 6 and d["counts"] == {"empty": 1, "unreadable": 4, "too_short": 1}
    assert report.format().splitlines()[-1].endswith("6 of 8 videos are bad (1 empty, 4 unreadable, 1 too short)")


def test_cli_check_exit_codes_and_json(mixed_folder, capsys):
    assert main(["data", "check", str(mixed_folder), "--json", "--no-progress"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == 8 and report["bad"] == 6
    assert {"path", "kind", "reason"} == set(report["problems"][0])
    assert main(["data", "check", str(mixed_folder / "good"), "--min-frames", "5", "--no-progress"]) == 0
    assert "all 3 videos are readable" in capsys.readouterr().out
    assert main(["data", "check", str(mixed_folder / "nowhere"), "--no-progress"]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_check_a_dataset_reports_missing_files(tiny_synth, tmp_path, capsys):
    root = tmp_path / "ucf"
    shutil.copytree(tiny_synth, root)
    gone = next(root.glob("*/*.avi"))
    gone.unlink()
    report = check_dataset(CheckConfig(str(root), "ucf101", splits_dir=str(root), progress=False))
    assert report.checked == 32 and [(p.path, p.kind) for p in report.problems] == [(str(gone), "missing")]
    assert check_dataset(CheckConfig(str(root), "ucf101", subset="test", progress=False)).checked == 8
    args = ["data", "check", str(root), "--dataset", "ucf101", "--splits-dir", str(root), "--no-progress"]
    assert main(args) == 1
    assert f"missing    {gone}: no such file" in capsys.readouterr().out


def test_bench_runs_and_prints_a_table(capsys):
    cfg = DataBenchConfig(clip_len=4, crop_size=32, batch_size=2, workers=(0, 1), batches=2, videos=2, frames=12)
    results = run_data_bench(cfg)
    assert [r.workers for r in results] == [0, 1]
    assert all(r.clips == 4 and r.failures == 0 and r.clips_per_s > 0 for r in results)
    table = format_results(results, cfg).splitlines()
    assert table[1].split() == ["workers", "clips", "seconds", "clips/s", "frames/s", "failures"]
    assert len(table) == 5 and table[2].split()[0] == "0" and table[3].split()[0] == "1"
    assert main(["data", "bench", "--workers", "0", "--batches", "1", "--batch-size", "2", "--clip-len", "4",
                 "--crop-size", "32", "--videos", "1", "--frames", "8"]) == 0
    assert "clips/s" in capsys.readouterr().out


@pytest.mark.parametrize("content", ["nothing", "text files"])
def test_cli_check_refuses_a_folder_without_videos(content, tmp_path, capsys):
    root = tmp_path / "videos"
    root.mkdir()
    if content == "text files":
        (root / "a.txt").write_text("not a video")
        (root / "b.txt").write_text("nor this")
    assert main(["data", "check", str(root), "--no-progress"]) == 2
    captured = capsys.readouterr()
    assert "readable" not in captured.out
    assert captured.err.startswith(f"dsn data check: error: {root}: no video file found (extensions: .avi")
    with pytest.raises(ValueError, match="no video file found"):
        check_dataset(CheckConfig(str(root), progress=False))


def test_cli_check_accepts_a_single_file(mixed_folder, capsys):
    assert main(["data", "check", str(mixed_folder / "good" / "clip 1.avi"), "--no-progress"]) == 0
    assert "all 1 videos are readable" in capsys.readouterr().out
    assert main(["data", "check", str(mixed_folder / "bad" / "text.avi"), "--no-progress"]) == 1
    assert "unreadable" in capsys.readouterr().out
