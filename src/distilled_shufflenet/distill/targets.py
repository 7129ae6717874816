"""Distillation targets: the frozen teachers' maps laid out on the student's time slots.

At each tap (``mid``, ``final``) the student's time slots are split between the teachers, the 2D
teacher's first (by default the first half). The 2D teacher sees one frame of the clip; its map is
resampled in space to the student's and repeated over its slots. The 3D teacher sees the whole clip; its
map is resampled in time and space to its slots (adaptive average pooling along a dimension where it is
larger, repetition where it is shorter). For the paper preset at ``16 x 224 x 224``::

    tap    slots   2D teacher (resnet101, 1 frame)        3D teacher (r3d_50, 16 frames)   target
    mid    4       layer3 1024x14x14 -> slots 0,1 (x2)    layer3 1024x2x14x14 -> slots 2,3  1024x4x14x14
    final  2       layer4 2048x7x7   -> slot 0            layer4 2048x1x7x7   -> slot 1     2048x2x7x7

    target "mid":  | 2D | 2D | 3D t0 | 3D t1 |        target "final":  | 2D | 3D |

Targets travel as *parts*, one per tap and teacher (``"mid/2d"``, ``"mid/3d"``, ...), each
``(N, C, slots, H, W)``: when a teacher's channels differ from the student's adapters, that part is
regressed through an adapter of its own (:class:`TeacherAdapters`), and the two parts of a tap may then
have different channel counts. :meth:`SlotLayout.join` concatenates a tap's parts along time where the
channels agree (the paper's ``1024 x 4 x 14 x 14`` and ``2048 x 2 x 7 x 7``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilled_shufflenet.distill.teachers import Renormalize, teacher_kind
from distilled_shufflenet.models import TapModel, select_frames
from distilled_shufflenet.models.student import conv_bn_relu

__all__ = [
    "TAPS",
    "TEACHER_MODES",
    "PartLayout",
    "SlotLayout",
    "TargetBuilder",
    "TeacherAdapters",
    "StudentMaps",
    "adapter_width",
    "draw_frame_index",
    "resample",
    "student_maps",
]

TAPS = ("mid", "final")
TEACHER_MODES = ("both", "2d", "3d")

Split = float | int | Mapping[str, int]
FrameSampler = Callable[[int, int, "torch.Generator | None"], Tensor]


def draw_frame_index(batch: int, frames: int, generator: torch.Generator | None = None) -> Tensor:
    """One frame index per clip, uniform in ``[0, frames)``: ``(batch,)`` int64 on the CPU."""
    return torch.randint(0, frames, (batch,), generator=generator)


def resample(x: Tensor, size: Sequence[int]) -> Tensor:
    """``(N, C, t, h, w) -> (N, C, *size)``: adaptive average pooling along every dimension where the map
    is larger than ``size``, then nearest-neighbour repetition along those where it is shorter."""
    size = tuple(int(s) for s in size)
    pooled = tuple(min(a, b) for a, b in zip(x.shape[2:], size))
    if pooled != tuple(x.shape[2:]):
        x = F.adaptive_avg_pool3d(x, pooled)
    if pooled != size:
        x = F.interpolate(x, size=size, mode="nearest")
    return x


def adapter_width(student: nn.Module, tap: str) -> int:
    """Output channels of the student's adapter for ``tap`` (``adapt_mid`` / ``adapt_final``)."""
    adapter = getattr(student, f"adapt_{tap}", None)
    if not isinstance(adapter, nn.Module):
        name = getattr(student, "model_name", type(student).__name__)
        raise ValueError(f"the student {name} has no adapter adapt_{tap} for tap {tap!r}")
    width = None
    for m in adapter.modules():
        if isinstance(m, (nn.Conv3d, nn.Conv2d, nn.Linear)):
            width = m.out_channels if hasattr(m, "out_channels") else m.out_features
    if width is None:
        raise ValueError(f"cannot tell the output channels of the student's adapt_{tap}")
    return int(width)


