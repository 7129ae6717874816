"""Typed configs of ``dsn train`` and ``dsn finetune``: defaults, YAML overrides, flags, validation.

Resolution order: the dataclass defaults (the method's recipe) < ``--config FILE.yaml`` < command-line
flags.  With ``--resume`` the run's own saved config replaces the defaults, so a bare
``dsn train --resume RUN`` continues the run as it was started.  Every value is checked by
:meth:`TrainConfig.validate` before anything is built, and the error names the field.

The supervised recipe is docs/method.md section 4 (SGD with Nesterov momentum 0.9, lr 1e-3, batch 16,
x0.1 when the validation loss has not improved for 10 epochs, early stopping); ``dsn train`` uses it
too, being the only supervised recipe the method gives.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import yaml

from distilled_shufflenet.data.factory import LABELLED_KINDS
from distilled_shufflenet.engine.checkpointing import read_run_config, resolve_checkpoint_path
from distilled_shufflenet.engine.runtime import DEVICES, PRECISIONS, default_workers
from distilled_shufflenet.io import atomic_write_text
from distilled_shufflenet.options import build_config, flag_of, flag_values, load_yaml, need_path, option, plain

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("plateau", "step", "cosine", "none")
ON_ERROR = ("resample", "report")

C = TypeVar("C", bound="TrainConfig")

# settings a resumed run may change (how the run goes on, not what it is); the rest are fixed by its checkpoint
RESUME_CHANGEABLE = frozenset({
    "epochs", "max_steps", "checkpoint_every", "early_stop_patience", "num_workers", "progress", "tensorboard",
    "plots", "output", "data_root", "splits_dir", "device", "paths_root", "allow_random_teachers",
})


@dataclass
class TrainConfig:
    """Settings of ``dsn train``: supervised training of any registered model on a labelled dataset."""

    # model
    model: str = option("shufflenet2plus1d", "registered model to train (one of list_models())")
    model_kwargs: dict = option({}, "builder keyword argument KEY=VALUE (YAML value), repeatable", flag="--model-arg")
    init: str | None = option(None, "start from these pretrained weights (a Kinetics 3D teacher, an ImageNet ResNet, ...)")
    drop_classifier: bool = option(False, "with --init: leave the classifier as initialised when its size differs")
    # data
    dataset: str = option("ucf101", "dataset layout", choices=LABELLED_KINDS)
    data_root: str | None = option(None, "folder holding the videos (dataset list: default the list's folder)")
    splits_dir: str | None = option(None, "folder of the official split files (default: inside --data-root)")
    split: int = option(1, "official split number (1, 2 or 3)")
    train_list: str | None = option(None, "with --dataset list: the training list file")
    val_list: str | None = option(None, "with --dataset list: the validation list file")
    validation: bool = option(True, "validate after every epoch (ucf101/hmdb51: on the official test split, "
                              "unless --val-fraction carves a validation split from the training videos)")
    val_fraction: float = option(0.0, "validate on this share of the TRAINING videos, held out by whole actor "
                                 "groups (gXX) and not trained on, instead of the test split (0: off)")
    label_fraction: float = option(1.0, "train on the labels of this share (0, 1] of the training videos: a seeded "
                                   "subset, about this share of each class, by whole actor groups (gXX) where "
                                   "the names have them, never a --val-fraction validation video")
    label_seed: int = option(0, "seed of the --label-fraction subset (the same seed takes the same videos, and "
                             "a larger fraction a superset of them)")
    clip_len: int | None = option(None, "frames per clip (default: the model's)")
    crop_size: int | None = option(None, "square crop size in pixels (default: the model's)")
    resize: int | None = option(None, "short side resized to this before cropping (default: the model's)")
    frame_stride: int = option(1, "take every n-th frame")
    num_workers: int = option(default_workers(), "DataLoader worker processes per training process "
                              "(default: this machine's CPUs, at most 4)")
    on_error: str = option("resample", "an unreadable video: replace it by another, or drop it and report", choices=ON_ERROR)
    skip_missing: bool = option(False, "leave out listed videos that are not on disk instead of failing")
    # optimisation
    epochs: int = option(100, "number of epochs; on --resume a new value extends (or ends) the run, which then "
                         "continues as if started with it: the cosine schedule is recomputed for the new length")
    batch_size: int = option(16, "clips per step and process")
    optimizer: str = option("sgd", "optimiser", choices=OPTIMIZERS)
    lr: float = option(1e-3, "learning rate")
    momentum: float = option(0.9, "SGD momentum")
    nesterov: bool = option(True, "SGD with Nesterov momentum")
    betas: tuple[float, float] = option((0.9, 0.999), "Adam betas")
    weight_decay: float = option(1e-4, "weight decay")
    scheduler: str = option("plateau", "learning-rate schedule: x gamma on a validation-loss plateau, every "
                            "step_size epochs, cosine to zero, or constant", choices=SCHEDULERS)
    step_size: int = option(30, "epochs between steps of the 'step' schedule")
    gamma: float = option(0.1, "learning-rate factor of the 'plateau' and 'step' schedules")
    plateau_patience: int = option(10, "epochs without a lower validation loss before the 'plateau' step")
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy (training loss only)")
    grad_clip: float = option(0.0, "clip the gradient norm to this value (0: off)")
    early_stop_patience: int = option(20, "stop after this many epochs without a lower validation loss (0: off)")
    # devices and precision
    device: str = option("auto", "device", choices=DEVICES)
    precision: str = option("fp32", "autocast precision (bf16 on CPUs with native support; fp16/bf16 on CUDA)",
                            choices=PRECISIONS)
    channels_last: bool = option(False, "channels-last (3D) memory layout")
    seed: int = option(0, "random seed")
    deterministic: bool = option(False, "deterministic kernels and seeded workers (slower, reproducible)")
    sync_bn: bool = option(False, "SyncBatchNorm across processes (torchrun on GPUs)")
    # the run
    output: str = option("runs/train", "run folder: checkpoints, log.csv, curves.png, config.yaml")
    resume: str | None = option(None, "continue the run in this folder (or from this checkpoint) exactly; only its "
                                "length, checkpointing, workers, output, device and progress flags may change")
    checkpoint_every: int = option(0, "also write last.pt every N steps, mid-epoch (0: at epoch ends only)")
    max_steps: int = option(0, "stop (with a checkpoint) after this many steps in all (0: no limit)")
    progress: bool = option(True, "show a progress bar")
    tensorboard: bool = option(True, "write TensorBoard events when the tensorboard package is installed")
    plots: bool = option(True, "redraw curves.png (loss and top-1 against epoch) at every epoch end")
    paths_root: str | None = option(None, "the saved config writes paths inside this folder relative to the run "
                                        "folder, so that the folder can move (default: the run folder itself)")

    command = "train"
    cli_hidden: ClassVar[tuple[str, ...]] = ("paths_root",)  # set by commands that nest runs (dsn demo)
    path_fields: ClassVar[tuple[str, ...]] = ("data_root", "splits_dir", "train_list", "val_list", "init", "resume",
                                              "output")
    spec_fields: ClassVar[tuple[str, ...]] = ()  # NAME:PATH values

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ``ValueError`` / ``FileNotFoundError`` naming the first bad field; nothing is built."""
        from distilled_shufflenet.models import list_models

        if self.model not in list_models():
            raise ValueError(f"model: unknown model {self.model!r}; known models: {', '.join(list_models())}")
        for name, choices in _choices(type(self)).items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}: expected one of {', '.join(choices)}, got {getattr(self, name)!r}")
        positive = ["epochs", "batch_size", "frame_stride", "step_size"]
        positive += [n for n in ("clip_len", "crop_size", "resize") if getattr(self, n) is not None]
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected a positive integer, got {getattr(self, name)}")
        for name in ("seed", "num_workers", "plateau_patience", "early_stop_patience", "checkpoint_every", "max_steps",
                     "weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: expected a value >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: expected a learning rate > 0, got {self.lr}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum: expected a value in [0, 1), got {self.momentum}")
        if self.optimizer == "sgd" and self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: Nesterov momentum needs momentum > 0 (or pass --no-nesterov)")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas: expected two values in [0, 1), got {list(self.betas)}")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma: expected a factor in (0, 1], got {self.gamma}")
        if not 0.0 <= self.val_fraction < 0.5:
            raise ValueError(f"val_fraction: expected a share in [0, 0.5), got {self.val_fraction}")
        if not 0.0 < self.label_fraction <= 1.0:
            raise ValueError(f"label_fraction: expected a share of the training videos in (0, 1] "
                             f"(--label-fraction), got {self.label_fraction}")
        if self.label_seed < 0:
            raise ValueError(f"label_seed: expected a seed >= 0 (--label-seed), got {self.label_seed}")
        if self.val_fraction and self.val_list is not None:
            raise ValueError("val_fraction: not with --val-list (the validation videos are given)")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing: expected a value in [0, 1), got {self.label_smoothing}")
        if self.split not in (1, 2, 3):
            raise ValueError(f"split: expected 1, 2 or 3, got {self.split}")
        if self.data_root is None and self.dataset != "list":
            raise ValueError("data_root: required (the folder holding the videos); pass --data-root DIR")
        need_path("data_root", self.data_root, folder=True)
        need_path("splits_dir", self.splits_dir, folder=True)
        if self.resume is None:  # a resumed run takes its weights from the checkpoint
            need_path("init", self.init)
        need_path("resume", self.resume, folder=None)
        if self.dataset == "list":
            if self.train_list is None:
                raise ValueError("train_list: required with dataset 'list'; pass --train-list FILE")
            need_path("train_list", self.train_list)
            need_path("val_list", self.val_list)
        else:
            for name in ("train_list", "val_list"):
                if getattr(self, name) is not None:
                    raise ValueError(f"{name}: only used with dataset 'list', got dataset {self.dataset!r}")
        last = Path(self.output) / "last.pt"
        resumed_here = self.resume is not None and _same_run_folder(self.resume, self.output)
        if self.resume is not None and not resumed_here and last.exists():
            raise ValueError(
                f"output: {self.output} already holds another run ({last}); resume {self.resume} into a new "
                "folder, or leave --output out to continue in the run's own folder"
            )
        if self.resume is None and last.exists():
            raise ValueError(
                f"output: the run folder {self.output} already holds a run ({last}); pass --resume {self.output} "
                "to continue it, or choose another --output"
            )

    # ------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), ready for YAML or a checkpoint."""
        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def save_yaml(self, path: str | Path) -> Path:
        """Write the resolved config (``config.yaml`` of a run folder)."""
        saved = self.paths_root is not None and not os.path.isabs(self.paths_root)  # written by portable()
        where = "; relative paths are relative to this folder" if saved else ""
        text = f"# resolved config of `dsn {self.command}`{where}\n" + yaml.safe_dump(self.to_dict(), sort_keys=False)
        return atomic_write_text(text, path)

    def portable(self, run_dir: str | Path) -> "TrainConfig":
        """This config as the run in ``run_dir`` saves it: each path inside ``paths_root`` (default: the run
        folder) relative to the run folder, every other path absolute, and ``paths_root`` relative to the run
        folder too, which marks the convention (:func:`paths_in_place` reads it back).  A run folder (or a
        demo folder) moved or copied whole is then the same run wherever it lies."""
        run = os.path.abspath(run_dir)
        root = os.path.abspath(self.paths_root) if self.paths_root else run

        def rewrite(path: str) -> str:
            full = os.path.abspath(path)
            inside = full == root or full.startswith(root.rstrip(os.sep) + os.sep)
            return os.path.relpath(full, run) if inside else full

        values = _map_paths(type(self), self.to_dict(), rewrite)
        changed = {k: values[k] for k in (*self.path_fields, *self.spec_fields) if values[k] != plain(getattr(self, k))}
        return dataclasses.replace(self, **changed, paths_root=os.path.relpath(root, run))


