"""Clips from videos: the map-style dataset every dataset kind is (:class:`VideoClips`, labelled or not),
its options, and the batches and failure log of a DataLoader over it.

::

    split files ──parser──> [VideoRecord(path, label)] ──dataset[i]──> sampler(num_frames, rng) ──>
    read_frames(path, indices) ──> transform(clip, rng) ──> {"clip", "index", "label"}

A sample is a dict:

- ``"clip"``: float32 ``(3, T, H, W)``; with ``sampling="uniform"`` and/or three crops it is
  ``(V, 3, T, H, W)`` with ``V = num_clips * crops`` views of the video (clip-major: the crops of the
  first clip come first), for video-level evaluation;
- ``"index"``: the index of the video actually used (another one when a broken video was resampled);
- ``"label"``: the class index, only in labelled datasets.  Unlabelled datasets (:class:`VideoFolder`,
  :func:`unlabelled`) hold paths only and their samples have no ``"label"`` key;
- ``"failures"``: present when a video could not be read, ``[{"index", "path", "reason"}]``.

Broken videos never crash a DataLoader worker.  With ``on_error="resample"`` (training) another video is
drawn from the sample's own generator and the failure travels in the sample; with ``on_error="report"``
(evaluation) the sample is ``{"index", "failures"}`` without a clip, and :func:`collate_clips` drops it
from the batch but keeps the failure, so evaluation can count the test videos it could not score.

Randomness is reproducible: sample ``i`` of epoch ``e`` uses ``numpy.random.default_rng((seed, e, i))``.
Call :meth:`VideoClips.set_epoch` at the start of every epoch to draw new windows, crops and flips; the
epoch lives in shared memory, so DataLoader worker processes (persistent ones too) see it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset, default_collate

from distilled_shufflenet.data.sampling import center_window, random_window, uniform_windows, window_span
from distilled_shufflenet.data.splits import VideoRecord
from distilled_shufflenet.data.transforms import eval_transform, train_transform
from distilled_shufflenet.data.video import VideoDecodeError, VideoReader

__all__ = [
    "ClipOptions",
    "FailureLog",
    "LabelledVideoClips",
    "MissingVideosError",
    "VideoClips",
    "collate_clips",
    "unlabelled",
]

SAMPLINGS = ("random", "center", "uniform")
ON_ERROR = ("resample", "report")
_SHOWN_MISSING = 5


# ---------------------------------------------------------------------- options
@dataclass(frozen=True)
class ClipOptions:
    """How a dataset turns a video into a sample (the keyword-only options of every dataset).

    ``transform(clip, rng)`` maps a ``(T, H, W, 3)`` uint8 tensor to ``(3, T, H, W)`` or
    ``(views, 3, T, H, W)`` floats; by default the training preset for ``sampling="random"`` and the
    evaluation preset (with ``crops``) otherwise, at crop 224.
    """

    clip_len: int = 16
    frame_stride: int = 1
    sampling: str = "random"
    num_clips: int = 1
    transform: Callable[[Tensor, np.random.Generator], Tensor] | None = None
    crops: int = 1
    on_error: str = "resample"
    skip_missing: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("clip_len", "frame_stride", "num_clips"):
            value = getattr(self, name)
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {', '.join(SAMPLINGS)}, got {self.sampling!r}")
        if self.num_clips > 1 and self.sampling != "uniform":
            raise ValueError(f"num_clips={self.num_clips} needs sampling='uniform', got {self.sampling!r}")
        if self.crops not in (1, 3):
            raise ValueError(f"crops must be 1 or 3, got {self.crops!r}")
        if self.transform is not None and getattr(self.transform, "crops", self.crops) != self.crops:
            raise ValueError(f"crops={self.crops} disagrees with the transform's crops={self.transform.crops}")
        if self.on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {', '.join(ON_ERROR)}, got {self.on_error!r}")
        if not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {self.seed!r}")

    @classmethod
    def from_kwargs(cls, options: Mapping[str, Any]) -> "ClipOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"unknown clip option(s) {', '.join(unknown)}; expected {', '.join(sorted(known))}")
        return cls(**options)

    def as_kwargs(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def make_transform(self) -> Callable[[Tensor, np.random.Generator], Tensor]:
        if self.transform is not None:
            return self.transform
        if self.sampling == "random" and self.crops == 1:
            return train_transform()
        return eval_transform(crops=self.crops)


class MissingVideosError(FileNotFoundError):
    """Videos a split or list names are not on disk.

    ``str(error)`` advises the library's option (``skip_missing=True``), :meth:`cli_message` the flag of
    the ``dsn`` commands (``--skip-missing``); ``effect`` says what the option does where it is caught.
    """

    def __init__(self, missing: Sequence[Path], listed: int, source: str, effect: str = "to leave them out") -> None:
        self.missing, self.listed, self.source, self.effect = list(missing), listed, source, effect
        super().__init__(self._text("skip_missing=True"))

    def _text(self, option: str) -> str:
        shown = ", ".join(str(p) for p in self.missing[:_SHOWN_MISSING])
        more = f" and {len(self.missing) - _SHOWN_MISSING} more" if len(self.missing) > _SHOWN_MISSING else ""
        return (f"{len(self.missing)} of {self.listed} videos listed in {self.source} are missing: {shown}{more} "
                f"(pass {option} {self.effect})")

    def with_effect(self, effect: str) -> "MissingVideosError":
        """The same error, saying ``effect`` of the option instead."""
        return MissingVideosError(self.missing, self.listed, self.source, effect)

    def cli_message(self) -> str:
        """The message for the command line: the advice names the flag."""
        return self._text("--skip-missing")


def _existing(paths: Sequence[Path], skip_missing: bool, source: str) -> tuple[list[bool], list[Path]]:
    """Which paths exist; raises :class:`MissingVideosError` unless ``skip_missing`` when some do not."""
    present = [p.is_file() for p in paths]
    missing = [p for p, ok in zip(paths, present) if not ok]
    if missing and not skip_missing:
        raise MissingVideosError(missing, len(paths), source)
    return present, missing


# ---------------------------------------------------------------------- datasets
class VideoClips(Dataset):
    """Clips of a list of videos, with no labels at all: samples are ``{"clip", "index"}``.

    Args:
        paths: the video files.
        **clip_options: see :class:`ClipOptions`.
    """

    max_attempts = 10  # videos tried per sample with on_error="resample" before giving up on it

    def __init__(self, paths: Iterable[str | os.PathLike], *, source: str = "the list of videos", **clip_options: Any):
        self.options = ClipOptions.from_kwargs(clip_options)
        paths = [Path(p) for p in paths]
        present, self.missing = _existing(paths, self.options.skip_missing, source)
        self.paths: tuple[Path, ...] = tuple(p for p, ok in zip(paths, present) if ok)
        self.source = source
        self.transform = self.options.make_transform()
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return len(self.paths)

    def __repr__(self) -> str:
        o = self.options
        return (
            f"{type(self).__name__}({len(self)} videos from {self.source}, sampling={o.sampling}, "
            f"clip_len={o.clip_len}, frame_stride={o.frame_stride}, num_clips={o.num_clips}, crops={o.crops})"
        )

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Draw new random windows, crops and flips for ``epoch`` (visible to DataLoader workers)."""
        self._epoch.fill_(int(epoch))

    def rng(self, index: int) -> np.random.Generator:
        """The generator of sample ``index`` in the current epoch."""
        return np.random.default_rng((self.options.seed, self.epoch, int(index)))

    def _windows(self, num_frames: int, rng: np.random.Generator) -> np.ndarray:
        o = self.options
        if o.sampling == "random":
            return random_window(num_frames, o.clip_len, o.frame_stride, rng)[None]  # (1, T)
        if o.sampling == "center":
            return center_window(num_frames, o.clip_len, o.frame_stride)[None]
        return uniform_windows(num_frames, o.clip_len, o.frame_stride, o.num_clips)  # (K, T)

    def load_clip(self, index: int, rng: np.random.Generator) -> Tensor:
        """The clip (or views) of video ``index``; raises :class:`VideoDecodeError` if it cannot be read."""
        path = self.paths[index]
        try:
            with VideoReader(path) as reader:
                n = reader.num_frames
                windows = self._windows(n, rng)
                try:
                    frames = reader.read(windows.ravel())  # (K*T, H, W, 3)
                except VideoDecodeError:
                    if reader.num_frames >= n:
                        raise
                    # the container's frame count was too high: sample again within the real count
                    windows = self._windows(reader.num_frames, rng)
                    frames = reader.read(windows.ravel())
        except OSError as e:
            raise VideoDecodeError(path, f"cannot read: {e.strerror or e}") from None
        k, t = windows.shape
        clips = torch.from_numpy(frames).view(k, t, *frames.shape[1:])  # (K, T, H, W, 3)
        views = [self.transform(c, rng) for c in clips.unbind(0)]  # each (3, T, h, w) or (crops, 3, T, h, w)
        if self.options.sampling != "uniform":
            return views[0]
        return torch.cat([v if v.dim() == 5 else v.unsqueeze(0) for v in views])  # (V, 3, T, h, w)

    def _extra(self, index: int) -> dict[str, Any]:
        return {}

    def short_videos(self, probe: int = 8) -> tuple[int, int]:
        """``(short, probed)``: of up to ``probe`` videos spread over the dataset, how many have fewer
        frames than a clip spans (``(clip_len - 1) * frame_stride + 1``), so that their clips repeat the
        last frame.  Only the headers are read; unreadable videos are not counted."""
        if len(self) == 0:
            return 0, 0
        span = window_span(self.options.clip_len, self.options.frame_stride)
        short = probed = 0
        for i in sorted({int(i) for i in np.linspace(0, len(self) - 1, min(probe, len(self)))}):
            try:
                with VideoReader(self.paths[i]) as reader:
                    n = reader.num_frames
            except (VideoDecodeError, OSError):
                continue
            probed += 1
            short += n < span
        return short, probed

    def padding_warning(self, probe: int = 8) -> str | None:
        """A one-line warning when most videos looked at (:meth:`short_videos`) are shorter than one clip,
        else None: their clips would be mostly copies of the last frame."""
        short, probed = self.short_videos(probe)
        if not probed or 2 * short <= probed:
            return None
        o = self.options
        return (f"warning: {short} of {probed} videos looked at in {self.source} have fewer than "
                f"{window_span(o.clip_len, o.frame_stride)} frames, the span of a {o.clip_len}-frame clip taking "
                f"every {o.frame_stride}. frame; their clips repeat the last frame (a smaller frame stride or "
                "clip length avoids it)")

    def _redraw(self, rng: np.random.Generator, failed: set[int]) -> int:
        """Another video for a sample whose video failed: uniform over those not yet failed."""
        j = int(rng.integers(len(self) - len(failed)))
        for f in sorted(failed):  # the j-th index that is not in `failed`
            if f <= j:
                j += 1
        return j

    def __getitem__(self, index: int) -> dict[str, Any]:
        index = int(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} videos")
        rng = self.rng(index)
        failures: list[dict[str, Any]] = []
        used = index
        for _ in range(self.max_attempts):
            try:
                clip = self.load_clip(used, rng)
            except VideoDecodeError as e:
                failures.append({"index": used, "path": str(self.paths[used]), "reason": e.reason})
                if self.options.on_error == "report" or len(failures) == len(self):
                    break
                used = self._redraw(rng, {f["index"] for f in failures})
                continue
            sample = {"clip": clip, "index": used, **self._extra(used)}
            if failures:
                sample["failures"] = failures
            return sample
        return {"index": index, "failures": failures}


