"""SynthActions: the project's own synthetic action dataset, written in the UCF101 layout.

Procedurally animated figures (head, torso, upper/lower arms and legs, drawn as shaded anti-aliased
capsules) perform actions in front of random backgrounds, filmed by a shaky, noisy camera. The files are
real videos (MPEG-4 Part 2 in AVI, like UCF101; H.264 MP4 as an option) so the real data path (decoding,
split files, loaders) is exercised end to end::

    OUT/classInd.txt                       "1 JumpingJacks"  (1-based, CRLF, as the official file)
    OUT/trainlist0{1,2,3}.txt              "JumpingJacks/v_JumpingJacks_g03_c01.avi 1"  (CRLF)
    OUT/testlist0{1,2,3}.txt               "JumpingJacks/v_JumpingJacks_g01_c01.avi"  (CRLF, no label)
    OUT/<Class>/v_<Class>_gXX_cYY.avi
    OUT/synth_config.yaml                  the config that made the folder (guards resumed runs)

Groups and splits. Like KTH, a group ``gXX`` is one actor (body shape, clothes, handedness, tempo, kind
of scene) who performs every action, and clip ``cYY`` of a group is filmed in the same scene (background,
position, phase, camera shake, noise) for every class, so neither the actor nor the scene tells the
class. Like UCF101, groups never straddle train and test: split k tests on the k-th block of
``max(1, groups // 4)`` groups, counted from g01 (8 groups: split 1 tests g01-g02, split 2 g03-g04,
split 3 g05-g06), and trains on all the other groups. As many of the three splits are written as the
number of groups allows.

Classes (:data:`SYNTH_CLASSES`; the default is the first 10). Some pairs differ only in motion, which a
single frame cannot tell apart:

* ``SquatDown`` / ``StandUp``, ``WalkToward`` / ``WalkAway``, ``WalkLeft`` / ``WalkRight``: the second
  class's video is the first one's frames in reverse order (same set of frames, opposite order);
* ``WaveSlow`` / ``WaveFast``: the same waving poses at a tempo about three times higher; the first frame
  of the two videos is the same.

The others differ in pose: ``JumpingJacks``, ``Punch``, ``Kick``, ``Bow``, ``Clap``. ``WalkLeft`` and
``WalkRight`` (not in the default 10) are mirror images of each other, so training with random horizontal
flips mixes them up; every other class keeps its label under a flip.

Everything is a pure function of the seed and the (class, group, clip) numbers, so the same config gives
the same decoded frames whatever the number of workers.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml
from tqdm import tqdm

from distilled_shufflenet.data.encode import codec_available, write_video
from distilled_shufflenet.io import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable_folder,
    remove_stale_temporaries,
)

__all__ = [
    "DEFAULT_CLASSES",
    "SYNTH_CLASSES",
    "SynthConfig",
    "SynthReport",
    "generate_synth_actions",
    "render_synth_clip",
    "synth_test_groups",
    "synth_video_name",
]

SYNTH_CLASSES: tuple[str, ...] = (
    "JumpingJacks", "SquatDown", "StandUp", "WaveSlow", "WaveFast", "Punch", "WalkToward", "WalkAway",
    "Kick", "Bow", "Clap", "WalkLeft", "WalkRight",
)  # fmt: skip
DEFAULT_CLASSES: tuple[str, ...] = SYNTH_CLASSES[:10]

# a class whose video is another class's video played backwards
_REVERSE_OF: dict[str, str] = {"StandUp": "SquatDown", "WalkAway": "WalkToward", "WalkRight": "WalkLeft"}

CONFIG_FILE = "synth_config.yaml"
# bumped whenever the generator draws differently, so that a resumed run never mixes two versions
GENERATOR_VERSION = 1


@dataclass
class SynthConfig:
    """What to generate. ``size`` is (width, height); ``format`` is ``"avi"`` (MPEG-4 Part 2, like
    UCF101) or ``"mp4"`` (H.264). ``clean`` drops the camera shake, flicker and sensor noise (the
    random draws still happen, so everything else stays the same)."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    groups: int = 8
    clips_per_group: int = 3
    frames: int = 40
    size: tuple[int, int] = (160, 120)
    fps: int = 25
    seed: int = 0
    format: str = "avi"
    clean: bool = False  # no camera shake, flicker or sensor noise (for inspection and tests)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.size = (int(self.size[0]), int(self.size[1]))
        unknown = [c for c in self.classes if c not in SYNTH_CLASSES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: expected distinct names from {', '.join(SYNTH_CLASSES)}, "
                             f"got {list(self.classes)}")
        if self.groups < 2:
            raise ValueError(f"groups: expected >= 2 (train and test need their own), got {self.groups}")
        if self.clips_per_group < 1 or self.clips_per_group > 99 or self.groups > 99:
            raise ValueError("groups and clips_per_group: expected 1..99 "
                             f"(got {self.groups}, {self.clips_per_group})")
        if self.frames < 2:
            raise ValueError(f"frames: expected >= 2, got {self.frames}")
        if min(self.size) < 16 or self.size[0] % 2 or self.size[1] % 2:
            raise ValueError(f"size: expected even width and height >= 16, got {self.size[0]}x{self.size[1]}")
        if self.fps < 1:
            raise ValueError(f"fps: expected >= 1, got {self.fps}")
        if self.format not in ("avi", "mp4"):
            raise ValueError(f"format: expected 'avi' or 'mp4', got {self.format!r}")

    @property
    def codec(self) -> str:
        return "mpeg4" if self.format == "avi" else "libx264"


