"""The one feature interface every model of the project offers.

Every model (the student and the teachers) is a :class:`TapModel`:

- ``feature_info``: the named feature maps ("taps") it can return, with channels and stride in t/h/w;
- ``forward_taps(x, ("mid", "final"))``: a dict of the named maps, stopping after the last one asked for;
- ``forward_features(x)``: every tap, as a dict; ``forward_head(features)``: logits from them;
  ``forward(x) = forward_head(forward_features(x))``;
- ``preprocess``: the input the model expects (clip length, crop size, mean/std).

Distillation, fine-tuning, benchmarking and export all go through this door; nothing reaches into a
model by layer index.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Dict, Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's video models (r3d_18, mc3_18, r2plus1d_18) were trained with these Kinetics-400 statistics.
KINETICS_MEAN = (0.43216, 0.394666, 0.37645)
KINETICS_STD = (0.22803, 0.22145, 0.216989)


@dataclass(frozen=True)
class TapInfo:
    """One named feature map: its channel count and its stride (t, h, w) relative to the input.

    At an input of ``T x H x W`` the map is ``channels x ceil(T/t) x ceil(H/h) x ceil(W/w)``
    (2D models have ``t = 1``).  ``module`` is the submodule that produces it (an attribute, or a dotted
    path such as ``blocks.3``).
    """

    name: str
    channels: int
    stride: tuple[int, int, int]
    module: str

    def out_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """``(C, T', H', W')`` of this tap for an input of the given size."""
        t, h, w = self.stride
        return (self.channels, math.ceil(frames / t), math.ceil(height / h), math.ceil(width / w))


@dataclass(frozen=True)
class Preprocess:
    """What a model expects as input: ``clip_len`` frames taken every ``frame_stride``-th frame,
    ``crop_size`` square crops after resizing the short side to ``resize``, RGB in [0, 1] normalised
    with ``mean`` / ``std``. ``frame_stride`` is the one a model's published weights were trained with
    (1 where there are none to follow)."""

    clip_len: int
    crop_size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    frame_stride: int = 1

    def to_dict(self) -> dict:
        return asdict(self)

    def override(self, *, clip_len: int | None = None, crop_size: int | None = None,
                 resize: int | None = None) -> "Preprocess":
        """A copy with the given fields replaced. A new crop without a new resize keeps the model's
        resize-to-crop ratio (256/224 for 224 crops: a 64 crop resizes to 73), so the crop still frames
        the same part of the scene; a crop larger than the resize is a ``ValueError``."""
        crop = crop_size or self.crop_size
        if resize is None:
            resize = self.resize if crop_size is None else round(crop * self.resize / self.crop_size)
        if crop > resize:
            raise ValueError(f"crop_size: {crop} is larger than the short side after resizing (resize={resize})")
        return Preprocess(clip_len or self.clip_len, crop, resize, tuple(self.mean), tuple(self.std),
                          self.frame_stride)


class TapModel(nn.Module):
    """Base class of every model: the feature interface and input validation.

    Subclasses set ``feature_info``, ``preprocess``, ``input_rank`` (5 for clips; 2D models accept 4 or 5)
    and ``classifier_name``, implement ``forward_features`` and ``forward_head`` explicitly (so that
    ``forward`` scripts and exports), and list the modules of their trunk (names or dotted paths) in
    ``_trunk`` in execution order so that :meth:`forward_taps` can stop early.
    """

    # plain-Python metadata that TorchScript must not try to compile
    __jit_ignored_attributes__ = [
        "feature_info", "classifier_name", "in_channels", "_trunk", "preprocess", "model_name",
        "model_kwargs", "frozen",
    ]
    __jit_unused_properties__ = ["tap_names"]

    feature_info: tuple[TapInfo, ...] = ()
    classifier_name: str = "fc"
    in_channels: int = 3
    # modules of the trunk, in execution order; forward_taps runs them one after another
    _trunk: tuple[str, ...] = ()

    def __init__(self) -> None:
        super().__init__()
        self.preprocess: Preprocess | None = None
        self.model_name: str = type(self).__name__
        self.model_kwargs: dict = {}

    # ---------------------------------------------------------------- taps
    @property
    def tap_names(self) -> tuple[str, ...]:
        return tuple(info.name for info in self.feature_info)

    def tap(self, name: str) -> TapInfo:
        for info in self.feature_info:
            if info.name == name:
                return info
        raise ValueError(f"{self.model_name} has no tap {name!r}; its taps are {list(self.tap_names)}")

    def forward_taps(self, x: Tensor, taps: Sequence[str] = ("mid", "final")) -> Dict[str, Tensor]:
        """The named feature maps for input ``x``, computing only as far as the last tap asked for."""
        if isinstance(taps, str):
            taps = (taps,)
        wanted = [self.tap(name) for name in taps]
        self.check_input(x, taps)
        by_module = {info.module: info.name for info in wanted}
        x, fold = self._enter(x)
        out: Dict[str, Tensor] = {}
        for module_name in self._trunk:
            x = self.get_submodule(module_name)(x)
            if module_name in by_module:
                out[by_module[module_name]] = self._leave(x, fold)
                if len(out) == len(by_module):
                    break
        return {name: out[name] for name in taps}

    def forward_features(self, x: Tensor) -> Dict[str, Tensor]:
        raise NotImplementedError

    def forward_head(self, features: Dict[str, Tensor]) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    # hooks for models that fold clip frames into the batch (the 2D family)
    def _enter(self, x: Tensor) -> tuple[Tensor, int]:
        return x, 0

    def _leave(self, x: Tensor, fold: int) -> Tensor:
        return x

    # ---------------------------------------------------------------- validation
    def min_input_size(self, taps: Sequence[str] | None = None) -> tuple[int, int, int]:
        """Smallest ``(T, H, W)`` for which every requested tap has at least one full stride of input."""
        infos = [self.tap(n) for n in (taps if taps is not None else self.tap_names)]
        return tuple(max(info.stride[i] for info in infos) for i in range(3))  # type: ignore[return-value]

    @torch.jit.unused
    def check_input(self, x: Tensor, taps: Sequence[str] | None = None) -> None:
        """Raise ``ValueError`` (stating expected and given shapes) unless ``x`` is a valid input."""
        if not isinstance(x, Tensor):
            raise ValueError(f"{self.model_name} expects a torch.Tensor, got {type(x).__name__}")
        ranks = self._accepted_ranks()
        layout = " or ".join("(N, C, H, W)" if r == 4 else "(N, C, T, H, W)" for r in ranks)
        given = tuple(x.shape)
        if x.dim() not in ranks:
            raise ValueError(f"{self.model_name} expects a {layout} tensor, got shape {given}")
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f"{self.model_name} expects {self.in_channels} channels in dim 1 of {layout}, got shape {given}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"{self.model_name} expects a floating-point tensor (normalised RGB), got dtype {x.dtype} "
                f"(shape {given})"
            )
        min_t, min_h, min_w = self.min_input_size(taps)
        t = x.shape[2] if x.dim() == 5 else min_t
        h, w = x.shape[-2], x.shape[-1]
        if t < min_t or h < min_h or w < min_w:
            what = ", ".join(taps) if taps else "all taps"
            need = f"H>={min_h}, W>={min_w} in (N, C, H, W)" if x.dim() == 4 else (
                f"T>={min_t}, H>={min_h}, W>={min_w} in (N, C, T, H, W)")
            raise ValueError(f"{self.model_name}: input {given} is too small for {what}; it needs at least {need}")

    def _accepted_ranks(self) -> tuple[int, ...]:
        return (5,)

    # ---------------------------------------------------------------- freezing
    frozen: bool = False

    def train(self, mode: bool = True) -> "TapModel":
        # a frozen teacher stays in eval mode even when a parent module is put in training mode
        return super().train(mode and not self.frozen)


