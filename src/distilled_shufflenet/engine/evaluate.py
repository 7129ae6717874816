"""Evaluation on a test split: clip and video level top-1 / top-5, per-class accuracy, confusion matrix.

Two passes over the test videos (one when the video level uses a single centre view)::

    clip level : 1 centre clip x 1 centre crop per video  -> model -> scores            -> top-1, top-5
    video level: K clips x (1 | 3) crops per video         -> model -> mean of the views -> top-1, top-5,
                                                                                         per class, confusion

A video that cannot be read is "unscored". Every accuracy is given twice: ``top1`` / ``top5`` over ALL
test videos, counting the unscored ones as wrong (the headline figures), and ``top1_scored`` /
``top5_scored`` over the scored videos only.  The unscored videos are listed with their paths and reasons.
Each level's ``top1`` comes with its 95 % percentile-bootstrap interval over the test videos
(``top1_ci95``) and with which videos it got right (``top1_by_video``, in the order of the split), so that
two models scored on the same split can be compared video by video (:func:`paired_top1_margin`).

Library: :func:`evaluate` scores a built model on built datasets; :func:`evaluate_checkpoint` does the
whole ``dsn evaluate``: load a checkpoint, build the datasets from its preprocessing, evaluate, and write
``report.json`` and ``confusion.png``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

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
from distilled_shufflenet.io import atomic_write_bytes, check_writable_folder, remove_stale_temporaries
from distilled_shufflenet.engine.runtime import PRECISIONS, Runtime, default_workers, setup_runtime, teardown_runtime

# labelled dataset kinds (those of dsn train)
EVAL_DATASETS = ("ucf101", "hmdb51", "list")

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


# --------------------------------------------------------------------------- scoring
def _shard(dataset: Dataset, rt: Runtime) -> Dataset:
    """This rank's share of the videos (every video exactly once over all ranks, no padding)."""
    if not rt.distributed:
        return dataset
    return Subset(dataset, range(rt.rank, len(dataset), rt.world_size))


