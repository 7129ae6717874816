"""The motion of a SynthActions clip: each class maps time to the figure's pose, which is drawn over the
clip's scene frame by frame (:func:`render_synth_clip`)."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from distilled_shufflenet.data.synth.config import SYNTH_CLASSES, SynthConfig
from distilled_shufflenet.data.synth.cues import Prop, draw_prop, place_cue
from distilled_shufflenet.data.synth.scene import Actor, Clip, capsule, make_actor, make_clip

__all__ = ["render_synth_clip"]

# a class whose video is another class's video played backwards
_REVERSE_OF: dict[str, str] = {"StandUp": "SquatDown", "WalkAway": "WalkToward", "WalkRight": "WalkLeft"}


# ---------------------------------------------------------------------------------------------------
# actions: each maps time to a pose. Angles are absolute image angles of a limb, 0 = pointing down,
# +pi/2 = pointing to the image right; "out" below means away from the body's midline (sign = side).

_SIDES = (-1, 1)  # index 0: the limb on the image left, 1: on the image right

_Pose = dict[str, np.ndarray]  # per-frame body parameters, each (T,) or (T, side, segment); see _rest
_Action = Callable[[_Pose, np.ndarray, Actor, Clip], None]  # (pose, times in s, actor, clip): edits pose


def _rest(t: np.ndarray, cfg: SynthConfig, clip: Clip) -> _Pose:
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


def _jumping_jacks(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
    th = 2 * np.pi * 1.1 * a.tempo * c.tempo * t + c.phase
    op = (0.5 - 0.5 * np.cos(th)) * a.amplitude  # 0 closed .. 1 open
    for i, s in enumerate(_SIDES):
        p["arm"][:, i, 0] = s * (0.15 + 2.5 * op)
        p["arm"][:, i, 1] = s * (0.1 + 2.8 * op)
        p["leg"][:, i, 0] = s * (0.04 + 0.32 * op)
        p["leg"][:, i, 1] = s * (0.02 + 0.3 * op)
    p["air"] = 0.06 * np.abs(np.sin(th))


def _squat_down(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
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
    def wave(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
        th = 2 * np.pi * freq * a.tempo * c.tempo * t + c.phase
        i, s = _SIDES.index(a.side), a.side
        swing = a.amplitude * np.sin(th)
        p["arm"][:, i, 0] = s * (2.3 + 0.12 * swing)
        p["arm"][:, i, 1] = np.pi + s * (0.25 + 0.7 * swing)
        p["tilt"] = -s * 0.04 * np.ones_like(t)
    return wave


def _punch(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
    th = 2 * np.pi * 1.3 * a.tempo * c.tempo * t + c.phase
    for i, s in enumerate(_SIDES):
        e = np.clip(np.sin(th + (0 if s == a.side else np.pi)), 0, 1) ** 0.6  # out fast, back slower
        p["arm"][:, i, 0] = s * (0.45 + 1.15 * e)  # guard -> horizontal
        p["arm"][:, i, 1] = s * (-2.6 + 4.2 * e)  # fist at the chin -> straight
        p["leg"][:, i, 0] = s * 0.22
        p["leg"][:, i, 1] = s * 0.12
    p["tilt"] = 0.1 * (np.clip(np.sin(th), 0, 1) - np.clip(-np.sin(th), 0, 1)) * a.side


def _kick(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
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


def _bow(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
    th = 2 * np.pi * 0.65 * a.tempo * c.tempo * t + c.phase
    k = np.clip((0.5 - 0.5 * np.cos(th)) ** 1.5 * a.amplitude, 0, 1)
    p["bend"] = 1 - 0.8 * k
    for i, s in enumerate(_SIDES):
        p["arm"][:, i, 0] = s * (0.18 - 0.12 * k)
        p["arm_fs"][:, i] = 1 - 0.3 * k[:, None]


def _clap(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
    th = 2 * np.pi * 1.8 * a.tempo * c.tempo * t + c.phase
    op = np.clip(0.5 + 0.55 * np.cos(th) * a.amplitude, 0, 1)  # 1 apart .. 0 together
    for i, s in enumerate(_SIDES):
        p["arm"][:, i, 0] = s * (0.3 + 0.6 * op)
        p["arm"][:, i, 1] = s * (np.pi + 1.2 - 2.3 * op)  # hands in front of the chest .. up and out


def _walk_toward(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
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


def _walk_left(p: _Pose, t: np.ndarray, a: Actor, c: Clip) -> None:
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


def _draw_figure(img: np.ndarray, p: _Pose, i: int, a: Actor, h: int, off: np.ndarray) -> None:
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
    capsule(img, ground - [shadow_w, 0], ground + [shadow_w, 0], 0.025 * hf, np.zeros(3, np.float32), 0.35, 0)
    for j in range(2):
        hip, knee, foot = pelvis + hips[j], pelvis + knees[j], pelvis + feet[j]
        capsule(img, hip, knee, limb * 1.2, a.trousers)
        capsule(img, knee, foot, limb * 1.1, a.trousers)
        toe = foot + np.array([_SIDES[j] * 0.035 * hf, 0.0], np.float32)
        capsule(img, foot, toe, limb * 0.9, a.shoes)
    capsule(img, pelvis - across * L["hip"], pelvis + across * L["hip"], limb * 1.3, a.trousers)
    capsule(img, pelvis + up * torso_r * 0.6, neck - up * torso_r * 0.5, torso_r, a.shirt)
    shoulders = [neck - up * 0.03 * hf + across * s * L["shoulder"] for s in _SIDES]
    capsule(img, shoulders[0], shoulders[1], limb * 1.3, a.shirt)
    for j in range(2):
        elbow = shoulders[j] + L["upper_arm"] * p["arm_fs"][i, j, 0] * _vec(p["arm"][i, j, 0])
        hand = elbow + L["forearm"] * p["arm_fs"][i, j, 1] * _vec(p["arm"][i, j, 1])
        capsule(img, shoulders[j], elbow, limb * 1.05, a.shirt)
        capsule(img, elbow, hand, limb, a.shirt if a.sleeves else a.skin)
        capsule(img, hand, hand, limb * 1.15, a.skin)
    r = L["head"]
    capsule(img, neck, neck + up * r * 0.5 * bend, limb * 0.9, a.skin)
    capsule(img, head - up * r * 0.15, head - up * r * 0.15, r * 1.05, a.hair)  # hair, seen at the top
    face = r * 0.88 * min(1.0, 0.2 + bend)  # bowing shows the top of the head instead of the face
    capsule(img, head + up * (r * 1.05 - face), head + up * (r * 1.05 - face), face, a.skin, shade=0.25)


def _render(class_name: str, group: int, clip: int, cfg: SynthConfig, prop: Prop | None) -> np.ndarray:
    actor = make_actor(cfg.seed, group)
    c = make_clip(cfg.seed, group, clip, actor, cfg)
    w, h = cfg.size
    t = np.arange(cfg.frames, dtype=np.float32) / cfg.fps
    pose = _rest(t, cfg, c)
    _ACTIONS[class_name](pose, t, actor, c)
    out = np.empty((cfg.frames, h, w, 3), np.uint8)
    m = (c.background.shape[1] - w) // 2
    for i in range(cfg.frames):
        dx, dy = (m, m) if cfg.clean else c.shake[i]
        img = c.background[dy:dy + h, dx:dx + w].copy()  # (H, W, 3) the camera's view of the scene
        off = np.array([dx - m, dy - m], np.float32)
        _draw_figure(img, pose, i, actor, h, off)
        if prop is not None:  # in front of the figure, so that it shows in every frame
            draw_prop(img, prop, off)
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
        config: size, frame count, fps, seed and cue strength (default :class:`SynthConfig()`).

    Returns:
        ``(T, H, W, 3)`` uint8 RGB frames.
    """
    cfg = config or SynthConfig()
    if class_name not in SYNTH_CLASSES:
        raise ValueError(f"class_name: expected one of {', '.join(SYNTH_CLASSES)}, got {class_name!r}")
    prop = place_cue(class_name, group, clip, cfg)  # the class's own prop, also for a reversed class
    if class_name in _REVERSE_OF:
        return _render(_REVERSE_OF[class_name], group, clip, cfg, prop)[::-1].copy()
    return _render(class_name, group, clip, cfg, prop)

