"""Explicit augmented views: a training clip as a small deterministic record, and the pure function that
turns a record back into exactly that clip.

A teacher feature cache stores the teachers' targets of K views per video; every epoch the student sees
one of them, re-decoded from the record::

    (seed, video index, k) + frame count + frame size --make_view--> View(frames, top/left/size, flip, frame2d)
    View + video file --read_view--> read_frames --apply_view--> crop, resize, flip, normalise -> (3, T, c, c)

The draw follows the training preset (:class:`~distilled_shufflenet.data.transforms.TrainTransform`):
a random window of ``clip_len`` frames (short videos padded with their last frame), one random
``crop_size`` crop of the frame resized to short side ``resize``, a random horizontal flip; plus the clip
frame the 2D teacher sees.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from torch import Tensor

from distilled_shufflenet.data.sampling import random_window
from distilled_shufflenet.data.transforms import (
    TrainTransform,
    _ResizedFrame,
    _short_side_size,
    _to_input,
    crop,
    hflip,
    resize,
)
from distilled_shufflenet.data.video import read_frames
from distilled_shufflenet.models import Preprocess

__all__ = ["FRAME2D", "View", "ViewSpec", "apply_view", "make_view", "read_view"]

# the clip frame the 2D teacher sees: one drawn per view (the paper), or the clip's middle frame, a target
# the student can predict from its clip (a random frame's map varies across the clip's frames, and the
# student is not told which frame was drawn)
FRAME2D = ("random", "middle")


@dataclass(frozen=True)
class ViewSpec:
    """How the K views of every video are drawn: ``views`` per video, from ``seed``; windows of
    ``clip_len`` frames every ``frame_stride``; crop, resize, flip and normalisation of ``transform``
    (the training preset, whose random draws a view replaces with its own); ``frame2d``: the 2D
    teacher's frame, one of :data:`FRAME2D`."""

    views: int = 4
    seed: int = 0
    clip_len: int = 16
    frame_stride: int = 1
    transform: TrainTransform = TrainTransform()
    frame2d: str = "random"

    def __post_init__(self) -> None:
        for name in ("views", "clip_len", "frame_stride"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")
        if self.frame2d not in FRAME2D:
            raise ValueError(f"frame2d must be one of {', '.join(FRAME2D)}, got {self.frame2d!r}")
        if not isinstance(self.transform, TrainTransform):
            raise ValueError(f"transform must be a TrainTransform, got {type(self.transform).__name__}")

    @property
    def crop_size(self) -> int:
        return self.transform.crop_size

    @property
    def resize(self) -> int:
        return self.transform.resize

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(m) for m in self.transform.mean)

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.transform.std)

    @property
    def flip(self) -> bool:
        return self.transform.flip

    @classmethod
    def from_preprocess(cls, preprocess: Preprocess, *, crop_size: int | None = None, resize: int | None = None,
                        flip: bool = True, **fields: Any) -> "ViewSpec":
        """Views of the student's clips: its clip length, crop, resize and mean/std (``crop_size`` /
        ``resize`` override them as :meth:`Preprocess.override` does), with ``fields`` (``views``,
        ``seed``, ``frame_stride``, ``clip_len``, ``frame2d``)."""
        p = preprocess.override(crop_size=crop_size, resize=resize)
        transform = TrainTransform(p.crop_size, p.resize, tuple(p.mean), tuple(p.std), flip)
        return cls(**{"clip_len": p.clip_len, **fields}, transform=transform)

    def to_dict(self) -> dict[str, Any]:
        return {"views": int(self.views), "seed": int(self.seed), "clip_len": int(self.clip_len),
                "frame_stride": int(self.frame_stride), "crop_size": self.crop_size, "resize": self.resize,
                "mean": list(self.mean), "std": list(self.std), "flip": bool(self.flip),
                # named only when not the paper's, so that caches built before the choice existed still match
                **({"frame2d": self.frame2d} if self.frame2d != "random" else {})}