@torch.inference_mode()
def score_dataset(
    model: nn.Module,
    dataset: Dataset,
    rt: Runtime,
    *,
    num_classes: int,
    batch_size: int = 8,
    workers: int = 0,
    average: str = "prob",
    progress: bool = True,
    desc: str = "evaluate",
) -> VideoScoreMeter:
    """Run ``model`` over every view of every video of ``dataset`` and gather per-video scores.

    Batches hold ``batch_size`` videos; their views (``"clip"``: (B, V, 3, T, H, W) or (B, 3, T, H, W))
    go through the model ``batch_size`` clips at a time.  Videos the data layer reports as failed are
    recorded in the meter as unscored.  Under ``torch.distributed`` each rank scores its share and the
    meters are gathered, so every rank returns the full set.
    """
    from distilled_shufflenet.data import collate_clips

    loader = DataLoader(
        _shard(dataset, rt),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate_clips,
        pin_memory=rt.device.type == "cuda",
        persistent_workers=False,
    )
    meter = VideoScoreMeter(num_classes)
    bar = tqdm(total=len(loader.dataset), desc=desc, unit="video", disable=not progress or not rt.is_main,
               dynamic_ncols=True)
    for batch in loader:
        failures = batch.get("failures", ())
        meter.add_failures(failures)
        bar.update(len(batch["index"]) + len(failures) if "clip" in batch else len(failures))
        if "clip" not in batch:  # every video of this batch failed
            continue
        if "label" not in batch:
            raise ValueError(f"{getattr(dataset, 'source', 'dataset')}: evaluation needs labelled samples")
        clips, ids, labels = batch["clip"], batch["index"], batch["label"]
        if clips.dim() == 6:  # (B, V, 3, T, H, W): V views of each video
            views = clips.shape[1]
            clips = clips.flatten(0, 1)  # (B*V, 3, T, H, W)
            ids, labels = ids.repeat_interleave(views), labels.repeat_interleave(views)
        scores = []
        for chunk in clips.split(batch_size):
            with rt.autocast():
                logits = model(rt.to_device(chunk))  # (b, num_classes)
            if logits.dim() != 2 or logits.shape[1] != num_classes:
                raise ValueError(
                    f"model output: expected (N, {num_classes}) logits for the {num_classes} classes of the "
                    f"dataset, got {tuple(logits.shape)}"
                )
            logits = logits.float()
            scores.append(logits.softmax(dim=1) if average == "prob" else logits)
        meter.update(torch.cat(scores).cpu(), ids, labels)  # (B*V, C)
        bar.set_postfix(unscored=len(meter.failures), refresh=False)
    bar.close()
    return meter.all_gather()


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


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    clip_dataset: Dataset | None = None,
    classes: Sequence[str] | None = None,
    batch_size: int = 8,
    device: str = "auto",
    precision: str = "fp32",
    workers: int = 0,
    average: str = "prob",
    progress: bool = True,
) -> EvalReport:
    """Evaluate ``model`` on the test videos of ``dataset``.

    ``dataset`` gives the video-level views of each video (``num_clips`` x ``crops``); ``clip_dataset``
    one centre clip with a centre crop per video, for the clip level.  Without ``clip_dataset`` the clip
    level is the video level when ``dataset`` has one view per video, and left out otherwise.
    ``average``: ``"prob"`` averages softmax probabilities over the views, ``"logit"`` the raw logits.
    ``classes`` defaults to ``dataset.classes``.  ``device`` is ``auto``, ``cpu`` or ``cuda``; ``precision``
    one of ``fp32``, ``bf16``, ``fp16`` (autocast).  Videos the data layer reports as unreadable, and the
    files it left out as missing (``dataset.missing``), are unscored: counted as wrong in ``top1`` /
    ``top5`` and left out of ``top1_scored`` / ``top5_scored``.  Under ``torchrun`` the videos are
    shared out between the ranks and every rank returns the full report.  The model is moved to the
    device and left there, in its original train / eval mode.
    """
    classes = list(classes if classes is not None else getattr(dataset, "classes", None) or [])
    if not classes:
        raise ValueError("classes: the dataset has no .classes; pass classes=[...]")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size}")
    if average not in AVERAGES:
        raise ValueError(f"average: expected one of {', '.join(AVERAGES)}, got {average!r}")
    if clip_dataset is not None and len(clip_dataset) != len(dataset):
        raise ValueError(
            f"clip_dataset: expected the same {len(dataset)} videos as dataset, got {len(clip_dataset)}"
        )
    start = time.perf_counter()
    rt = setup_runtime(device, precision)
    was_training = model.training
    try:
        model = model.to(rt.device).eval()
        opts = dict(num_classes=len(classes), batch_size=batch_size, workers=workers, average=average,
                    progress=progress)
        clip_meter = None
        if clip_dataset is not None:
            clip_meter = score_dataset(model, clip_dataset, rt, desc="clip level", **opts)
        video_meter = score_dataset(model, dataset, rt, desc="video level", **opts)
    finally:
        model.train(was_training)
        teardown_runtime(rt)

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
        seconds=time.perf_counter() - start,
        info={"device": str(rt.device), "precision": precision, "batch_size": batch_size},
    )


