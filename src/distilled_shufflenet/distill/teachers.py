"""Frozen teachers from ``NAME[:PATH]`` specs, and the re-normalisation that shows each one the student's
clip in its own input statistics.

::

    "resnet101:/ckpt/resnet101.pth" + ["widen_factor=0.25"] --TeacherSpec.parse--> TeacherSpec
    TeacherSpec --build_teacher--> create_model(name, **kwargs) -> load_pretrained(strict) -> freeze

A teacher file is either bare weights (torchvision's or 3D-ResNets-PyTorch's checkpoints) or a run
checkpoint of this project (``model_name`` / ``model_kwargs`` / ``state_dict``), whose architecture
arguments and preprocessing the teacher then takes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import yaml
from torch import Tensor, nn

from distilled_shufflenet.checkpoint import CheckpointError, load_pretrained, read_checkpoint
from distilled_shufflenet.models import Preprocess, TapModel, create_model, freeze, list_models

__all__ = ["KINDS", "Renormalize", "TeacherSpec", "build_teacher", "parse_teacher_args", "teacher_kind"]

KINDS = ("2d", "3d")


def parse_teacher_args(items: Sequence[str], *, field_name: str = "teacher_arg") -> dict[str, Any]:
    """``["widen_factor=0.25", "conv1_t_size=3"]`` -> ``{"widen_factor": 0.25, "conv1_t_size": 3}``.

    Values are read as YAML scalars or lists (``0.25``, ``true``, ``[64, 128]``); anything else stays a
    string. A repeated key or an item without ``=`` is a ``ValueError`` naming ``field_name``.
    """
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"{field_name}: expected KEY=VALUE with KEY a builder argument, got {item!r}")
        if key in out:
            raise ValueError(f"{field_name}: {key} is given twice")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


@dataclass(frozen=True)
class TeacherSpec:
    """A teacher to build: a registered model ``name``, an optional weights file ``path`` and builder
    keyword arguments ``kwargs`` (e.g. ``{"widen_factor": 0.25}``)."""

    name: str
    path: Path | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, args: Sequence[str] | Mapping[str, Any] = (), *,
              field_name: str = "teacher") -> "TeacherSpec":
        """``"NAME[:PATH]"`` plus ``KEY=VALUE`` items (or a dict) -> spec. The name must be registered."""
        name, sep, path = str(text).strip().partition(":")
        name = name.strip()
        if name not in list_models():
            raise ValueError(f"{field_name}: unknown model {name!r} in {text!r} (expected NAME[:PATH]); "
                             f"known models: {', '.join(list_models())}")
        if sep and not path.strip():
            raise ValueError(f"{field_name}: {text!r} has an empty PATH after ':'")
        kwargs = dict(args) if isinstance(args, Mapping) else parse_teacher_args(args)
        return cls(name, Path(path) if sep else None, kwargs)

    def __str__(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.kwargs.items())
        return f"{self.name}{':' + str(self.path) if self.path else ''}{extra}"


def teacher_kind(model: TapModel) -> str:
    """``"2d"`` for image models (they accept ``(N, C, H, W)``), ``"3d"`` for clip models."""
    return "2d" if 4 in model._accepted_ranks() else "3d"


def _read_run_preprocess(ckpt: Mapping[str, Any]) -> Preprocess | None:
    p = ckpt.get("preprocess")
    if not isinstance(p, Mapping):
        return None
    return Preprocess(int(p["clip_len"]), int(p["crop_size"]), int(p["resize"]), tuple(p["mean"]), tuple(p["std"]))


def build_teacher(spec: TeacherSpec, *, kind: str | None = None, device: str | torch.device = "cpu",
                  field_name: str = "teacher") -> TapModel:
    """Create ``spec``'s model, load its file strictly (if any) and freeze it.

    ``kind`` (``"2d"`` / ``"3d"``) checks that the model is of that family. A run checkpoint of this
    project gives the architecture arguments (``spec.kwargs`` may repeat them, not contradict them) and
    the preprocessing its model was trained with. A file that does not fit the architecture is a
    :class:`~distilled_shufflenet.checkpoint.CheckpointError` naming the file and the mismatched keys.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    kwargs = dict(spec.kwargs)
    preprocess = None
    if spec.path is not None:
        ckpt = read_checkpoint(spec.path)
        if isinstance(ckpt, Mapping) and "model_name" in ckpt and "state_dict" in ckpt:
            if ckpt["model_name"] != spec.name:
                raise CheckpointError(
                    f"checkpoint {spec.path} holds a {ckpt['model_name']!r} model, but {field_name} asks for "
                    f"{spec.name!r}; give it as {ckpt['model_name']}:{spec.path}"
                    + (f" (dsn distill --{field_name}, config field {field_name})" if field_name in ("teacher2d", "teacher3d")
                       else ""))
            saved = dict(ckpt.get("model_kwargs") or {})
            clash = {k: (saved[k], v) for k, v in kwargs.items() if k in saved and saved[k] != v}
            if clash:
                shown = ", ".join(f"{k}={v[1]!r} (checkpoint: {v[0]!r})" for k, v in clash.items())
                raise CheckpointError(f"checkpoint {spec.path}: {field_name} arguments contradict the "
                                      f"checkpoint's architecture: {shown}")
            kwargs = {**saved, **kwargs}
            preprocess = _read_run_preprocess(ckpt)
        del ckpt  # load_pretrained reads the file again; do not hold two copies of the weights
    try:
        model = create_model(spec.name, **kwargs)
    except TypeError as e:
        raise ValueError(f"{field_name} {spec.name}: bad builder argument ({e})") from None
    if kind is not None and teacher_kind(model) != kind:
        raise ValueError(f"{field_name}: {spec.name} is a {teacher_kind(model).upper()} model, a "
                         f"{kind.upper()} teacher is expected here")
    if spec.path is not None:
        load_pretrained(model, spec.path, strict=True)
    if preprocess is not None:
        model.preprocess = preprocess
    return freeze(model.to(device))


class Renormalize(nn.Module):
    """Re-normalise a clip from one model's mean/std to another's, per channel:
    ``x -> x * std_src + mean_src -> (. - mean_dst) / std_dst``, folded into one multiply-add.

    Works on ``(N, C, T, H, W)`` and ``(N, C, H, W)``; the identity (no copy) when the statistics agree.
    """

    def __init__(self, src: Preprocess, dst: Preprocess) -> None:
        super().__init__()
        s_mean, s_std = torch.tensor(src.mean, dtype=torch.float64), torch.tensor(src.std, dtype=torch.float64)
        d_mean, d_std = torch.tensor(dst.mean, dtype=torch.float64), torch.tensor(dst.std, dtype=torch.float64)
        self.identity = bool(torch.equal(s_mean, d_mean) and torch.equal(s_std, d_std))
        self.register_buffer("scale", (s_std / d_std).float(), persistent=False)
        self.register_buffer("shift", ((s_mean - d_mean) / d_std).float(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.identity:
            return x
        shape = (1, -1) + (1,) * (x.dim() - 2)
        shift = self.shift.view(shape).to(device=x.device, dtype=x.dtype)
        return torch.addcmul(shift, x, self.scale.view(shape).to(device=x.device, dtype=x.dtype))


def device_of(module: nn.Module) -> torch.device:
    """The device of a module's first parameter or buffer (CPU for an empty module)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")

