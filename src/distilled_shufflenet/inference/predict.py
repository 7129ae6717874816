"""Classifying whole videos: top-k classes with scores averaged over K clips spread over each video.

::

    video ──probe──> K windows (uniform_windows, the model's clip length and frame stride)
          ──read──> (K, T, H, W, 3) uint8 ──EvalTransform──> (K, 3, T, crop, crop) ──backend──>
          softmax, mean over the K clips ──> top-k (class, score)

A video shorter than one window is padded with its last frame (``padded`` says so).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch

from distilled_shufflenet.data import VIDEO_EXTENSIONS, VideoDecodeError, VideoReader, eval_transform, uniform_windows
from distilled_shufflenet.data.sampling import window_span
from distilled_shufflenet.inference.backends import Backend
from distilled_shufflenet.inference.source import ModelInfo
from distilled_shufflenet.io import atomic_write_text


@dataclass
class VideoPrediction:
    """The top classes of one video, or the error that stopped it."""

    source: str
    top: list[tuple[str, float]] = field(default_factory=list)
    clips: int = 0
    num_frames: int = 0
    fps: float = 0.0
    padded: bool = False
    note: str = ""
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["top"] = [{"class": c, "score": round(s, 6)} for c, s in self.top]
        return d


def is_live_source(source: str) -> bool:
    """A URL (``rtsp://``, ``http://``, ...) or a capture device (``/dev/video0``), not a file to seek in."""
    return "://" in source or source.startswith("/dev/")


def expand_inputs(inputs: Sequence[str]) -> list[str]:
    """Files as they are, folders as the videos under them (sorted), live sources as they are."""
    out: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir() and not is_live_source(item):
            videos = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in VIDEO_EXTENSIONS)
            if not videos:
                raise FileNotFoundError(f"input folder {path}: holds no video ({', '.join(VIDEO_EXTENSIONS)})")
            out += videos
        else:
            out.append(item)
    return out


def check_outputs(model: str, sources: Sequence[str], outputs: dict[str, str | None]) -> None:
    """Before any work, refuse an output (``outputs``: flag -> path or None) that would destroy a file in
    use: the model, one of the input videos, another output; and check that its folder can be written,
    naming the folder, so that a long run does not end in an error about a temporary file."""
    from distilled_shufflenet.io import check_writable_folder

    inputs = {Path(s): "one of the input videos" for s in sources if not is_live_source(s)}
    inputs[Path(model)] = "the model"
    given = {flag: Path(path) for flag, path in outputs.items() if path is not None}
    for flag, out in given.items():
        other = next((f for f, o in given.items() if f != flag and o.absolute() == out.absolute()), None)
        if other:
            raise ValueError(f"{flag} {out}: is also the file of {other}; give each its own file")
        if out.is_dir():
            raise ValueError(f"{flag} {out}: is a folder; expected a file name")
        if out.exists():
            for path, what in inputs.items():
                if path.exists() and not path.is_dir() and os.path.samefile(out, path):
                    raise ValueError(f"{flag} {out}: is {what}, which it would overwrite; choose another file")
        check_writable_folder(out.parent, flag)


def clip_transform(info: ModelInfo):
    """The evaluation transform of ``info``'s preprocessing (centre crop)."""
    p = info.preprocess
    return eval_transform(p.crop_size, p.resize, p.mean, p.std)


def top_k(probs: torch.Tensor, classes: Sequence[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` largest of a ``(classes,)`` probability vector as ``(name, probability)``."""
    values, indices = probs.topk(min(k, len(classes)))
    return [(classes[int(i)], float(v)) for v, i in zip(values, indices)]


def predict_video(backend: Backend, info: ModelInfo, path: str, *, clips: int = 5, topk: int = 5,
                  batch: int = 5) -> VideoPrediction:
    """Top-``topk`` classes of the video at ``path``, probabilities averaged over ``clips`` windows."""
    result = VideoPrediction(source=str(path))
    clip_len, stride = info.preprocess.clip_len, info.frame_stride
    transform = clip_transform(info)
    with VideoReader(path, threads=0) as reader:
        meta = reader.info
        result.num_frames, result.fps = meta.num_frames, meta.fps
        span = window_span(clip_len, stride)
        if meta.num_frames < span:
            result.padded = True
            result.note = (f"the video has {meta.num_frames} frames, fewer than one clip ({clip_len} frames at "
                           f"stride {stride} span {span}): padded with its last frame")
        windows = uniform_windows(meta.num_frames, clip_len, stride, clips)  # (K, clip_len)
        frames = reader.read(windows.reshape(-1))  # (K * clip_len, H, W, 3)
    x = torch.from_numpy(frames).reshape(len(windows), clip_len, *frames.shape[1:])  # (K, T, H, W, 3)
    inputs = torch.stack([transform(c) for c in x])  # (K, 3, T, crop, crop)
    probs = torch.cat([torch.softmax(backend(inputs[i:i + batch]), 1) for i in range(0, len(inputs), batch)])
    result.clips = len(inputs)
    result.top = top_k(probs.mean(0), info.classes, topk)
    return result


def predict_files(backend: Backend, info: ModelInfo, sources: Sequence[str], *, clips: int = 5,
                  topk: int = 5) -> list[VideoPrediction]:
    """:func:`predict_video` on each source; an unreadable one gets its ``error`` and the rest go on."""
    results = []
    for source in sources:
        try:
            results.append(predict_video(backend, info, source, clips=clips, topk=topk))
        except VideoDecodeError as e:
            results.append(VideoPrediction(source=str(source), error=str(e)))
    return results


def format_predictions(results: Sequence[VideoPrediction]) -> str:
    """One block per video: its top classes and scores, or its error."""
    lines = []
    for r in results:
        if r.error:
            lines.append(f"{r.source}: ERROR {r.error}")
            continue
        lines.append(f"{r.source} ({r.num_frames} frames, {r.fps:.2f} fps, {r.clips} clips)")
        if r.note:
            lines.append(f"  note: {r.note}")
        width = max(len(c) for c, _ in r.top)
        lines += [f"  {rank}. {c:<{width}}  {s:.4f}" for rank, (c, s) in enumerate(r.top, 1)]
    return "\n".join(lines)


def write_predictions_json(results: Sequence[VideoPrediction], path: str | os.PathLike,
                           extra: dict[str, Any] | None = None) -> Path:
    """All predictions as one JSON document, written atomically."""
    doc = {**(extra or {}), "videos": [r.to_dict() for r in results]}
    return atomic_write_text(json.dumps(doc, indent=2) + "\n", path)