# --------------------------------------------------------------------------- from a checkpoint
@dataclass
class EvalConfig:
    """Settings of ``dsn evaluate``; preprocessing fields left as None come from the checkpoint.

    The video level defaults to 10 uniformly spaced clips x 3 crops per video (30 views).  A listed video
    missing from disk is an error, unless ``skip_missing``: then it is one more unscored video.
    ``dataset`` is ``ucf101`` / ``hmdb51`` (official split files) or ``list`` (the ``path,label`` lines of
    ``list_file``, paths relative to ``data_root``, by default the list's folder), as for ``dsn train``.
    """

    dataset: str = "ucf101"
    data_root: str = ""
    list_file: str | None = None
    splits_dir: str | None = None
    split: int = 1
    subset: str = "test"
    clips: int = 10
    crops: int = 3
    frame_stride: int | None = None  # None: the stride the checkpoint was trained with
    batch_size: int = 8
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    precision: str = "fp32"
    average: str = "prob"
    skip_missing: bool = False
    out: str | None = None
    progress: bool = True
    # overrides of the checkpoint's preprocessing
    clip_len: int | None = None
    crop_size: int | None = None
    resize: int | None = None
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        checks = [
            ("dataset", self.dataset in EVAL_DATASETS, f"one of {', '.join(EVAL_DATASETS)}"),
            ("clips", self.clips >= 1, "a positive integer"),
            ("crops", self.crops in (1, 3), "1 or 3"),
            ("split", self.split in (1, 2, 3), "1, 2 or 3"),
            ("frame_stride", self.frame_stride is None or self.frame_stride >= 1, "a positive integer"),
            ("batch_size", self.batch_size >= 1, "a positive integer"),
            ("workers", self.workers >= 0, "0 or more"),
            ("average", self.average in AVERAGES, f"one of {', '.join(AVERAGES)}"),
            ("precision", self.precision in PRECISIONS, f"one of {', '.join(PRECISIONS)}"),
            ("clip_len", self.clip_len is None or self.clip_len >= 1, "a positive integer"),
            ("crop_size", self.crop_size is None or self.crop_size >= 1, "a positive integer"),
            ("resize", self.resize is None or self.resize >= 1, "a positive integer"),
            ("mean", self.mean is None or len(self.mean) == 3, "3 numbers (R G B)"),
            ("std", self.std is None or (len(self.std) == 3 and min(self.std) > 0), "3 positive numbers"),
        ]
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"{name}: expected {expected}, got {getattr(self, name)!r}")
        if self.dataset == "list":
            if not self.list_file:
                raise ValueError("list_file: required with dataset 'list' (a CSV or text file of 'path,label' "
                                 "lines); pass --list-file FILE")
        elif self.list_file is not None:
            raise ValueError(f"list_file: only used with dataset 'list', got dataset {self.dataset!r}")
        elif not self.data_root:
            raise ValueError("data_root: expected the folder holding the dataset's videos (--data-root DIR)")


def _preprocess(checkpoint: dict[str, Any], model: nn.Module, cfg: EvalConfig) -> dict[str, Any]:
    """The preprocessing the model was trained with (``load_checkpoint`` sets ``model.preprocess`` from
    the checkpoint) with the config's overrides applied: a new crop without a new resize keeps the
    trained resize-to-crop ratio, as :meth:`Preprocess.override` does everywhere."""
    p = model.preprocess.override(clip_len=cfg.clip_len, crop_size=cfg.crop_size, resize=cfg.resize)
    # the frame stride is part of what the model learnt (the tempo it sees), so it follows the training run
    trained = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    return {
        "clip_len": p.clip_len,
        "crop_size": p.crop_size,
        "resize": p.resize,
        "mean": tuple(float(v) for v in (cfg.mean or p.mean)),
        "std": tuple(float(v) for v in (cfg.std or p.std)),
        "frame_stride": int(cfg.frame_stride or trained.get("frame_stride") or 1),
    }


