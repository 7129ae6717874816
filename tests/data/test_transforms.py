"""Clip transforms: one operation for every frame, the method's presets, crop-before-resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distilled_shufflenet.data.transforms import (
    center_crop,
    crop,
    default_resize,
    eval_transform,
    hflip,
    normalize,
    random_crop,
    resize,
    resize_short_side,
    three_crop,
    to_cthw,
    to_float,
    train_transform,
)
from distilled_shufflenet.models import IMAGENET_MEAN, IMAGENET_STD, KINETICS_MEAN, KINETICS_STD


def ramp_clip(t: int = 4, h: int = 48, w: int = 64) -> torch.Tensor:
    """(T, H, W, 3) uint8: x-ramp in red, y-ramp in green, frame index in blue."""
    clip = torch.zeros(t, h, w, 3, dtype=torch.uint8)
    clip[..., 0] = (torch.arange(w) * 255 // (w - 1)).to(torch.uint8)
    clip[..., 1] = (torch.arange(h) * 255 // (h - 1)).to(torch.uint8)[:, None]
    clip[..., 2] = (torch.arange(t) * 40).to(torch.uint8)[:, None, None]
    return clip


def reference(clip: torch.Tensor, crop_size: int, resize_to: int, mean, std) -> torch.Tensor:
    """The method taken literally: resize the short side (float), centre crop, normalise."""
    x = resize_short_side(to_float(clip), resize_to)
    return normalize(to_cthw(center_crop(x, crop_size)), mean, std)


def test_random_crop_is_the_same_window_in_every_frame():
    clip = ramp_clip()
    out = random_crop(clip, 20, np.random.default_rng(3))
    assert out.shape == (4, 20, 20, 3)
    assert torch.equal(out[..., :2], out[:1, ..., :2].expand(4, -1, -1, -1))  # same place in each frame
    assert out[:, 0, 0, 2].tolist() == [0, 40, 80, 120]  # frames stay in order
    again = random_crop(clip, 20, np.random.default_rng(3))
    assert torch.equal(out, again)


def test_crops_and_flip():
    clip = ramp_clip()
    c = center_crop(clip, 32)
    assert c.shape == (4, 32, 32, 3) and torch.equal(c, clip[:, 8:40, 16:48])
    assert torch.equal(crop(clip, 1, 2, 3, 4), clip[:, 1:4, 2:6])
    f = hflip(clip)
    assert torch.equal(f[:, :, 0], clip[:, :, -1]) and torch.equal(hflip(f), clip)
    with pytest.raises(ValueError, match="does not fit"):
        center_crop(clip, 49)
    with pytest.raises(ValueError, match=r"\(T, H, W, C\)"):
        hflip(clip[0])


def test_three_crop_runs_along_the_long_side():
    land = three_crop(ramp_clip(2, 48, 64), 48)
    assert [v[0, 0, 0, 0].item() for v in land] == [0, 32, 64]  # red = x: left, centre, right
    port = three_crop(ramp_clip(2, 64, 48), 48)
    assert [v[0, 0, 0, 1].item() for v in port] == [0, 32, 64]  # green = y: top, centre, bottom


def test_resize_uint8_whole_clip_and_short_side():
    clip = ramp_clip(3, 48, 64)
    out = resize(clip, (24, 32))
    assert out.shape == (3, 24, 32, 3) and out.dtype == torch.uint8
    ref = resize(to_float(clip), (24, 32)) * 255
    assert (out.float() - ref).abs().max() <= 1.0  # uint8 resize agrees with float resize
    assert resize_short_side(clip, 24).shape == (3, 24, 32, 3)
    assert resize_short_side(ramp_clip(1, 64, 48), 24).shape == (1, 32, 24, 3)


def test_values_and_layout():
    clip = ramp_clip(2, 8, 8)
    x = to_float(clip)
    assert x.dtype == torch.float32 and x.max() == 1.0 and x.min() == 0.0
    y = to_cthw(clip)
    assert y.shape == (3, 2, 8, 8) and y.is_contiguous() and torch.equal(y[2, 1], clip[1, :, :, 2])
    n = normalize(to_cthw(x), KINETICS_MEAN, KINETICS_STD)
    expected = (x[1, 3, 5, 0] - KINETICS_MEAN[0]) / KINETICS_STD[0]
    assert n[0, 1, 3, 5].item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="float"):
        normalize(to_cthw(clip), IMAGENET_MEAN, IMAGENET_STD)


def test_presets_follow_the_method():
    assert default_resize(224) == 256 and default_resize(112) == 128
    assert train_transform().resize == 256 and eval_transform(112).resize == 128
    with pytest.raises(ValueError, match="resize"):
        train_transform(224, 200)
    with pytest.raises(ValueError, match="crops"):
        eval_transform(crops=2)


def test_eval_preset_matches_resize_then_centre_crop():
    coarse = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (4, 6, 8, 3), dtype=np.uint8))
    smooth = resize(coarse, (60, 80)).contiguous()  # smooth content: compares resampling, not aliasing
    out = eval_transform(32)(smooth)  # resize 37: the 60x80 frame becomes 37x49, then a 32 crop
    assert out.shape == (3, 4, 32, 32) and out.dtype == torch.float32 and out.is_contiguous()
    ref = reference(smooth, 32, 37, IMAGENET_MEAN, IMAGENET_STD)
    # cropping before resizing moves the window by under half a source pixel: close, not equal
    assert (out - ref).abs().mean() < 0.05  # about 2 grey levels


def test_eval_three_crops_are_views_of_the_whole_frame():
    clip = ramp_clip(4, 48, 96)
    out = eval_transform(16, 16, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), crops=3)(clip)
    assert out.shape == (3, 3, 4, 16, 16)
    red_left_edge = out[:, 0, 0, 8, 0]  # red = x position; 48x48 windows at x = 0, 24, 48 of 96
    assert red_left_edge.tolist() == pytest.approx([0.0, 0.25, 0.5], abs=0.03)


def test_train_preset_is_random_but_reproducible():
    clip = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (4, 48, 64, 3), dtype=np.uint8))
    t = train_transform(32)
    a = t(clip, np.random.default_rng(5))
    b = t(clip, np.random.default_rng(5))
    assert a.shape == (3, 4, 32, 32) and torch.equal(a, b)
    outs = [t(clip, np.random.default_rng(s)) for s in range(6)]
    assert any(not torch.equal(outs[0], o) for o in outs[1:])


def test_train_preset_flips_the_whole_clip():
    clip = ramp_clip(4, 32, 32)
    t = train_transform(28, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    seen = set()
    for s in range(12):
        out = t(clip, np.random.default_rng(s))  # (3, T, 28, 28); red = x
        left, right = out[0, :, :, 0], out[0, :, :, -1]
        assert torch.all(left < right) or torch.all(left > right)  # all frames flipped, or none
        seen.add(bool(torch.all(left > right)))
    assert seen == {True, False}
