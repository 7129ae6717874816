"""Supervised training (``dsn train``) and the loop that ``dsn finetune`` shares.

::

    train(config) -> run(config, ModelSpec)
        validate config -> runtime (device, precision, process group)
        probe the model on the meta device: preprocessing, can it take clip_len x crop x crop?
        datasets -> classes -> model (+ pretrained weights) -> fit()
    fit(model, train_set, val_set, config)
        every epoch: train_one_epoch -> validate -> schedule -> log.csv / curves.png -> last.pt, best.pt

Exact resumption: the order of the samples depends only on (seed, epoch) (:class:`EpochSampler`),
the random augmentation of a sample only on (seed, epoch, index) (:class:`SeededSamples`), and a
checkpoint stores the global generators, the optimiser, the scheduler and the running sums of the
epoch; a resumed run skips the batches already done and carries on as if it had never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from distilled_shufflenet._text import first_line
from distilled_shufflenet.data import FailureLog, build_dataset, collate_clips, eval_transform, train_transform
from distilled_shufflenet.engine.checkpointing import (
    BEST,
    CONFIG,
    LAST,
    TrainState,
    read_run_checkpoint,
    run_checkpoint,
    save_checkpoint,
    state_from_checkpoint,
)
from distilled_shufflenet.engine.config import TrainConfig
from distilled_shufflenet.engine.metrics import topk_correct
from distilled_shufflenet.engine.runtime import (
    EpochSampler,
    Runtime,
    SeededSamples,
    all_gather_objects,
    all_reduce_sums,
    broadcast_buffers,
    derive_seed,
    seed_everything,
    seed_worker,
    set_deterministic,
    set_rng_state,
    setup_runtime,
    teardown_runtime,
    unwrap,
    wrap_model,
)
from distilled_shufflenet.models import Preprocess, create_model, load_pretrained

LOG_COLUMNS = ("epoch", "step", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "lr",
               "clips_per_s", "data_wait_share")


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


@dataclass
class ModelSpec:
    """What to train: a registered model, its builder arguments and optional starting weights."""

    name: str
    kwargs: dict = field(default_factory=dict)
    weights: str | None = None
    drop_classifier: bool = False


@dataclass
class TrainResult:
    """What a finished (or stopped) run produced."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    epochs: int
    steps: int
    stopped: str  # "completed" | "early_stop" | "max_steps"
    best_val_top1: float | None
    metrics: dict[str, float]
    model: nn.Module
    is_main: bool = True


def make_loader(dataset: SeededSamples, sampler: Any, config: TrainConfig, rt: Runtime, *, train: bool,
                generator: torch.Generator | None = None) -> DataLoader:
    """The DataLoader of one epoch (workers are seeded; the last incomplete training batch is dropped)."""
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate_clips,
        pin_memory=rt.device.type == "cuda",
        drop_last=train,
        worker_init_fn=seed_worker,
        generator=generator,
    )


def build_datasets(config: TrainConfig, preprocess: Preprocess) -> tuple[Dataset, Dataset | None]:
    """The training set (random clips, training augmentation) and the validation set (centre clips,
    centre crops; the official test split of UCF101 / HMDB51, or ``val_list``), or ``None`` for it."""
    p = preprocess
    common: dict[str, Any] = dict(splits_dir=config.splits_dir, split=config.split, labels=True, clip_len=p.clip_len,
                                  frame_stride=config.frame_stride, on_error=config.on_error,
                                  skip_missing=config.skip_missing, seed=config.seed)
    train_set = build_dataset(config.dataset, config.data_root, subset="train", list_file=config.train_list,
                              sampling="random", transform=train_transform(p.crop_size, p.resize, p.mean, p.std),
                              **common)
    if len(train_set) == 0:
        raise ValueError(f"data_root: the training set of {config.dataset} in {config.data_root} is empty")
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


def _with_classes(spec: ModelSpec, num_classes: int, *, resumed: bool) -> dict:
    kwargs = dict(spec.kwargs)
    given = kwargs.get("num_classes")
    if given is not None and given != num_classes:
        field_name = "resume" if resumed else "model_kwargs.num_classes"
        raise ValueError(f"{field_name}: the model has {given} classes but the dataset has {num_classes}")
    kwargs["num_classes"] = num_classes
    return kwargs


