from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from distilled_shufflenet.data.encode import VideoWriter, codec_available, default_codec, write_video


def _gradient_clip(t: int = 10, h: int = 48, w: int = 64) -> np.ndarray:
    """A smooth moving colour gradient: easy for lossy codecs, so errors stay small."""
    yy, xx = np.mgrid[:h, :w]
    frames = np.empty((t, h, w, 3), np.uint8)  # (T, H, W, 3)
    for i in range(t):
        frames[i, ..., 0] = (xx * 3 + i * 6) % 256
        frames[i, ..., 1] = yy * 255 // max(h - 1, 1)
        frames[i, ..., 2] = 60 + 10 * i
    return frames


@pytest.mark.parametrize("ext,codec", [(".avi", "mpeg4"), (".mp4", "h264"), (".webm", "vp9")])
def test_round_trip(tmp_path: Path, decode_all, ext: str, codec: str) -> None:
    if ext == ".mp4" and not codec_available("libx264"):
        pytest.skip("no libx264 in this PyAV build")
    frames = _gradient_clip()
    path = write_video(tmp_path / f"clip{ext}", frames, fps=25)
    assert path == tmp_path / f"clip{ext}"
    back = decode_all(path)
    assert back.shape == frames.shape
    err = np.abs(back.astype(int) - frames.astype(int))
    assert err.mean() < 4.0  # lossy, but close
    assert np.median(err) <= 3
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == codec
        assert stream.average_rate == 25
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_avi_is_xvid_tagged_mpeg4(tmp_path: Path) -> None:
    path = write_video(tmp_path / "a.avi", _gradient_clip(3))
    with av.open(str(path)) as c:
        ctx = c.streams.video[0].codec_context
        assert (ctx.name, ctx.codec_tag) == ("mpeg4", "XVID")  # what UCF101 ships
    assert default_codec("x.AVI") == "mpeg4"


def test_odd_size_is_padded_to_even(tmp_path: Path, decode_all) -> None:
    frames = _gradient_clip(4, 47, 63)
    back = decode_all(write_video(tmp_path / "odd.avi", frames))
    assert back.shape == (4, 48, 64, 3)
    assert np.abs(back[:, :47, :63].astype(int) - frames).mean() < 4.0
    # the added row / column repeat the last ones
    assert np.abs(back[:, 47].astype(int) - back[:, 46]).mean() < 6.0


def test_fractional_fps_and_iterable_frames(tmp_path: Path, decode_all) -> None:
    frames = _gradient_clip(5)
    path = write_video(tmp_path / "ntsc.mkv" if codec_available("libx264") else tmp_path / "ntsc.avi",
                       iter(list(frames)), fps=Fraction(30000, 1001))
    with av.open(str(path)) as c:
        assert c.streams.video[0].average_rate == Fraction(30000, 1001)
    assert len(decode_all(path)) == 5


def test_quality_changes_size(tmp_path: Path) -> None:
    frames = np.random.default_rng(0).integers(0, 256, (6, 48, 64, 3), dtype=np.uint8)  # hard to code
    fine = write_video(tmp_path / "fine.avi", frames, quality=2).stat().st_size
    coarse = write_video(tmp_path / "coarse.avi", frames, quality=20).stat().st_size
    assert fine > 1.5 * coarse


def test_failed_write_leaves_no_file_and_keeps_the_old_one(tmp_path: Path) -> None:
    target = write_video(tmp_path / "v.avi", _gradient_clip(3))
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        with VideoWriter(target) as w:
            w.write(_gradient_clip(1)[0])
            raise RuntimeError("interrupted")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.avi"]


def test_bad_input_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x.avi.*uint8"):
        write_video(tmp_path / "x.avi", np.zeros((2, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r"x.avi.*\(T, H, W, 3\)"):
        write_video(tmp_path / "x.avi", np.zeros((2, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="x.gif.*extension"):
        write_video(tmp_path / "x.gif", _gradient_clip(2))
    with pytest.raises(ValueError, match="no frames"):
        write_video(tmp_path / "x.avi", [])
    with pytest.raises(ValueError, match="frame 1 is 32x16"):
        write_video(tmp_path / "x.avi", [np.zeros((8, 8, 3), np.uint8), np.zeros((16, 32, 3), np.uint8)])
    with pytest.raises(ValueError, match="not available"):
        write_video(tmp_path / "x.avi", _gradient_clip(2), codec="no-such-codec")
    assert list(tmp_path.iterdir()) == []
