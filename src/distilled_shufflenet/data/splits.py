"""Split parsers: the official UCF101 and HMDB51 split files, class files and lists of ``path,label`` lines
turned into :class:`VideoRecord` lists (a path and a class index), and the videos of a folder.

They read text only: no video is opened, and a listed file need not exist."""

from __future__ import annotations

import csv
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence

from distilled_shufflenet.data.video import VIDEO_EXTENSIONS

__all__ = [
    "SUBSETS",
    "VideoRecord",
    "check_subset",
    "find_videos",
    "hmdb51_classes",
    "hmdb51_splits_dir",
    "read_class_index",
    "read_class_list",
    "read_hmdb51_split",
    "read_ucf101_split",
    "read_video_list",
    "ucf101_splits_dir",
]

SUBSETS = ("train", "test")


@dataclass(frozen=True)
class VideoRecord:
    """One video of a split: its path and its class index (``None`` where there is none)."""

    path: Path
    label: int | None


# ---------------------------------------------------------------------- split parsers
def _lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty stripped lines with their 1-based numbers; CRLF and a UTF-8 BOM are fine."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    text = path.read_text(encoding="utf-8-sig")
    return [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]


def _resolve(root: Path | None, relative: str) -> Path:
    rel = PurePosixPath(relative.replace("\\", "/"))
    return Path(*rel.parts) if root is None else root.joinpath(*rel.parts)


def read_class_index(path: str | os.PathLike) -> list[str]:
    """Class names from a ``classInd.txt`` (``"<id> <Name>"`` lines, ids 1..N in any order)."""
    path = Path(path)
    by_id: dict[int, str] = {}
    for n, line in _lines(path):
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or not parts[0].isdigit():
            raise ValueError(f"{path}, line {n}: expected '<id> <ClassName>', got {line!r}")
        by_id[int(parts[0])] = parts[1].strip()
    if sorted(by_id) != list(range(1, len(by_id) + 1)):
        raise ValueError(f"{path}: class ids must be 1..{len(by_id)} without gaps, got {sorted(by_id)[:10]}...")
    return [by_id[i] for i in range(1, len(by_id) + 1)]


def read_ucf101_split(
    splits_dir: str | os.PathLike,
    split: int = 1,
    subset: str = "train",
    *,
    root: str | os.PathLike | None = None,
    classes: Sequence[str] | None = None,
) -> list[VideoRecord]:
    """Records of the official UCF101 ``trainlist0k.txt`` / ``testlist0k.txt``, as published.

    Training lines carry a 1-based label, which must agree with the class folder; test lines have none
    and take the label of their class folder.  Paths are ``root / <Class>/<video>.avi`` (relative when
    ``root`` is None).  ``classes`` defaults to ``splits_dir/classInd.txt``.
    """
    splits_dir = Path(splits_dir)
    check_subset(subset)
    classes = list(classes) if classes is not None else read_class_index(splits_dir / "classInd.txt")
    label_of = {name: i for i, name in enumerate(classes)}
    list_file = splits_dir / f"{'trainlist' if subset == 'train' else 'testlist'}{int(split):02d}.txt"
    root = Path(root) if root is not None else None
    records = []
    for n, line in _lines(list_file):
        parts = line.split()
        rel = parts[0]
        folder = PurePosixPath(rel.replace("\\", "/")).parts[0]
        if folder not in label_of:
            raise ValueError(f"{list_file}, line {n}: unknown class {folder!r} (not among the {len(classes)} classes)")
        label = label_of[folder]
        if len(parts) > 1:
            if not parts[1].isdigit() or int(parts[1]) - 1 != label:
                raise ValueError(
                    f"{list_file}, line {n}: label {parts[1]!r} does not match class {folder!r} "
                    f"(expected {label + 1})"
                )
        records.append(VideoRecord(_resolve(root, rel), label))
    return records


_HMDB_SPLIT_FILE = re.compile(r"^(?P<cls>.+)_test_split(?P<split>\d+)\.txt$")


def _hmdb51_files(splits_dir: Path, split: int) -> dict[str, Path]:
    if not splits_dir.is_dir():
        raise FileNotFoundError(f"{splits_dir}: no such folder of HMDB51 split files")
    found = {}
    for p in splits_dir.iterdir():
        m = _HMDB_SPLIT_FILE.match(p.name)
        if m and int(m["split"]) == int(split):
            found[m["cls"]] = p
    if not found:
        raise FileNotFoundError(f"{splits_dir}: no '<class>_test_split{split}.txt' files")
    return found


def hmdb51_classes(splits_dir: str | os.PathLike, split: int = 1) -> list[str]:
    """The HMDB51 class names, alphabetical, from the split file names."""
    return sorted(_hmdb51_files(Path(splits_dir), split))


def read_hmdb51_split(
    splits_dir: str | os.PathLike,
    split: int = 1,
    subset: str = "train",
    *,
    root: str | os.PathLike | None = None,
) -> list[VideoRecord]:
    """Records of HMDB51 split ``split`` from the official ``<class>_test_split<k>.txt`` files.

    Each line is ``<video>.avi <id>``: 1 = train, 2 = test, 0 = unused.  Labels follow the alphabetical
    class order; paths are ``root / <class> / <video>.avi``.
    """
    check_subset(subset)
    files = _hmdb51_files(Path(splits_dir), split)
    wanted = "1" if subset == "train" else "2"
    root = Path(root) if root is not None else None
    records = []
    for label, name in enumerate(sorted(files)):
        for n, line in _lines(files[name]):
            parts = line.split()
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{files[name]}, line {n}: expected '<video>.avi <0|1|2>', got {line!r}")
            if parts[1] == wanted:
                records.append(VideoRecord(_resolve(root, f"{name}/{parts[0]}"), label))
    return records


