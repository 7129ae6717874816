from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from distilled_shufflenet.cli.data_synth import add_prepare_parser
from distilled_shufflenet.data.prepare import PrepareConfig, prepare_videos, reencode_video, scaled_size

CLIPS = ("JumpingJacks/v_JumpingJacks_g01_c01.avi", "StandUp/v_StandUp_g02_c02.avi")


@pytest.fixture
def small_src(tiny_synth: Path, tmp_path: Path) -> Path:
    """Two tiny SynthActions videos (64x48), the split lists, a corrupt video and a hidden file."""
    src = tmp_path / "src"
    for name in (*CLIPS, "classInd.txt", "trainlist01.txt"):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_synth / name, src / name)
    (src / "Broken").mkdir()
    (src / "Broken" / "v_Broken_g01_c01.avi").write_bytes(b"RIFF\x00\x00\x00\x00AVI not really a video")
    (src / ".cache").write_text("hidden")
    return src


def test_scaled_size() -> None:
    assert scaled_size(320, 240, 128) == (170, 128)
    assert scaled_size(240, 320, 128) == (128, 170)
    assert scaled_size(340, 256, 128) == (170, 128)
    assert scaled_size(64, 48, 128) == (64, 48)  # never enlarged
    assert scaled_size(101, 75, 50) == (68, 50)  # even sides


def test_prepare_shrinks_keeps_layout_skips_corrupt_and_resumes(small_src: Path, tmp_path: Path,
                                                                decode_all) -> None:
    dst = tmp_path / "dst"
    report = prepare_videos(small_src, dst, PrepareConfig(short_side=32), workers=1, progress=False)
    assert (report.converted, report.existing, report.copied) == (2, 0, 2)
    assert [name for name, _ in report.failed] == ["Broken/v_Broken_g01_c01.avi"]
    assert "Broken/v_Broken_g01_c01.avi" in str(report)
    files = sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert files == sorted([*CLIPS, "classInd.txt", "trainlist01.txt"])  # no output for the broken one
    for name in ("classInd.txt", "trainlist01.txt"):
        assert (dst / name).read_bytes() == (small_src / name).read_bytes()
    for name in CLIPS:
        before, after = decode_all(small_src / name), decode_all(dst / name)
        assert after.shape == (len(before), 32, 42, 3)  # 64x48 -> 42x32, every frame kept
        with av.open(str(dst / name)) as c:
            assert c.streams.video[0].average_rate == 25
            assert c.streams.video[0].codec_context.name == "mpeg4"
        # the same picture, smaller: compare against a 2x2-block shrink of the source's middle
        small = before.reshape(len(before), 24, 2, 32, 2, 3).mean(axis=(2, 4))  # (T, 24, 32, 3)
        assert np.abs(small.mean(axis=(1, 2)) - after.mean(axis=(1, 2))).max() < 6

    # resume: nothing to do, then only the missing video
    again = prepare_videos(small_src, dst, PrepareConfig(short_side=32), workers=1, progress=False)
    assert (again.converted, again.existing, again.copied, len(again.failed)) == (0, 2, 0, 1)
    (dst / CLIPS[0]).unlink()
    again = prepare_videos(small_src, dst, PrepareConfig(short_side=32), workers=1, progress=False)
    assert (again.converted, again.existing) == (1, 1)


@pytest.mark.slow
def test_prepare_in_parallel(small_src: Path, tmp_path: Path) -> None:
    report = prepare_videos(small_src, tmp_path / "dst", PrepareConfig(short_side=24), workers=2, progress=False)
    assert report.converted == 2 and len(report.failed) == 1


def test_real_ucf101_video(shared_data: Path, tmp_path: Path, decode_all) -> None:
    src = shared_data / "videos" / "ucf101" / "v_PushUps_g01_c01.avi"  # XVID 320x240, 56 frames, with no audio
    out = reencode_video(src, tmp_path / "v.avi", PrepareConfig(short_side=64))
    frames = decode_all(out)
    assert frames.shape == (56, 64, 86, 3)
    original = decode_all(src)
    assert abs(float(original.mean()) - float(frames.mean())) < 3


def test_bad_arguments(small_src: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="inside"):
        prepare_videos(small_src, small_src / "out", progress=False)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_videos(tmp_path / "nowhere", tmp_path / "dst", progress=False)
    with pytest.raises(ValueError, match="short_side"):
        PrepareConfig(short_side=0)
    with pytest.raises(ValueError, match="codec"):
        PrepareConfig(codec="no-such-codec")


def test_cli(small_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="dsn data")
    add_prepare_parser(parser.add_subparsers(dest="what"))
    args = parser.parse_args(["prepare", str(small_src), str(tmp_path / "out"), "--short-side", "24",
                              "--workers", "1", "--codec", "mpeg4", "--quality", "6"])
    assert args.func(args) == 1  # the broken video
    out = capsys.readouterr().out
    assert "2 converted" in out and "1 unreadable" in out and "v_Broken_g01_c01.avi" in out
    with av.open(str(tmp_path / "out" / CLIPS[1])) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (32, 24)


