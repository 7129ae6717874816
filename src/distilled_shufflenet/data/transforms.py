"""Clip transforms: pure functions on tensors, each applying one operation identically to every frame.

Decoded clips are ``(T, H, W, C)`` uint8 tensors (the decoder's layout); the spatial functions take and
return that layout in any dtype, and :func:`to_cthw` ends with the model's ``(C, T, H, W)``.  Random
functions take an explicit ``numpy.random.Generator``, so a dataset can make every sample reproducible.

The presets follow the method: short side resized to ``resize`` (256), one ``crop_size`` (224) crop for the
whole clip, random horizontal flip for training; centre crop (or three crops) for evaluation.  Smaller
inputs scale both together: ``resize = round(crop_size * 256 / 224)``.  The presets crop *before*
resizing: a ``crop_size`` crop of the frame resized to short side ``resize`` holds the same pixels as a
``crop_size * short / resize`` window of the source frame, so only that window is resized, once for the
whole uint8 clip, and converted to float afterwards::

    (T, H, W, 3) uint8 ──crop──> (T, s, s, 3) ──resize──> (T, 224, 224, 3) ──flip──> ──normalise──>
    (3, T, 224, 224) float32
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distilled_shufflenet.models import IMAGENET_MEAN, IMAGENET_STD

__all__ = [
    "EvalTransform",
    "TrainTransform",
    "center_crop",
    "crop",
    "default_resize",
    "eval_transform",
    "hflip",
    "normalize",
    "random_crop",
    "random_hflip",
    "resize",
    "resize_short_side",
    "three_crop",
    "to_cthw",
    "to_float",
    "train_transform",
]


def _check_clip(clip: Tensor) -> None:
    if not isinstance(clip, Tensor) or clip.dim() != 4:
        shape = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"expected a (T, H, W, C) clip tensor, got {shape}")


def _check_size(clip: Tensor, height: int, width: int) -> None:
    if height < 1 or width < 1 or height > clip.shape[1] or width > clip.shape[2]:
        raise ValueError(
            f"crop of {height}x{width} does not fit a clip of {clip.shape[1]}x{clip.shape[2]} (H x W) pixels"
        )


# ---------------------------------------------------------------------- geometry
def resize(clip: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize of every frame to ``size = (height, width)``, antialiased when shrinking.

    ``(T, H, W, C) -> (T, height, width, C)``; uint8 stays uint8 (resized as uint8, which is several times
    faster than in float).  The whole clip is one ``interpolate`` call.
    """
    _check_clip(clip)
    height, width = int(size[0]), int(size[1])
    if height < 1 or width < 1:
        raise ValueError(f"resize: size must be positive, got {size}")
    if (height, width) == tuple(clip.shape[1:3]):
        return clip
    x = clip.permute(0, 3, 1, 2)  # (T, C, H, W), channels-last in memory: the fast uint8 path
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.permute(0, 2, 3, 1)  # (T, height, width, C)


def resize_short_side(clip: Tensor, size: int) -> Tensor:
    """Resize so that the shorter side is ``size`` pixels, keeping the aspect ratio."""
    _check_clip(clip)
    return resize(clip, _short_side_size(clip.shape[1], clip.shape[2], size))


def crop(clip: Tensor, top: int, left: int, height: int, width: int) -> Tensor:
    """The ``height x width`` window at ``(top, left)`` of every frame (a view, no copy)."""
    _check_clip(clip)
    _check_size(clip, height, width)
    if not (0 <= top <= clip.shape[1] - height and 0 <= left <= clip.shape[2] - width):
        raise ValueError(
            f"crop at (top={top}, left={left}) of {height}x{width} leaves the {clip.shape[1]}x{clip.shape[2]} frame"
        )
    return clip[:, top : top + height, left : left + width]