def _build_datasets(cfg: EvalConfig, pre: dict[str, Any],
                    classes: Sequence[str] | None = None) -> tuple[Dataset, Dataset | None]:
    """The video-level dataset (``clips`` x ``crops`` views) and, when that has several views, the
    clip-level one (one centre clip, centre crop).  ``classes`` (the checkpoint's) name the labels of a
    list, which need not hold a video of every class."""
    from distilled_shufflenet.data import MissingVideosError, build_dataset, eval_transform

    def build(num_clips: int, crops: int) -> Dataset:
        return build_dataset(
            cfg.dataset,
            cfg.data_root or None,
            list_file=cfg.list_file,
            classes=list(classes) if cfg.dataset == "list" and classes else None,
            splits_dir=cfg.splits_dir,
            split=cfg.split,
            subset=cfg.subset,
            clip_len=pre["clip_len"],
            frame_stride=pre["frame_stride"],
            sampling="center" if num_clips == 1 else "uniform",
            num_clips=num_clips,
            transform=eval_transform(pre["crop_size"], pre["resize"], pre["mean"], pre["std"], crops=crops),
            crops=crops,
            on_error="report",
            skip_missing=cfg.skip_missing,
        )

    try:
        video = build(cfg.clips, cfg.crops)
    except MissingVideosError as e:
        raise e.with_effect("to count them as unscored videos") from None
    clip = None if cfg.clips == 1 and cfg.crops == 1 else build(1, 1)
    return video, clip


def default_out_dir(checkpoint: str | os.PathLike, cfg: EvalConfig) -> Path:
    """``<checkpoint's folder>/eval-<dataset>-split<k>-<subset>`` (``eval-list-<list file name>`` for a
    list): where ``dsn evaluate`` writes by default (a run folder given as the checkpoint holds it itself)."""
    checkpoint = Path(checkpoint).resolve()
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    if cfg.dataset == "list":
        return folder / f"eval-list-{Path(cfg.list_file or 'list').stem}"
    return folder / f"eval-{cfg.dataset}-split{cfg.split}-{cfg.subset}"


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


def eval_config(config: EvalConfig | None = None, **options: Any) -> EvalConfig:
    """``config`` (default: the defaults) with keyword ``options`` (its fields) applied; a ``ValueError``
    listing the known options for an unknown one."""
    try:
        return replace(config, **options) if config is not None else EvalConfig(**options)
    except TypeError as e:
        known = ", ".join(f.name for f in fields(EvalConfig))
        raise ValueError(f"evaluate: {e}; known options: {known}") from None


def evaluate_checkpoint(path: str | os.PathLike, config: EvalConfig | None = None, **options: Any) -> EvalReport:
    """``dsn evaluate``: evaluate the checkpoint at ``path`` on a test split and write the report.

    ``config`` (an :class:`EvalConfig`) and/or keyword options (its fields: ``dataset``, ``data_root``,
    ``splits_dir``, ``split``, ``subset``, ``clips``, ``crops``, ...) say what to evaluate on.  The model,
    its class names and its preprocessing (clip length, crop, resize, mean/std) come from the checkpoint;
    the config's non-None preprocessing fields override them.  With ``out`` set, ``report.json`` and
    ``confusion.png`` are written there. (Files written by ``dsn export`` are evaluated by
    :func:`distilled_shufflenet.inference.evaluate.evaluate_file`.)
    """
    cfg = eval_config(config, **options)
    from distilled_shufflenet.checkpoint import CheckpointError
    from distilled_shufflenet.engine.checkpointing import LAST, load_checkpoint, resolve_checkpoint_path

    if Path(path).is_dir() and not (Path(path) / LAST).is_file():
        raise CheckpointError(f"checkpoint {path}: a folder without {LAST}; pass a checkpoint file, or the run "
                              "folder of a finished or stopped training run")
    path = resolve_checkpoint_path(path)  # a run folder means its last.pt
    model, checkpoint = load_checkpoint(path)
    return evaluate_model(path, model, checkpoint, cfg)


