"""Find the videos of a folder or a dataset that training would have to skip, before training.

Each video is opened and its first frame decoded (``full=True`` decodes every frame, which also finds
truncated and corrupt files).  A video is reported when it is

- ``missing``: listed by a split or list file but not on disk;
- ``empty``: a 0-byte file, or a file with no decodable frame;
- ``unreadable``: it cannot be opened or has no video stream;
- ``corrupt`` (``full`` only): some packets fail to decode, or fewer frames decode than the file states;
- ``too_short``: fewer than ``min_frames`` frames.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from distilled_shufflenet.data.datasets import OFFICIAL_SPLITS
from distilled_shufflenet.data.factory import DATASET_KINDS, check_kind
from distilled_shufflenet.data.splits import find_videos, read_video_list
from distilled_shufflenet.data.video import VIDEO_EXTENSIONS, VideoDecodeError, VideoReader
from distilled_shufflenet.options import option

__all__ = [
    "CheckConfig",
    "VideoSource",
    "PROBLEM_KINDS",
    "CheckReport",
    "VideoProblem",
    "check_dataset",
    "check_video",
    "check_videos",
    "dataset_paths",
]

PROBLEM_KINDS = ("missing", "empty", "unreadable", "corrupt", "too_short")
CHECK_SUBSETS = ("train", "test", "all")


@dataclass(frozen=True)
class VideoSource:
    """Which videos a data tool reads: every video under ``root`` (``folder``), a side of an official split
    (``ucf101``, ``hmdb51``) or the lines of a ``list`` file."""

    root: str | None = None  # ROOT on the command line
    dataset: str = option("folder", "how to find the videos: every video under ROOT (folder), an official split "
                          "(ucf101, hmdb51) or a list file", choices=DATASET_KINDS)
    splits_dir: str | None = option(None, "folder of the official split files (ucf101, hmdb51)")
    split: int = option(1, "official split 1, 2 or 3")
    subset: str = option("all", "split subset", choices=CHECK_SUBSETS)
    list_file: str | None = option(None, "CSV or text file of 'path,label' lines (--dataset list)")


@dataclass(frozen=True)
class CheckConfig(VideoSource):
    """What ``dsn data check`` checks: the videos of a :class:`VideoSource`, each opened (or, ``full``,
    decoded to the end) and reported when missing, empty, unreadable or shorter than ``min_frames``."""

    min_frames: int = option(16, "videos with fewer frames are reported as too short")
    full: bool = option(False, "decode every frame (finds truncated and corrupt files; slower)")
    progress: bool = option(True, "a progress bar")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.min_frames < 1:
            raise ValueError(f"min_frames: expected an integer >= 1, got {self.min_frames}")


@dataclass(frozen=True)
class VideoProblem:
    """One bad video: its path, the kind of problem (see ``PROBLEM_KINDS``) and the reason."""

    path: str
    kind: str
    reason: str


@dataclass
class CheckReport:
    """The outcome of a check: how many videos were looked at and which of them are bad."""

    source: str
    checked: int
    min_frames: int
    full: bool
    problems: list[VideoProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        return {k: n for k in PROBLEM_KINDS if (n := sum(p.kind == k for p in self.problems))}

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "checked": self.checked,
            "bad": len(self.problems),
            "min_frames": self.min_frames,
            "full": self.full,
            "counts": self.counts(),
            "problems": [asdict(p) for p in self.problems],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def format(self) -> str:
        """Human-readable report: one line per bad video, then a summary line."""
        lines = [f"{p.kind:<10s} {p.path}: {p.reason}" for p in self.problems]
        if self.ok:
            lines.append(f"{self.source}: all {self.checked} videos are readable with >= {self.min_frames} frames")
        else:
            kinds = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.counts().items())
            lines.append(f"{self.source}: {len(self.problems)} of {self.checked} videos are bad ({kinds})")
        return "\n".join(lines)


def check_video(path: str | os.PathLike, *, min_frames: int = 16, full: bool = False) -> VideoProblem | None:
    """The problem of one video, or None if it is fine (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        return VideoProblem(str(path), "missing", "no such file")
    try:
        with VideoReader(path, count=full) as reader:
            info = reader.info
            if full and reader.decode_errors:
                return VideoProblem(
                    str(path), "corrupt", f"{reader.decode_errors} packet(s) failed to decode ({reader.first_error})"
                )
            if full and reader.stated_frames > info.num_frames:
                return VideoProblem(
                    str(path), "corrupt",
                    f"truncated: the file states {reader.stated_frames} frames, {info.num_frames} decode",
                )
    except VideoDecodeError as e:
        empty = "0 bytes" in e.reason or e.reason.startswith("no frames decoded")
        return VideoProblem(str(path), "empty" if empty else "unreadable", e.reason)
    except OSError as e:
        return VideoProblem(str(path), "unreadable", f"cannot read: {e.strerror or e}")
    if info.num_frames < min_frames:
        return VideoProblem(str(path), "too_short", f"{info.num_frames} frames, fewer than {min_frames}")
    return None


def check_videos(
    paths: Iterable[str | os.PathLike],
    *,
    min_frames: int = 16,
    full: bool = False,
    progress: bool = True,
    source: str = "videos",
) -> CheckReport:
    """Check every video of ``paths`` (with a progress bar on stderr)."""
    if min_frames < 1:
        raise ValueError(f"min_frames must be >= 1, got {min_frames}")
    paths = list(paths)
    report = CheckReport(source, len(paths), min_frames, full)
    for path in tqdm(paths, desc="check", unit="video", disable=not progress, dynamic_ncols=True):
        problem = check_video(path, min_frames=min_frames, full=full)
        if problem is not None:
            report.problems.append(problem)
    return report


def dataset_paths(source: VideoSource) -> list[Path]:
    """Every video path ``source`` lists (present on disk or not): its ``subset`` ``"train"``, ``"test"`` or
    ``"all"`` (both) for the official splits; kind ``"folder"`` with a file as ``root`` is that one video."""
    kind, root, list_file = source.dataset, source.root, source.list_file
    check_kind(kind, root, list_file)
    if source.subset not in CHECK_SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(CHECK_SUBSETS)}, got {source.subset!r}")
    if kind == "list":
        return [r.path for r in read_video_list(list_file, root)[0]]
    root = Path(root)
    if kind == "folder":
        return [root] if root.is_file() else find_videos(root)
    subsets = ("train", "test") if source.subset == "all" else (source.subset,)
    return OFFICIAL_SPLITS[kind].split_paths(root, source.splits_dir, source.split, subsets)


def check_dataset(config: CheckConfig) -> CheckReport:
    """Check every video ``config`` lists (:func:`dataset_paths`); missing files are reported as ``missing``.

    Raises ``ValueError`` when there is no video to check (an empty folder, or one without video files),
    since "all 0 videos are readable" would hide a wrong path.
    """
    kind, root = config.dataset, config.root
    paths = dataset_paths(config)
    official = f"{kind} split {config.split} ({config.subset}) under {root}"
    if not paths:
        where = f"{root}: no video file found (extensions: {' '.join(VIDEO_EXTENSIONS)})" if kind == "folder" \
            else f"{official}: the split lists no video"
        raise ValueError(f"{where}; check the path")
    source = {"folder": str(root), "list": str(config.list_file)}.get(kind, official)
    return check_videos(paths, min_frames=config.min_frames, full=config.full, progress=config.progress,
                        source=source)
