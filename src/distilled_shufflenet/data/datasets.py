"""The dataset kinds: UCF101 and HMDB51 from their official split files, a list of ``path,label`` lines
(:class:`VideoList`) and every video of a folder, unlabelled (:class:`VideoFolder`). Each is a
:class:`~distilled_shufflenet.data.clips.VideoClips`: the split parsers give the records, the clips are
read as that class reads them.

::

    split files ──parser──> [VideoRecord(path, label)] ──dataset[i]──> sampler(num_frames, rng) ──>
    read_frames(path, indices) ──> transform(clip, rng) ──> {"clip", "index", "label"}
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from distilled_shufflenet.data.clips import LabelledVideoClips, VideoClips
from distilled_shufflenet.data.splits import (
    VideoRecord,
    find_videos,
    hmdb51_classes,
    hmdb51_splits_dir,
    read_class_index,
    read_hmdb51_split,
    read_ucf101_split,
    read_video_list,
    ucf101_splits_dir,
)
from distilled_shufflenet.data.video import VIDEO_EXTENSIONS

__all__ = ["HMDB51", "OFFICIAL_SPLITS", "UCF101", "OfficialSplits", "VideoFolder", "VideoList"]


class OfficialSplits(LabelledVideoClips):
    """A dataset read from its official split files: videos under ``root``, official ``split`` and
    ``subset`` (``"train"`` or ``"test"``), split files in ``splits_dir`` (by default where
    :meth:`default_splits_dir` finds them).  Each dataset says where its files are and how to read them.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        splits_dir: str | os.PathLike | None = None,
        split: int = 1,
        subset: str = "train",
        **clip_options: Any,
    ):
        root = Path(root)
        splits_dir = self.find_splits_dir(root, splits_dir)
        classes = self.read_classes(splits_dir, split)
        records = self.read_records(splits_dir, split, subset, root, classes)
        self.split, self.subset = int(split), subset
        super().__init__(records, classes, source=self.describe(splits_dir, split, subset), **clip_options)

    @classmethod
    def find_splits_dir(cls, root: str | os.PathLike, splits_dir: str | os.PathLike | None) -> Path:
        """``splits_dir`` when given, else the default for ``root``."""
        return Path(splits_dir) if splits_dir is not None else cls.default_splits_dir(Path(root))

    @classmethod
    def split_paths(cls, root: str | os.PathLike, splits_dir: str | os.PathLike | None, split: int,
                    subsets: Sequence[str]) -> list[Path]:
        """Every video the split files list in ``subsets`` (on disk or not), each once, in list order."""
        root = Path(root)
        found = cls.find_splits_dir(root, splits_dir)
        classes = cls.read_classes(found, split)
        records = [r for s in subsets for r in cls.read_records(found, split, s, root, classes)]
        return list(dict.fromkeys(r.path for r in records))

    @staticmethod
    def default_splits_dir(root: Path) -> Path:
        raise NotImplementedError

    @staticmethod
    def read_classes(splits_dir: Path, split: int) -> list[str]:
        raise NotImplementedError

    @staticmethod
    def read_records(splits_dir: Path, split: int, subset: str, root: Path,
                     classes: Sequence[str]) -> list[VideoRecord]:
        raise NotImplementedError

    @staticmethod
    def describe(splits_dir: Path, split: int, subset: str) -> str:
        """The split files read, for messages."""
        raise NotImplementedError


class UCF101(OfficialSplits):
    """UCF101 from its official split files (``classInd.txt``, ``trainlist0k.txt``, ``testlist0k.txt``).

    Videos are ``root/<Class>/<video>.avi``, as the lists name them (the official ``HandstandPushups/``
    folder holds ``v_HandStandPushups_*`` files).  ``splits_dir`` defaults to ``root`` when
    ``classInd.txt`` is there, else ``root/ucfTrainTestlist``.  Labels follow ``classInd.txt``, 0-based.
    """

    default_splits_dir = staticmethod(ucf101_splits_dir)

    @staticmethod
    def read_classes(splits_dir: Path, split: int) -> list[str]:
        return read_class_index(splits_dir / "classInd.txt")

    @staticmethod
    def read_records(splits_dir: Path, split: int, subset: str, root: Path,
                     classes: Sequence[str]) -> list[VideoRecord]:
        return read_ucf101_split(splits_dir, split, subset, root=root, classes=classes)

    @staticmethod
    def describe(splits_dir: Path, split: int, subset: str) -> str:
        kind = "trainlist" if subset == "train" else "testlist"
        return str(splits_dir / f"{kind}{int(split):02d}.txt")


class HMDB51(OfficialSplits):
    """HMDB51 from its 153 official ``<class>_test_split<k>.txt`` files; classes alphabetical.

    Videos are ``root/<class>/<video>.avi``.  ``splits_dir`` defaults to ``root`` when the split files are
    there, else ``root/testTrainMulti_7030_splits``.
    """

    default_splits_dir = staticmethod(hmdb51_splits_dir)

    @staticmethod
    def read_classes(splits_dir: Path, split: int) -> list[str]:
        return hmdb51_classes(splits_dir, split)

    @staticmethod
    def read_records(splits_dir: Path, split: int, subset: str, root: Path,
                     classes: Sequence[str]) -> list[VideoRecord]:
        return read_hmdb51_split(splits_dir, split, subset, root=root)

    @staticmethod
    def describe(splits_dir: Path, split: int, subset: str) -> str:
        return f"{splits_dir}/*_test_split{int(split)}.txt ({subset})"


# the dataset kinds read from official split files, by name
OFFICIAL_SPLITS: dict[str, type[OfficialSplits]] = {"ucf101": UCF101, "hmdb51": HMDB51}


class VideoList(LabelledVideoClips):
    """Videos and labels from a list file (see :func:`read_video_list`); ``classes`` is a list of names,
    a class file, or None (inferred from the labels)."""

    def __init__(
        self,
        list_file: str | os.PathLike,
        root: str | os.PathLike | None = None,
        classes: str | os.PathLike | Sequence[str] | None = None,
        **clip_options: Any,
    ):
        records, names = read_video_list(list_file, root, classes)
        super().__init__(records, names, source=str(list_file), **clip_options)


class VideoFolder(VideoClips):
    """Every video under ``root`` (recursively, by extension), with no labels: the distillation data."""

    def __init__(self, root: str | os.PathLike, **clip_options: Any):
        paths = find_videos(root)
        if not paths:
            raise ValueError(f"{root}: no video files found (extensions: {' '.join(VIDEO_EXTENSIONS)})")
        self.root = Path(root)
        super().__init__(paths, source=str(root), **clip_options)
