"""What SynthActions generates (:class:`SynthConfig`, the classes) and where each video goes in the UCF101
layout (its name, the test groups of each split)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_CLASSES", "SYNTH_CLASSES", "SynthConfig", "synth_test_groups", "synth_video_name"]

SYNTH_CLASSES: tuple[str, ...] = (
    "JumpingJacks", "SquatDown", "StandUp", "WaveSlow", "WaveFast", "Punch", "WalkToward", "WalkAway",
    "Kick", "Bow", "Clap", "WalkLeft", "WalkRight",
)  # fmt: skip
DEFAULT_CLASSES: tuple[str, ...] = SYNTH_CLASSES[:10]


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