# --------------------------------------------------------------------------- optimisation
def build_optimizer(params: Sequence[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(params, lr=config.lr, betas=tuple(config.betas), weight_decay=config.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig) -> Any:
    """Stepped once per epoch; ``plateau`` is given the monitored loss."""
    if config.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=config.gamma,
                                                          patience=config.plateau_patience)
    if config.scheduler == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    if config.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    return None


def set_train_mode(model: nn.Module, *, probe: bool) -> None:
    """Training mode; for a linear probe only the classifier (the frozen backbone's BatchNorm keeps its
    statistics and dropout stays off)."""
    model.train()
    if probe:
        model.eval()
        getattr(unwrap(model), unwrap(model).classifier_name).train()


# --------------------------------------------------------------------------- logging
class RunLog:
    """``log.csv`` (one row per epoch), TensorBoard events when available, ``curves.png``."""

    def __init__(self, run_dir: Path, *, enabled: bool, tensorboard: bool, plots: bool,
                 resume_step: int | None) -> None:
        self.csv = run_dir / "log.csv"
        self.png = run_dir / "curves.png"
        self.enabled = enabled
        self.plots = plots
        self.writer = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None and self.csv.exists():
            # rows written after the checkpoint we resume from would be written again
            lines = self.csv.read_text().splitlines()
            kept = lines[:1] + [ln for ln in lines[1:] if ln and int(float(ln.split(",")[1])) <= resume_step]
            self.csv.write_text("\n".join(kept) + "\n")
        if not self.csv.exists() or resume_step is None:
            self.csv.write_text(",".join(LOG_COLUMNS) + "\n")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=resume_step)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def row(self, row: dict[str, float]) -> None:
        if not self.enabled:
            return
        cells = ["" if row.get(c) is None else str(int(row[c])) if c in ("epoch", "step") else f"{row[c]:.6g}"
                 for c in LOG_COLUMNS]
        with self.csv.open("a") as f:
            f.write(",".join(cells) + "\n")
        for key in LOG_COLUMNS[2:]:
            if row.get(key) is not None:
                self.scalar(f"epoch/{key}", row[key], int(row["step"]))
        if not self.plots:
            return
        try:
            from distilled_shufflenet.engine.plots import plot_curves

            plot_curves(self.csv, self.png)
        except Exception as e:  # a figure must never stop a training run
            print(f"warning: could not draw {self.png}: {e}", file=sys.stderr)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# --------------------------------------------------------------------------- top level
def train(config: TrainConfig) -> TrainResult:
    """``dsn train``: supervised training of ``config.model`` (from scratch, or from ``config.init``)."""
    spec = ModelSpec(config.model, dict(config.model_kwargs), config.init, config.drop_classifier)
    return run(config, spec)


