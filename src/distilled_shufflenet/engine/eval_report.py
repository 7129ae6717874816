"""The results of an evaluation: each level's top-k figures with the top-1 interval (:class:`LevelResult`),
the whole report (:class:`EvalReport`) assembled from the score meters, and the files it is written to
(``report.json`` and ``confusion.png``, :func:`write_report`); two reports of the same videos paired
(:func:`paired_top1_margin`)."""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distilled_shufflenet.engine.metrics import (
    Interval,
    VideoScoreMeter,
    accuracy_interval,
    confusion_matrix,
    paired_margin_interval,
    per_class_accuracy,
    topk_hits,
)
from distilled_shufflenet.engine.plots import plot_confusion
from distilled_shufflenet.io import atomic_write_bytes

__all__ = ["AVERAGES", "BOOTSTRAP", "CONFUSION_NAME", "REPORT_NAME", "EvalReport", "LevelResult",
           "paired_top1_margin", "report_from_meters", "write_report"]

# what is averaged over the views of a video
AVERAGES = {"prob": "softmax probabilities", "logit": "logits (pre-softmax scores)"}
TOPK = (1, 5)
# the interval of each level's top-1: percentile bootstrap over the test videos, seeded, so a report is reproducible
BOOTSTRAP = {"level": 0.95, "resamples": 10_000, "seed": 0}
REPORT_NAME = "report.json"
CONFUSION_NAME = "confusion.png"

_FIGURE_NOTES = {
    "top1, top5": "fraction of ALL test videos of the split; the videos that could not be scored count as wrong",
    "top1_scored, top5_scored": "fraction of the scored videos only",
    "top1_ci95": "95 % percentile-bootstrap interval of top1: the test videos resampled with replacement "
                 f"{BOOTSTRAP['resamples']} times (seed {BOOTSTRAP['seed']}), unscored videos counting as wrong",
    "top1_by_video": "1 where the video's top-1 is right, else 0, for each test video in the order of the split "
                     "(then the files missing from disk): pairs two models scored on the same split video by video",
    "clip_level": "one centre clip with a centre crop per video, scored on its own",
    "video_level": "the model's scores averaged over every view (clips x crops) of a video",
    "per_class": "video level; 'accuracy' over all test videos of the class, 'accuracy_scored' over the scored",
    "confusion_matrix": "video level, scored videos only; rows = true class, columns = predicted class",
}


# --------------------------------------------------------------------------- results
@dataclass
class LevelResult:
    """Top-k figures at one level (clip or video).

    ``correct[k]`` counts videos whose label is among the k best (averaged) scores; ``videos`` is every
    test video, ``scored`` those that were read; the difference counts as wrong in :meth:`accuracy`.
    ``hits`` (when known) is 1 / 0 for each test video, top-1 right or not, in the order of the split,
    the unscored videos 0: what :meth:`top1_interval` resamples.
    """

    views_per_video: int
    videos: int
    scored: int
    correct: dict[int, int]
    hits: list[int] | None = None

    @property
    def unscored(self) -> int:
        return self.videos - self.scored

    def accuracy(self, k: int = 1) -> float:
        """Fraction of all test videos with the label in the top k (unscored videos count as wrong)."""
        return self.correct[k] / self.videos if self.videos else math.nan

    def accuracy_scored(self, k: int = 1) -> float:
        """Fraction of the scored videos with the label in the top k."""
        return self.correct[k] / self.scored if self.scored else math.nan

    @cached_property
    def top1_interval(self) -> Interval | None:
        """:meth:`accuracy` (k = 1) with its 95 % bootstrap interval over the test videos (:data:`BOOTSTRAP`);
        None without ``hits`` or videos."""
        if not self.hits:
            return None
        return accuracy_interval(self.hits, **BOOTSTRAP)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "views_per_video": self.views_per_video,
            "videos": self.videos,
            "scored": self.scored,
            "unscored": self.unscored,
        }
        for k in sorted(self.correct):
            out[f"correct_top{k}"] = self.correct[k]
        for k in sorted(self.correct):
            out[f"top{k}"] = _finite(self.accuracy(k))
            out[f"top{k}_scored"] = _finite(self.accuracy_scored(k))
        interval = self.top1_interval
        out["top1_ci95"] = None if interval is None else [interval.low, interval.high]
        out["top1_by_video"] = None if self.hits is None else list(self.hits)
        return out


