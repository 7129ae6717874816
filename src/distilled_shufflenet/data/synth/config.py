"""What SynthActions generates (:class:`SynthConfig`, the classes) and where each video goes in the UCF101
layout (its name, the test groups of each split)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from distilled_shufflenet.options import option

__all__ = ["DEFAULT_CLASSES", "SYNTH_CLASSES", "SynthConfig", "parse_classes", "parse_size", "synth_test_groups",
           "synth_video_name"]

SYNTH_CLASSES: tuple[str, ...] = (
    "JumpingJacks", "SquatDown", "StandUp", "WaveSlow", "WaveFast", "Punch", "WalkToward", "WalkAway",
    "Kick", "Bow", "Clap", "WalkLeft", "WalkRight",
)  # fmt: skip
DEFAULT_CLASSES: tuple[str, ...] = SYNTH_CLASSES[:10]


def parse_classes(value: str | int | Sequence[str]) -> tuple[str, ...]:
    """``N`` (the first N classes of :data:`SYNTH_CLASSES`), comma-separated class names, or a list of them."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        if not 1 <= int(value) <= len(SYNTH_CLASSES):
            raise ValueError(f"classes: expected 1..{len(SYNTH_CLASSES)} classes, got {value}")
        return SYNTH_CLASSES[:int(value)]
    names = tuple(n.strip() for n in (value.split(",") if isinstance(value, str) else map(str, value)) if n.strip())
    unknown = [n for n in names if n not in SYNTH_CLASSES]
    if unknown or not names:
        raise ValueError(f"classes: unknown class {', '.join(unknown) or repr(value)}; known: {', '.join(SYNTH_CLASSES)}")
    return names


def parse_size(value: str | Sequence[int]) -> tuple[int, int]:
    """``"160x120"`` (or ``[160, 120]``) -> ``(160, 120)``: width and height."""
    try:
        w, h = (int(v) for v in (value.lower().split("x") if isinstance(value, str) else value))
    except (ValueError, TypeError):
        raise ValueError(f"size: expected WIDTHxHEIGHT such as 160x120, got {value!r}") from None
    return w, h


@dataclass
class SynthConfig:
    """What to generate. ``size`` is (width, height); ``format`` is ``"avi"`` (MPEG-4 Part 2, like
    UCF101) or ``"mp4"`` (H.264). ``cue_strength`` is the probability that a video shows its class's
    prop (:mod:`distilled_shufflenet.data.synth.cues`); at 0 none does, and the videos are those of the
    generator without cues. ``clean`` drops the camera shake, flicker and sensor noise (the random draws
    still happen, so everything else stays the same)."""

    classes: tuple[str, ...] = option(DEFAULT_CLASSES, f"the first N classes, or a comma-separated list (default: the "
                                      f"first {len(DEFAULT_CLASSES)})", parse=parse_classes, metavar="N|NAMES")
    groups: int = option(8, "actors per class (gXX); a quarter of them are test groups unless --test-groups")
    test_groups: int | None = option(None, "test actor groups of split 1 (g01 on; default: a quarter of --groups); "
                                     "splits 2 and 3 take as many of the next groups where they fit")
    clips_per_group: int = option(3, "clips per actor and class (cYY)")
    frames: int = option(40, "frames per video")
    size: tuple[int, int] = option((160, 120), "frame size (default: 160x120)", parse=parse_size, metavar="WxH")
    fps: int = option(25, "frame rate")
    seed: int = option(0, "random seed")
    format: str = option("avi", "avi: MPEG-4 Part 2 like UCF101; mp4: H.264", choices=("avi", "mp4"))
    cue_strength: float = option(0.0, "probability (0..1) that a video shows its class's prop, an object only that "
                                 "class shows, so that one frame can tell the class (default 0: motion only)",
                                 metavar="P")
    clean: bool = False  # no camera shake, flicker or sensor noise (for inspection and tests)

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.size = (int(self.size[0]), int(self.size[1]))
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        unknown = [c for c in self.classes if c not in SYNTH_CLASSES]
        if unknown or not self.classes or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"classes: expected distinct names from {', '.join(SYNTH_CLASSES)}, "
                             f"got {list(self.classes)}")
        if self.groups < 2:
            raise ValueError(f"groups: expected >= 2 (train and test need their own), got {self.groups}")
        if self.clips_per_group < 1 or self.clips_per_group > 99 or self.groups > 99:
            raise ValueError("groups and clips_per_group: expected 1..99 "
                             f"(got {self.groups}, {self.clips_per_group})")
        if self.test_groups is not None and not 1 <= self.test_groups < self.groups:
            raise ValueError(f"test_groups: expected 1..{self.groups - 1} (fewer than --groups {self.groups}, so that "
                             f"training keeps some), got {self.test_groups}")
        if self.frames < 2:
            raise ValueError(f"frames: expected >= 2, got {self.frames}")
        if min(self.size) < 16 or self.size[0] % 2 or self.size[1] % 2:
            raise ValueError(f"size: expected even width and height >= 16, got {self.size[0]}x{self.size[1]}")
        if self.fps < 1:
            raise ValueError(f"fps: expected >= 1, got {self.fps}")
        if not 0.0 <= self.cue_strength <= 1.0:  # NaN fails too
            raise ValueError(f"cue_strength: expected a probability in 0..1, got {self.cue_strength}")
        if self.format not in ("avi", "mp4"):
            raise ValueError(f"format: expected 'avi' or 'mp4', got {self.format!r}")

    @property
    def codec(self) -> str:
        return "mpeg4" if self.format == "avi" else "libx264"



def synth_video_name(class_name: str, group: int, clip: int, fmt: str = "avi") -> str:
    """``"Wave/v_Wave_g01_c02.avi"``: the video's path relative to the dataset root."""
    return f"{class_name}/v_{class_name}_g{group:02d}_c{clip:02d}.{fmt}"


def synth_test_groups(groups: int, split: int, test_groups: int | None = None) -> list[int]:
    """The test groups (1-based) of ``split`` (1..3) for a dataset of ``groups`` groups, ``test_groups`` of
    them per split (default: a quarter); [] if the split does not exist for that many groups."""
    n = max(1, groups // 4) if test_groups is None else test_groups
    first = (split - 1) * n + 1
    if first + n - 1 > groups or n >= groups:
        return []
    return list(range(first, first + n))

