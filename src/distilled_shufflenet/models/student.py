"""The (2+1)D ShuffleNet student: a ShuffleNet-style 3D network whose branches are full (not depthwise)
convolutions factorised into (1,3,3) spatial and (3,1,1) temporal steps.

>>> model = shufflenet2plus1d(num_classes=101)            # the paper preset, 17.16 M parameters
>>> taps = model.forward_taps(clip, ("mid", "final"))    # raw stage3 / stage4 outputs
>>> logits = model(clip)                                  # (N, 101)
"""

import math
from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilled_shufflenet.models._base import IMAGENET_MEAN, IMAGENET_STD, Preprocess, TapInfo, TapModel, init_weights
from distilled_shufflenet.models._registry import register_model

HEAD_POOLS = ("flatten", "mean")
# the stem's convolution: the paper's one (3,7,7) convolution, or a (1,7,7) spatial one into half the stem's
# channels followed by a (3,1,1) temporal one (2.6x fewer multiply-accumulates for the paper preset's stem)
STEMS = ("3d", "2plus1d")

_Triple = tuple[int, int, int]


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """Interleave the channels of ``groups`` equal groups: ``(N, C, T, H, W) -> (N, C, T, H, W)``.

    Written with ``unflatten`` / ``flatten`` (no ``view`` with a batch size read from the tensor) so it
    traces and exports with a dynamic batch dimension.
    """
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class SpatialConv3d(nn.Conv3d):
    """A ``(1, k, k)`` ``Conv3d`` computed as a 2D convolution over every frame.

    Same parameters, state-dict keys and result as ``nn.Conv3d``; it only changes the kernel PyTorch
    picks. At batch 1 PyTorch's CPU dispatch sends small-kernel 3D convolutions of the student's stage
    shapes to a generic kernel, while the same work as a 2D convolution on ``N*T`` frames runs in oneDNN,
    about twice as fast for stages 2 and 3.
    """

    def forward(self, x: Tensor) -> Tensor:
        t = x.shape[2]
        frames = x.transpose(1, 2).flatten(0, 1)  # (N*T, C, H, W)
        y = F.conv2d(frames, self.weight[:, :, 0], self.bias, (self.stride[1], self.stride[2]),
                     (self.padding[1], self.padding[2]))  # (N*T, C', H', W')
        return y.unflatten(0, (-1, t)).transpose(1, 2)  # (N, C', T, H', W')


class TemporalConv3d(nn.Conv3d):
    """A ``(k, 1, 1)`` ``Conv3d`` computed as a 2D convolution over ``(T, H*W)``, for the same reason as
    :class:`SpatialConv3d`; folding H and W together is a view, so it costs no copy."""

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[3]
        y = F.conv2d(x.flatten(3), self.weight[..., 0], self.bias, (self.stride[0], 1),
                     (self.padding[0], 0))  # (N, C', T', H*W)
        return y.unflatten(3, (h, -1))  # (N, C', T', H, W)


def _conv3d(in_channels: int, out_channels: int, kernel: _Triple, stride: _Triple, padding: _Triple) -> nn.Conv3d:
    """A bias-free ``Conv3d``, as a :class:`SpatialConv3d` or :class:`TemporalConv3d` where it factorises."""
    conv: type[nn.Conv3d] = nn.Conv3d
    if kernel[0] == 1 and stride[0] == 1 and padding[0] == 0 and kernel[1] > 1:
        conv = SpatialConv3d
    elif kernel[0] > 1 and kernel[1:] == (1, 1) and stride[1:] == (1, 1) and padding[1:] == (0, 0):
        conv = TemporalConv3d
    return conv(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)


def conv_bn_relu(in_channels: int, out_channels: int, kernel: _Triple, stride: _Triple = (1, 1, 1),
                 padding: Optional[_Triple] = None) -> nn.Sequential:
    """Bias-free ``Conv3d`` + ``BatchNorm3d`` + ``ReLU``; ``padding`` defaults to ``same`` (kernel // 2)."""
    if padding is None:
        padding = (kernel[0] // 2, kernel[1] // 2, kernel[2] // 2)
    return nn.Sequential(
        _conv3d(in_channels, out_channels, kernel, stride, padding),
        nn.BatchNorm3d(out_channels),
        nn.ReLU(inplace=True),
    )


class SpatialMaxPool(nn.Module):
    """3x3 max-pooling with stride 2 and padding 1 over the H and W of every frame.

    ``(N, C, T, H, W) -> (N, C, T, ceil(H/2), ceil(W/2))``, exactly ``nn.MaxPool3d((1, 3, 3), (1, 2, 2),
    (0, 1, 1))``. Without gradients (inference, export) it is computed as a 1D max-pool along W and
    element-wise maxima of strided rows along H: PyTorch's CPU kernel for 5-D max-pooling is scalar and
    costs about four times more on the stem's ``(N, 64, 16, 112, 112)`` output. When a gradient is needed
    that trick costs twice the 5-D kernel instead (the 1D pool records indices through a slow path and
    the maxima's backward builds masks), so training uses ``max_pool3d`` itself.
    """

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))
        c, t, h = x.shape[1], x.shape[2], x.shape[3]
        x = F.max_pool1d(x.flatten(1, 3), 3, 2, 1).unflatten(1, (c, t, h))  # (N, C, T, H, ceil(W/2))
        x = F.pad(x, (0, 0, 1, 1), value=float("-inf"))  # (N, C, T, H + 2, ceil(W/2))
        return torch.maximum(torch.maximum(x[..., 0:-2:2, :], x[..., 1:-1:2, :]), x[..., 2::2, :])


