"""Class-typical appearance cues of SynthActions (``--cue-strength``): a prop that only one class shows.

SynthActions' classes are told apart by motion; UCF101's are also recognisable from a single frame (a
pool for Diving, a bow for Archery), which is what an image (2D) teacher sees. With ``cue_strength`` p,
each video shows its class's prop with probability p, drawn per video, and no prop otherwise: a prop only
ever points to the right class, and p sets how much one frame can tell.

The prop of a class (:func:`cue_of`: a shape and a hue) is the same for every seed, as UCF101's training
and test videos share "a pool for Diving"; its side, place, size and exact colour vary per video, so that
it is a category, not a pixel template. It stands on the floor beside the actor, inside the central
square that the project's centre crop keeps (:data:`CROP_SHARE` of the short side), and is drawn in front
of the figure, so it is in every frame and every evaluated clip; it is part of the scene, so the camera shake moves it too.

Its draws come from a random stream of their own, ``[seed, 3, class, group, clip]`` (``class`` is the
index in :data:`SYNTH_CLASSES`, whatever classes a dataset has; the actor's stream is
``[seed, 1, group]``, the clip's ``[seed, 2, group, clip]``), so a video without a prop is the video the
generator writes without cues, bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distilled_shufflenet.data.synth.config import SYNTH_CLASSES, SynthConfig
from distilled_shufflenet.data.synth.scene import _hsv, capsule

__all__ = ["CROP_SHARE", "CUE_SHAPES", "Cue", "Prop", "cue_of", "draw_prop", "place_cue"]

CUE_SHAPES: tuple[str, ...] = ("ball", "box", "pole", "cross", "barbell")

_CUE_STREAM = 3  # the streams of make_actor and make_clip are 1 and 2
CROP_SHARE = 224 / 256  # the centre crop of the evaluation transform, as a share of the short side
_SIZE = {"ball": 0.17, "box": 0.17, "pole": 0.42, "cross": 0.36, "barbell": 0.11}  # height, of the frame's
_HALF_WIDTH = {"ball": 0.5, "box": 0.5, "pole": 0.15, "cross": 0.35, "barbell": 1.4}  # of the height


@dataclass(frozen=True)
class Cue:
    """The prop of a class: its shape (one of :data:`CUE_SHAPES`) and hue (0..1, HSV)."""

    shape: str
    hue: float


# Classes that share a shape have hues at least a third of the circle apart; the default ten classes
# give each shape to two classes.
_CUES: dict[str, Cue] = {
    "JumpingJacks": Cue("ball", 0.0),  # red
    "SquatDown": Cue("box", 0.15),  # yellow
    "StandUp": Cue("pole", 0.33),  # green
    "WaveSlow": Cue("cross", 0.55),  # cyan
    "WaveFast": Cue("barbell", 0.75),  # violet
    "Punch": Cue("ball", 0.55),
    "WalkToward": Cue("box", 0.75),
    "WalkAway": Cue("pole", 0.0),
    "Kick": Cue("cross", 0.15),
    "Bow": Cue("barbell", 0.33),
    "Clap": Cue("ball", 0.33),
    "WalkLeft": Cue("box", 0.45),
    "WalkRight": Cue("pole", 0.66),
}


def cue_of(class_name: str) -> Cue:
    """The prop that videos of ``class_name`` show (the same for every seed)."""
    if class_name not in _CUES:
        raise ValueError(f"class_name: expected one of {', '.join(SYNTH_CLASSES)}, got {class_name!r}")
    return _CUES[class_name]


@dataclass(frozen=True)
class Prop:
    """A class's cue as one video shows it, in scene pixels (the frame before the camera's offset)."""

    cue: Cue
    x: float  # centre of its foot
    base: float  # y where it stands on the floor
    size: float  # its height (for the barbell: the weights' diameter)
    color: np.ndarray  # (3,) RGB 0..255, float32


def place_cue(class_name: str, group: int, clip: int, config: SynthConfig) -> Prop | None:
    """The prop video (``class_name``, ``group``, ``clip``) shows, or ``None`` if it shows none (with
    probability ``1 - config.cue_strength``).

    The draw that decides comes first in the video's stream and the prop is placed whether it is shown or
    not, so a video that shows its prop at strength p shows the same prop at any higher strength."""
    cue = cue_of(class_name)
    rng = np.random.default_rng([config.seed, _CUE_STREAM, SYNTH_CLASSES.index(class_name), group, clip])
    shown = rng.random() < config.cue_strength
    w, h = config.size
    side = rng.choice([-1, 1])
    # beside the actor (who stands at 0.38..0.62 of the width) and inside the centre square the project's
    # evaluation crops (224 of 256 on the short side: 0.875 of the height), so that a clip shows it
    short = min(w, h)
    x = w / 2 + side * short * rng.uniform(0.2, 0.33)
    base = h * rng.uniform(0.8, 0.96)  # on the floor: the horizon is at most 0.62 of the height
    size = h * rng.uniform(0.8, 1.25) * _SIZE[cue.shape]
    color = _hsv((cue.hue + rng.normal(0, 0.01)) % 1, rng.uniform(0.75, 1.0), rng.uniform(0.75, 1.0))
    half = _HALF_WIDTH[cue.shape] * size + 0.02 * w  # keep all of it in view, whatever the camera shake
    lo, hi = max(half, w / 2 - CROP_SHARE * short / 2 + half), min(w - half, w / 2 + CROP_SHARE * short / 2 - half)
    x = min(max(x, lo), hi) if lo <= hi else w / 2
    return Prop(cue, float(x), float(base), float(size), color) if shown else None


def draw_prop(img: np.ndarray, prop: Prop, off: np.ndarray) -> None:
    """Draw ``prop`` into ``img`` ``(H, W, 3)`` float32, in place; ``off`` is the camera offset (x, y)."""
    x, y, s, color = prop.x - float(off[0]), prop.base - float(off[1]), prop.size, prop.color
    shape = prop.cue.shape
    half = min(_HALF_WIDTH[shape], 1.2) * s  # its shadow
    capsule(img, np.array([x - half, y]), np.array([x + half, y]), 0.05 * s + 0.5, np.zeros(3, np.float32), 0.35, 0)
    if shape == "ball":
        centre = np.array([x, y - s / 2])
        capsule(img, centre, centre, s / 2, color)
    elif shape == "box":
        _box(img, x - s / 2, y - s, x + s / 2, y, color)
    elif shape == "pole":
        capsule(img, np.array([x, y]), np.array([x, y - s]), max(0.05 * s, 0.8), color, shade=0.2)
    elif shape == "cross":  # a signpost: a post and a bar near its top
        r = max(0.06 * s, 0.8)
        capsule(img, np.array([x, y]), np.array([x, y - s]), r, color, shade=0.2)
        capsule(img, np.array([x - 0.35 * s, y - 0.75 * s]), np.array([x + 0.35 * s, y - 0.75 * s]), r, color,
                shade=0.2)
    else:  # barbell lying on the floor: a bar between two weights
        for end in (-1, 1):
            weight = np.array([x + end * 0.9 * s, y - s / 2])
            capsule(img, weight, weight, s / 2, color)
        capsule(img, np.array([x - 1.2 * s, y - s / 2]), np.array([x + 1.2 * s, y - s / 2]), max(0.12 * s, 0.6),
                color * 0.6)


def _box(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, color: np.ndarray) -> None:
    """Blend an anti-aliased box (x0..x1, y0..y1), lit from above, into ``img`` ``(H, W, 3)``, in place."""
    h, w = img.shape[:2]
    c0, c1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)), w)
    r0, r1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)), h)
    if c0 >= c1 or r0 >= r1:
        return
    xs = np.arange(c0, c1, dtype=np.float32) + 0.5  # pixel centres
    ys = np.arange(r0, r1, dtype=np.float32) + 0.5
    ax = np.clip(np.minimum(xs - x0, x1 - xs) + 0.5, 0.0, 1.0)  # (w',) coverage
    ay = np.clip(np.minimum(ys - y0, y1 - ys) + 0.5, 0.0, 1.0)  # (h',)
    lit = np.minimum(np.float32(1.1) - 0.35 * (ys - y0) / max(y1 - y0, 1.0), 1.0)  # (h',) its top catches the light
    patch = img[r0:r1, c0:c1]  # (h', w', 3)
    patch += (ay[:, None] * ax[None, :])[..., None] * (lit[:, None, None] * color - patch)