def run(config: TrainConfig, spec: ModelSpec) -> TrainResult:
    """Validate everything, build the datasets and the model, then :func:`fit`.

    Every check (config values, paths, device, precision, clip size the model can take, class counts)
    happens before the first training step.
    """
    config.validate()
    resume = read_run_checkpoint(config.resume) if config.resume else None
    if resume is not None:
        spec = ModelSpec(resume["model_name"], dict(resume["model_kwargs"]))
    rt = setup_runtime(config.device, config.precision, channels_last=config.channels_last)
    try:
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
        train_set, val_set = build_datasets(config, preprocess)
        classes = [str(c) for c in train_set.classes]
        kwargs = _with_classes(spec, len(classes), resumed=resume is not None)
        seed_everything(config.seed)
        model = create_model(spec.name, **kwargs)
        if spec.weights and resume is None:
            report = load_pretrained(model, spec.weights, strict=True, drop_classifier=spec.drop_classifier)
            if rt.is_main:
                new_head = report["dropped"] or report["missing"]
                print(f"loaded {spec.weights}" + (f"; new classifier for {len(classes)} classes" if new_head else ""))
        return fit(model, train_set, val_set, config, classes=classes, preprocess=preprocess, runtime=rt,
                   resume=resume)
    finally:
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
) -> TrainResult:
    """Train ``model`` (built by :func:`create_model`) on ready datasets, writing the run folder
    ``config.output``.  ``resume`` (a checkpoint dict; read from ``config.resume`` when not given)
    restores every state so the run continues exactly.  Raises :class:`NonFiniteLossError` when the loss
    becomes NaN or infinite, keeping the last checkpoint as it was."""
    rt = runtime or setup_runtime(config.device, config.precision, channels_last=config.channels_last)
    if resume is None and config.resume:
        resume = read_run_checkpoint(config.resume)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    set_deterministic(config.deterministic)
    log = None
    try:
        run_dir = Path(config.output)
        preprocess = preprocess or model.preprocess
        probe = bool(getattr(config, "freeze_backbone", False))
        head = model.classifier_name
        for name, p in model.named_parameters():
            p.requires_grad_(not probe or name.startswith(head + "."))
        state = TrainState()
        if resume is not None:
            model.load_state_dict(resume["state_dict"], strict=True)
            state = state_from_checkpoint(resume, batch_size=config.batch_size, world_size=rt.world_size)
        net = wrap_model(model, rt, sync_bn=config.sync_bn)
        optimizer = build_optimizer([p for p in net.parameters() if p.requires_grad], config)
        scheduler = build_scheduler(optimizer, config)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            if scheduler is not None and resume.get("scheduler") is not None:
                scheduler.load_state_dict(resume["scheduler"])
            if resume.get("scaler"):
                rt.scaler.load_state_dict(resume["scaler"])
        train_data = SeededSamples(train_set, config.seed)
        sampler = EpochSampler(train_data, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=config.seed)
        steps_per_epoch = len(sampler) // config.batch_size
        if steps_per_epoch == 0:
            raise ValueError(f"batch_size: {config.batch_size} is larger than the {len(sampler)} training clips "
                             f"of each of the {rt.world_size} process(es)")
        val_loader = None
        if val_set is not None:
            shard = list(range(rt.rank, len(val_set), rt.world_size))  # type: ignore[arg-type]
            val_loader = make_loader(SeededSamples(val_set, config.seed), shard, config, rt, train=False)
        criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        log = RunLog(run_dir, enabled=rt.is_main, tensorboard=config.tensorboard, plots=config.plots,
                     resume_step=state.step if resume is not None else None)
        if rt.is_main:
            config.save_yaml(run_dir / CONFIG)

        def save(metrics: dict[str, float], *, best: bool = False) -> None:
            # every rank takes part (its generator states are gathered); rank 0 writes
            ckpt = run_checkpoint(net, optimizer, scheduler, rt, state, config, classes, preprocess, metrics)
            if rt.is_main:
                save_checkpoint(run_dir / LAST, ckpt)
                if best:
                    save_checkpoint(run_dir / BEST, ckpt)

        # per-rank randomness (dropout) differs; a resumed run takes its generators back
        seed_everything(derive_seed(config.seed, rt.rank))
        if resume is not None:
            rng = resume.get("rng") or []
            if len(rng) == rt.world_size:
                set_rng_state(rng[rt.rank])
            elif rt.is_main:
                print(f"warning: resuming on {rt.world_size} process(es) a run saved on {len(rng)}; "
                      "the random streams will differ", file=sys.stderr)
        metrics: dict[str, float] = dict(resume.get("metrics") or {}) if resume else {}
        stopped = "completed"
        while state.epoch < config.epochs:
            if config.max_steps and state.step >= config.max_steps:  # a resumed run already at its budget
                stopped = "max_steps"
                break
            epoch = state.epoch
            sampler.set_epoch(epoch, start=state.epoch_step * config.batch_size)
            train_data.set_epoch(epoch)
            loader = make_loader(train_data, sampler, config, rt, train=True,
                                 generator=torch.Generator().manual_seed(derive_seed(config.seed, epoch, rt.rank)))
            set_train_mode(net, probe=probe)
            outcome = train_one_epoch(net, loader, optimizer, criterion, rt, state, config, log,
                                      steps_per_epoch=steps_per_epoch, save=lambda: save(metrics))
            if outcome == "max_steps":
                stopped = "max_steps"
                break
            metrics, improved, stop = _end_epoch(net, val_loader, optimizer, scheduler, rt, state, config)
            log.row(metrics)
            if rt.is_main:
                tqdm.write(_summary(metrics, config.epochs))
            save(metrics, best=improved)
            if stop:
                stopped = "early_stop"
                if rt.is_main:
                    tqdm.write(f"early stopping: no lower loss for {state.bad_epochs} epochs")
                break
        best = run_dir / BEST
        return TrainResult(run_dir, run_dir / LAST, best if best.exists() else None, state.epoch, state.step, stopped,
                           state.best_top1 if state.best_top1 > -math.inf else None, metrics, unwrap(net), rt.is_main)
    finally:
        if log is not None:
            log.close()
        set_deterministic(was_deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if runtime is None:
            teardown_runtime(rt)


def train_one_epoch(net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                    rt: Runtime, state: TrainState, config: TrainConfig, log: RunLog, *, steps_per_epoch: int,
                    save: Any) -> str | None:
    """Train on the batches of one epoch not done yet.  Returns ``"max_steps"`` when the step budget ran
    out mid-epoch (after writing a checkpoint), else ``None``.  Writes a checkpoint every
    ``checkpoint_every`` steps; the time spent waiting for the DataLoader is measured apart."""
    failures = FailureLog()
    m = state.meters
    bar = tqdm(total=steps_per_epoch, initial=state.epoch_step, desc=f"epoch {state.epoch + 1}/{config.epochs}",
               unit="batch", dynamic_ncols=True, leave=False, disable=not (rt.is_main and config.progress))
    last = Path(config.output) / LAST
    batches = iter(loader)
    tick = time.perf_counter()
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            got = time.perf_counter()
            failures.add(batch)
            if not _all_have_clips(batch, rt):  # every sample of a batch failed to load: skip the step
                tick = got
                continue
            clips, labels = rt.to_device(batch["clip"]), batch["label"].to(rt.device, non_blocking=True)
            with rt.autocast():
                logits = net(clips)  # (N, num_classes)
            loss = criterion(logits.float(), labels)
            n = labels.numel()
            hits = topk_correct(logits.detach().float(), labels, ks=(1,))[1]
            value = float(loss.detach())
            loss_sum, clips_n, correct, bad = all_reduce_sums([value * n, n, hits, 0.0 if math.isfinite(value) else 1.0],
                                                              rt)
            if bad:
                where = f"step {state.step + 1} (epoch {state.epoch + 1}, batch {state.epoch_step + 1})"
                what = f"{value}" if not math.isfinite(value) else "NaN or infinite on another process"
                kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint had been written"
                raise NonFiniteLossError(f"the training loss became {what} at {where}; the run stopped and {kept}")
            optimizer.zero_grad(set_to_none=True)
            rt.scaler.scale(loss).backward()
            if config.grad_clip:
                rt.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
            rt.scaler.step(optimizer)
            rt.scaler.update()
            done = time.perf_counter()
            state.step += 1
            state.epoch_step += 1
            m["loss"] += loss_sum
            m["clips"] += clips_n
            m["correct"] += correct
            m["wait"] += got - tick
            m["time"] += done - tick
            tick = done
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / max(clips_n, 1):.4f}", clips_s=f"{m['clips'] / m['time']:.1f}",
                            wait=f"{m['wait'] / m['time']:.0%}")
            log.scalar("step/train_loss", loss_sum / max(clips_n, 1), state.step)
            if state.epoch_step == steps_per_epoch:
                break  # the epoch end validates and writes the checkpoint
            if config.max_steps and state.step >= config.max_steps:
                save()
                return "max_steps"
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                save()
    finally:
        bar.close()
    if rt.is_main and len(failures):
        tqdm.write(f"epoch {state.epoch + 1}: {failures.summary()}")
    return None