@dataclass
class FinetuneConfig(TrainConfig):
    """Settings of ``dsn finetune``: docs/method.md section 4, a distilled student fine-tuned with labels.

    The model is the one the ``checkpoint`` describes (backbone + adapters, with or without ``fc``);
    a classifier head for the dataset's classes is attached.
    """

    checkpoint: str | None = option(None, "the distilled student to fine-tune (backbone + adapters)")
    freeze_backbone: bool = option(False, "linear probe: train only the classifier; the distilled backbone and "
                                   "adapters stay frozen, their BatchNorm statistics included", flag="--linear-probe")
    output: str = option("runs/finetune", "run folder: checkpoints, log.csv, curves.png, config.yaml")
    # unset, these come from the checkpoint (the model it describes and the clips it was trained on)
    model: str | None = option(None, "model to fine-tune (default: the one the checkpoint describes)")
    frame_stride: int | None = option(None, "take every n-th frame (default: the checkpoint's, else 1)")

    command = "finetune"
    path_fields = (*TrainConfig.path_fields, "checkpoint")

    def validate(self) -> None:
        if self.resume is None:  # a resumed run takes its weights from the run's checkpoint
            if self.checkpoint is None:
                raise ValueError("checkpoint: required (the distilled student to fine-tune); pass --checkpoint FILE")
            need_path("checkpoint", self.checkpoint)
        if self.init is not None:
            raise ValueError("init: not used by finetune; the weights come from --checkpoint")
        if self.model is None:
            raise ValueError("model: unknown; the checkpoint does not name its model, pass --model NAME")
        super().validate()