def center_crop(clip: Tensor, size: int) -> Tensor:
    """The central ``size x size`` window."""
    _check_clip(clip)
    _check_size(clip, size, size)
    return crop(clip, (clip.shape[1] - size) // 2, (clip.shape[2] - size) // 2, size, size)


def random_crop(clip: Tensor, size: int, rng: np.random.Generator) -> Tensor:
    """One ``size x size`` window at a uniformly random position, the same for every frame."""
    _check_clip(clip)
    _check_size(clip, size, size)
    top = int(rng.integers(0, clip.shape[1] - size + 1))
    left = int(rng.integers(0, clip.shape[2] - size + 1))
    return crop(clip, top, left, size, size)


def three_crop(clip: Tensor, size: int) -> list[Tensor]:
    """Three ``size x size`` windows along the long side (left/centre/right, or top/centre/bottom),
    centred on the short side: a video-level evaluation view that covers the whole frame."""
    _check_clip(clip)
    _check_size(clip, size, size)
    h, w = clip.shape[1], clip.shape[2]
    if w >= h:
        top = (h - size) // 2
        return [crop(clip, top, left, size, size) for left in (0, (w - size) // 2, w - size)]
    left = (w - size) // 2
    return [crop(clip, top, left, size, size) for top in (0, (h - size) // 2, h - size)]


def hflip(clip: Tensor) -> Tensor:
    """Mirror every frame left to right."""
    _check_clip(clip)
    return clip.flip(2)


def random_hflip(clip: Tensor, rng: np.random.Generator, p: float = 0.5) -> Tensor:
    """Mirror the whole clip with probability ``p``."""
    return hflip(clip) if rng.random() < p else clip


# ---------------------------------------------------------------------- values and layout
def to_float(clip: Tensor) -> Tensor:
    """uint8 ``[0, 255]`` -> float32 ``[0, 1]`` (any shape)."""
    if clip.dtype != torch.uint8:
        raise ValueError(f"to_float expects a uint8 tensor, got {clip.dtype}")
    return clip.to(torch.float32).div_(255.0)


def normalize(clip: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """``(x - mean) / std`` per channel, for float clips laid out ``(C, T, H, W)`` or ``(V, C, T, H, W)``."""
    if not clip.is_floating_point() or clip.dim() not in (4, 5) or clip.shape[-4] != len(mean):
        raise ValueError(
            f"normalize expects a float (C, T, H, W) or (V, C, T, H, W) tensor with C={len(mean)}, "
            f"got {tuple(clip.shape)} {clip.dtype}"
        )
    m = torch.tensor(mean, dtype=clip.dtype).view(-1, 1, 1, 1)  # (C, 1, 1, 1)
    s = torch.tensor(std, dtype=clip.dtype).view(-1, 1, 1, 1)
    return (clip - m).div_(s)


def to_cthw(clip: Tensor) -> Tensor:
    """``(T, H, W, C) -> (C, T, H, W)``, contiguous: the layout of the models' input."""
    _check_clip(clip)
    return clip.permute(3, 0, 1, 2).contiguous()


def _to_input(clip: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``(..., T, H, W, C)`` -> normalised float ``(..., C, T, H, W)`` in two passes over the output:
    ``(x / 255 - mean) / std`` folded into one multiply and one subtraction."""
    x = clip.movedim(-1, -4).to(torch.float32, memory_format=torch.contiguous_format)  # (..., C, T, H, W)
    scale = torch.tensor([1.0 / (255.0 * s) for s in std]).view(-1, 1, 1, 1)
    shift = torch.tensor([m / s for m, s in zip(mean, std)]).view(-1, 1, 1, 1)
    return x.mul_(scale).sub_(shift)


# ---------------------------------------------------------------------- presets
def default_resize(crop_size: int) -> int:
    """The short side that goes with a crop: 256 for 224, scaled in proportion for other crops."""
    return round(crop_size * 256 / 224)


def _short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """Frame size after :func:`resize_short_side` to ``size``."""
    if height <= width:
        return size, max(1, round(width * size / height))
    return max(1, round(height * size / width)), size


class _ResizedFrame:
    """A crop of the frame resized to short side ``resize_to``, found in the source frame instead.

    ``box(top, left)`` maps the ``crop x crop`` window at ``(top, left)`` of the resized frame to the
    source window that holds the same pixels (within half a source pixel), so that only that window
    needs resizing.
    """

    def __init__(self, clip: Tensor, crop_size: int, resize_to: int) -> None:
        self.h, self.w = clip.shape[1], clip.shape[2]
        self.rh, self.rw = _short_side_size(self.h, self.w, resize_to)
        self.crop = crop_size

    def box(self, top: int, left: int) -> tuple[int, int, int, int]:
        sy, sx = self.h / self.rh, self.w / self.rw
        hh = min(self.h, max(1, round(self.crop * sy)))
        ww = min(self.w, max(1, round(self.crop * sx)))
        return min(round(top * sy), self.h - hh), min(round(left * sx), self.w - ww), hh, ww


def _check_preset(crop_size: int, resize_to: int, mean: Sequence[float], std: Sequence[float]) -> None:
    if crop_size < 1:
        raise ValueError(f"crop_size must be >= 1, got {crop_size}")
    if resize_to < crop_size:
        raise ValueError(f"resize ({resize_to}) must be >= crop_size ({crop_size})")
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ValueError(f"mean and std must have one value per channel and std > 0, got {mean}, {std}")


@dataclass(frozen=True)
class TrainTransform:
    """Training clips: random ``crop_size`` crop of the clip resized to short side ``resize``, random
    horizontal flip, normalised.  ``(T, H, W, 3)`` uint8 -> ``(3, T, crop_size, crop_size)`` float32."""

    crop_size: int = 224
    resize: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    flip: bool = True

    def __post_init__(self) -> None:
        _check_preset(self.crop_size, self.resize, self.mean, self.std)

    def __call__(self, clip: Tensor, rng: np.random.Generator) -> Tensor:
        _check_clip(clip)
        frame = _ResizedFrame(clip, self.crop_size, self.resize)
        top = int(rng.integers(0, frame.rh - self.crop_size + 1))
        left = int(rng.integers(0, frame.rw - self.crop_size + 1))
        window = crop(clip, *frame.box(top, left))  # (T, s, s, 3): the source of the crop
        x = resize(window, (self.crop_size, self.crop_size))  # (T, crop, crop, 3) uint8
        if self.flip:
            x = random_hflip(x, rng)
        return _to_input(x, self.mean, self.std)  # (3, T, crop, crop)


@dataclass(frozen=True)
class EvalTransform:
    """Evaluation clips: the centre ``crop_size`` crop (``crops=1``, ``(3, T, crop, crop)``) or three crops
    along the long side (``crops=3``, ``(3 views, 3, T, crop, crop)``) of the clip resized to short side
    ``resize``, normalised.  Deterministic: ``rng`` is accepted and ignored."""

    crop_size: int = 224
    resize: int = 256
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    crops: int = 1

    def __post_init__(self) -> None:
        _check_preset(self.crop_size, self.resize, self.mean, self.std)
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops}")

    def __call__(self, clip: Tensor, rng: np.random.Generator | None = None) -> Tensor:
        _check_clip(clip)
        frame = _ResizedFrame(clip, self.crop_size, self.resize)
        c, size = self.crop_size, (self.crop_size, self.crop_size)
        top, left = (frame.rh - c) // 2, (frame.rw - c) // 2
        if self.crops == 1:
            x = resize(crop(clip, *frame.box(top, left)), size)  # (T, c, c, 3)
            return _to_input(x, self.mean, self.std)  # (3, T, c, c)
        if frame.rw >= frame.rh:  # three windows along the long side
            boxes = [frame.box(top, x) for x in (0, left, frame.rw - c)]
        else:
            boxes = [frame.box(y, left) for y in (0, top, frame.rh - c)]
        t = clip.shape[0]
        views = torch.cat([resize(crop(clip, *b), size) for b in boxes])  # (3T, c, c, 3)
        x = views.reshape(3, t, *size, clip.shape[3])  # (3, T, c, c, 3)
        return _to_input(x, self.mean, self.std)  # (3, 3, T, c, c)


def train_transform(
    crop_size: int = 224,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    *,
    flip: bool = True,
) -> TrainTransform:
    """The method's training preset; ``resize`` defaults to :func:`default_resize` of ``crop_size``."""
    size = default_resize(crop_size) if resize is None else resize
    return TrainTransform(crop_size, size, tuple(mean), tuple(std), flip)


def eval_transform(
    crop_size: int = 224,
    resize: int | None = None,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    crops: int = 1,
) -> EvalTransform:
    """The method's evaluation preset (centre crop, or ``crops=3``); ``resize`` as in :func:`train_transform`."""
    size = default_resize(crop_size) if resize is None else resize
    return EvalTransform(crop_size, size, tuple(mean), tuple(std), crops)