@dataclass
class SynthReport:
    """What :func:`generate_synth_actions` did."""

    root: Path
    classes: tuple[str, ...]
    videos: int  # videos in the dataset
    written: int  # videos written by this run (the others were already there)
    splits: int  # number of (trainlist0k, testlist0k) pairs written
    train_videos: int  # in split 1
    test_videos: int  # in split 1
    seconds: float
    per_class: dict[str, int] = field(default_factory=dict)

    def __str__(self) -> str:
        return (f"SynthActions in {self.root}: {len(self.classes)} classes, {self.videos} videos "
                f"({self.written} written, {self.videos - self.written} already there), {self.splits} splits; "
                f"split 1: {self.train_videos} train / {self.test_videos} test; {self.seconds:.1f} s")


def synth_video_name(class_name: str, group: int, clip: int, fmt: str = "avi") -> str:
    """``"Wave/v_Wave_g01_c02.avi"``: the video's path relative to the dataset root."""
    return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.{fmt}"


def synth_test_groups(groups: int, split: int) -> list[int]:
    """The test groups (1-based) of ``split`` (1..3) for a dataset of ``groups`` groups; [] if the split
    does not exist for that many groups."""
    n = max(1, groups // 4)
    first = (split - 1) * n + 1
    if first + n - 1 > groups or n >= groups:
        return []
    return list(range(first, first + n))


# ---------------------------------------------------------------------------------------------------
# drawing

def _capsule(img: np.ndarray, p0: np.ndarray, p1: np.ndarray, r: float, color: np.ndarray,
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
class _Actor:
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


def _make_actor(seed: int, group: int) -> _Actor:
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
    return _Actor(
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
class _Clip:
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


def _background(rng: np.random.Generator, actor: _Actor, h: int, w: int, horizon: float) -> np.ndarray:
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


def _make_clip(seed: int, group: int, clip: int, actor: _Actor, cfg: SynthConfig) -> _Clip:
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
    return _Clip(w, h, phase, tempo, x, ground, horizon, scale, onset, duration, background, shake, gain, noise, rng)


# ---------------------------------------------------------------------------------------------------
# actions: each maps time to a pose. Angles are absolute image angles of a limb, 0 = pointing down,
# +pi/2 = pointing to the image right; "out" below means away from the body's midline (sign = side).

_SIDES = (-1, 1)  # index 0: the limb on the image left, 1: on the image right

_Pose = dict[str, np.ndarray]  # per-frame body parameters, each (T,) or (T, side, segment); see _rest
_Action = Callable[[_Pose, np.ndarray, _Actor, _Clip], None]  # (pose, times in s, actor, clip): edits pose


def _rest(t: np.ndarray, cfg: SynthConfig, clip: _Clip) -> _Pose:
    """Standing still, arms down, for every time in ``t`` ``(T,)``."""
    n = len(t)
    s = np.array(_SIDES, np.float32)
    return {
        "x": np.full(n, clip.x * cfg.size[0], np.float32),
        "ground": np.full(n, clip.ground * cfg.size[1], np.float32),
        "scale": np.full(n, clip.scale, np.float32),
        "air": np.zeros(n, np.float32),  # jump height, fraction of the standing height
        "tilt": np.zeros(n, np.float32),  # torso lean, radians (+ = towards the image right)
        "bend": np.ones(n, np.float32),  # torso foreshortening (bowing towards the camera)
        "arm": np.tile(np.stack([s * 0.18, s * 0.08], -1), (n, 1, 1)),  # (T, side, upper/lower)
        "arm_fs": np.ones((n, 2, 2), np.float32),  # foreshortening of each segment
        "leg": np.tile(np.stack([s * 0.06, s * 0.03], -1), (n, 1, 1)),
        "leg_fs": np.ones((n, 2, 2), np.float32),
    }


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _jumping_jacks(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    th = 2 * np.pi * 1.1 * a.tempo * c.tempo * t + c.phase
    op = (0.5 - 0.5 * np.cos(th)) * a.amplitude  # 0 closed .. 1 open
    for i, s in enumerate(_SIDES):
        p["arm"][:, i, 0] = s * (0.15 + 2.5 * op)
        p["arm"][:, i, 1] = s * (0.1 + 2.8 * op)
        p["leg"][:, i, 0] = s * (0.04 + 0.32 * op)
        p["leg"][:, i, 1] = s * (0.02 + 0.3 * op)
    p["air"] = 0.06 * np.abs(np.sin(th))


def _squat_down(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    u = t / max(t[-1], 1e-6)
    k = _smoothstep((u - c.onset) / c.duration) * a.amplitude  # 0 standing .. 1 squatting
    for i, s in enumerate(_SIDES):
        p["leg"][:, i, 0] = s * (0.06 + 0.55 * k)  # knees out...
        p["leg_fs"][:, i, 0] = 1 - 0.6 * k  # ...and towards the camera
        p["leg"][:, i, 1] = s * (0.03 - 0.15 * k)
        p["arm"][:, i, 0] = s * (0.18 + 1.35 * k)  # arms out for balance
        p["arm"][:, i, 1] = s * (0.08 + 1.45 * k)
    p["bend"] = 1 - 0.12 * k


def _wave(freq: float) -> _Action:
    def wave(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
        th = 2 * np.pi * freq * a.tempo * c.tempo * t + c.phase
        i, s = _SIDES.index(a.side), a.side
        swing = a.amplitude * np.sin(th)
        p["arm"][:, i, 0] = s * (2.3 + 0.12 * swing)
        p["arm"][:, i, 1] = np.pi + s * (0.25 + 0.7 * swing)
        p["tilt"] = -s * 0.04 * np.ones_like(t)
    return wave


def _punch(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    th = 2 * np.pi * 1.3 * a.tempo * c.tempo * t + c.phase
    for i, s in enumerate(_SIDES):
        e = np.clip(np.sin(th + (0 if s == a.side else np.pi)), 0, 1) ** 0.6  # out fast, back slower
        p["arm"][:, i, 0] = s * (0.45 + 1.15 * e)  # guard -> horizontal
        p["arm"][:, i, 1] = s * (-2.6 + 4.2 * e)  # fist at the chin -> straight
        p["leg"][:, i, 0] = s * 0.22
        p["leg"][:, i, 1] = s * 0.12
    p["tilt"] = 0.1 * (np.clip(np.sin(th), 0, 1) - np.clip(-np.sin(th), 0, 1)) * a.side


def _kick(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    th = 2 * np.pi * 0.8 * a.tempo * c.tempo * t + c.phase
    e = np.clip(np.sin(th), 0, 1) ** 0.7 * a.amplitude  # 0 standing .. 1 leg up
    s = a.side
    i = _SIDES.index(s)
    p["leg"][:, i, 0] = s * (0.06 + 1.35 * e)
    p["leg"][:, i, 1] = s * (0.03 + 1.55 * e)
    p["leg"][:, 1 - i, 0] = -s * (0.06 - 0.12 * e)  # support leg under the body
    p["tilt"] = -s * 0.3 * e
    for j, sj in enumerate(_SIDES):
        p["arm"][:, j, 0] = sj * (0.18 + 1.0 * e)
        p["arm"][:, j, 1] = sj * (0.08 + 1.1 * e)


def _bow(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    th = 2 * np.pi * 0.65 * a.tempo * c.tempo * t + c.phase
    k = np.clip((0.5 - 0.5 * np.cos(th)) ** 1.5 * a.amplitude, 0, 1)
    p["bend"] = 1 - 0.8 * k
    for i, s in enumerate(_SIDES):
        p["arm"][:, i, 0] = s * (0.18 - 0.12 * k)
        p["arm_fs"][:, i] = 1 - 0.3 * k[:, None]


def _clap(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    th = 2 * np.pi * 1.8 * a.tempo * c.tempo * t + c.phase
    op = np.clip(0.5 + 0.55 * np.cos(th) * a.amplitude, 0, 1)  # 1 apart .. 0 together
    for i, s in enumerate(_SIDES):
        p["arm"][:, i, 0] = s * (0.3 + 0.6 * op)
        p["arm"][:, i, 1] = s * (np.pi + 1.2 - 2.3 * op)  # hands in front of the chest .. up and out


def _walk_toward(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    th = 2 * np.pi * 0.95 * a.tempo * c.tempo * t + c.phase
    u = t / max(t[-1], 1e-6)
    grow = 0.6 + 0.45 * u  # the figure comes closer...
    p["scale"] = p["scale"] * grow
    hor = c.horizon * c.height
    p["ground"] = hor + (p["ground"] - hor) * grow / 1.05  # ...and lower, on the floor's perspective
    for i, s in enumerate(_SIDES):
        lift = np.clip(np.sin(th + i * np.pi), 0, 1) * a.amplitude
        p["leg_fs"][:, i, 0] = 1 - 0.5 * lift  # knee towards the camera: a shorter thigh
        p["arm_fs"][:, i, :] = 1 - 0.35 * np.clip(np.sin(th + (1 - i) * np.pi), 0, 1)[:, None]
        p["arm"][:, i, 0] = s * (0.15 + 0.1 * lift)


def _walk_left(p: _Pose, t: np.ndarray, a: _Actor, c: _Clip) -> None:
    f = 0.9 * a.tempo * c.tempo
    th = 2 * np.pi * f * t + c.phase
    swing = 0.42 * a.amplitude * np.sin(th)
    for i in range(2):
        sign = 1 if i == 0 else -1
        p["leg"][:, i, 0] = sign * swing
        p["leg"][:, i, 1] = sign * swing * 0.8
        p["arm"][:, i, 0] = -sign * swing * 0.8
        p["arm"][:, i, 1] = -sign * swing * 0.6
    height = a.height * c.height * p["scale"][0]  # standing height in pixels
    span = min(0.75 * height * f * t[-1], 0.7 * c.width)  # a stride per step, inside the frame
    start = np.clip(p["x"][0] + span / 2, 0.15 * c.width + span, 0.85 * c.width)
    p["x"] = start - span * t / max(t[-1], 1e-6)


_ACTIONS: dict[str, _Action] = {
    "JumpingJacks": _jumping_jacks,
    "SquatDown": _squat_down,
    "WaveSlow": _wave(0.6),
    "WaveFast": _wave(2.0),
    "Punch": _punch,
    "WalkToward": _walk_toward,
    "Kick": _kick,
    "Bow": _bow,
    "Clap": _clap,
    "WalkLeft": _walk_left,
}


def _vec(angle: np.ndarray | float) -> np.ndarray:
    return np.array([math.sin(angle), math.cos(angle)], np.float32)  # (x, y); 0 points down


def _draw_figure(img: np.ndarray, p: _Pose, i: int, a: _Actor, h: int, off: np.ndarray) -> None:
    """Draw frame ``i`` of pose ``p`` into ``img`` ``(H, W, 3)`` float32; ``off`` is the camera offset."""
    hf = a.height * h * float(p["scale"][i])  # standing height in pixels
    L = {k: v * hf for k, v in a.build.items()}
    limb, torso_r = a.limb * hf, a.torso * hf
    # legs first, relative to the pelvis, to find how high the pelvis is
    hips, knees, feet = [], [], []
    for j, s in enumerate(_SIDES):
        hip = np.array([s * L["hip"], 0.0], np.float32)
        knee = hip + L["thigh"] * p["leg_fs"][i, j, 0] * _vec(p["leg"][i, j, 0])
        foot = knee + L["shin"] * p["leg_fs"][i, j, 1] * _vec(p["leg"][i, j, 1])
        hips.append(hip)
        knees.append(knee)
        feet.append(foot)
    lowest = max(f[1] for f in feet) + limb
    pelvis = np.array([p["x"][i], p["ground"][i] - lowest - float(p["air"][i]) * hf], np.float32) - off
    tilt, bend = float(p["tilt"][i]), float(p["bend"][i])
    up = np.array([math.sin(tilt), -math.cos(tilt)], np.float32)
    across = np.array([math.cos(tilt), math.sin(tilt)], np.float32)
    neck = pelvis + up * L["torso"] * bend
    head = neck + up * (L["neck"] + L["head"]) * bend
    ground = np.array([p["x"][i], p["ground"][i]], np.float32) - off
    shadow_w = 0.12 * hf * (1 - 0.5 * min(float(p["air"][i]) * 8, 1))
    _capsule(img, ground - [shadow_w, 0], ground + [shadow_w, 0], 0.025 * hf, np.zeros(3, np.float32), 0.35, 0)
    for j in range(2):
        hip, knee, foot = pelvis + hips[j], pelvis + knees[j], pelvis + feet[j]
        _capsule(img, hip, knee, limb * 1.2, a.trousers)
        _capsule(img, knee, foot, limb * 1.1, a.trousers)
        toe = foot + np.array([_SIDES[j] * 0.035 * hf, 0.0], np.float32)
        _capsule(img, foot, toe, limb * 0.9, a.shoes)
    _capsule(img, pelvis - across * L["hip"], pelvis + across * L["hip"], limb * 1.3, a.trousers)
    _capsule(img, pelvis + up * torso_r * 0.6, neck - up * torso_r * 0.5, torso_r, a.shirt)
    shoulders = [neck - up * 0.03 * hf + across * s * L["shoulder"] for s in _SIDES]
    _capsule(img, shoulders[0], shoulders[1], limb * 1.3, a.shirt)
    for j in range(2):
        elbow = shoulders[j] + L["upper_arm"] * p["arm_fs"][i, j, 0] * _vec(p["arm"][i, j, 0])
        hand = elbow + L["forearm"] * p["arm_fs"][i, j, 1] * _vec(p["arm"][i, j, 1])
        _capsule(img, shoulders[j], elbow, limb * 1.05, a.shirt)
        _capsule(img, elbow, hand, limb, a.shirt if a.sleeves else a.skin)
        _capsule(img, hand, hand, limb * 1.15, a.skin)
    r = L["head"]
    _capsule(img, neck, neck + up * r * 0.5 * bend, limb * 0.9, a.skin)
    _capsule(img, head - up * r * 0.15, head - up * r * 0.15, r * 1.05, a.hair)  # hair, seen at the top
    face = r * 0.88 * min(1.0, 0.2 + bend)  # bowing shows the top of the head instead of the face
    _capsule(img, head + up * (r * 1.05 - face), head + up * (r * 1.05 - face), face, a.skin, shade=0.25)


def _render(class_name: str, group: int, clip: int, cfg: SynthConfig) -> np.ndarray:
    actor = _make_actor(cfg.seed, group)
    c = _make_clip(cfg.seed, group, clip, actor, cfg)
    w, h = cfg.size
    t = np.arange(cfg.frames, dtype=np.float32) / cfg.fps
    pose = _rest(t, cfg, c)
    _ACTIONS[class_name](pose, t, actor, c)
    out = np.empty((cfg.frames, h, w, 3), np.uint8)
    m = (c.background.shape[1] - w) // 2
    for i in range(cfg.frames):
        dx, dy = (m, m) if cfg.clean else c.shake[i]
        img = c.background[dy:dy + h, dx:dx + w].copy()  # (H, W, 3) the camera's view of the scene
        _draw_figure(img, pose, i, actor, h, np.array([dx - m, dy - m], np.float32))
        noise = c.rng.standard_normal(img.shape, dtype=np.float32)  # drawn even if unused: same stream
        if not cfg.clean:
            img *= c.gain[i]
            img += noise * c.noise
        np.clip(img, 0, 255, out=img)
        out[i] = img.astype(np.uint8)
    return out


def render_synth_clip(class_name: str, group: int, clip: int, config: SynthConfig | None = None) -> np.ndarray:
    """The frames of one SynthActions video, without writing it.

    Args:
        class_name: one of :data:`SYNTH_CLASSES`.
        group, clip: 1-based group (actor) and clip numbers.
        config: size, frame count, fps and seed (default :class:`SynthConfig()`).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames.
    """
    cfg = config or SynthConfig()
    if class_name not in SYNTH_CLASSES:
        raise ValueError(f"class_name: expected one of {', '.join(SYNTH_CLASSES)}, got {class_name!r}")
    if class_name in _REVERSE_OF:
        return _render(_REVERSE_OF[class_name], group, clip, cfg)[::-1].copy()
    return _render(class_name, group, clip, cfg)


# ---------------------------------------------------------------------------------------------------
# the dataset

def _write_one(root: str, name: str, class_name: str, group: int, clip: int, cfg: SynthConfig) -> bool:
    path = Path(root) / name
    if path.is_file():  # files only appear under their name once complete
        return False
    frames = render_synth_clip(class_name, group, clip, cfg)
    write_video(path, frames, fps=cfg.fps, codec=cfg.codec)
    return True


def _write_text(path: Path, lines: Sequence[str]) -> None:
    atomic_write_bytes("".join(f"{line}\r\n" for line in lines).encode(), path)


def _check_config(root: Path, cfg: SynthConfig) -> None:
    record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    record["generator_version"] = GENERATOR_VERSION
    path = root / CONFIG_FILE
    if path.is_file():
        old = yaml.safe_load(path.read_text())
        if old != record:
            diff = sorted(k for k in set(old or {}) | set(record) if (old or {}).get(k) != record.get(k))
            raise ValueError(f"{path}: this folder was generated with another config (differs in "
                             f"{', '.join(diff)}); use a new folder or the same settings to resume")
        return
    if root.is_dir() and any(root.iterdir()):
        raise ValueError(f"{root}: folder is not empty and holds no SynthActions dataset ({CONFIG_FILE} "
                         "missing); give an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(record, sort_keys=False), path)


def generate_synth_actions(
    out: str | os.PathLike[str],
    config: SynthConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> SynthReport:
    """Write a SynthActions dataset to ``out`` in the UCF101 layout (see the module docstring).

    Videos already in ``out`` are kept, so an interrupted run resumes where it stopped (the temporary
    files a killed run left are deleted first); the split files are written last. ``out`` must be empty
    or hold a dataset made with the same config, and be writable.

    Args:
        out: dataset root.
        config: what to generate (default :class:`SynthConfig()`).
        workers: processes rendering and encoding in parallel (default ``min(2, cpu count)``;
            1 renders in this process).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`SynthReport`.
    """
    start = time.perf_counter()
    cfg = config or SynthConfig()
    if cfg.format == "mp4" and not codec_available("libx264"):
        raise ValueError("format: 'mp4' needs H.264 (libx264), which this PyAV build does not have; use 'avi'")
    root = check_writable_folder(out, "out")
    remove_stale_temporaries(root)  # what a killed earlier run was writing
    _check_config(root, cfg)
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(synth_video_name(c, g, k, cfg.format), c, g, k)
            for c in cfg.classes for g in range(1, cfg.groups + 1) for k in range(1, cfg.clips_per_group + 1)]
    written = 0
    bar = tqdm(total=len(jobs), desc="SynthActions", unit="video", disable=not progress)
    if workers <= 1:
        for job in jobs:
            written += _write_one(str(root), *job, cfg)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_one, str(root), *job, cfg) for job in jobs]
            for fut in as_completed(futures):
                written += fut.result()
                bar.update()
    bar.close()

    _write_text(root / "classInd.txt", [f"{i} {c}" for i, c in enumerate(cfg.classes, 1)])
    label = {c: i for i, c in enumerate(cfg.classes, 1)}
    splits, n_train, n_test = 0, 0, 0
    for split in (1, 2, 3):
        test = set(synth_test_groups(cfg.groups, split))
        if not test:
            continue
        train_lines = [f"{name} {label[c]}" for name, c, g, _ in jobs if g not in test]
        test_lines = [name for name, _, g, _ in jobs if g in test]
        _write_text(root / f"trainlist{split:02d}.txt", train_lines)
        _write_text(root / f"testlist{split:02d}.txt", test_lines)
        splits += 1
        if split == 1:
            n_train, n_test = len(train_lines), len(test_lines)
    return SynthReport(
        root=root,
        classes=cfg.classes,
        videos=len(jobs),
        written=written,
        splits=splits,
        train_videos=n_train,
        test_videos=n_test,
        seconds=time.perf_counter() - start,
        per_class={c: cfg.groups * cfg.clips_per_group for c in cfg.classes},
    )
