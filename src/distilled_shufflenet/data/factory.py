"""One door to every dataset kind, so that command-line tools can build any of them from flags."""

from __future__ import annotations

import os
import sys
from typing import Any

from distilled_shufflenet.data.clips import VideoClips, unlabelled
from distilled_shufflenet.data.datasets import OFFICIAL_SPLITS, VideoFolder, VideoList

__all__ = ["DATASET_KINDS", "LABELLED_KINDS", "build_dataset", "check_kind"]

# the kinds with labels: the official splits and a list of 'path,label' lines
LABELLED_KINDS: tuple[str, ...] = (*OFFICIAL_SPLITS, "list")
DATASET_KINDS: tuple[str, ...] = (*LABELLED_KINDS, "folder")


def check_kind(kind: str, root: str | os.PathLike | None, list_file: str | os.PathLike | None) -> None:
    """Refuse an unknown ``kind``, a ``"list"`` without ``list_file`` and any other kind without ``root``."""
    if kind not in DATASET_KINDS:
        raise ValueError(f"unknown dataset kind {kind!r}; expected one of {', '.join(DATASET_KINDS)}")
    if kind == "list":
        if list_file is None:
            raise ValueError("dataset kind 'list' needs list_file (a CSV or text file of 'path,label' lines)")
    elif root is None:
        raise ValueError(f"dataset kind {kind!r} needs a root folder of videos")


def build_dataset(
    kind: str,
    root: str | os.PathLike | None,
    *,
    splits_dir: str | os.PathLike | None = None,
    split: int = 1,
    subset: str = "train",
    list_file: str | os.PathLike | None = None,
    classes: Any = None,
    labels: bool = True,
    **clip_options: Any,
) -> VideoClips:
    """A dataset of ``kind`` (one of :data:`DATASET_KINDS`).

    - ``"ucf101"`` / ``"hmdb51"``: videos under ``root``, split files in ``splits_dir`` (default: see
      :class:`UCF101` / :class:`HMDB51`), official ``split`` and ``subset`` (``"train"`` or ``"test"``);
    - ``"list"``: the videos of ``list_file`` (paths relative to ``root``, default the list's folder),
      with ``classes`` as in :class:`VideoList`;
    - ``"folder"``: every video under ``root``; it has no labels, so it needs ``labels=False``.

    ``labels=False`` returns the unlabelled view (:func:`unlabelled`): samples without ``"label"``, as
    distillation reads them.  ``clip_options`` are those of :class:`ClipOptions`.

    When most of a few videos looked at are shorter than one clip (a frame stride too large for the
    videos), a warning says so on stderr, once per dataset and clip span (from the first process only
    under ``torchrun``).
    """
    check_kind(kind, root, list_file)
    if kind == "folder":
        if labels:
            raise ValueError(
                "dataset kind 'folder' has no labels; use labels=False, or a 'list' of 'path,label' lines"
            )
        folder = VideoFolder(root, **clip_options)
        _warn_if_padded(folder)
        return folder
    if kind in OFFICIAL_SPLITS:
        dataset: VideoClips = OFFICIAL_SPLITS[kind](root, splits_dir, split, subset, **clip_options)
    else:
        dataset = VideoList(list_file, root, classes, **clip_options)
    _warn_if_padded(dataset)
    return dataset if labels else unlabelled(dataset)


_WARNED: set[tuple[str, int, int]] = set()


def _warn_if_padded(dataset: VideoClips) -> None:
    key = (dataset.source, dataset.options.clip_len, dataset.options.frame_stride)
    if key in _WARNED or os.environ.get("RANK", "0") != "0":
        return
    _WARNED.add(key)
    message = dataset.padding_warning()
    if message:
        print(message, file=sys.stderr)