def test_cli_prepare_finishes_the_others_then_fails_listing_the_unreadable(
        small_src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distilled_shufflenet.cli import main

    dst = tmp_path / "out"
    assert main(["data", "prepare", str(small_src), str(dst), "--short-side", "24", "--workers", "1"]) == 1
    captured = capsys.readouterr()
    assert "Broken/v_Broken_g01_c01.avi" in captured.out and "2 converted" in captured.out
    assert "dsn data prepare: error: 1 of 3 videos could not be read" in captured.err
    assert all((dst / name).is_file() for name in CLIPS)
    (small_src / "Broken" / "v_Broken_g01_c01.avi").unlink()
    assert main(["data", "prepare", str(small_src), str(dst), "--workers", "1"]) == 0


@pytest.mark.parametrize("src", ["empty", "text files"])
def test_cli_prepare_refuses_a_source_without_videos(src: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from distilled_shufflenet.cli import main

    root = tmp_path / "src"
    root.mkdir()
    if src == "text files":
        (root / "classInd.txt").write_text("1 A\n")
    assert main(["data", "prepare", str(root), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dsn data prepare: error: {root}: no video file found") and "check the path" in err
    assert not (tmp_path / "dst").exists()  # nothing written for a wrong path


def test_cli_prepare_names_a_file_given_as_source(small_src: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from distilled_shufflenet.cli import main

    video = small_src / CLIPS[0]
    assert main(["data", "prepare", str(video), str(tmp_path / "dst")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dsn data prepare: error: {video}: is a file; expected the dataset folder")
    assert "not found" not in err


def test_rerun_removes_what_a_killed_run_left(small_src: Path, tmp_path: Path, dead_pid: int) -> None:
    dst = tmp_path / "dst"
    (dst / "StandUp").mkdir(parents=True)
    pid = dead_pid
    leftovers = [dst / "StandUp" / f".v_StandUp_g02_c02.avi.{pid}.9a8b7c6d.part", dst / f".classInd.txt.{pid}.part"]
    for path in leftovers:
        path.write_bytes(b"half a video")
    report = prepare_videos(small_src, dst, PrepareConfig(short_side=32), workers=1, progress=False)
    assert report.removed == 2 and "deleted 2 temporary file(s)" in str(report)
    assert not any(p.exists() for p in leftovers)
    assert not [p for p in dst.rglob(".*")]  # nothing hidden is left behind


def test_prepared_frames_match_a_reference_resize_frame_by_frame(tmp_path: Path, decode_all,
                                                                 make_textured_video) -> None:
    src = tmp_path / "src"
    make_textured_video("src/Stripes/v_Stripes_g01_c01.avi", 20)  # 64x48, detail everywhere
    before = decode_all(src / "Stripes" / "v_Stripes_g01_c01.avi").astype(np.float64)
    # 64x48 -> 32x24 is an exact halving: the reference is the mean of each 2x2 block of every source frame
    prepare_videos(src, tmp_path / "dst", PrepareConfig(short_side=24), workers=1, progress=False)
    after = decode_all(tmp_path / "dst" / "Stripes" / "v_Stripes_g01_c01.avi").astype(np.float64)
    reference = before.reshape(len(before), 24, 2, 32, 2, 3).mean(axis=(2, 4))  # (T, 24, 32, 3)
    assert after.shape == reference.shape == (20, 24, 32, 3)

    def error(frames: np.ndarray) -> np.ndarray:  # (T,) mean absolute difference of each frame
        return np.abs(frames - reference).mean(axis=(1, 2, 3))

    worst = error(after).max()
    assert worst < 6.0, error(after)  # coding noise only, in every frame (about 3.6 levels of 255)
    # what a mean colour cannot see, this comparison does: a mirrored, shifted or reordered output
    for wrong in (after[:, :, ::-1], after[:, ::-1], np.roll(after, 1, axis=2), np.roll(after, 1, axis=0)):
        assert error(wrong).min() > 3 * worst


@pytest.mark.parametrize("command", ["prepare", "synth"])
def test_an_output_folder_that_cannot_be_written_is_named(command: str, small_src: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from distilled_shufflenet.cli import main

    src = [str(small_src)] if command == "prepare" else []
    field = "dst" if command == "prepare" else "out"
    assert main(["data", command, *src, "/proc/nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dsn data {command}: error: {field}: cannot write into /proc/nope (") and "Errno" not in err
    (tmp_path / "a_file").write_text("x")
    assert main(["data", command, *src, str(tmp_path / "a_file")]) == 2
    assert f"{field}: {tmp_path / 'a_file'} is a file; expected a folder" in capsys.readouterr().err