def read_class_list(source: str | os.PathLike | Sequence[str]) -> list[str]:
    """Class names from a list, or a file of one name per line (names may hold spaces), or a
    ``classInd.txt``-style file of ``"<id> <name>"`` lines."""
    if not isinstance(source, (str, os.PathLike)):
        return _unique([str(c) for c in source], "classes")
    path = Path(source)
    lines = _lines(path)
    if lines and all(re.fullmatch(r"\d+\s+\S.*", line) for _, line in lines):
        pairs = sorted((int(line.split(maxsplit=1)[0]), line.split(maxsplit=1)[1]) for _, line in lines)
        first = pairs[0][0]
        if first in (0, 1) and [i for i, _ in pairs] == list(range(first, first + len(pairs))):
            return _unique([name for _, name in pairs], str(path))  # "<id> <name>" lines, ids from 0 or 1
    return _unique([line for _, line in lines], str(path))


def _unique(names: list[str], source: str) -> list[str]:
    dupes = [c for c, k in Counter(names).items() if k > 1]
    if dupes:
        raise ValueError(f"{source}: class names must be unique, repeated: {dupes[:5]}")
    return names


def read_video_list(
    list_file: str | os.PathLike,
    root: str | os.PathLike | None = None,
    classes: str | os.PathLike | Sequence[str] | None = None,
) -> tuple[list[VideoRecord], list[str]]:
    """Records and classes of a list of ``path,label`` (CSV) or ``path label`` (whitespace) lines.

    Labels are class names or 0-based indices into ``classes``.  Without ``classes``, names give the
    sorted set of names and indices give ``["0", "1", ...]``.  Relative paths are under ``root``
    (default: the list file's folder).  A CSV may start with a ``path,label`` header; CSV fields may be
    quoted, so paths and class names may hold commas and spaces.  In whitespace lists the label is the
    last field and the path everything before it.
    """
    list_file = Path(list_file)
    root = Path(root) if root is not None else list_file.parent
    lines = _lines(list_file)
    is_csv = list_file.suffix.lower() == ".csv" or (lines and "," in lines[0][1])
    rows: list[tuple[int, str, str]] = []
    for n, line in lines:
        parts = next(csv.reader([line])) if is_csv else line.rsplit(maxsplit=1)
        parts = [p.strip() for p in parts]
        if n == lines[0][0] and is_csv and len(parts) == 2 and parts[1].lower() == "label":
            continue  # header
        if len(parts) != 2 or not parts[0] or not parts[1]:
            sep = "path,label" if is_csv else "path label"
            raise ValueError(f"{list_file}, line {n}: expected '{sep}', got {line!r}")
        rows.append((n, parts[0], parts[1]))
    if not rows:
        raise ValueError(f"{list_file}: no videos listed")
    numeric = all(re.fullmatch(r"\d+", label) for _, _, label in rows)
    if classes is not None:
        names = read_class_list(classes)
    elif numeric:
        names = [str(i) for i in range(max(int(label) for _, _, label in rows) + 1)]
    else:
        names = sorted({label for _, _, label in rows})
    label_of = {name: i for i, name in enumerate(names)}
    records = []
    for n, path, label in rows:
        if label in label_of:
            index = label_of[label]
        elif numeric and int(label) < len(names):
            index = int(label)
        else:
            raise ValueError(
                f"{list_file}, line {n}: unknown class {label!r}; expected one of {len(names)} class names "
                f"or an index 0..{len(names) - 1}"
            )
        p = Path(path)
        records.append(VideoRecord(p if p.is_absolute() else root / p, index))
    return records, names


def find_videos(root: str | os.PathLike) -> list[Path]:
    """Every video file under ``root``, recursively, by extension (see ``VIDEO_EXTENSIONS``), sorted;
    hidden files and folders are skipped."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [
            Path(dirpath) / f
            for f in filenames
            if not f.startswith(".") and os.path.splitext(f)[1].lower() in VIDEO_EXTENSIONS
        ]
    return sorted(found)


def ucf101_splits_dir(root: str | os.PathLike) -> Path:
    """Where UCF101's split files are by default: ``root`` if it holds ``classInd.txt``, else
    ``root/ucfTrainTestlist`` (the folder of the official zip)."""
    root = Path(root)
    return root if (root / "classInd.txt").is_file() else root / "ucfTrainTestlist"


def hmdb51_splits_dir(root: str | os.PathLike) -> Path:
    """Where HMDB51's split files are by default: ``root`` if it holds ``*_test_split<k>.txt`` files, else
    ``root/testTrainMulti_7030_splits`` (the folder of the official archive)."""
    root = Path(root)
    here = root.is_dir() and any(_HMDB_SPLIT_FILE.match(p.name) for p in root.iterdir())
    return root if here else root / "testTrainMulti_7030_splits"


def check_subset(subset: str) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {', '.join(SUBSETS)}, got {subset!r}")
