"""Supervised training (``dsn train``), the objective ``dsn finetune`` shares, and validation.

::

    train(config) -> run(config, ModelInit)
        validate config -> runtime (device, precision, process group)
        probe the model on the meta device: preprocessing, can it take clip_len x crop x crop?
        datasets -> classes -> model (+ pretrained weights) -> loop.fit(..., Classification())

    datasets: the training videos -> (kept, validation) when --val-fraction carves a validation split
              kept -> its labelled share when --label-fraction < 1 (data.groups.labelled_subset)

The loop itself (checkpoints, exact resume, signals, logging) is :mod:`distilled_shufflenet.engine.loop`;
:class:`Classification` is the objective it runs here: cross-entropy on the labels, top-1 reported.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from distilled_shufflenet._text import first_line
from distilled_shufflenet.data import FailureLog, LabelledVideoClips, build_dataset, eval_transform, train_transform
from distilled_shufflenet.data.groups import group_of, holdout, labelled_subset
from distilled_shufflenet.engine.checkpointing import read_run_checkpoint
from distilled_shufflenet.engine.config import TrainConfig
from distilled_shufflenet.engine.lock import RunLock
from distilled_shufflenet.engine.loop import FitResult, NonFiniteLossError, RunInterrupted, make_loader
from distilled_shufflenet.engine.loop import fit as fit_objective
from distilled_shufflenet.engine.objective import Objective, StepResult
from distilled_shufflenet.engine.metrics import topk_correct
from distilled_shufflenet.engine.runtime import (
    Runtime,
    all_gather_objects,
    all_reduce_sums,
    seed_everything,
    setup_runtime,
    teardown_runtime,
    unwrap,
)
from distilled_shufflenet.models import Preprocess, create_model, load_pretrained

__all__ = ["Classification", "ModelInit", "NonFiniteLossError", "RunInterrupted", "TrainResult", "build_datasets",
           "fit", "make_loader", "run", "take_labelled", "train", "validate"]


@dataclass
class ModelInit:
    """What to train and how it starts: a registered model, its builder arguments and optional starting
    weights (``TrainConfig``'s ``model``, ``model_kwargs``, ``init`` and ``drop_classifier``)."""

    name: str
    kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    drop_classifier: bool = False


@dataclass
class TrainResult(FitResult):
    """What a finished (or stopped) supervised run produced; ``best_val_top1`` chose ``best.pt``."""

    @property
    def best_val_top1(self) -> float | None:
        return self.best_score


class Classification(Objective):
    """Cross-entropy on the labels; reports training top-1, validation loss, top-1 and top-5 (in %).

    ``probe=True`` is a linear probe: only the classifier is put in training mode (the frozen backbone's
    BatchNorm keeps its statistics and dropout stays off).  ``labelled`` (what :func:`take_labelled`
    took) goes into every checkpoint as ``labelled_subset``."""

    train_columns = ("top1",)
    val_columns = ("val_loss", "val_top1", "val_top5", "val_unscored")
    monitor = "val_top1"
    higher_is_better = True

    def __init__(self, *, label_smoothing: float = 0.0, probe: bool = False,
                 labelled: dict[str, Any] | None = None) -> None:
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.probe = probe
        self.labelled = labelled

    def step(self, net: nn.Module, batch: dict[str, Any], rt: Runtime) -> StepResult:
        clips, labels = rt.to_device(batch["clip"]), batch["label"].to(rt.device, non_blocking=True)
        with rt.autocast():
            logits = net(clips)  # (N, num_classes)
        loss = self.criterion(logits.float(), labels)
        hits = topk_correct(logits.detach().float(), labels, ks=(1,))[1]
        return StepResult(loss, labels.numel(), {"top1": 100.0 * hits})

    def validate(self, model: nn.Module, loader: DataLoader, rt: Runtime) -> dict[str, float]:
        return validate(model, loader, rt)

    def set_train_mode(self, net: nn.Module) -> None:
        set_train_mode(net, probe=self.probe)

    def checkpoint_extras(self) -> dict[str, Any]:
        return {} if self.labelled is None else {"labelled_subset": dict(self.labelled)}


def build_datasets(config: TrainConfig, preprocess: Preprocess) -> tuple[Dataset, Dataset | None]:
    """The training set (random clips, training augmentation) and the validation set (centre clips,
    centre crops; the official test split of UCF101 / HMDB51, ``val_list``, or the held-out training
    groups of ``val_fraction``), or ``None`` for it.  With ``label_fraction`` below 1 the training set is
    its labelled share (:func:`take_labelled`), drawn from what the validation split left."""
    train_set, val_set, _ = _datasets(config, preprocess)
    return train_set, val_set


def _datasets(config: TrainConfig, preprocess: Preprocess) -> tuple[Dataset, Dataset | None, dict[str, Any] | None]:
    """:func:`build_datasets` and what the labelled share took (None with every label)."""
    train_set, val_set = _all_datasets(config, preprocess)
    if config.label_fraction >= 1:
        return train_set, val_set, None
    train_set, taken = take_labelled(train_set, config.label_fraction, config.label_seed)  # type: ignore[arg-type]
    return train_set, val_set, taken


def _all_datasets(config: TrainConfig, preprocess: Preprocess) -> tuple[Dataset, Dataset | None]:
    p = preprocess
    common: dict[str, Any] = dict(splits_dir=config.splits_dir, split=config.split, labels=True, clip_len=p.clip_len,
                                  frame_stride=config.frame_stride, on_error=config.on_error,
                                  skip_missing=config.skip_missing, seed=config.seed)
    train_set = build_dataset(config.dataset, config.data_root, subset="train", list_file=config.train_list,
                              sampling="random", transform=train_transform(p.crop_size, p.resize, p.mean, p.std),
                              **common)
    if len(train_set) == 0:
        raise ValueError(f"data_root: the training set of {config.dataset} in {config.data_root} is empty")
    if config.val_fraction and config.validation:
        return carve_validation(train_set, config.val_fraction, config.seed, eval_transform(p.crop_size, p.resize,
                                                                                            p.mean, p.std))
    if not config.validation or (config.dataset == "list" and config.val_list is None):
        return train_set, None
    if config.dataset == "list":
        common["classes"] = list(train_set.classes)
    # validation never replaces an unreadable video by another: it is reported and counted as wrong
    val_set = build_dataset(config.dataset, config.data_root, subset="test", list_file=config.val_list,
                            sampling="center", transform=eval_transform(p.crop_size, p.resize, p.mean, p.std),
                            **{**common, "on_error": "report"})
    if list(val_set.classes) != list(train_set.classes):
        raise ValueError(
            f"val_list: the validation set has {len(val_set.classes)} classes that differ from the training "
            f"set's {len(train_set.classes)}"
        )
    return train_set, val_set


def carve_validation(train_set: LabelledVideoClips, fraction: float, seed: int,
                     transform: Any) -> tuple[LabelledVideoClips, LabelledVideoClips]:
    """Hold out ``fraction`` of a labelled training set, by whole actor groups (:func:`holdout`), as a
    validation set of centre clips: what chooses ``best.pt`` and drives the plateau schedule is then
    never the test split."""
    kept, held = holdout(train_set.paths, fraction, seed)
    by_path = {r.path: r for r in train_set.records}
    options = train_set.options.as_kwargs()
    source = train_set.source
    train = LabelledVideoClips([by_path[p] for p in kept], train_set.classes, source=f"{source} (training part)",
                               **options)
    options.update(sampling="center", transform=transform, on_error="report")  # never replaced: reported
    val = LabelledVideoClips([by_path[p] for p in held], train_set.classes, source=f"{source} (held-out groups)",
                             **options)
    return train, val


def take_labelled(train_set: LabelledVideoClips, fraction: float,
                  seed: int) -> tuple[LabelledVideoClips, dict[str, Any]]:
    """The labelled share of a training set (:func:`~distilled_shufflenet.data.groups.labelled_subset`:
    seeded, about ``fraction`` of each class, by whole actor groups) as a dataset of its own, and what was
    taken (the fraction, the seed, the videos per class and the actor groups), which the checkpoints record."""
    try:
        chosen = labelled_subset(train_set.records, fraction, seed, classes=train_set.classes)
    except ValueError as e:
        raise ValueError(f"label_fraction: {str(e).removeprefix('fraction: ')} (--label-fraction {fraction}, "
                         f"--label-seed {seed}, of the {len(train_set)} training videos of "
                         f"{train_set.source})") from None
    subset = LabelledVideoClips(chosen, train_set.classes, source=f"{train_set.source} (labelled share)",
                                **train_set.options.as_kwargs())
    counts = Counter(int(r.label) for r in chosen)  # type: ignore[arg-type]
    taken = {
        "label_fraction": fraction,
        "label_seed": seed,
        "videos": len(chosen),
        "of_videos": len(train_set.records),
        "per_class": {name: counts.get(i, 0) for i, name in enumerate(train_set.classes)},
        "groups": sorted({g for r in chosen if (g := group_of(r.path)) is not None}) or None,
    }
    return subset, taken


# --------------------------------------------------------------------------- model
def resolve_preprocess(model: nn.Module, config: TrainConfig) -> Preprocess:
    """The model's preprocessing with the config's ``clip_len`` / ``crop_size`` / ``resize`` applied."""
    return model.preprocess.override(clip_len=config.clip_len, crop_size=config.crop_size, resize=config.resize)


def check_model_input(model: nn.Module, preprocess: Preprocess) -> None:
    """Raise ``ValueError`` naming ``clip_len`` / ``crop_size`` unless ``model`` takes such clips.

    Runs the model's own input and head checks on the meta device (shapes only, no arithmetic), so it
    is free even for a large model.
    """
    p = preprocess
    meta = {k: torch.empty_like(v, device="meta") for k, v in model.state_dict().items()}
    x = torch.empty(1, getattr(model, "in_channels", 3), p.clip_len, p.crop_size, p.crop_size, device="meta")
    was_training = model.training
    try:
        with torch.no_grad():
            torch.func.functional_call(model.eval(), meta, (x,))
    except (ValueError, RuntimeError) as e:
        first = first_line(e)
        raise ValueError(
            f"clip_len / crop_size: {getattr(model, 'model_name', type(model).__name__)} cannot take clips of "
            f"{p.clip_len} x {p.crop_size} x {p.crop_size}: {first}"
        ) from None
    finally:
        model.train(was_training)


def _with_classes(spec: ModelInit, num_classes: int, *, resumed: bool) -> dict:
    kwargs = dict(spec.kwargs)
    given = kwargs.get("num_classes")
    if given is not None and given != num_classes:
        field_name = "resume" if resumed else "model_kwargs.num_classes"
        raise ValueError(f"{field_name}: the model has {given} classes but the dataset has {num_classes}")
    kwargs["num_classes"] = num_classes
    return kwargs


def set_train_mode(model: nn.Module, *, probe: bool) -> None:
    """Training mode; for a linear probe only the classifier (the frozen backbone's BatchNorm keeps its
    statistics and dropout stays off)."""
    model.train()
    if probe:
        model.eval()
        getattr(unwrap(model), unwrap(model).classifier_name).train()


# --------------------------------------------------------------------------- top level
def train(config: TrainConfig) -> TrainResult:
    """``dsn train``: supervised training of ``config.model`` (from scratch, or from ``config.init``)."""
    spec = ModelInit(config.model, dict(config.model_kwargs), config.init, config.drop_classifier)
    return run(config, spec)


def run(config: TrainConfig, spec: ModelInit) -> TrainResult:
    """Validate everything, build the datasets and the model, then :func:`fit`.

    Every check (config values, paths, device, precision, clip size the model can take, class counts)
    happens before the first training step.
    """
    config.validate()
    resume = read_run_checkpoint(config.resume) if config.resume else None
    if resume is not None:
        spec = ModelInit(resume["model_name"], dict(resume["model_kwargs"]))
    rt = setup_runtime(config.device, config.precision, channels_last=config.channels_last)
    lock = RunLock(config.output, command=f"dsn {config.command}") if rt.is_main else None  # before any work
    try:
        if lock is not None:
            lock.acquire()
        if config.sync_bn and rt.distributed and rt.device.type != "cuda":
            raise ValueError("sync_bn: SyncBatchNorm needs CUDA devices (it is not implemented for CPU processes)")
        try:
            with torch.device("meta"):  # shapes only: free even for a large model
                probe = create_model(spec.name, **spec.kwargs)
        except (TypeError, ValueError) as e:
            raise ValueError(f"model_kwargs: {spec.name} cannot be built with {spec.kwargs}: {e}") from None
        preprocess = resolve_preprocess(probe, config)
        check_model_input(probe, preprocess)
        del probe
        # the saved config states the clip size used, not "the model's default"
        config = dataclasses.replace(config, clip_len=preprocess.clip_len, crop_size=preprocess.crop_size,
                                     resize=preprocess.resize)
        train_set, val_set, labelled = _datasets(config, preprocess)
        classes = [str(c) for c in train_set.classes]
        if labelled is not None and rt.is_main:
            n = len(labelled["groups"] or ())
            groups = f", from {n} actor group{'s' if n != 1 else ''}" if n else ""
            print(f"labelled share: {labelled['videos']} of {labelled['of_videos']} training videos{groups} "
                  f"(--label-fraction {config.label_fraction}, --label-seed {config.label_seed})")
        kwargs = _with_classes(spec, len(classes), resumed=resume is not None)
        seed_everything(config.seed)
        model = create_model(spec.name, **kwargs)
        if spec.weights and resume is None:
            report = load_pretrained(model, spec.weights, strict=True, drop_classifier=spec.drop_classifier)
            if rt.is_main:
                new_head = report["dropped"] or report["missing"]
                print(f"loaded {spec.weights}" + (f"; new classifier for {len(classes)} classes" if new_head else ""))
        return fit(model, train_set, val_set, config, classes=classes, preprocess=preprocess, runtime=rt,
                   resume=resume, labelled=labelled)
    finally:
        if lock is not None:
            lock.release()
        teardown_runtime(rt)


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: TrainConfig,
    *,
    classes: Sequence[str],
    preprocess: Preprocess | None = None,
    runtime: Runtime | None = None,
    resume: dict | None = None,
    labelled: dict[str, Any] | None = None,
) -> TrainResult:
    """Supervised training of ``model`` on ready datasets, writing the run folder ``config.output``
    (the loop of :func:`distilled_shufflenet.engine.loop.fit` with the :class:`Classification` objective).
    ``config.freeze_backbone`` (fine-tuning's ``--linear-probe``) trains the classifier alone: every other
    parameter frozen and every other module in eval mode, so BatchNorm statistics stay as they were.
    ``labelled`` (what :func:`take_labelled` took) is recorded in the checkpoints."""
    probe = bool(getattr(config, "freeze_backbone", False))
    head = model.classifier_name
    objective = Classification(label_smoothing=config.label_smoothing, probe=probe, labelled=labelled)
    result = fit_objective(model, train_set, val_set, config, objective, classes=classes, preprocess=preprocess,
                           runtime=runtime, resume=resume,
                           trainable=(lambda name: name.startswith(head + ".")) if probe else None)
    return TrainResult(**{f.name: getattr(result, f.name) for f in dataclasses.fields(FitResult)})


