"""The scene of a SynthActions clip: the actor of a group (body, clothes, handedness, tempo, kind of scene),
the clip's background and camera (position, shake, flicker, noise), and the drawing primitives.

Each is a pure function of the seed and the (group, clip) numbers, drawn in a fixed order whatever the
class, so neither the actor nor the scene tells the class."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from distilled_shufflenet.data.synth.config import SynthConfig

__all__ = ["Actor", "Clip", "capsule", "make_actor", "make_clip"]


# ---------------------------------------------------------------------------------------------------
# drawing

def capsule(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, r: float, color: np.ndarray,
            alpha: float = 1.0, shade: float = 0.35) -> None:
    """Blend a shaded, anti-aliased capsule (segment p0-p1 of radius r, points as (x, y)) into img
    ``(H, W, 3)`` float32, in place."""
    h, w = img.shape[:2]
    x0 = max(int(math.floor(min(p0[0], p1[0]) - r - 1)), 0)
    x1 = min(int(math.ceil(max(p0[0], p1[0]) + r + 2)), w)
    y0 = max(int(math.floor(min(p0[1], p1[1]) - r - 1)), 0)
    y1 = min(int(math.ceil(max(p0[1], p1[1]) + r + 2)), h)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)[None, :] + 0.5 - p0[0]  # (1, w')
    ys = np.arange(y0, y1, dtype=np.float32)[:, None] + 0.5 - p0[1]  # (h', 1)
    dx, dy = float(p1[0] - p0[0]), float(p1[1] - p0[1])
    len2 = dx * dx + dy * dy
    t = np.clip((xs * dx + ys * dy) / len2, 0.0, 1.0) if len2 > 1e-9 else np.zeros((1, 1), np.float32)
    dist = np.sqrt((xs - t * dx) ** 2 + (ys - t * dy) ** 2)  # (h', w')
    a = np.clip(r + 0.5 - dist, 0.0, 1.0) * alpha  # coverage: 1 inside, a 1-pixel ramp at the edge
    lit = 1.0 - shade * np.clip(dist / max(r, 0.5), 0.0, 1.0) ** 2  # rounder look: darker at the rim
    patch = img[y0:y1, x0:x1]  # (h', w', 3)
    patch += a[..., None] * (lit[..., None] * color - patch)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """RGB in 0..255 (float32, shape (3,)) of a colour given in HSV (all in 0..1)."""
    i = int(h * 6) % 6
    f = h * 6 - math.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255


def _luma(c: np.ndarray) -> float:
    return float(0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2])


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """Low-frequency noise ``(h, w)`` in about -1..1: a coarse random grid, bilinearly upsampled."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.standard_normal((gh, gw)).astype(np.float32)
    yi = np.arange(h, dtype=np.float32) / cell
    xi = np.arange(w, dtype=np.float32) / cell
    y0, x0 = yi.astype(int), xi.astype(int)
    fy, fx = (yi - y0)[:, None], (xi - x0)[None, :]
    g00, g01 = grid[y0][:, x0], grid[y0][:, x0 + 1]
    g10, g11 = grid[y0 + 1][:, x0], grid[y0 + 1][:, x0 + 1]
    return (g00 * (1 - fy) * (1 - fx) + g01 * (1 - fy) * fx + g10 * fy * (1 - fx) + g11 * fy * fx) / 1.5


# ---------------------------------------------------------------------------------------------------
# actors and scenes

_SKIN = np.array([[255, 219, 172], [241, 194, 125], [224, 172, 105], [198, 134, 66], [141, 85, 36],
                  [92, 58, 30]], np.float32)  # fmt: skip

# body lengths as fractions of the standing height
_LEN = {"torso": 0.30, "neck": 0.04, "head": 0.075, "upper_arm": 0.16, "forearm": 0.15,
        "thigh": 0.24, "shin": 0.23, "shoulder": 0.095, "hip": 0.055}  # fmt: skip


@dataclass(frozen=True)
class Actor:
    """One group's performer: the same in every clip and class of the group."""

    height: float  # standing height as a fraction of the frame height
    build: dict[str, float]  # length of each body part, fraction of the standing height
    limb: float  # limb radius, fraction of the standing height
    torso: float  # torso radius, fraction of the standing height
    skin: np.ndarray
    hair: np.ndarray
    shirt: np.ndarray
    trousers: np.ndarray
    shoes: np.ndarray
    sleeves: bool  # long sleeves: forearms in the shirt colour
    side: int  # image side (-1 left, +1 right) of the arm that waves / the leg that kicks
    tempo: float  # speed of every movement
    amplitude: float  # size of every movement
    scene: int  # kind of background: 0 room, 1 outdoors, 2 tiled wall
    palette: np.ndarray  # (3, 3) base colours of the background


