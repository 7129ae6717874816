"""Frame samplers: which frame indices make a clip, as pure functions of the frame count.

A window of ``clip_len`` frames taken every ``stride`` frames spans ``(clip_len - 1) * stride + 1``
frames.  A video shorter than that is padded by repeating its last frame, e.g.
``center_window(5, 8, 1) -> [0 1 2 3 4 4 4 4]``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["center_window", "random_window", "uniform_windows", "window_span"]


def _check(num_frames: int, clip_len: int, stride: int) -> None:
    for name, value in (("num_frames", num_frames), ("clip_len", clip_len), ("stride", stride)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def window_span(clip_len: int, stride: int) -> int:
    """Frames covered by one window, first to last inclusive."""
    return (clip_len - 1) * stride + 1


def _window(start: int, num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    idx = start + np.arange(clip_len, dtype=np.int64) * stride  # (clip_len,)
    return np.minimum(idx, num_frames - 1)  # pad a short video with its last frame


def random_window(num_frames: int, clip_len: int, stride: int, rng: np.random.Generator) -> np.ndarray:
    """``(clip_len,)`` indices of a window starting at a uniformly random frame (training)."""
    _check(num_frames, clip_len, stride)
    room = num_frames - window_span(clip_len, stride)
    start = int(rng.integers(0, room + 1)) if room > 0 else 0
    return _window(start, num_frames, clip_len, stride)


def center_window(num_frames: int, clip_len: int, stride: int) -> np.ndarray:
    """``(clip_len,)`` indices of the window in the middle of the video (clip-level evaluation)."""
    _check(num_frames, clip_len, stride)
    room = max(num_frames - window_span(clip_len, stride), 0)
    return _window((room + 1) // 2, num_frames, clip_len, stride)  # the same as one uniform window


def spread_indices(total: int, n: int) -> list[int]:
    """Up to ``n`` distinct indices of ``range(total)`` spread evenly over it, the first and the last
    included (for picking a few items of a list sorted by class, say)."""
    n = min(n, total)
    return [int(i) for i in np.unique(np.linspace(0, total - 1, n).round())] if n > 0 else []


def uniform_windows(num_frames: int, clip_len: int, stride: int, num_clips: int) -> np.ndarray:
    """``(num_clips, clip_len)`` indices of windows spread evenly over the video (video-level evaluation).

    The possible start frames are cut into ``num_clips`` equal segments and each window starts at the
    middle of its segment, so one clip is the centre window and more clips cover the video evenly.
    """
    _check(num_frames, clip_len, stride)
    if int(num_clips) != num_clips or num_clips < 1:
        raise ValueError(f"num_clips must be an integer >= 1, got {num_clips!r}")
    room = max(num_frames - window_span(clip_len, stride), 0)
    segment = (room + 1) / num_clips
    starts = np.floor(segment * (np.arange(num_clips) + 0.5)).astype(np.int64)  # (num_clips,)
    return np.stack([_window(int(s), num_frames, clip_len, stride) for s in starts])