@dataclass(frozen=True)
class PartLayout:
    """Where one teacher's map goes at one tap: student slots ``[start, stop)`` of a ``(C, slots, H, W)``
    target; ``teacher_shape`` is the teacher's own map ``(C, t, h, w)`` at this clip size (``t = 1`` for
    a 2D teacher, which is repeated over its slots)."""

    tap: str
    teacher: str
    start: int
    stop: int
    channels: int
    height: int
    width: int
    teacher_shape: tuple[int, int, int, int]

    @property
    def key(self) -> str:
        return f"{self.tap}/{self.teacher}"

    @property
    def slots(self) -> int:
        return self.stop - self.start

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(C, slots, H, W)`` of this part of the target."""
        return (self.channels, self.slots, self.height, self.width)

    @property
    def stored_shape(self) -> tuple[int, int, int, int]:
        """The part as a teacher cache keeps it, resampled in space only: ``(C, 1, H, W)`` for 2D (one frame,
        repeated onto its slots when read), ``(C, t, H, W)`` for 3D with ``t`` the teacher's own time
        steps (resampled to the slots when read), so one cache serves every split of the slots."""
        return (self.channels, 1 if self.teacher == "2d" else self.teacher_shape[1], self.height, self.width)


@dataclass(frozen=True)
class SlotLayout:
    """The targets of one clip size: the student's tap shapes ``(C_raw, T, H, W)`` and the parts."""

    clip: tuple[int, int, int]
    student_taps: Mapping[str, tuple[int, int, int, int]]
    parts: tuple[PartLayout, ...]

    @property
    def taps(self) -> tuple[str, ...]:
        return tuple(self.student_taps)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(p.key for p in self.parts)

    def part(self, key: str) -> PartLayout:
        for p in self.parts:
            if p.key == key:
                return p
        raise KeyError(f"no target part {key!r}; parts are {list(self.keys)}")

    def tap_parts(self, tap: str) -> tuple[PartLayout, ...]:
        return tuple(p for p in self.parts if p.tap == tap)

    def expand(self, stored: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """Parts as stored (:attr:`PartLayout.stored_shape`, batched: ``(N, C, t, H, W)``) -> parts on their
        slots: the 2D map repeated by ``expand`` (a view, no copy), the 3D map resampled along time
        (:func:`resample`). Parts of ``stored`` that this layout does not use are left out."""
        out = {}
        for p in self.parts:
            x = stored[p.key]
            if p.teacher == "2d":
                out[p.key] = x.expand(*x.shape[:2], p.slots, *x.shape[3:])
            else:
                out[p.key] = x if x.shape[2] == p.slots else resample(x, (p.slots, *x.shape[3:]))
        return out

    def join(self, parts: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """One ``(N, C, T, H, W)`` target per tap: its parts concatenated along time, in slot order.
        A ``ValueError`` where the parts of a tap have different channel counts."""
        out = {}
        for tap in self.taps:
            pieces = self.tap_parts(tap)
            channels = {p.channels for p in pieces}
            if len(channels) > 1:
                raise ValueError(f"tap {tap}: the teachers' parts have different channels "
                                 f"({', '.join(f'{p.key}: {p.channels}' for p in pieces)}) and cannot be joined")
            out[tap] = torch.cat([parts[p.key] for p in pieces], dim=2) if len(pieces) > 1 else parts[pieces[0].key]
        return out

    def describe(self) -> str:
        """A short text picture of the layout, one line per tap."""
        lines = [f"targets for a {'x'.join(map(str, self.clip))} clip (T x H x W):"]
        for tap in self.taps:
            cells = []
            for p in self.tap_parts(tap):
                src = "x".join(map(str, p.teacher_shape if p.teacher == "3d" else
                                   (p.teacher_shape[0],) + p.teacher_shape[2:]))
                cells.append(f"{p.teacher.upper()} {src} -> slots {p.start}..{p.stop - 1}")
            total = self.tap_parts(tap)
            c = total[0].channels if len({p.channels for p in total}) == 1 else "?"
            t, h, w = self.student_taps[tap][1:]
            lines.append(f"  {tap:5s} {c}x{t}x{h}x{w}: " + " | ".join(cells))
        return "\n".join(lines)


def _check_clip(clip: Any) -> None:
    if not isinstance(clip, Tensor) or clip.dim() != 5:
        given = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"the student's clip must be a (N, 3, T, H, W) tensor, got {given}")


class TargetBuilder(nn.Module):
    """Targets for the student's taps from a frozen 2D and/or 3D teacher.

    Args:
        student: the student (only its tap geometry, adapter widths and preprocessing are read; it is
            not held by this module).
        teacher2d, teacher3d: frozen teachers (see :func:`~distilled_shufflenet.distill.build_teacher`);
            the one(s) ``teachers`` needs.
        teachers: ``"both"`` (the paper), ``"2d"`` or ``"3d"``: in single-teacher modes every slot goes to
            the one teacher.
        split: the 2D teacher's share of each tap's slots with both teachers: a fraction (0.5, the
            paper: the first half, rounded half up), a slot count for every tap, or ``{tap: slots}``.
        taps: the taps to distil.
        per_teacher_adapters: regress a teacher whose channels differ from the student's adapters through
            adapters of its own (:class:`TeacherAdapters`) instead of refusing the pair.
        frame_sampler: ``(batch, frames, generator) -> (batch,)`` frame indices for the 2D teacher when
            none are given (default :func:`draw_frame_index`, uniform).
        stride3d: the 3D teacher sees every ``stride3d``-th frame of the student's clip, e.g. 2 for a
            teacher trained on 8 frames taking every 4th when the student takes 16, every 2nd: the
            teacher then sees the frame rate it was trained at.

    ``forward(clip, frame_index)`` takes the student's normalised clip ``(N, 3, T, H, W)`` and returns the
    target parts ``{"mid/2d": (N, C, slots, H', W'), ...}`` (see :class:`SlotLayout`). :meth:`plan`
    checks a clip size before any step.
    """

    def __init__(self, student: TapModel, teacher2d: TapModel | None = None, teacher3d: TapModel | None = None,
                 *, teachers: str = "both", split: Split = 0.5, taps: Sequence[str] = TAPS,
                 per_teacher_adapters: bool = False, frame_sampler: FrameSampler | None = None,
                 stride3d: int = 1) -> None:
        super().__init__()
        if teachers not in TEACHER_MODES:
            raise ValueError(f"teachers must be one of {', '.join(TEACHER_MODES)}, got {teachers!r}")
        self.mode = teachers
        self.taps = tuple(taps)
        if not self.taps or len(set(self.taps)) != len(self.taps):
            raise ValueError(f"taps must be distinct tap names, got {list(taps)}")
        used = {"both": ("2d", "3d"), "2d": ("2d",), "3d": ("3d",)}[teachers]
        given = {"2d": teacher2d, "3d": teacher3d}
        self.kinds = used
        for kind in used:
            model = given[kind]
            if model is None:
                raise ValueError(f"teachers={teachers!r} needs a {kind.upper()} teacher (teacher{kind}), got None")
            if teacher_kind(model) != kind:
                raise ValueError(f"teacher{kind}: {model.model_name} is a {teacher_kind(model).upper()} model")
            if not getattr(model, "frozen", False):
                raise ValueError(f"teacher{kind} {model.model_name} is not frozen; pass it through "
                                 "distilled_shufflenet.models.freeze() (or build it with build_teacher)")
        self.teacher2d = teacher2d if "2d" in used else None
        self.teacher3d = teacher3d if "3d" in used else None
        self.student_name = getattr(student, "model_name", type(student).__name__)
        self.student_taps = {t: student.tap(t) for t in self.taps}
        self.adapter_widths = {t: adapter_width(student, t) for t in self.taps}
        self.student_preprocess = student.preprocess
        self.renorm2d = Renormalize(student.preprocess, teacher2d.preprocess) if self.teacher2d is not None else None
        self.renorm3d = Renormalize(student.preprocess, teacher3d.preprocess) if self.teacher3d is not None else None
        self.split = self._check_split(split)
        self.per_teacher_adapters = bool(per_teacher_adapters)
        self.frame_sampler = frame_sampler or draw_frame_index
        if isinstance(stride3d, bool) or not isinstance(stride3d, int) or stride3d < 1:
            raise ValueError(f"stride3d must be an integer >= 1, got {stride3d!r}")
        self.stride3d = stride3d
        self._layouts: Dict[tuple, SlotLayout] = {}

    def teacher(self, kind: str) -> TapModel:
        model = self.teacher2d if kind == "2d" else self.teacher3d
        if model is None:
            raise ValueError(f"no {kind.upper()} teacher in teachers={self.mode!r}")
        return model

    def _check_split(self, split: Split) -> Split:
        if isinstance(split, bool):
            raise ValueError(f"split must be a fraction, a slot count or {{tap: slots}}, got {split!r}")
        if isinstance(split, float):
            if not 0.0 < split < 1.0:
                raise ValueError(f"split: the 2D teacher's share of the slots must lie in (0, 1), got {split}")
        elif isinstance(split, int):
            if split < 1:
                raise ValueError(f"split: the 2D teacher needs at least 1 slot, got {split}")
        elif isinstance(split, Mapping):
            bad = [t for t in self.taps if not isinstance(split.get(t), int) or isinstance(split.get(t), bool)]
            if bad or set(split) - set(self.taps):
                raise ValueError(f"split: expected an integer slot count for each of the taps {list(self.taps)}, "
                                 f"got {dict(split)}")
        else:
            raise ValueError(f"split must be a fraction, a slot count or {{tap: slots}}, got {split!r}")
        return split

    def _slots_2d(self, tap: str, slots: int) -> int:
        if self.mode != "both":
            return slots if self.mode == "2d" else 0
        s = self.split
        n = math.floor(slots * s + 0.5) if isinstance(s, float) else (s if isinstance(s, int) else s[tap])
        if not 1 <= n <= slots - 1:
            raise ValueError(
                f"tap {tap}: the student has {slots} time slot(s) here, which cannot be split between two "
                f"teachers with split {s!r} (the 2D teacher would get {n}, the 3D teacher {slots - n}); use a "
                f"longer clip (each tap's slots are T / its time stride {self.student_taps[tap].stride[0]}: "
                "dsn distill --clip-len, config field clip_len), another split (--teacher-split, config field "
                "teacher_split), or one teacher (--teachers 2d or --teachers 3d, config field teachers)")
        return n

    # ------------------------------------------------------------------ planning and checks
    def plan(self, clip_size: Sequence[int]) -> SlotLayout:
        """The layout for a student clip of ``(T, H, W)``, after checking it: each teacher gets at least
        one slot per tap, the clip is long and large enough for every teacher, and (unless the builder
        has ``per_teacher_adapters``) each teacher's channels equal the student's adapter width there.
        Every failure is a ``ValueError`` that says what to change."""
        clip = tuple(int(v) for v in clip_size)
        if len(clip) != 3 or min(clip) < 1:
            raise ValueError(f"clip_size must be (T, H, W) of positive sizes, got {tuple(clip_size)}")
        key = clip
        if key not in self._layouts:
            self._layouts[key] = self._plan(clip)
        layout = self._layouts[key]
        if not self.per_teacher_adapters:
            self._check_channels(layout)
        return layout

    def _plan(self, clip: tuple[int, int, int]) -> SlotLayout:
        t, h, w = clip
        t3 = math.ceil(t / self.stride3d)  # the frames the 3D teacher sees
        for kind in self.kinds:
            model = self.teacher(kind)
            mt, mh, mw = model.min_input_size(self.taps)
            need_t = mt if kind == "3d" else 1
            if (t3 if kind == "3d" else t) < need_t or h < mh or w < mw:
                what = f"T>={mt}, H>={mh}, W>={mw}" if kind == "3d" else f"H>={mh}, W>={mw}"
                seen = f" ({t3} frames with stride3d={self.stride3d})" if kind == "3d" and self.stride3d > 1 else ""
                raise ValueError(f"the {kind.upper()} teacher {model.model_name} needs a clip of at least {what} "
                                 f"for the taps {list(self.taps)}; the student's clip is {t}x{h}x{w} (T x H x W)"
                                 f"{seen}: use longer clips or larger crops (dsn distill --clip-len / "
                                 "--crop-size, config fields clip_len / crop_size)")
        student_taps, parts = {}, []
        for tap in self.taps:
            c, slots, th, tw = self.student_taps[tap].out_shape(t, h, w)
            student_taps[tap] = (c, slots, th, tw)
            n2d = self._slots_2d(tap, slots)
            spans = {"2d": (0, n2d), "3d": (n2d, slots)}
            for kind in self.kinds:
                model = self.teacher(kind)
                if tap not in model.tap_names:
                    raise ValueError(f"the {kind.upper()} teacher {model.model_name} has no tap {tap!r} to fill "
                                     f"the student's slots (its taps: {list(model.tap_names)})")
                tc, tt, tth, ttw = model.tap(tap).out_shape(t3 if kind == "3d" else 1, h, w)
                start, stop = spans[kind]
                parts.append(PartLayout(tap, kind, start, stop, tc, th, tw, (tc, tt, tth, ttw)))
        return SlotLayout(clip, student_taps, tuple(parts))

    def _check_channels(self, layout: SlotLayout) -> None:
        bad = [p for p in layout.parts if p.channels != self.adapter_widths[p.tap]]
        if not bad:
            return
        lines = [f"{p.teacher.upper()} teacher {self.teacher(p.teacher).model_name} gives {p.channels} channels "
                 f"at {p.tap}, the student's adapt_{p.tap} gives {self.adapter_widths[p.tap]}" for p in bad]
        fixes = []
        per_tap = {}
        for tap in self.taps:
            channels = {p.channels for p in layout.tap_parts(tap)}
            per_tap[tap] = channels.pop() if len(channels) == 1 else None
        if all(v is not None for v in per_tap.values()):
            widths = ",".join(str(per_tap[t]) for t in self.taps)
            fixes.append(f"build the student with adapters of the teachers' widths (dsn distill "
                         f"--model-arg adapter_channels=[{widths}], config field model_kwargs: "
                         f"{{adapter_channels: [{widths}]}})")
        fixes.append("use one adapter per teacher (dsn distill --per-teacher-adapters, config field "
                     "per_teacher_adapters: true; extra 1x1x1 adapters map the student's taps to each teacher's "
                     "channels)")
        raise ValueError("the teachers' channels do not match the student's adapters: " + "; ".join(lines)
                         + ". Fix: " + ", or ".join(fixes))

    # ------------------------------------------------------------------ targets
    @torch.no_grad()
    def forward(self, clip: Tensor, frame_index: Tensor | int | None = None, *,
                generator: torch.Generator | None = None, compact: bool = False) -> Dict[str, Tensor]:
        """Target parts for the student's normalised clip ``(N, 3, T, H, W)``.

        ``frame_index`` ``(N,)`` picks the 2D teacher's frame of each clip (default: drawn with
        ``generator`` by the builder's ``frame_sampler``). ``compact=True`` returns the parts as a teacher
        cache stores them (:attr:`PartLayout.stored_shape`: 2D on one slot, 3D at the teacher's own time
        steps; :meth:`SlotLayout.expand` puts them on their slots).
        """
        _check_clip(clip)
        layout = self.plan(clip.shape[2:])
        out: Dict[str, Tensor] = {}
        if self.teacher2d is not None:
            if frame_index is None:
                frame_index = self.frame_sampler(clip.shape[0], clip.shape[2], generator)
            for key, x in self._maps2d(select_frames(clip, frame_index), layout).items():  # (N, C, 1, H', W')
                out[key] = x if compact else x.expand(-1, -1, layout.part(key).slots, -1, -1)
        if self.teacher3d is not None:
            seen = clip[:, :, :: self.stride3d] if self.stride3d > 1 else clip  # (N, 3, T / stride3d, H, W)
            taps = self.teacher3d.forward_taps(self.renorm3d(seen), self._taps_of("3d", layout))
            for p in layout.parts:
                if p.teacher == "3d":
                    steps = p.stored_shape[1] if compact else p.slots
                    out[p.key] = resample(taps[p.tap], (steps, p.height, p.width))  # (N, C, steps, H', W')
        return {k: out[k] for k in layout.keys}

    @torch.no_grad()
    def frame_targets(self, clip: Tensor) -> Dict[str, Tensor]:
        """The 2D teacher's parts for every frame of the student's clip ``(N, 3, T, H, W)``:
        ``{"mid/2d": (N, C, T, H', W'), ...}``, step ``t`` holding what :meth:`forward` gives (compact) with
        frame index ``t``: every target the random frame can draw."""
        _check_clip(clip)
        if self.teacher2d is None:
            raise ValueError(f"frame_targets: no 2D teacher in teachers={self.mode!r}")
        layout = self.plan(clip.shape[2:])
        n, c, t, h, w = clip.shape
        frames = clip.transpose(1, 2).reshape(n * t, c, h, w)  # frame t of clip i at i * T + t
        maps = self._maps2d(frames, layout)  # (N * T, C, 1, H', W')
        return {k: x.reshape(n, t, *x.shape[1:])[:, :, :, 0].transpose(1, 2) for k, x in maps.items()}

    def _maps2d(self, frames: Tensor, layout: SlotLayout) -> Dict[str, Tensor]:
        """The 2D teacher's parts of single frames ``(M, 3, H, W)``: ``{key: (M, C, 1, H', W')}``."""
        taps = self.teacher2d.forward_taps(self.renorm2d(frames), self._taps_of("2d", layout))
        return {p.key: resample(taps[p.tap].unsqueeze(2), (1, p.height, p.width))
                for p in layout.parts if p.teacher == "2d"}

    def _taps_of(self, kind: str, layout: SlotLayout) -> tuple[str, ...]:
        return tuple(p.tap for p in layout.parts if p.teacher == kind)


class TeacherAdapters(nn.Module):
    """The extra adapters of "one adapter per teacher": a 1x1x1 conv + BN + ReLU from the student's raw
    tap channels to a teacher's channels, for every part whose teacher's channels differ from the
    student's own adapter; parts that match use the student's ``adapt_<tap>`` (so fine-tuning starts
    from trained adapters). Kept apart from the student, so the student's checkpoint stays the student's.

    Keys are ``"<tap>_<teacher>"`` (``"final_2d"``); empty when every channel count matches.
    """

    def __init__(self, student: TapModel, layout: SlotLayout) -> None:
        super().__init__()
        self.adapters = nn.ModuleDict()
        for p in layout.parts:
            if p.channels != adapter_width(student, p.tap):
                raw = student.tap(p.tap).channels
                self.adapters[f"{p.tap}_{p.teacher}"] = conv_bn_relu(raw, p.channels, (1, 1, 1))

    def get(self, key: str) -> nn.Module | None:
        """The adapter of part ``"<tap>/<teacher>"``, or None where the student's own serves."""
        name = key.replace("/", "_")
        return self.adapters[name] if name in self.adapters else None

    def __len__(self) -> int:
        return len(self.adapters)


def student_maps(student: TapModel, clip: Tensor, layout: SlotLayout,
                 adapters: TeacherAdapters | None = None) -> Dict[str, Tensor]:
    """The student's adapted maps as parts, in one pass: ``forward_taps(clip, taps)``, then the student's
    ``adapt_<tap>`` on the whole tap (as in its classifier head) or a part's own adapter on its slots.

    Returns ``{"mid/2d": (N, C, slots, H', W'), ...}`` matching :meth:`TargetBuilder.forward`.
    """
    taps = student.forward_taps(clip, layout.taps)
    out: Dict[str, Tensor] = {}
    adapted: Dict[str, Tensor] = {}
    for p in layout.parts:
        own = adapters.get(p.key) if adapters is not None else None
        if own is not None:
            out[p.key] = own(taps[p.tap][:, :, p.start:p.stop])  # (N, C_teacher, slots, H', W')
            continue
        if p.tap not in adapted:
            adapted[p.tap] = getattr(student, f"adapt_{p.tap}")(taps[p.tap])  # (N, C, T', H', W')
        out[p.key] = adapted[p.tap][:, :, p.start:p.stop]
    return out


class StudentMaps(nn.Module):
    """The student and its per-teacher adapters as one module whose ``forward(clip, layout)`` returns
    :func:`student_maps`: the module to wrap in DistributedDataParallel, so that gradients of the maps
    (not of the logits) are the ones synchronised."""

    def __init__(self, student: TapModel, adapters: TeacherAdapters | None = None) -> None:
        super().__init__()
        self.student = student
        self.adapters = adapters if adapters is not None else None

    def forward(self, clip: Tensor, layout: SlotLayout) -> Dict[str, Tensor]:
        return student_maps(self.student, clip, layout, self.adapters)