def branch2plus1d(in_channels: int, width: int, downsample: bool = False) -> nn.Sequential:
    """The (2+1)D branch ``C -> w``: spatial (1,3,3), temporal (3,1,1), spatial, temporal.

    With ``downsample`` the first conv strides (1,2,2) and the second (2,1,1), halving T, H and W
    (rounding up): ``(N, C, T, H, W) -> (N, w, ceil(T/2), ceil(H/2), ceil(W/2))``.
    """
    s_space, s_time = ((1, 2, 2), (2, 1, 1)) if downsample else ((1, 1, 1), (1, 1, 1))
    return nn.Sequential(
        conv_bn_relu(in_channels, width, (1, 3, 3), s_space),
        conv_bn_relu(width, width, (3, 1, 1), s_time),
        conv_bn_relu(width, width, (1, 3, 3)),
        conv_bn_relu(width, width, (3, 1, 1)),
    )


class DownUnit(nn.Module):
    """Stride-2 unit (time and space): ``(N, C, T, H, W) -> (N, 2w, ceil(T/2), ceil(H/2), ceil(W/2))``.

    ``channel_shuffle(concat((2+1)D branch, 3x3x3 stride-2 shortcut))``.
    """

    def __init__(self, in_channels: int, width: int) -> None:
        super().__init__()
        self.branch = branch2plus1d(in_channels, width, downsample=True)
        self.shortcut = conv_bn_relu(in_channels, width, (3, 3, 3), (2, 2, 2))

    def forward(self, x: Tensor) -> Tensor:
        # both paths: (N, w, T/2, H/2, W/2)
        return channel_shuffle(torch.cat((self.branch(x), self.shortcut(x)), dim=1))


