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
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, TypeVar

import yaml

from distilled_shufflenet.engine.checkpointing import read_run_config, resolve_checkpoint_path
from distilled_shufflenet.engine.runtime import DEVICES, PRECISIONS, default_workers
from distilled_shufflenet.io import atomic_write_text

OPTIMIZERS = ("sgd", "adam")
SCHEDULERS = ("plateau", "step", "cosine", "none")
DATASETS = ("ucf101", "hmdb51", "list")  # labelled kinds of data.build_dataset
ON_ERROR = ("resample", "report")

C = TypeVar("C", bound="TrainConfig")

# settings a resumed run may change (how the run goes on, not what it is); the rest are fixed by its checkpoint
RESUME_CHANGEABLE = frozenset({
    "epochs", "max_steps", "checkpoint_every", "early_stop_patience", "num_workers", "progress", "tensorboard",
    "plots", "output", "data_root", "splits_dir", "device", "paths_root", "allow_random_teachers",
})


def _opt(default: Any, help: str, *, choices: tuple[str, ...] | None = None, flag: str | None = None) -> Any:
    """A dataclass field with its help text (and choices) for the command line."""
    meta = {"help": help, "choices": choices, "flag": flag}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    """Settings of ``dsn train``: supervised training of any registered model on a labelled dataset."""

    # model
    model: str = _opt("shufflenet2plus1d", "registered model to train (one of list_models())")
    model_kwargs: dict = _opt({}, "builder keyword argument KEY=VALUE (YAML value), repeatable", flag="--model-arg")
    init: str | None = _opt(None, "start from these pretrained weights (a Kinetics 3D teacher, an ImageNet ResNet, ...)")
    drop_classifier: bool = _opt(False, "with --init: leave the classifier as initialised when its size differs")
    # data
    dataset: str = _opt("ucf101", "dataset layout", choices=DATASETS)
    data_root: str | None = _opt(None, "folder holding the videos (dataset list: default the list's folder)")
    splits_dir: str | None = _opt(None, "folder of the official split files (default: inside --data-root)")
    split: int = _opt(1, "official split number (1, 2 or 3)")
    train_list: str | None = _opt(None, "with --dataset list: the training list file")
    val_list: str | None = _opt(None, "with --dataset list: the validation list file")
    validation: bool = _opt(True, "validate after every epoch (ucf101/hmdb51: on the official test split, "
                            "unless --val-fraction carves a validation split from the training videos)")
    val_fraction: float = _opt(0.0, "validate on this share of the TRAINING videos, held out by whole actor "
                               "groups (gXX) and not trained on, instead of the test split (0: off)")
    label_fraction: float = _opt(1.0, "train on the labels of this share (0, 1] of the training videos: a seeded "
                                 "subset, about this share of each class, by whole actor groups (gXX) where "
                                 "the names have them, never a --val-fraction validation video")
    label_seed: int = _opt(0, "seed of the --label-fraction subset (the same seed takes the same videos, and "
                           "a larger fraction a superset of them)")
    clip_len: int | None = _opt(None, "frames per clip (default: the model's)")
    crop_size: int | None = _opt(None, "square crop size in pixels (default: the model's)")
    resize: int | None = _opt(None, "short side resized to this before cropping (default: the model's)")
    frame_stride: int = _opt(1, "take every n-th frame")
    num_workers: int = _opt(default_workers(), "DataLoader worker processes per training process "
                            "(default: this machine's CPUs, at most 4)")
    on_error: str = _opt("resample", "an unreadable video: replace it by another, or drop it and report", choices=ON_ERROR)
    skip_missing: bool = _opt(False, "leave out listed videos that are not on disk instead of failing")
    # optimisation
    epochs: int = _opt(100, "number of epochs; on --resume a new value extends (or ends) the run, which then "
                       "continues as if started with it: the cosine schedule is recomputed for the new length")
    batch_size: int = _opt(16, "clips per step and process")
    optimizer: str = _opt("sgd", "optimiser", choices=OPTIMIZERS)
    lr: float = _opt(1e-3, "learning rate")
    momentum: float = _opt(0.9, "SGD momentum")
    nesterov: bool = _opt(True, "SGD with Nesterov momentum")
    betas: tuple[float, float] = _opt((0.9, 0.999), "Adam betas")
    weight_decay: float = _opt(1e-4, "weight decay")
    scheduler: str = _opt("plateau", "learning-rate schedule: x gamma on a validation-loss plateau, every "
                          "step_size epochs, cosine to zero, or constant", choices=SCHEDULERS)
    step_size: int = _opt(30, "epochs between steps of the 'step' schedule")
    gamma: float = _opt(0.1, "learning-rate factor of the 'plateau' and 'step' schedules")
    plateau_patience: int = _opt(10, "epochs without a lower validation loss before the 'plateau' step")
    label_smoothing: float = _opt(0.0, "label smoothing of the cross-entropy (training loss only)")
    grad_clip: float = _opt(0.0, "clip the gradient norm to this value (0: off)")
    early_stop_patience: int = _opt(20, "stop after this many epochs without a lower validation loss (0: off)")
    # devices and precision
    device: str = _opt("auto", "device", choices=DEVICES)
    precision: str = _opt("fp32", "autocast precision (bf16 on CPUs with native support; fp16/bf16 on CUDA)",
                          choices=PRECISIONS)
    channels_last: bool = _opt(False, "channels-last (3D) memory layout")
    seed: int = _opt(0, "random seed")
    deterministic: bool = _opt(False, "deterministic kernels and seeded workers (slower, reproducible)")
    sync_bn: bool = _opt(False, "SyncBatchNorm across processes (torchrun on GPUs)")
    # the run
    output: str = _opt("runs/train", "run folder: checkpoints, log.csv, curves.png, config.yaml")
    resume: str | None = _opt(None, "continue the run in this folder (or from this checkpoint) exactly; only its "
                              "length, checkpointing, workers, output, device and progress flags may change")
    checkpoint_every: int = _opt(0, "also write last.pt every N steps, mid-epoch (0: at epoch ends only)")
    max_steps: int = _opt(0, "stop (with a checkpoint) after this many steps in all (0: no limit)")
    progress: bool = _opt(True, "show a progress bar")
    tensorboard: bool = _opt(True, "write TensorBoard events when the tensorboard package is installed")
    plots: bool = _opt(True, "redraw curves.png (loss and top-1 against epoch) at every epoch end")
    paths_root: str | None = _opt(None, "the saved config writes paths inside this folder relative to the run "
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
        _need_path("data_root", self.data_root, folder=True)
        _need_path("splits_dir", self.splits_dir, folder=True)
        if self.resume is None:  # a resumed run takes its weights from the checkpoint
            _need_path("init", self.init)
        _need_path("resume", self.resume, folder=None)
        if self.dataset == "list":
            if self.train_list is None:
                raise ValueError("train_list: required with dataset 'list'; pass --train-list FILE")
            _need_path("train_list", self.train_list)
            _need_path("val_list", self.val_list)
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
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

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
        changed = {k: values[k] for k in (*self.path_fields, *self.spec_fields) if values[k] != _plain(getattr(self, k))}
        return dataclasses.replace(self, **changed, paths_root=os.path.relpath(root, run))


@dataclass
class FinetuneConfig(TrainConfig):
    """Settings of ``dsn finetune``: docs/method.md section 4, a distilled student fine-tuned with labels.

    The model is the one the ``checkpoint`` describes (backbone + adapters, with or without ``fc``);
    a classifier head for the dataset's classes is attached.
    """

    checkpoint: str | None = _opt(None, "the distilled student to fine-tune (backbone + adapters)")
    freeze_backbone: bool = _opt(False, "linear probe: train only the classifier; the distilled backbone and "
                                 "adapters stay frozen, their BatchNorm statistics included", flag="--linear-probe")
    output: str = _opt("runs/finetune", "run folder: checkpoints, log.csv, curves.png, config.yaml")
    # unset, these come from the checkpoint (the model it describes and the clips it was trained on)
    model: str | None = _opt(None, "model to fine-tune (default: the one the checkpoint describes)")
    frame_stride: int | None = _opt(None, "take every n-th frame (default: the checkpoint's, else 1)")

    command = "finetune"
    path_fields = (*TrainConfig.path_fields, "checkpoint")

    def validate(self) -> None:
        if self.resume is None:  # a resumed run takes its weights from the run's checkpoint
            if self.checkpoint is None:
                raise ValueError("checkpoint: required (the distilled student to fine-tune); pass --checkpoint FILE")
            _need_path("checkpoint", self.checkpoint)
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


def _plain(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _need_path(name: str, value: str | None, *, folder: bool | None = False) -> None:
    if value is None:
        return
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{name}: {value}: no such {'folder' if folder else 'file'}")
    if folder is True and not path.is_dir():
        raise ValueError(f"{name}: {value}: expected a folder, found a file")
    if folder is False and not path.is_file():
        raise ValueError(f"{name}: {value}: expected a file, found a folder")


def _choices(cls: type) -> dict[str, tuple[str, ...]]:
    return {f.name: f.metadata["choices"] for f in dataclasses.fields(cls) if f.metadata.get("choices")}


def _coerce(name: str, hint: Any, value: Any, source: str) -> Any:
    """``value`` checked against the field's type hint (ints are accepted for floats, lists for tuples)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(name, inner, value, source)
    bad = ValueError(f"{source}: {name}: expected {_describe(hint)}, got {value!r}")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(_coerce(name, a, v, source) for a, v in zip(args, value))
    if origin is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad
        return [_coerce(name, args[0], v, source) for v in value]
    raise TypeError(f"{name}: unsupported config type {hint}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if origin is list:
        return f"a list of {_describe(args[0])}s"
    if hint is dict or origin is dict:
        return "a mapping of names to values"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def build_config(cls: type[C], values: Mapping[str, Any], *, base: C | None = None, source: str = "config") -> C:
    """``base`` (or ``cls()``) with ``values`` applied, each checked against its field's type.

    Unknown keys raise ``ValueError`` naming them and ``source`` (a YAML file, "command line", ...).
    """
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ValueError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(names)}")
    current = dataclasses.asdict(base) if base is not None else {}
    for key, value in values.items():
        value = _coerce(key, hints[key], value, source)
        if isinstance(value, dict) and isinstance(current.get(key), dict):
            value = {**current[key], **value}  # builder arguments add up: YAML ones, then --model-arg ones
        current[key] = value
    return cls(**current)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file = no overrides)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config: {path} is a folder; expected a YAML file of config values")
    if not path.is_file():
        raise FileNotFoundError(f"config: {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config: {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config: {path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


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
    # the run folder is where the checkpoint is now, wherever the run was started
    folder = resolve_checkpoint_path(cfg.resume).parent
    saved = paths_in_place(cls, read_run_config(cfg.resume), folder)
    saved.pop("resume", None)
    saved["output"] = str(folder)
    # keys of a config of another command (train vs finetune) do not carry over
    names = {f.name for f in dataclasses.fields(cls)}
    base = build_config(cls, {k: v for k, v in saved.items() if k in names}, source=f"the config saved in {cfg.resume}")
    resumed = build_config(cls, {**from_yaml, **overrides}, base=base, source="command line")
    check_resume_changes(base, resumed)
    return resumed


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
        same_place = _map_paths(type(resumed), {f.name: _plain(old)}, os.path.abspath) == _map_paths(
            type(resumed), {f.name: _plain(new)}, os.path.abspath)  # a path spelt another way
        if _plain(old) != _plain(new) and not same_place:
            flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
            raise ValueError(
                f"{f.name}: cannot change when resuming (the run has {_plain(old)!r}, {flag} asks for "
                f"{_plain(new)!r}); leave it out to continue the run as it was, or start a new run with another --output. "
                f"What may change on --resume: {', '.join(sorted(RESUME_CHANGEABLE))}"
            )


# --------------------------------------------------------------------------- command line
def add_config_arguments(parser: argparse.ArgumentParser, cls: type[TrainConfig]) -> None:
    """One flag per field (``--batch-size``; booleans as ``--flag/--no-flag``) plus ``--config FILE.yaml``.

    Flags default to "not given", so that only what the user typed overrides the YAML file.
    """
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of config values (flags override it)")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in getattr(cls, "cli_hidden", ()):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        hint = hints[f.name]
        shown = f.default not in (dataclasses.MISSING, None) and "default:" not in f.metadata["help"]
        default = f" (default: {_plain(f.default)})" if shown else ""
        kw: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": f.metadata["help"] + default}
        inner = hint
        if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None
            (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        if inner is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        elif inner is dict or typing.get_origin(inner) is dict:
            parser.add_argument(flag, action="append", metavar="KEY=VALUE", type=_key_value, **kw)
        elif typing.get_origin(inner) is list:
            parser.add_argument(flag, action="append", type=typing.get_args(inner)[0], metavar="VALUE", **kw)
        elif typing.get_origin(inner) is tuple:
            parser.add_argument(flag, nargs=len(typing.get_args(inner)), type=float, metavar="X", **kw)
        else:
            parser.add_argument(flag, type=inner, choices=f.metadata.get("choices"), metavar=None, **kw)


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """The config the command line asks for: defaults < ``--config`` < flags (see :func:`resolve_config`)."""
    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if k in names}
    for key, value in given.items():  # KEY=VALUE flags arrive as lists of pairs
        if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            given[key] = dict(value)
    return resolve_config(cls, yaml_path=getattr(args, "config", None), overrides=given)