# --------------------------------------------------------------------------- helpers
def _same_run_folder(resume: str, output: str) -> bool:
    source = Path(resume)
    folder = source if source.is_dir() else source.parent
    return folder.resolve() == Path(output).resolve()


def _map_paths(cls: type, values: Mapping[str, Any], fn: Callable[[str], str]) -> dict[str, Any]:
    """``values`` (plain config values) with ``fn`` applied to every path of ``cls``'s path fields: strings,
    lists of strings, and the PATH of NAME:PATH fields."""
    out = dict(values)
    for name in getattr(cls, "path_fields", ()):
        value = out.get(name)
        if isinstance(value, str):
            out[name] = fn(value)
        elif isinstance(value, list):
            out[name] = [fn(v) if isinstance(v, str) else v for v in value]
    for name in getattr(cls, "spec_fields", ()):
        model, sep, path = str(out.get(name) or "").partition(":")
        if sep and path:
            out[name] = f"{model}:{fn(path)}"
    return out


def paths_in_place(cls: type, saved: Mapping[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """A run's saved config with its paths as seen from here: where it has ``paths_root`` (it was saved by
    :meth:`TrainConfig.portable`), a relative path is relative to the run folder ``run_dir``, wherever that
    folder is now.  Configs saved before that convention are returned as they are."""
    if saved.get("paths_root") is None:
        return dict(saved)

    def place(path: str) -> str:
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(run_dir, path))

    out = _map_paths(cls, saved, place)
    out["paths_root"] = place(str(saved["paths_root"]))
    return out


def _choices(cls: type) -> dict[str, tuple[str, ...]]:
    return {f.name: f.metadata["choices"] for f in dataclasses.fields(cls) if f.metadata.get("choices")}


def resolve_config(
    cls: type[C],
    *,
    yaml_path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> C:
    """Defaults < YAML file < ``overrides`` (flags).  With ``resume`` set (in the YAML or the flags) the
    resumed run's saved config is the starting point instead of the defaults."""
    from_yaml = load_yaml(yaml_path) if yaml_path is not None else {}
    if yaml_path is not None:  # a run's saved config.yaml given as --config: its paths are relative to its folder
        from_yaml = paths_in_place(cls, from_yaml, Path(yaml_path).parent)
    overrides = dict(overrides or {})
    cfg = build_config(cls, from_yaml, source=str(yaml_path or "config"))
    cfg = build_config(cls, overrides, base=cfg, source="command line")
    if cfg.resume is None:
        return cfg
    base = saved_run_config(cls, cfg.resume)
    resumed = build_config(cls, {**from_yaml, **overrides}, base=base, source="command line")
    check_resume_changes(base, resumed)
    return resumed


def saved_run_config(cls: type[C], path: str | os.PathLike) -> C:
    """The ``cls`` config a run checkpoint was saved with (a run folder means its ``last.pt``): its paths as
    seen from here, its ``output`` the folder the checkpoint is in now (wherever the run was started), without
    ``resume`` and without the keys of another command's config (train vs finetune)."""
    folder = resolve_checkpoint_path(path).parent
    saved = paths_in_place(cls, read_run_config(path), folder)
    saved.pop("resume", None)
    saved["output"] = str(folder)
    names = {f.name for f in dataclasses.fields(cls)}
    return build_config(cls, {k: v for k, v in saved.items() if k in names}, source=f"the config saved in {path}")


def check_resume_changes(saved: TrainConfig, resumed: TrainConfig) -> None:
    """Raise ``ValueError`` naming the first setting a resumed run asks to change that it cannot.

    What a run is (model, data, clip, optimisation) is fixed by its checkpoint; how it goes on
    (:data:`RESUME_CHANGEABLE`: its length, checkpoints, workers, output, progress) may change, and the
    saved ``config.yaml`` then records the new value.
    """
    for f in dataclasses.fields(resumed):
        if f.name in RESUME_CHANGEABLE or f.name == "resume":
            continue
        old, new = getattr(saved, f.name), getattr(resumed, f.name)
        same_place = _map_paths(type(resumed), {f.name: plain(old)}, os.path.abspath) == _map_paths(
            type(resumed), {f.name: plain(new)}, os.path.abspath)  # a path spelt another way
        if plain(old) != plain(new) and not same_place:
            flag = flag_of(f)
            raise ValueError(
                f"{f.name}: cannot change when resuming (the run has {plain(old)!r}, {flag} asks for "
                f"{plain(new)!r}); leave it out to continue the run as it was, or start a new run with another --output. "
                f"What may change on --resume: {', '.join(sorted(RESUME_CHANGEABLE))}"
            )


def run_config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """The config of a run the command line asks for: defaults (or the resumed run's) < ``--config`` < flags
    (see :func:`resolve_config`)."""
    return resolve_config(cls, yaml_path=getattr(args, "config", None), overrides=flag_values(cls, args))