class LabelledVideoClips(VideoClips):
    """Clips of labelled videos: samples are ``{"clip", "index", "label"}``.

    Args:
        records: the videos and their class indices.
        classes: class names, in label order.
        source: what the records came from, for error messages.
        **clip_options: see :class:`ClipOptions`.
    """

    def __init__(
        self,
        records: Iterable[VideoRecord],
        classes: Sequence[str],
        *,
        source: str = "the list of videos",
        **clip_options: Any,
    ):
        records = list(records)
        self.classes: list[str] = list(classes)
        bad = [r for r in records if r.label is None or not 0 <= r.label < len(self.classes)]
        if bad:
            raise ValueError(
                f"{source}: {len(bad)} record(s) without a label in 0..{len(self.classes) - 1}, e.g. {bad[0]}"
            )
        super().__init__([r.path for r in records], source=source, **clip_options)
        kept = set(self.paths)  # the listed files found on disk (the others are in self.missing)
        self.records: list[VideoRecord] = [r for r in records if r.path in kept]

    @property
    def labels(self) -> list[int]:
        return [int(r.label) for r in self.records]  # type: ignore[arg-type]

    def _extra(self, index: int) -> dict[str, Any]:
        return {"label": int(self.records[index].label)}  # type: ignore[arg-type]