def make_actor(seed: int, group: int) -> Actor:
    """The actor of ``group`` (1-based) for the dataset's ``seed``."""
    rng = np.random.default_rng([seed, 1, group])
    scene = int(rng.integers(3))
    hue = rng.random()
    palette = np.stack([_hsv((hue + rng.normal(0, 0.05)) % 1, rng.uniform(0.1, 0.5), rng.uniform(0.3, 0.95))
                        for _ in range(3)])
    wall = _luma(palette[:2].mean(0))
    floor = _luma(palette[2])
    shirt_v = rng.uniform(0.15, 0.45) if wall > 128 else rng.uniform(0.7, 1.0)  # stand out from the wall
    trousers_v = rng.uniform(0.12, 0.4) if floor > 110 else rng.uniform(0.6, 0.9)  # ...and the floor
    build = {k: v * rng.uniform(0.92, 1.08) for k, v in _LEN.items()}
    return Actor(
        height=rng.uniform(0.6, 0.76),
        build=build,
        limb=rng.uniform(0.032, 0.045),
        torso=rng.uniform(0.07, 0.09),
        skin=_SKIN[rng.integers(len(_SKIN))] * rng.uniform(0.9, 1.05),
        hair=_hsv(rng.uniform(0.02, 0.12), rng.uniform(0.3, 0.8), rng.uniform(0.05, 0.45)),
        shirt=_hsv(rng.random(), rng.uniform(0.45, 0.95), shirt_v),
        trousers=_hsv(rng.random(), rng.uniform(0.1, 0.6), trousers_v),
        shoes=_hsv(rng.random(), rng.uniform(0, 0.5), rng.uniform(0.05, 0.3)),
        sleeves=bool(rng.random() < 0.5),
        side=int(rng.choice([-1, 1])),
        tempo=rng.uniform(0.85, 1.15),
        amplitude=rng.uniform(0.85, 1.1),
        scene=scene,
        palette=palette,
    )


@dataclass(frozen=True)
class Clip:
    """Per (group, clip) randomness, drawn in a fixed order whatever the class."""

    width: int  # frame size in pixels
    height: int
    phase: float
    tempo: float
    x: float  # figure position, fraction of the width
    ground: float  # feet height, fraction of the frame height
    horizon: float  # floor line, fraction of the frame height
    scale: float
    onset: float  # start of one-off movements (squat), fraction of the clip
    duration: float  # their length, fraction of the clip
    background: np.ndarray  # (H + 2m, W + 2m, 3) float32
    shake: np.ndarray  # (T, 2) integer camera offsets (dx, dy) in 0..2m
    gain: np.ndarray  # (T,) brightness flicker
    noise: float  # sensor noise standard deviation, grey levels
    rng: np.random.Generator  # continues with the per-frame sensor noise


def _background(rng: np.random.Generator, actor: Actor, h: int, w: int, horizon: float) -> np.ndarray:
    pal = actor.palette * rng.uniform(0.85, 1.15, (3, 1)).astype(np.float32)
    yy = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]  # (h, 1, 1)
    img = pal[0] * (1 - yy) + pal[1] * yy + np.zeros((h, w, 3), np.float32)  # (h, w, 3) wall gradient
    hy = int(horizon * h)
    if actor.scene == 2:  # tiles / stripes
        period = rng.uniform(6, 16) * w / 160
        xs = np.arange(w, dtype=np.float32)[None, :]
        ys = np.arange(h, dtype=np.float32)[:, None]
        tiles = ((np.floor(xs / period) + np.floor(ys / period)) % 2) * 2 - 1
        img += (tiles * rng.uniform(6, 18))[..., None]
    img += (_smooth_noise(rng, h, w, max(4, w // 10)) * rng.uniform(5, 20))[..., None]
    for _ in range(int(rng.integers(0, 4))):  # windows, posters, furniture
        bw, bh = rng.uniform(0.08, 0.3) * w, rng.uniform(0.1, 0.35) * h
        bx, by = rng.uniform(0, w - bw), rng.uniform(0, max(hy - bh, 1))
        img[int(by):int(by + bh), int(bx):int(bx + bw)] = (
            _hsv(rng.random(), rng.uniform(0, 0.6), rng.uniform(0.2, 1.0)) * 0.5
            + img[int(by):int(by + bh), int(bx):int(bx + bw)] * 0.5)
    floor = pal[2] * np.linspace(0.75, 1.1, h - hy, dtype=np.float32)[:, None, None]  # darker far away
    grain = 25 if actor.scene == 1 else 8  # grass vs floor boards
    floor = floor + (_smooth_noise(rng, h - hy, w, 2) * grain)[..., None]
    img[hy:] = floor
    img[max(hy - 1, 0):hy + 1] *= 0.8  # the floor line
    return img


def make_clip(seed: int, group: int, clip: int, actor: Actor, cfg: SynthConfig) -> Clip:
    """The scene and camera of clip ``clip`` of ``group``, the same for every class."""
    rng = np.random.default_rng([seed, 2, group, clip])
    w, h = cfg.size
    m = max(2, round(0.02 * w))
    horizon = rng.uniform(0.45, 0.62)
    phase, tempo, x = rng.uniform(0, 2 * np.pi), rng.uniform(0.9, 1.1), rng.uniform(0.38, 0.62)
    ground, scale = rng.uniform(0.88, 0.95), rng.uniform(0.92, 1.05)
    onset, duration = rng.uniform(0.0, 0.12), rng.uniform(0.75, 0.88)
    background = _background(rng, actor, h + 2 * m, w + 2 * m, (horizon * h + m) / (h + 2 * m))
    sigma = rng.choice([0.0, rng.uniform(0.2, 0.7)])  # some clips on a tripod, some hand-held
    walk = np.cumsum(rng.normal(0, sigma, (cfg.frames, 2)), axis=0)
    shake = np.clip(np.round(walk + m), 0, 2 * m).astype(int)  # (T, 2)
    gain = 1 + rng.normal(0, 0.01, cfg.frames).astype(np.float32)
    noise = rng.uniform(1.0, 5.0)
    return Clip(w, h, phase, tempo, x, ground, horizon, scale, onset, duration, background, shake, gain, noise, rng)

