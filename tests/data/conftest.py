"""Small videos written with PyAV for the data-layer tests, broken files included.

Frame ``i`` of a test video is a flat grey of level ``20 + 5 * i`` with a white 12x12 block in its
top-left corner, so the ``frame_ids`` fixture recovers which frames a reader returned even after lossy coding.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import av
import numpy as np
import pytest


def counter_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """``(n, height, width, 3)`` uint8 frames whose grey level encodes their index."""
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        frames[i] = 20 + 5 * i
        frames[i, :12, :12] = 255
    return frames


def _frame_ids(frames: np.ndarray) -> list[int]:
    """The index each frame of :func:`counter_frames` encodes (from the area away from the block)."""
    return [int(round((float(f[16:, 16:].mean()) - 20) / 5)) for f in frames]


def write_test_video(
    path: Path,
    frames: np.ndarray,
    *,
    codec: str = "mpeg4",
    fps: int = 25,
    pix_fmt: str = "yuv420p",
    gop: int | None = None,
    pts_ms: list[int] | None = None,
    rotation: int | None = None,
    audio: bool = False,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Write ``frames`` (T, H, W, 3) uint8 RGB with PyAV; ``pts_ms`` gives a variable frame rate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=container_options or {}) as c:
        s = c.add_stream(codec, rate=fps, options=options or {})
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if codec in ("mpeg4", "libvpx", "libvpx-vp9"):
            s.bit_rate = 4_000_000  # near-lossless, so that grey levels stay apart
        if gop is not None:
            s.codec_context.gop_size = gop
        if rotation is not None:
            s.set_display_rotation(rotation)
        if pts_ms is not None:
            s.codec_context.time_base = Fraction(1, 1000)
        a = None
        if audio:
            a = c.add_stream("pcm_s16le" if path.suffix == ".avi" else "aac", rate=8000, layout="mono")
        for i, f in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")
            if pts_ms is not None:
                vf.pts, vf.time_base = pts_ms[i], Fraction(1, 1000)
            c.mux(s.encode(vf))
            if a is not None:
                af = av.AudioFrame.from_ndarray(np.zeros((1, 320), np.int16), format="s16", layout="mono")
                af.sample_rate, af.pts = 8000, i * 320
                c.mux(a.encode(af))
        c.mux(s.encode())
        if a is not None:
            c.mux(a.encode())
    return path


def write_audio_only(path: Path) -> Path:
    with av.open(str(path), "w") as c:
        a = c.add_stream("pcm_s16le", rate=8000, layout="mono")
        for i in range(10):
            af = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
            af.sample_rate, af.pts = 8000, i * 800
            c.mux(a.encode(af))
        c.mux(a.encode())
    return path


@pytest.fixture(scope="session")
def frame_ids() -> Callable[[np.ndarray], list[int]]:
    """Which counter frames a reader returned (see the module docstring)."""
    return _frame_ids


# name -> (file name, frames, write_test_video options)
SYNTH_VIDEOS: dict[str, tuple[str, int, dict[str, Any]]] = {
    "avi_mpeg4": ("clip.avi", 40, {"gop": 8}),
    "mp4_h264_bframes": ("clip.mp4", 40, {"codec": "libx264", "gop": 10, "options": {"bf": "3"}}),
    "mkv_h264": ("clip.mkv", 40, {"codec": "libx264", "gop": 10}),
    "webm_vp9": ("clip9.webm", 40, {"codec": "libvpx-vp9", "gop": 10}),
    "webm_vp8": ("clip8.webm", 40, {"codec": "libvpx", "gop": 10}),
    "mp4_vfr": ("vfr.mp4", 30, {"codec": "libx264", "gop": 8}),
    "mkv_vfr": ("vfr.mkv", 30, {"codec": "libx264", "gop": 8}),
    "avi_audio": ("audio.avi", 30, {"audio": True, "gop": 8}),
    "mp4_audio": ("audio.mp4", 30, {"codec": "libx264", "audio": True}),
}
# irregular gaps: 40, 40, 10, 10, 200, 40 ms ...
VFR_PTS = np.cumsum([0] + [40, 40, 10, 10, 200, 40] * 5)[:30].tolist()


@pytest.fixture(scope="session")
def synth_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Counter videos in several containers and codecs (see ``SYNTH_VIDEOS``), 64x48 px."""
    root = tmp_path_factory.mktemp("codecs")
    out = {}
    for name, (file, n, opts) in SYNTH_VIDEOS.items():
        pts = {"pts_ms": VFR_PTS} if "vfr" in name else {}
        out[name] = write_test_video(root / file, counter_frames(n), **opts, **pts)
    return out