@dataclass
class EvalReport:
    """Everything :func:`evaluate` measured; ``to_dict()`` is the JSON report.

    ``clip`` is None when no clip-level pass was run.  ``per_class``, ``confusion`` (rows = true class)
    are at video level.  ``unscored`` lists ``{"index", "path", "reason", "levels"}`` per video that one
    of the passes could not read (``index`` is None for a file missing from disk).  ``info`` says what
    was evaluated (checkpoint, dataset, split, ...).
    """

    classes: list[str]
    video: LevelResult
    clip: LevelResult | None
    per_class: list[dict[str, Any]]
    confusion: list[list[int]]
    unscored: list[dict[str, Any]]
    average: str
    seconds: float
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON report: what was evaluated, the headline figures, then the details."""
        head = ("checkpoint", "model", "dataset", "views")
        return {
            **{k: self.info[k] for k in head if k in self.info},
            "video_scores": f"mean of the {AVERAGES[self.average]} over the views of each video",
            "clip_level": None if self.clip is None else self.clip.to_dict(),
            "video_level": self.video.to_dict(),
            "unscored_videos": {"count": len(self.unscored), "videos": list(self.unscored)},
            "notes": dict(_FIGURE_NOTES),
            "num_classes": len(self.classes),
            "per_class": list(self.per_class),
            "classes": list(self.classes),
            "confusion_matrix": [list(row) for row in self.confusion],
            **{k: v for k, v in self.info.items() if k not in head},
            "seconds": round(self.seconds, 3),
        }

    def summary(self) -> str:
        """A few printable lines: the headline figures, then the unscored videos."""
        lines = []
        for name, level in (("clip level ", self.clip), ("video level", self.video)):
            if level is None:
                continue
            interval = level.top1_interval
            ci = "" if interval is None else f" (95% CI {_pct(interval.low).strip()}-{_pct(interval.high).strip()})"
            lines.append(
                f"{name} ({level.views_per_video} view{'s' if level.views_per_video > 1 else ''}/video): "
                f"top-1 {_pct(level.accuracy(1))}{ci}  top-5 {_pct(level.accuracy(5))}  over all {level.videos} "
                f"videos | over the {level.scored} scored: top-1 {_pct(level.accuracy_scored(1))}  "
                f"top-5 {_pct(level.accuracy_scored(5))}"
            )
        lines.append(f"video scores: mean of the {AVERAGES[self.average]} over the views")
        lines.append(f"unscored videos: {len(self.unscored)} (counted as wrong in the 'over all' figures)")
        for u in self.unscored[:20]:
            lines.append(f"  {u['path'] or '#' + str(u['index'])}: {u['reason']}")
        if len(self.unscored) > 20:
            lines.append(f"  ... and {len(self.unscored) - 20} more (see the JSON report)")
        return "\n".join(lines)


def _finite(x: float) -> float | None:
    return None if math.isnan(x) else x


def _pct(x: float) -> str:
    return "  n/a " if math.isnan(x) else f"{100 * x:6.2f}%"


def paired_top1_margin(report_a: dict[str, Any], report_b: dict[str, Any], level: str = "video_level") -> Interval:
    """Top-1 of model A minus that of model B, from their ``report.json`` contents (:meth:`EvalReport.to_dict`)
    on the same test videos, with its 95 % paired bootstrap interval (:data:`BOOTSTRAP`): the videos are
    resampled with both models' results on them.  ``level`` is ``"video_level"`` or ``"clip_level"``.
    Reports of other videos (another dataset, split, side or count) are refused."""
    if level not in ("video_level", "clip_level"):
        raise ValueError(f"level: expected video_level or clip_level, got {level!r}")
    keys = ("kind", "root", "list_file", "splits_dir", "split", "subset", "videos")
    where_a, where_b = ({k: (r.get("dataset") or {}).get(k) for k in keys} for r in (report_a, report_b))
    if where_a != where_b:
        differ = "; ".join(f"{k} {where_a[k]!r} and {where_b[k]!r}" for k in keys if where_a[k] != where_b[k])
        raise ValueError(f"reports: scored on other videos ({differ}); a paired margin needs both models on the "
                         "same test videos")
    hits = [(r.get(level) or {}).get("top1_by_video") for r in (report_a, report_b)]
    if any(h is None for h in hits):
        raise ValueError(f"reports: no per-video {level} top-1 (top1_by_video) in a report; evaluate again with "
                         "this version of dsn evaluate")
    return paired_margin_interval(hits[0], hits[1], **BOOTSTRAP)


def _level(meter: VideoScoreMeter, videos: int) -> LevelResult:
    """A level's figures over ``videos`` test videos: the meter's ids are the dataset's indices, and any
    other video (unread, or a missing file listed after the dataset's) counts as wrong."""
    res = meter.result()
    none = {k: torch.zeros(0, dtype=torch.bool) for k in TOPK}
    hits = topk_hits(res.scores, res.labels, TOPK) if len(res.ids) else none  # (M,) per k
    top1 = [0] * videos
    for index, hit in zip(res.ids.tolist(), hits[1].tolist()):
        top1[index] = int(hit)
    views = int(res.views.max()) if len(res.ids) else 0
    return LevelResult(views_per_video=views, videos=videos, scored=len(res.ids),
                       correct={k: int(h.sum()) for k, h in hits.items()}, hits=top1)


def _missing(dataset: Dataset, classes: list[str]) -> list[dict[str, Any]]:
    """Listed videos that are not on disk (left out of ``dataset`` by ``skip_missing``), as unscored entries.

    Their class is the name of their folder when that is a class name (the UCF101 and HMDB51 layouts),
    so that they count as wrong in their class too; otherwise only in the overall figures.
    """
    out = []
    for path in getattr(dataset, "missing", None) or ():
        name = Path(path).parent.name
        label = classes.index(name) if name in classes else None
        out.append({"index": None, "path": str(path), "reason": "file not found", "label": label})
    return out


def _unscored(
    meters: dict[str, VideoScoreMeter], videos: int, missing: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Every test video some pass could not score: ``{"index", "path", "reason", "levels"}``, merged over
    the passes (clip, video), then the missing files."""
    out: dict[int, dict[str, Any]] = {}
    for level, meter in meters.items():
        scored = set(meter.result().ids.tolist())
        failed = {f["index"]: f for f in meter.failures}
        for index in range(videos):
            if index in scored:
                continue
            f = failed.get(index, {"path": "", "reason": "not returned by the data loader"})
            entry = out.setdefault(index, {"index": index, "path": f["path"], "reason": f["reason"], "levels": []})
            entry["levels"].append(level)
    gone = [{"index": None, "path": m["path"], "reason": m["reason"], "levels": list(meters)} for m in missing]
    return [out[i] for i in sorted(out)] + gone


def _class_totals(dataset: Dataset, missing: list[dict[str, Any]], num_classes: int) -> Tensor | None:
    """``(C,)`` test videos per class, present and missing, when the dataset knows its labels."""
    labels = getattr(dataset, "labels", None)
    if labels is None or len(labels) != len(dataset):
        return None
    labels = [int(x) for x in labels] + [m["label"] for m in missing if m["label"] is not None]
    return torch.bincount(torch.tensor(labels, dtype=torch.long), minlength=num_classes)


def _per_class(matrix: Tensor, classes: list[str], totals: Tensor | None) -> list[dict[str, Any]]:
    """Video-level accuracy of each class, over all its test videos and over its scored ones."""
    scored = matrix.sum(dim=1)  # (C,)
    acc_scored = per_class_accuracy(matrix)  # (C,)
    acc_all = None if totals is None else per_class_accuracy(matrix, totals)
    out = []
    for c, name in enumerate(classes):
        out.append({
            "index": c,
            "class": name,
            "videos": None if totals is None else int(totals[c]),
            "scored": int(scored[c]),
            "correct": int(matrix[c, c]),
            "accuracy": None if acc_all is None else _finite(float(acc_all[c])),
            "accuracy_scored": _finite(float(acc_scored[c])),
        })
    return out


def report_from_meters(
    dataset: Dataset,
    classes: list[str],
    video_meter: VideoScoreMeter,
    clip_meter: VideoScoreMeter | None,
    *,
    average: str,
    seconds: float,
    info: dict[str, Any],
) -> EvalReport:
    """The report of ``dataset``'s test videos from the video-level scores (and the clip-level ones when a
    clip-level pass ran): the listed files missing from disk join the unscored videos; without a clip-level
    pass the clip level is the video level when that has one view per video, and left out otherwise."""
    missing = _missing(dataset, classes)
    videos = len(dataset) + len(missing)
    video = _level(video_meter, videos)
    clip = _level(clip_meter, videos) if clip_meter is not None else video if video.views_per_video <= 1 else None
    meters = {"video": video_meter} if clip_meter is None else {"clip": clip_meter, "video": video_meter}

    res = video_meter.result()
    pred = res.scores.argmax(dim=1) if len(res.ids) else torch.zeros(0, dtype=torch.long)  # (M,)
    matrix = confusion_matrix(pred, res.labels, len(classes))  # (C, C), scored videos
    return EvalReport(
        classes=classes,
        video=video,
        clip=clip,
        per_class=_per_class(matrix, classes, _class_totals(dataset, missing, len(classes))),
        confusion=matrix.tolist(),
        unscored=_unscored(meters, len(dataset), missing),
        average=average,
        seconds=seconds,
        info=info,
    )


_NUMBER_LIST = re.compile(r"\[\s+([-+0-9.eE,\s]+?)\s+\]")


def _json_text(data: dict[str, Any]) -> str:
    """Indented JSON with every list of plain numbers on one line (a 101 x 101 confusion matrix stays
    101 lines long)."""
    text = json.dumps(data, indent=2, allow_nan=False)
    return _NUMBER_LIST.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def write_report(report: EvalReport, out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``report.json`` (atomically) and ``confusion.png`` into ``out_dir``; returns both paths."""
    out_dir = Path(out_dir)
    json_path = atomic_write_bytes(_json_text(report.to_dict()).encode(), out_dir / REPORT_NAME)
    info = report.info
    title = (
        f"{info.get('model', {}).get('name', 'model')} on {info.get('dataset', {}).get('kind', 'dataset')} "
        f"split {info.get('dataset', {}).get('split', '?')} ({info.get('dataset', {}).get('subset', '?')}): "
        f"video level, top-1 {_pct(report.video.accuracy(1)).strip()}"
    )
    png_path = plot_confusion(report.confusion, report.classes, out_dir / CONFUSION_NAME, title)
    return json_path, png_path