class Unit(nn.Module):
    """Stride-1 unit on ``2w`` channels: the (2+1)D branch runs on the second half of the channels, the
    first half passes through; ``(N, 2w, T, H, W) -> (N, 2w, T, H, W)``."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.branch = branch2plus1d(width, width)

    def forward(self, x: Tensor) -> Tensor:
        a, b = x.chunk(2, dim=1)  # (N, w, T, H, W) each
        return channel_shuffle(torch.cat((self.branch(b), a), dim=1))


def _stage(in_channels: int, width: int, units: int) -> nn.Sequential:
    """One down-unit then ``units`` stride-1 units: ``C -> 2w`` channels, T, H, W halved."""
    return nn.Sequential(DownUnit(in_channels, width), *[Unit(width) for _ in range(units)])


class ShuffleNet2Plus1D(TapModel):
    """(2+1)D ShuffleNet: the lightweight student distilled from a 2D and a 3D teacher.

    Data flow and shapes for the paper preset at ``(N, 3, 16, 224, 224)``::

        clip                                                       (N, 3, 16, 224, 224)
          |  stem: conv (3,7,7) /(1,2,2) + BN + ReLU,
          |        max-pool (1,3,3) /(1,2,2)
          v                                                        (N, 64, 16, 56, 56)
        stage2: down-unit + 4 units, w=64
          v                                                        (N, 128, 8, 28, 28)
        stage3: down-unit + 12 units, w=128
          +--> tap "mid"                                           (N, 256, 4, 14, 14)
          v
        stage4: down-unit + 4 units, w=256
          +--> tap "final"                                         (N, 512, 2, 7, 7)

        head:
        "mid"   -> adapt_mid   (1x1x1 conv + BN + ReLU)  (N, 1024, 4, 14, 14) -> mean T, H, W  -> (N, 1024) --+
        "final" -> adapt_final (1x1x1 conv + BN + ReLU)  (N, 2048, 2, 7, 7)   -> mean H, W,
                                                                                 flatten T    -> (N, 4096) --+
                                                  concat (N, 5120) -> dropout -> fc -> (N, num_classes) <----+

    The taps are the raw stage outputs, before the adapters; distillation applies ``adapt_mid`` /
    ``adapt_final`` to them itself. With ``head_pool="mean"`` the final features are averaged over time
    too (``fc`` takes 1024 + 2048 features) and any clip length works; with ``"flatten"`` (the paper)
    the clip must have ``clip_len`` frames so that ``fc`` sees ``ceil(clip_len / 8)`` time steps.

    Tap shapes ``(C, T, H, W)`` for other inputs (``ceil(size / stride)``; strides mid (4,16,16),
    final (8,32,32), or (4,8,8) and (8,16,16) with ``stem_pool=False``)::

        input          mid                 final
        16x224x224     256 x 4 x 14 x 14   512 x 2 x 7 x 7
        16x112x112     256 x 4 x 7 x 7     512 x 2 x 4 x 4
        8x112x112      256 x 2 x 7 x 7     512 x 1 x 4 x 4
        8x112x112      256 x 2 x 14 x 14   512 x 1 x 7 x 7     (stem_pool=False)
    """

    # TorchScript types module attributes from the annotations of the most derived annotated class, so
    # these are real types (no ``from __future__ import annotations`` in this file), not strings
    in_channels: int
    head_pool: str
    clip_len: int
    final_frames: int

    def __init__(self, *, num_classes: int, stem_channels: int, widths: _Triple, units: _Triple,
                 adapter_channels: tuple[int, int], stem_pool: bool, head_pool: str, clip_len: int,
                 dropout: float, in_channels: int, stem: str = "3d") -> None:
        super().__init__()
        self.in_channels = in_channels
        self.head_pool = head_pool
        self.clip_len = clip_len
        self.final_frames = math.ceil(clip_len / 8)  # time steps of the final tap for a clip_len clip

        if stem == "3d":
            layers: list[nn.Module] = [conv_bn_relu(in_channels, stem_channels, (3, 7, 7), (1, 2, 2), (1, 3, 3))]
        else:
            mid = max(1, stem_channels // 2)
            layers = [conv_bn_relu(in_channels, mid, (1, 7, 7), (1, 2, 2), (0, 3, 3)),
                      conv_bn_relu(mid, stem_channels, (3, 1, 1))]
        if stem_pool:
            layers.append(SpatialMaxPool())
        self.stem = nn.Sequential(*layers)
        self.stage2 = _stage(stem_channels, widths[0], units[0])
        self.stage3 = _stage(2 * widths[0], widths[1], units[1])
        self.stage4 = _stage(2 * widths[1], widths[2], units[2])
        self.adapt_mid = conv_bn_relu(2 * widths[1], adapter_channels[0], (1, 1, 1))
        self.adapt_final = conv_bn_relu(2 * widths[2], adapter_channels[1], (1, 1, 1))
        final_steps = self.final_frames if head_pool == "flatten" else 1
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(adapter_channels[0] + adapter_channels[1] * final_steps, num_classes)

        s = 4 if stem_pool else 2  # spatial stride after the stem
        self.feature_info = (
            TapInfo("mid", 2 * widths[1], (4, 4 * s, 4 * s), "stage3"),
            TapInfo("final", 2 * widths[2], (8, 8 * s, 8 * s), "stage4"),
        )
        self._trunk = ("stem", "stage2", "stage3", "stage4")
        self.preprocess = Preprocess(clip_len=clip_len, crop_size=224, resize=256, mean=IMAGENET_MEAN,
                                     std=IMAGENET_STD)
        init_weights(self)

    def forward_features(self, x: Tensor) -> Dict[str, Tensor]:
        """Both taps of a clip ``(N, C, T, H, W)``: ``{"mid": stage3 output, "final": stage4 output}``."""
        if not torch.jit.is_scripting():
            self.check_input(x)
        x = self.stem(x)  # (N, 64, 16, 56, 56)
        x = self.stage2(x)  # (N, 128, 8, 28, 28)
        mid = self.stage3(x)  # (N, 256, 4, 14, 14)
        final = self.stage4(mid)  # (N, 512, 2, 7, 7)
        return {"mid": mid, "final": final}

    def forward_head(self, features: Dict[str, Tensor]) -> Tensor:
        """Logits ``(N, num_classes)`` from the raw taps (the adapters run here)."""
        if not torch.jit.is_scripting():
            self._check_head_input(features)
        mid = self.adapt_mid(features["mid"]).mean(dim=(2, 3, 4))  # (N, 1024)
        final = self.adapt_final(features["final"])  # (N, 2048, 2, 7, 7)
        if self.head_pool == "flatten":
            final = final.mean(dim=(3, 4)).flatten(1)  # (N, 2048 * 2)
        else:
            final = final.mean(dim=(2, 3, 4))  # (N, 2048)
        return self.fc(self.dropout(torch.cat((mid, final), dim=1)))  # (N, num_classes)

    @torch.jit.unused
    def _check_head_input(self, features: Dict[str, Tensor]) -> None:
        missing = [name for name in ("mid", "final") if name not in features]
        if missing:
            raise ValueError(f"{self.model_name}.forward_head needs the taps mid and final, missing {missing}")
        frames = features["final"].shape[2]
        if self.head_pool == "flatten" and frames != self.final_frames:
            raise ValueError(
                f"{self.model_name}: the head was built for clip_len={self.clip_len} frames (final tap with "
                f"T={self.final_frames}), got a final tap of shape {tuple(features['final'].shape)}; feed "
                f"{self.clip_len}-frame clips, or build the model with head_pool=\"mean\" for any clip length"
            )


# ---------------------------------------------------------------------------------------------- builder
def _int_tuple(name: str, value: object, count: int, minimum: int = 1) -> tuple[int, ...]:
    ok = isinstance(value, Sequence) and not isinstance(value, str) and len(value) == count
    if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value):
        raise ValueError(f"{name} must be {count} integers >= {minimum}, got {value!r}")
    return tuple(value)


def _checked_int(name: str, value: object, minimum: int = 1) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _shufflenet2plus1d(*, num_classes: int, stem_channels: int, widths: Sequence[int], units: Sequence[int],
                       adapter_channels: Sequence[int], stem_pool: bool, head_pool: str, clip_len: int,
                       dropout: float, in_channels: int, stem: str = "3d") -> ShuffleNet2Plus1D:
    """Validate the arguments (errors name the argument), then build."""
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {list(STEMS)}, got {stem!r}")
    if head_pool not in HEAD_POOLS:
        raise ValueError(f"head_pool must be one of {list(HEAD_POOLS)}, got {head_pool!r}")
    if not isinstance(stem_pool, bool):
        raise ValueError(f"stem_pool must be True or False, got {stem_pool!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")
    return ShuffleNet2Plus1D(
        num_classes=_checked_int("num_classes", num_classes),
        stem_channels=_checked_int("stem_channels", stem_channels),
        widths=_int_tuple("widths", widths, 3),  # type: ignore[arg-type]
        units=_int_tuple("units", units, 3, minimum=0),  # type: ignore[arg-type]
        adapter_channels=_int_tuple("adapter_channels", adapter_channels, 2),  # type: ignore[arg-type]
        stem_pool=stem_pool,
        head_pool=head_pool,
        # shorter clips than the final tap's temporal stride leave it without one full step of input
        clip_len=_checked_int("clip_len", clip_len, minimum=8),
        dropout=float(dropout),
        in_channels=_checked_int("in_channels", in_channels),
        stem=stem,
    )


@register_model
def shufflenet2plus1d(*, num_classes: int = 101, stem_channels: int = 64, widths: Sequence[int] = (64, 128, 256),
                      units: Sequence[int] = (4, 12, 4), adapter_channels: Sequence[int] = (1024, 2048),
                      stem_pool: bool = True, head_pool: str = "flatten", clip_len: int = 16, dropout: float = 0.0,
                      in_channels: int = 3, stem: str = "3d") -> ShuffleNet2Plus1D:
    """The (2+1)D ShuffleNet student; the defaults are the paper preset (15.85 M backbone parameters,
    17.16 M with the adapters, plus the classifier).

    ``widths`` are the branch widths ``w`` of stages 2-4 (a stage outputs ``2w`` channels); ``units`` the
    number of stride-1 units after each stage's down-unit; ``adapter_channels`` the outputs of
    ``adapt_mid`` / ``adapt_final``. ``stem_pool=False`` drops the stem's max-pool (spatial strides halve).
    ``head_pool`` is ``"flatten"`` (paper: the final features keep their ``ceil(clip_len / 8)`` time steps,
    so clips must have ``clip_len`` frames) or ``"mean"`` (global average pooling; any clip length).
    ``stem`` is ``"3d"`` (paper: one (3,7,7) convolution) or ``"2plus1d"``: a (1,7,7) convolution into
    ``stem_channels // 2`` channels, then a (3,1,1) one (BN + ReLU after each), the stem's (2+1)D
    factorisation with 2.6x fewer multiply-accumulates at the paper's widths (5.66 -> 2.18 GMACs at
    16 x 224 x 224); the stem dominates the int8 paths' time, where its three input channels use the
    kernels poorly.

    Checkpoints: this project's own, written by ``dsn train`` / ``dsn finetune`` (no published weights
    exist for it).
    """
    return _shufflenet2plus1d(num_classes=num_classes, stem_channels=stem_channels, widths=widths, units=units,
                              adapter_channels=adapter_channels, stem_pool=stem_pool, head_pool=head_pool,
                              clip_len=clip_len, dropout=dropout, in_channels=in_channels, stem=stem)