def _all_have_clips(batch: dict[str, Any], rt: Runtime) -> bool:
    have = "clip" in batch
    if not rt.distributed:
        return have
    # the processes must agree, or those with a batch would wait for the others' gradients forever
    return all_reduce_sums([0.0 if have else 1.0], rt)[0] == 0


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


# --------------------------------------------------------------------------- epoch end and checkpoints
def _end_epoch(net: nn.Module, val_loader: DataLoader | None, optimizer: torch.optim.Optimizer, scheduler: Any,
               rt: Runtime, state: TrainState, config: TrainConfig) -> tuple[dict[str, float], bool, bool]:
    """Validate, step the schedule, update the best / early-stopping counters and start the next epoch.
    Returns ``(log row, best top-1 improved, stop early)``."""
    m = state.meters
    clips = max(m["clips"], 1.0)
    row: dict[str, Any] = {
        "epoch": state.epoch + 1, "step": state.step, "train_loss": m["loss"] / clips,
        "train_top1": 100.0 * m["correct"] / clips, "val_loss": None, "val_top1": None, "val_top5": None,
        "lr": optimizer.param_groups[0]["lr"],
        "clips_per_s": m["clips"] / m["time"] if m["time"] else None,
        "data_wait_share": m["wait"] / m["time"] if m["time"] else None,
    }
    broadcast_buffers(net, rt)
    if val_loader is not None:
        row.update(validate(unwrap(net), val_loader, rt))
    monitored = row["val_loss"] if row["val_loss"] is not None else row["train_loss"]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    elif scheduler is not None:
        scheduler.step()
    improved = row["val_top1"] is not None and row["val_top1"] > state.best_top1
    if improved:
        state.best_top1, state.best_epoch = row["val_top1"], state.epoch + 1
    if monitored < state.best_loss:
        state.best_loss, state.bad_epochs = monitored, 0
    else:
        state.bad_epochs += 1
    stop = bool(config.early_stop_patience) and state.bad_epochs >= config.early_stop_patience
    state.epoch += 1
    state.epoch_step = 0
    state.meters = TrainState().meters
    return row, improved, stop


def _summary(row: dict[str, Any], epochs: int) -> str:
    text = f"epoch {row['epoch']}/{epochs}  train loss {row['train_loss']:.4f} top-1 {row['train_top1']:.1f}%"
    if row.get("val_loss") is not None:
        text += f"  val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.1f}% top-5 {row['val_top5']:.1f}%"
    text += f"  lr {row['lr']:.3g}"
    if row.get("clips_per_s") is not None:
        text += f"  {row['clips_per_s']:.1f} clips/s  data wait {row['data_wait_share']:.0%}"
    return text