@torch.no_grad()
def validate(model: nn.Module, loader: DataLoader, rt: Runtime) -> dict[str, float]:
    """Clip-level validation, counted as ``dsn evaluate`` counts it, summed over all ranks.

    ``val_loss`` (plain cross-entropy) is over the videos read; ``val_top1`` / ``val_top5`` (in %) are over
    every validation video, an unreadable one counting as wrong; ``val_unscored`` counts those.  The
    loader's dataset must report unreadable videos (``on_error="report"``), never replace them; each one
    is printed with its path and reason.
    """
    model.eval()
    failures = FailureLog()
    loss_sum = top1 = top5 = count = 0.0
    for batch in loader:
        failures.add(batch)
        if "clip" not in batch:
            continue
        clips, labels = rt.to_device(batch["clip"]), batch["label"].to(rt.device)
        with rt.autocast():
            logits = model(clips).float()  # (N, num_classes)
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hits = topk_correct(logits, labels, ks=(1, 5))
        top1, top5, count = top1 + hits[1], top5 + hits[5], count + labels.numel()
    failed = {f["index"]: f for f in failures.entries}  # this rank's unreadable videos
    loss_sum, top1, top5, count, unscored = all_reduce_sums([loss_sum, top1, top5, count, float(len(failed))], rt)
    if rt.distributed:
        failed = {i: f for part in all_gather_objects(failed, rt) for i, f in part.items()}
    if rt.is_main and failed:
        lines = [f"  {f['path']}: {f['reason']}" for f in list(failed.values())[:20]]
        more = [f"  ... and {len(failed) - 20} more"] if len(failed) > 20 else []
        tqdm.write("\n".join([f"validation: {len(failed)} of {int(count + unscored)} videos could not be read "
                               "and count as wrong:", *lines, *more]))
    if count == 0:
        raise ValueError("validation: no video of the validation set could be read")
    videos = count + unscored
    return {"val_loss": loss_sum / count, "val_top1": 100.0 * top1 / videos, "val_top5": 100.0 * top5 / videos,
            "val_unscored": unscored}

