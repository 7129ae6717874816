"""The videos distillation may use: paths only, each once, in a fixed order; no label is read."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from distilled_shufflenet.data.splits import find_videos
from distilled_shufflenet.data.factory import build_dataset

__all__ = ["unlabelled_videos"]


def unlabelled_videos(kind: str, root: str | os.PathLike, *, extra: Sequence[str | os.PathLike] = (),
                      include_test: bool = False, **dataset_options: Any) -> list[Path]:
    """Every video of the source ``kind`` under ``root`` (``"folder"``: every video file; a labelled kind
    of :func:`~distilled_shufflenet.data.build_dataset`: its training videos through its unlabelled view,
    and its test videos too with ``include_test``), then those of the ``extra`` folders, each video once.

    ``dataset_options`` go to :func:`~distilled_shufflenet.data.build_dataset` (``splits_dir``, ``split``,
    ``list_file``, ``skip_missing``).  An empty source names the settings ``data_root`` or
    ``extra_unlabelled``, as ``dsn distill`` calls them."""
    if kind == "folder":
        found = find_videos(root)
        if not found:
            raise ValueError(f"data_root: {root}: no video files found")
        paths = list(found)
    else:
        paths = list(build_dataset(kind, root, subset="train", labels=False, **dataset_options).paths)
        if include_test:
            paths += list(build_dataset(kind, root, subset="test", labels=False, **dataset_options).paths)
    for folder in extra:
        more = find_videos(folder)
        if not more:
            raise ValueError(f"extra_unlabelled: {folder}: no video files found")
        paths += list(more)
    seen: set[Path] = set()
    unique = []
    for p in paths:
        key = Path(p).resolve()
        if key not in seen:
            seen.add(key)
            unique.append(Path(p))
    return unique