def unlabelled(dataset: VideoClips, **clip_options: Any) -> VideoClips:
    """The videos of ``dataset`` as an unlabelled dataset that holds their paths only (no labels, no
    classes); its samples have no ``"label"`` key.  ``clip_options`` override the dataset's options."""
    if not isinstance(dataset, VideoClips):
        raise ValueError(f"unlabelled() takes a dataset of this package, got {type(dataset).__name__}")
    options = replace(dataset.options, **clip_options) if clip_options else dataset.options
    return VideoClips(dataset.paths, source=dataset.source, **options.as_kwargs())


# ---------------------------------------------------------------------- batches
def collate_clips(samples: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Batch samples for a DataLoader: ``"clip"`` stacked (B, ...), ``"index"`` and ``"label"`` (if the
    samples have labels) as LongTensors, and ``"failures"``, the list of every failure the samples carry.

    Samples without a clip (failed, ``on_error="report"``) are left out of the batch but their failures
    are kept; a batch where every sample failed has only ``"failures"``.
    """
    failures = [f for s in samples for f in s.get("failures", ())]
    ok = [s for s in samples if "clip" in s]
    batch: dict[str, Any] = {"failures": failures}
    if not ok:
        return batch
    # default_collate stacks straight into shared memory inside a worker, saving a copy per batch
    batch["clip"] = default_collate([s["clip"] for s in ok])  # (B, 3, T, H, W) or (B, V, 3, T, H, W)
    batch["index"] = torch.tensor([s["index"] for s in ok], dtype=torch.long)
    with_label = ["label" in s for s in ok]
    if any(with_label):
        if not all(with_label):
            raise ValueError("collate_clips: some samples have a 'label' and some do not")
        batch["label"] = torch.tensor([s["label"] for s in ok], dtype=torch.long)
    return batch


class FailureLog:
    """Videos that could not be read during an epoch or an evaluation, gathered from batches."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def add(self, batch_or_failures: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> int:
        """Add the failures of a batch (its ``"failures"``) or a list of failures; returns how many."""
        items = batch_or_failures.get("failures", ()) if isinstance(batch_or_failures, Mapping) else batch_or_failures
        new = [{"index": int(f["index"]), "path": str(f["path"]), "reason": str(f["reason"])} for f in items]
        self.entries += new
        return len(new)

    def __len__(self) -> int:
        return len(self.entries)

    def clear(self) -> None:
        self.entries.clear()

    def by_path(self) -> dict[str, tuple[str, int]]:
        """``path -> (first reason, number of failures)``, in order of first failure."""
        out: dict[str, tuple[str, int]] = {}
        for f in self.entries:
            reason, count = out.get(f["path"], (f["reason"], 0))
            out[f["path"]] = (reason, count + 1)
        return out

    def summary(self, limit: int = 20) -> str:
        """A report of the count and one ``path: reason`` line per video (at most ``limit``)."""
        if not self.entries:
            return "no video failed to load"
        videos = self.by_path()
        lines = [f"{len(self.entries)} failed video read(s), {len(videos)} distinct video(s):"]
        for path, (reason, count) in list(videos.items())[:limit]:
            times = f" ({count} times)" if count > 1 else ""
            lines.append(f"  {path}: {reason}{times}")
        if len(videos) > limit:
            lines.append(f"  ... and {len(videos) - limit} more")
        return "\n".join(lines)