def init_weights(model: nn.Module, *, linear_std: float | None = 0.01) -> None:
    """torchvision's initialisation: kaiming-normal (fan_out, relu) convolutions with zero bias,
    BatchNorm weight 1 and bias 0, and Linear layers normal(0, ``linear_std``) with zero bias
    (``linear_std=None`` leaves PyTorch's default Linear initialisation)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)


def widen_channels(channels: Sequence[int], widen_factor: float) -> list[int]:
    """Each stage's channels times ``widen_factor``, rounded down; every stage keeps at least one.

    ``widen_channels((64, 128, 256, 512), 0.25) -> [16, 32, 64, 128]``; a bad factor is a ``ValueError``
    naming ``widen_factor``.
    """
    if isinstance(widen_factor, bool) or not isinstance(widen_factor, (int, float)) or not widen_factor > 0:
        raise ValueError(f"widen_factor must be a positive number, got {widen_factor!r}")
    widened = [int(c * widen_factor) for c in channels]
    if min(widened) < 1:
        raise ValueError(f"widen_factor must give at least 1 channel per stage (>= 1/{min(channels)}), "
                         f"got {widen_factor}")
    return widened


def freeze(model: nn.Module) -> nn.Module:
    """Freeze a teacher: no gradients, and eval mode that survives ``.train()`` on a parent module.

    BatchNorm statistics and dropout must not change while a teacher guides a student, even when the
    student and teacher sit inside one module that is put in training mode.
    """
    if not isinstance(model, TapModel):
        raise TypeError(f"freeze() takes a model of this package, got {type(model).__name__}")
    for p in model.parameters():
        p.requires_grad_(False)
    model.frozen = True
    return model.eval()
