"""The one training loop of the project; the :class:`~distilled_shufflenet.engine.objective.Objective` it is
given says what a step computes, :mod:`~distilled_shufflenet.engine.runlog` records the run and
:mod:`~distilled_shufflenet.engine.optim` builds the optimiser and its schedule.

::

    fit(model, train_set, val_set, config, objective)
        lock the run folder -> restore a checkpoint (exact resume) -> wrap objective.network(model) in DDP
        every epoch:
            train_one_epoch: batches -> objective.step -> backward -> optimiser; checkpoint every N steps;
                             NaN / SIGINT / SIGTERM stop it with a checkpoint
            end of epoch:    objective.validate -> schedule -> log.csv / curves.png -> last.pt, best.pt

The loop owns batches, devices, precision, checkpoints, resume, logging, signals and failure reports;
an objective owns what one step computes and which figures it reports.  Supervised classification
(``dsn train`` / ``dsn finetune``, in :mod:`~distilled_shufflenet.engine.train`) and feature
distillation (``dsn distill``) are objectives of this loop.

Exact resumption: the order of the samples depends only on (seed, epoch) (:class:`EpochSampler`),
the random augmentation of a sample only on (seed, epoch, index) (:class:`SeededSamples`), and a
checkpoint stores the global generators, the optimiser, the scheduler and the running sums of the
epoch; a resumed run skips the batches already done and carries on as if it had never stopped.

Extending a run: resumed with a larger ``epochs``, the run continues as if it had been started with
the new length; the cosine schedule is a closed form of (epoch, epochs), so it is recomputed for the
new length from the current epoch (it never trains at a learning rate of 0 before the last epoch).
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from distilled_shufflenet.data import FailureLog, collate_clips
from distilled_shufflenet.engine.checkpointing import (
    BEST,
    CONFIG,
    LAST,
    TrainState,
    read_run_checkpoint,
    resolve_checkpoint_path,
    run_checkpoint,
    save_checkpoint,
    state_from_checkpoint,
)
from distilled_shufflenet.engine.lock import RunLock
from distilled_shufflenet.engine.objective import Objective
from distilled_shufflenet.engine.optim import build_optimizer, build_scheduler, restore_scheduler
from distilled_shufflenet.engine.runlog import RunLog, epoch_row, summary
from distilled_shufflenet.engine.runtime import (
    EpochSampler,
    Runtime,
    SeededSamples,
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




class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


class NoTrainingStepError(ValueError):
    """An epoch ended without a single training step: no clip of it could be read.  Nothing is saved."""


class RunInterrupted(RuntimeError):
    """SIGINT or SIGTERM stopped the run after writing a checkpoint at the current step."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# --------------------------------------------------------------------------- data
def steps_per_epoch(clips: int, batch_size: int) -> int:
    """Training steps in an epoch of ``clips`` clips (one process's share): the last incomplete batch is
    dropped (:func:`make_loader`)."""
    return clips // batch_size


def make_loader(dataset: Dataset, sampler: Any, config: Any, rt: Runtime, *, train: bool,
                generator: torch.Generator | None = None,
                collate_fn: Callable[[Sequence[Any]], dict[str, Any]] = collate_clips) -> DataLoader:
    """The DataLoader of a run, iterated once per epoch (workers are seeded and kept from one epoch to the
    next, so the datasets' epoch must live in shared memory; the last incomplete training batch is dropped).
    Starting the workers again every epoch cost about a second each time, a fifth of a short epoch."""
    return DataLoader(
        dataset,
        batch_size=config.batch_size,
        sampler=sampler,
        num_workers=config.num_workers,
        collate_fn=collate_fn,
        pin_memory=rt.device.type == "cuda",
        drop_last=train,
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=config.num_workers > 0,
    )