@dataclass(frozen=True)
class View:
    """One augmented view of a video: decoded ``frames`` (``clip_len`` indices), the crop box ``(top,
    left, size)`` in the frame resized to the spec's short side, ``flip``, and ``frame2d``, the position
    in the clip (``0 <= frame2d < clip_len``) of the frame the 2D teacher sees."""

    frames: tuple[int, ...]
    top: int
    left: int
    size: int
    flip: bool
    frame2d: int

    def to_tensor(self) -> Tensor:
        """``(5 + clip_len,)`` int64: top, left, size, flip, frame2d, frames."""
        return torch.tensor([self.top, self.left, self.size, int(self.flip), self.frame2d, *self.frames],
                            dtype=torch.int64)

    @classmethod
    def from_tensor(cls, t: Tensor) -> "View":
        v = [int(x) for x in t.tolist()]
        return cls(tuple(v[5:]), v[0], v[1], v[2], bool(v[3]), v[4])

    def to_dict(self) -> dict[str, Any]:
        return {"frames": list(self.frames), "crop": [self.top, self.left, self.size], "flip": self.flip,
                "frame2d": self.frame2d}


def make_view(spec: ViewSpec, video_index: int, k: int, num_frames: int, height: int, width: int) -> View:
    """View ``k`` of video ``video_index`` (``num_frames`` frames of ``height x width``): a pure function of
    its arguments, drawn from ``numpy.random.default_rng((spec.seed, video_index, k))``."""
    if not 0 <= k < spec.views:
        raise ValueError(f"view k={k} out of range: the spec has {spec.views} views per video")
    if num_frames < 1 or height < 1 or width < 1:
        raise ValueError(f"video {video_index}: needs at least one frame of positive size, got {num_frames} "
                         f"frames of {height}x{width}")
    rng = np.random.default_rng((int(spec.seed), int(video_index), int(k)))
    frames = random_window(num_frames, spec.clip_len, spec.frame_stride, rng)
    rh, rw = _short_side_size(height, width, spec.resize)
    top = int(rng.integers(0, rh - spec.crop_size + 1))
    left = int(rng.integers(0, rw - spec.crop_size + 1))
    flip = bool(spec.flip and rng.random() < 0.5)
    frame2d = int(rng.integers(0, spec.clip_len))  # drawn either way: the draws after it stay the same
    if spec.frame2d == "middle":
        frame2d = spec.clip_len // 2
    return View(tuple(int(i) for i in frames), top, left, spec.crop_size, flip, frame2d)


def apply_view(frames: Tensor, view: View, spec: ViewSpec) -> Tensor:
    """The student's clip of ``view`` from its decoded frames ``(T, H, W, 3)`` uint8 (in ``view.frames``
    order): ``(3, T, crop, crop)`` float32, normalised with the spec's mean/std. The same operations as
    the training preset, with the crop and flip of the view instead of random ones."""
    if not isinstance(frames, Tensor) or frames.dim() != 4 or frames.dtype != torch.uint8:
        raise ValueError(f"apply_view expects (T, H, W, 3) uint8 frames, got "
                         f"{tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__}")
    if frames.shape[0] != len(view.frames) or view.size != spec.crop_size:
        raise ValueError(f"the view ({len(view.frames)} frames, crop {view.size}) does not fit the frames "
                         f"{tuple(frames.shape)} and spec (crop_size {spec.crop_size})")
    frame = _ResizedFrame(frames, spec.crop_size, spec.resize)
    if not (0 <= view.top <= frame.rh - view.size and 0 <= view.left <= frame.rw - view.size):
        raise ValueError(f"the view's crop (top={view.top}, left={view.left}, size={view.size}) leaves the "
                         f"{frame.rh}x{frame.rw} frame resized to short side {spec.resize}")
    x = resize(crop(frames, *frame.box(view.top, view.left)), (spec.crop_size, spec.crop_size))  # (T, c, c, 3)
    if view.flip:
        x = hflip(x)
    return _to_input(x, spec.mean, spec.std)  # (3, T, c, c)


def read_view(path: str | os.PathLike, view: View, spec: ViewSpec) -> Tensor:
    """Decode ``view.frames`` of the video at ``path`` and apply the view: ``(3, T, crop, crop)``."""
    return apply_view(torch.from_numpy(read_frames(path, np.asarray(view.frames))), view, spec)


def spec_from_dict(d: Mapping[str, Any]) -> ViewSpec:
    """Inverse of :meth:`ViewSpec.to_dict`."""
    transform = TrainTransform(int(d["crop_size"]), int(d["resize"]), tuple(d["mean"]), tuple(d["std"]),
                               bool(d["flip"]))
    return ViewSpec(int(d["views"]), int(d["seed"]), int(d["clip_len"]), int(d["frame_stride"]), transform,
                    str(d.get("frame2d", "random")))