def evaluate_model(path: Path, model: nn.Module, checkpoint: dict[str, Any], config: EvalConfig, *,
                   input_shape: Sequence[int] | None = None, extra_info: dict[str, Any] | None = None) -> EvalReport:
    """Evaluate ``model``, read from ``path``, as :func:`evaluate_checkpoint` does: ``checkpoint`` holds
    the fields of a run checkpoint that evaluation reads (``model_name``, ``model_kwargs``, ``classes``,
    ``config["frame_stride"]``, ``epoch``) and ``model.preprocess`` the trained preprocessing.
    ``input_shape`` (C, T, H, W) is the one clip size a model takes (an ONNX file's), checked against the
    preprocessing before any video is read; ``extra_info`` goes into the report as it is."""
    cfg = config
    pre = _preprocess(checkpoint, model, cfg)
    if input_shape:
        _check_fixed_shape(path, input_shape, pre)
    # joins the process group under torchrun (so that only rank 0 writes), and checks device and precision
    # before any video is read
    rt = setup_runtime(cfg.device, cfg.precision)
    try:
        if cfg.out is not None and rt.is_main:  # before the evaluation, not after it
            check_writable_folder(cfg.out, "out")
            remove_stale_temporaries(cfg.out, recursive=False)
        report = _evaluate_loaded(path, model, checkpoint, pre, cfg)
        report.info.update(extra_info or {})
        if cfg.out is not None and rt.is_main:
            write_report(report, cfg.out)
    finally:
        teardown_runtime(rt)
    return report


def _check_fixed_shape(path: Path, shape: Sequence[int], pre: dict[str, Any]) -> None:
    """A model that takes clips of one size only (``shape``: C, T, H, W), as an ONNX file does."""
    _, frames, height, width = shape
    if (pre["clip_len"], pre["crop_size"], pre["crop_size"]) != (frames, height, width):
        raise ValueError(
            f"clip_len, crop_size: {path} takes clips of {frames} frames of {height} x {width} pixels only (fixed "
            f"when it was exported), not {pre['clip_len']} of {pre['crop_size']} x {pre['crop_size']}; leave "
            f"--clip-len and --crop-size out, or export the checkpoint again at the size you want"
        )


def _evaluate_loaded(
    path: Path, model: nn.Module, checkpoint: dict[str, Any], pre: dict[str, Any], cfg: EvalConfig
) -> EvalReport:
    trained_on = checkpoint.get("classes")
    dataset, clip_dataset = _build_datasets(cfg, pre, trained_on)
    classes = list(getattr(dataset, "classes", []))
    if trained_on and list(trained_on) != classes:
        pairs = enumerate(zip(trained_on, classes))
        diff = next((i for i, (a, b) in pairs if a != b), min(len(trained_on), len(classes)))
        raise ValueError(
            f"checkpoint {path}: its {len(trained_on)} classes differ from the {len(classes)} of {cfg.dataset} "
            f"split {cfg.split} (first difference at index {diff})"
        )
    report = evaluate(
        model,
        dataset,
        clip_dataset=clip_dataset,
        classes=classes,
        batch_size=cfg.batch_size,
        device=cfg.device,
        precision=cfg.precision,
        workers=cfg.workers,
        average=cfg.average,
        progress=cfg.progress,
    )
    report.info = {
        "checkpoint": str(path.resolve()),
        "model": {"name": checkpoint.get("model_name"), "kwargs": checkpoint.get("model_kwargs", {})},
        "checkpoint_epoch": checkpoint.get("epoch"),
        "dataset": {
            "kind": cfg.dataset,
            "root": str(Path(cfg.data_root).resolve()) if cfg.data_root else None,
            "list_file": None if cfg.list_file is None else str(Path(cfg.list_file).resolve()),
            "splits_dir": None if cfg.splits_dir is None else str(Path(cfg.splits_dir).resolve()),
            "split": cfg.split,
            "subset": cfg.subset,
            "videos": report.video.videos,
            "missing_files": len(getattr(dataset, "missing", None) or ()),
        },
        "views": {"clips": cfg.clips, "crops": cfg.crops, "per_video": cfg.clips * cfg.crops},
        "preprocess": pre,
        **report.info,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
    }
    return report