# --------------------------------------------------------------------------- signals
class StopRequests:
    """SIGINT / SIGTERM handlers that ask the loop to stop at the next step end instead of dying mid-write.

    A second SIGINT while the loop is finishing its step raises ``KeyboardInterrupt`` at once.
    Installed only in the main thread (signal handlers cannot be set elsewhere).
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopRequests":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# --------------------------------------------------------------------------- the loop
@dataclass
class FitResult:
    """What :func:`fit` produced."""

    run_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    epochs: int
    steps: int
    stopped: str  # "completed" | "early_stop" | "max_steps"
    best_score: float | None
    metrics: dict[str, float]
    model: nn.Module
    is_main: bool = True


def fit(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    config: Any,
    objective: Objective,
    *,
    classes: Sequence[str] = (),
    preprocess: Any = None,
    runtime: Runtime | None = None,
    resume: dict | None = None,
    trainable: Callable[[str], bool] | None = None,
    on_epoch_end: Callable[[nn.Module, dict[str, Any]], None] | None = None,
) -> FitResult:
    """Train ``model`` with ``objective`` on ready datasets, writing the run folder ``config.output``.

    ``resume`` (a checkpoint dict; read from ``config.resume`` when not given) restores every state so
    the run continues exactly.  ``trainable(name)`` chooses the model's parameters the optimiser
    updates (default: all).  ``on_epoch_end(model, row)`` runs on the main process after each epoch's
    checkpoint (e.g. to draw a figure).  Raises :class:`NonFiniteLossError` when the loss becomes NaN
    or infinite and :class:`RunInterrupted` on SIGINT / SIGTERM, in both cases keeping a checkpoint.
    """
    rt = runtime or setup_runtime(config.device, config.precision, channels_last=config.channels_last)
    if resume is None and config.resume:
        resume = read_run_checkpoint(config.resume)
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    set_deterministic(config.deterministic)
    run_dir = Path(config.output)
    lock = RunLock(run_dir, command=f"dsn {config.command}") if rt.is_main else None
    log = None
    try:
        if lock is not None:
            lock.acquire()
        preprocess = preprocess or model.preprocess
        for name, p in model.named_parameters():
            p.requires_grad_(trainable is None or trainable(name))
        state = TrainState()
        if resume is not None:
            objective.load_model_state(model, resume["state_dict"])
            objective.load_state_dict(resume.get("objective") or {})
            state = state_from_checkpoint(resume, batch_size=config.batch_size, world_size=rt.world_size)
        net = wrap_model(objective.network(model), rt, sync_bn=config.sync_bn)
        optimizer = build_optimizer([p for p in net.parameters() if p.requires_grad], config)
        scheduler = build_scheduler(optimizer, config)
        if resume is not None:
            optimizer.load_state_dict(resume["optimizer"])
            restore_scheduler(scheduler, resume.get("scheduler"), optimizer)
            if resume.get("scaler"):
                rt.scaler.load_state_dict(resume["scaler"])
        train_data = SeededSamples(train_set, config.seed)
        sampler = EpochSampler(train_data, num_replicas=rt.world_size, rank=rt.rank, shuffle=True, seed=config.seed)
        epoch_steps = steps_per_epoch(len(sampler), config.batch_size)
        if epoch_steps == 0:
            raise ValueError(f"batch_size: {config.batch_size} is larger than the {len(sampler)} training clips "
                             f"of each of the {rt.world_size} process(es)")
        val_loader = None
        if val_set is not None:
            shard = list(range(rt.rank, len(val_set), rt.world_size))  # type: ignore[arg-type]
            val_loader = make_loader(SeededSamples(val_set, config.seed), shard, config, rt, train=False,
                                     collate_fn=objective.collate)
        previous_csv = None
        if resume is not None and config.resume:
            previous_csv = resolve_checkpoint_path(config.resume).parent / "log.csv"
            if previous_csv.resolve() == (run_dir / "log.csv").resolve():
                previous_csv = None
        log = RunLog(run_dir, objective.log_columns, enabled=rt.is_main, tensorboard=config.tensorboard,
                     plots=config.plots, resume_step=state.step if resume is not None else None,
                     resume_epoch=state.epoch if resume is not None else None,
                     previous_csv=previous_csv)
        stored = config.portable(run_dir)  # paths inside the run (or demo) folder relative to it
        if rt.is_main:
            stored.save_yaml(run_dir / CONFIG)

        def save(metrics: dict[str, float], *, best: bool = False) -> None:
            # every rank takes part (its generator states are gathered); rank 0 writes
            ckpt = run_checkpoint(model, optimizer, scheduler, rt, state, stored, classes, preprocess, metrics)
            ckpt["state_dict"] = objective.model_state(ckpt["state_dict"])
            ckpt.update(objective.checkpoint_extras())
            extra = objective.state_dict()
            if extra:
                ckpt["objective"] = extra
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
        generator = torch.Generator().manual_seed(derive_seed(config.seed, rt.rank))
        loader = make_loader(train_data, sampler, config, rt, train=True, generator=generator,
                             collate_fn=objective.collate)
        stopped = "completed"
        with StopRequests() as stop_requests:
            while True:
                ended = state.ended(config)  # also a resumed run that had already ended
                if ended is not None:
                    stopped = ended
                    if ended == "early_stop" and rt.is_main:
                        tqdm.write(f"early stopping: no lower loss for {state.bad_epochs} epochs")
                    break
                epoch = state.epoch
                sampler.set_epoch(epoch, start=state.epoch_step * config.batch_size)
                train_data.set_epoch(epoch)
                objective.set_train_mode(net)
                outcome = train_one_epoch(net, loader, optimizer, objective, rt, state, config, log,
                                          steps_per_epoch=epoch_steps, save=lambda: save(metrics),
                                          stop_requests=stop_requests)
                if outcome == "max_steps":
                    stopped = "max_steps"
                    if state.epoch_step:  # the partial epoch's training figures; it is not ended
                        row = epoch_row(state, objective, optimizer)
                        log.row(row)
                        if rt.is_main:
                            tqdm.write(summary(row, config.epochs) + f" (stopped at max_steps {config.max_steps})")
                    break
                metrics, improved = end_epoch(net, model, val_loader, optimizer, scheduler, objective, rt, state)
                log.row(metrics)
                if rt.is_main:
                    tqdm.write(summary(metrics, config.epochs))
                save(metrics, best=improved)
                if on_epoch_end is not None and rt.is_main:
                    try:
                        on_epoch_end(model, metrics)
                    except Exception as e:  # a figure must never stop a training run
                        print(f"warning: epoch-end report failed: {e}", file=sys.stderr)
        best = run_dir / BEST
        score = state.best_score if math.isfinite(state.best_score) else None
        return FitResult(run_dir, run_dir / LAST, best if best.exists() else None, state.epoch, state.step, stopped,
                         score, metrics, model, rt.is_main)
    finally:
        if log is not None:
            log.close()
        if lock is not None:
            lock.release()
        set_deterministic(was_deterministic)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = cudnn
        if runtime is None:
            teardown_runtime(rt)


def train_one_epoch(net: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, objective: Objective,
                    rt: Runtime, state: TrainState, config: Any, log: RunLog, *, steps_per_epoch: int,
                    save: Callable[[], None], stop_requests: StopRequests | None = None) -> str | None:
    """Train on the batches of one epoch not done yet.  Returns ``"max_steps"`` when the step budget ran
    out mid-epoch (after writing a checkpoint), else ``None``.  Writes a checkpoint every
    ``checkpoint_every`` steps, and on SIGINT / SIGTERM (then raises :class:`RunInterrupted`); the time
    spent waiting for the DataLoader is measured apart."""
    failures = FailureLog()
    m = state.meters
    columns = objective.train_columns
    for c in columns:
        m.setdefault(c, 0.0)
    bar = tqdm(total=steps_per_epoch, initial=state.epoch_step, desc=f"epoch {state.epoch + 1}/{config.epochs}",
               unit="batch", dynamic_ncols=True, leave=False, disable=not (rt.is_main and config.progress))
    last = Path(config.output) / LAST
    outcome = None
    drawn = stepped = 0  # batches drawn and steps made by this call
    batches = iter(loader)
    tick = time.perf_counter()
    try:
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            got = time.perf_counter()
            drawn += 1
            failures.add(batch)
            if not _all_have_clips(batch, rt):  # every sample of a batch failed to load: skip the step
                tick = got
                continue
            out = objective.step(net, batch, rt)
            value = float(out.loss.detach())
            n = out.clips
            asked = float(stop_requests.signum) if stop_requests is not None else 0.0
            reduced = all_reduce_sums([value * n, n, 0.0 if math.isfinite(value) else 1.0, asked,
                                       *(out.sums.get(c, 0.0) for c in columns)], rt)
            loss_sum, clips_n, bad, signum = reduced[:4]
            if bad:
                where = f"step {state.step + 1} (epoch {state.epoch + 1}, batch {state.epoch_step + 1})"
                what = f"{value}" if not math.isfinite(value) else "NaN or infinite on another process"
                kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint had been written"
                raise NonFiniteLossError(f"the training loss became {what} at {where}; the run stopped and {kept}")
            optimizer.zero_grad(set_to_none=True)
            rt.scaler.scale(out.loss).backward()
            if config.grad_clip:
                rt.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], config.grad_clip)
            rt.scaler.step(optimizer)
            rt.scaler.update()
            done = time.perf_counter()
            state.step += 1
            state.epoch_step += 1
            stepped += 1
            m["loss"] += loss_sum
            m["clips"] += clips_n
            for c, v in zip(columns, reduced[4:]):
                m[c] += v
            m["wait"] += got - tick
            m["time"] += done - tick
            tick = done
            bar.update()
            bar.set_postfix(loss=f"{loss_sum / max(clips_n, 1):.4f}", clips_s=f"{m['clips'] / m['time']:.1f}",
                            wait=f"{m['wait'] / m['time']:.0%}")
            log.scalar("step/train_loss", loss_sum / max(clips_n, 1), state.step)
            if signum:
                save()
                local = stop_requests.signum if stop_requests is not None else 0
                raise _interrupted(local or signal.SIGTERM, state, config)
            if state.epoch_step == steps_per_epoch:
                break  # the epoch end validates and writes the checkpoint
            if config.max_steps and state.step >= config.max_steps:
                save()
                outcome = "max_steps"
                break
            if config.checkpoint_every and state.step % config.checkpoint_every == 0:
                save()
    finally:
        bar.close()
    if not stepped and drawn:
        # a run that trained nothing must not end as if it had: no checkpoint, an error naming the videos
        what = failures.summary() if len(failures) else "no failure was reported on this process"
        raise NoTrainingStepError(
            f"epoch {state.epoch + 1}: no training step was made, as no clip of its {drawn} batch(es) could be "
            f"read ({what}); check those videos (dsn data check) or leave them out, then run again")
    if rt.is_main and len(failures):
        tqdm.write(f"epoch {state.epoch + 1}: {failures.summary()}")
    return outcome


def _interrupted(signum: int, state: TrainState, config: Any) -> RunInterrupted:
    name = signal.Signals(signum).name
    return RunInterrupted(
        f"{name}: stopped at step {state.step} (epoch {state.epoch + 1}, batch {state.epoch_step}) with a checkpoint "
        f"in {Path(config.output) / LAST}; continue with: dsn {config.command} --resume {config.output}",
        signum,
    )


def _all_have_clips(batch: dict[str, Any], rt: Runtime) -> bool:
    have = "clip" in batch
    if not rt.distributed:
        return have
    # the processes must agree, or those with a batch would wait for the others' gradients forever
    return all_reduce_sums([0.0 if have else 1.0], rt)[0] == 0


# --------------------------------------------------------------------------- epoch end
def end_epoch(net: nn.Module, model: nn.Module, val_loader: DataLoader | None, optimizer: torch.optim.Optimizer,
              scheduler: Any, objective: Objective, rt: Runtime, state: TrainState) -> tuple[dict[str, float], bool]:
    """Validate, step the schedule, update the best / early-stopping counters and start the next epoch
    (whether the run stops there is :meth:`TrainState.ended`). Returns ``(log row, best improved)``."""
    row = epoch_row(state, objective, optimizer)
    broadcast_buffers(net, rt)
    if val_loader is not None:
        row.update(objective.validate(unwrap(net), val_loader, rt))
    monitored = row.get("val_loss") if row.get("val_loss") is not None else row["train_loss"]
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(monitored)
    elif scheduler is not None:
        scheduler.step()
    score = row.get(objective.monitor)
    improved = False
    if score is not None:
        score = score if objective.higher_is_better else -score
        improved = score > state.best_score
        if improved:
            state.best_score, state.best_epoch = score, state.epoch + 1
    if monitored < state.best_loss:
        state.best_loss, state.bad_epochs = monitored, 0
    else:
        state.bad_epochs += 1
    state.epoch += 1
    state.epoch_step = 0
    state.meters = TrainState().meters
    return row, improved
