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
two models scored on the same split can be compared video by video (:func:`~distilled_shufflenet.engine.eval_report.paired_top1_margin`).

Library: :func:`evaluate` scores a built model on built datasets (the report and its files are
:mod:`distilled_shufflenet.engine.eval_report`'s); :func:`evaluate_checkpoint` does the
whole ``dsn evaluate``: load a checkpoint, build the datasets from its preprocessing, evaluate, and write
``report.json`` and ``confusion.png``.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from distilled_shufflenet.data.factory import LABELLED_KINDS
from distilled_shufflenet.engine.eval_report import (
    AVERAGES,
    CONFUSION_NAME,
    REPORT_NAME,
    EvalReport,
    report_from_meters,
    write_report,
)
from distilled_shufflenet.engine.metrics import VideoScoreMeter
from distilled_shufflenet.engine.runtime import DEVICES, PRECISIONS, Runtime, default_workers, setup_runtime, teardown_runtime
from distilled_shufflenet.io import check_writable_folder, remove_stale_temporaries
from distilled_shufflenet.options import option

# labelled dataset kinds (those of dsn train)
EVAL_DATASETS = LABELLED_KINDS
_PREPROCESSING = "preprocessing (default: the checkpoint's)"  # the help's heading of the overrides


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

    return report_from_meters(dataset, classes, video_meter, clip_meter, average=average,
                              seconds=time.perf_counter() - start,
                              info={"device": str(rt.device), "precision": precision, "batch_size": batch_size})


# --------------------------------------------------------------------------- from a checkpoint
@dataclass
class EvalConfig:
    """Settings of ``dsn evaluate``; preprocessing fields left as None come from the checkpoint.

    The video level defaults to 10 uniformly spaced clips x 3 crops per video (30 views).  A listed video
    missing from disk is an error, unless ``skip_missing``: then it is one more unscored video.
    ``dataset`` is ``ucf101`` / ``hmdb51`` (official split files) or ``list`` (the ``path,label`` lines of
    ``list_file``, paths relative to ``data_root``, by default the list's folder), as for ``dsn train``.
    """

    dataset: str = option("ucf101", "dataset layout: official split files (ucf101, hmdb51) or a list file",
                          choices=EVAL_DATASETS)
    data_root: str = option("", "folder holding the dataset's videos (--dataset list: default the list file's folder)")
    list_file: str | None = option(None, "with --dataset list: CSV or text file of 'path,label' lines")
    splits_dir: str | None = option(None, "folder of the official split files (default: in --data-root)")
    split: int = option(1, "official split", choices=(1, 2, 3))
    subset: str = option("test", "side of the split", choices=("train", "test"))
    clips: int = option(10, "clips per video at video level")
    crops: int = option(3, "crops per clip at video level", choices=(1, 3))
    # None: the stride the checkpoint was trained with
    frame_stride: int | None = option(None, "take every n-th frame (default: the stride the checkpoint was "
                                      "trained with)", group=_PREPROCESSING)
    batch_size: int = option(8, "videos per batch, and clips per forward pass")
    workers: int = option(help="data-loading processes", default_factory=default_workers)
    device: str = option("auto", "auto = cuda when a GPU is visible", choices=DEVICES)
    precision: str = option("fp32", "autocast precision", choices=PRECISIONS)
    average: str = option("prob", "what is averaged over the views of a video", choices=tuple(AVERAGES))
    out: str | None = option(None, f"folder for {REPORT_NAME} and {CONFUSION_NAME} "
                             "(default: eval-<dataset>-split<k>-<subset> beside the checkpoint)")
    skip_missing: bool = option(False, "count listed videos missing from disk as unscored instead of stopping "
                                "with an error")
    progress: bool = option(True, "a progress bar on stderr")
    # overrides of the checkpoint's preprocessing
    clip_len: int | None = option(None, "frames per clip", group=_PREPROCESSING)
    crop_size: int | None = option(None, "square crop side in pixels", group=_PREPROCESSING)
    resize: int | None = option(None, "short side in pixels before cropping", group=_PREPROCESSING)
    mean: tuple[float, float, float] | None = option(None, "normalisation mean", metavar=("R", "G", "B"),
                                                     group=_PREPROCESSING)
    std: tuple[float, float, float] | None = option(None, "normalisation std", metavar=("R", "G", "B"),
                                                    group=_PREPROCESSING)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
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