@pytest.fixture(scope="session")
def odd_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Grey, 10-bit, odd-sized and rotated videos, and short ones (1 and 5 frames)."""
    root = tmp_path_factory.mktemp("odd")
    f = counter_frames(12)
    return {
        "gray": write_test_video(root / "gray.mkv", f, codec="ffv1", pix_fmt="gray"),
        "10bit": write_test_video(root / "tenbit.mkv", f, codec="ffv1", pix_fmt="yuv420p10le"),
        "odd_size": write_test_video(root / "odd.mp4", counter_frames(12, 45, 63), codec="libx264", pix_fmt="yuv444p"),
        "rotated": write_test_video(root / "rotated.mp4", f, codec="libx264", rotation=90),
        "one_frame": write_test_video(root / "one.avi", counter_frames(1)),
        "short": write_test_video(root / "short.avi", counter_frames(5)),
    }


@pytest.fixture(scope="session")
def broken_videos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Files that are not readable videos, each named like one."""
    root = tmp_path_factory.mktemp("broken")
    good = write_test_video(root / "good.avi", counter_frames(40), gop=8)
    (root / "zero.avi").write_bytes(b"")
    (root / "text.avi").write_text("this is not a video\n" * 20)
    data = good.read_bytes()
    (root / "truncated.avi").write_bytes(data[: len(data) // 2])
    (root / "header_only.avi").write_bytes(data[:600])
    return {
        "zero_byte": root / "zero.avi",
        "text": root / "text.avi",
        "truncated": root / "truncated.avi",
        "header_only": root / "header_only.avi",
        "audio_only": write_audio_only(root / "audio_only.avi"),
    }


@pytest.fixture
def make_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_video(relative_name, num_frames=20, **write_test_video options)`` under ``tmp_path``."""

    def make(name: str, num_frames: int = 20, height: int = 48, width: int = 64, **opts: Any) -> Path:
        return write_test_video(tmp_path / name, counter_frames(num_frames, height, width), **opts)

    return make


@pytest.fixture
def make_long_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_long_video(relative_name, num_frames, gop)``: an MPEG-4 AVI of 64x48 px frames, longer than
    the counter videos allow, with a keyframe every ``gop`` frames, under ``tmp_path``."""

    def make(name: str, num_frames: int, gop: int) -> Path:
        frames = np.empty((num_frames, 48, 64, 3), np.uint8)
        for i in range(num_frames):
            frames[i] = 20 + (7 * i) % 200
            frames[i, : 4 + i % 40, :12] = 255
        return write_test_video(tmp_path / name, frames, gop=gop)

    return make


def textured_frames(n: int, height: int = 48, width: int = 64) -> np.ndarray:
    """``(n, height, width, 3)`` uint8 frames with detail everywhere: grey stripes moving by 3 px per frame
    over a red gradient along x and a green one along y, so a mirrored, shifted or reordered copy differs
    from the original in every frame (the stripes are in brightness, which 4:2:0 video keeps sharp)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        stripes = 60 * np.sin(2 * np.pi * (x + 0.5 * y + 3 * i) / 16)
        frames[i, ..., 0] = 70 + 100 * x / (width - 1) + stripes
        frames[i, ..., 1] = 70 + 100 * y / (height - 1) + stripes
        frames[i, ..., 2] = 120 + stripes
    return frames


@pytest.fixture
def make_textured_video(tmp_path: Path) -> Callable[..., Path]:
    """``make_textured_video(relative_name, num_frames=20)``: :func:`textured_frames` (64x48 px) written
    near-losslessly as MPEG-4 under ``tmp_path``."""

    def make(name: str, num_frames: int = 20) -> Path:
        return write_test_video(tmp_path / name, textured_frames(num_frames))

    return make


@pytest.fixture(scope="session")
def real_videos(shared_data: Path) -> dict[str, Path]:
    """The real videos of ``shared/data/videos`` by file name (skips where absent)."""
    return {p.name: p for p in sorted((shared_data / "videos").glob("*/*")) if p.suffix in (".avi", ".mp4")}
