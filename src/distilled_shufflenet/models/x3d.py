"""X3D, the efficient 3D networks of Feichtenhofer, "X3D: Expanding Architectures for Efficient Video
Recognition" (CVPR 2020), with the module names of PyTorchVideo.

X3D is a ResNet of depthwise 3D bottlenecks: each bottleneck is a 1x1x1 convolution that expands the
channels by 2.25, a depthwise 3x3x3 convolution (strided in space in the first block of a stage),
squeeze-excitation in every other block, swish, and a 1x1x1 projection back. Time is never strided, so
every tap has as many frames as the clip. The head is X3D's "conv5": a 1x1x1 convolution to 2.25 x the
last stage's width, global average pooling, a 1x1x1 convolution to 2048 features, dropout and the
classifier.

The modules sit where PyTorchVideo's ``x3d_s`` / ``x3d_m`` put them (``blocks.0`` the stem, ``blocks.1``
to ``blocks.4`` the stages res2..res5, ``blocks.5`` the head), so their Kinetics-400 checkpoints
(``X3D_S.pyth``, ``X3D_M.pyth``, weights under ``model_state``) load with ``strict=True`` and no key
mapping::

    blocks.0.conv.conv_t.weight                       (24, 3, 1, 3, 3)   stem, spatial 1x3x3
    blocks.0.conv.conv_xy.weight                      (24, 1, 5, 1, 1)   stem, temporal depthwise 5x1x1
    blocks.1.res_blocks.0.branch1_conv.weight         (24, 24, 1, 1, 1)  shortcut of a stage's first block
    blocks.1.res_blocks.0.branch2.conv_a/norm_a       1x1x1 expansion
    blocks.1.res_blocks.0.branch2.conv_b/norm_b.0     depthwise 3x3x3
    blocks.1.res_blocks.0.branch2.norm_b.1.block.0/2  squeeze-excitation (blocks 0, 2, 4, ... of a stage)
    blocks.1.res_blocks.0.branch2.conv_c/norm_c       1x1x1 projection
    blocks.5.pool.pre_conv/pre_norm, .post_conv       conv5 and the 2048-d layer
    blocks.5.proj                                     classifier

(In the stem, PyTorchVideo calls the spatial convolution ``conv_t`` and the temporal one ``conv_xy``;
the names are kept so that the weights load.)

Two differences from PyTorchVideo, neither of which touches the weights: ``forward`` returns logits
(PyTorchVideo's head ends in a softmax), and the head pools globally rather than with an average-pooling
kernel fixed to the training clip, so that the model takes any clip size; at the model's own input
size the two poolings are the same.

>>> teacher = create_model("x3d_m")
>>> load_pretrained(teacher, "X3D_M.pyth")
>>> taps = teacher.forward_taps(clip)  # clip (N, 3, 16, 224, 224)
>>> taps["mid"].shape, taps["final"].shape  # (N, 96, 16, 14, 14), (N, 192, 16, 7, 7)
"""

from __future__ import annotations

import math
from typing import Dict

import torch
from torch import Tensor, nn

from distilled_shufflenet.models._base import Preprocess, TapInfo, TapModel, init_weights
from distilled_shufflenet.models._registry import register_model

__all__ = ["X3D", "x3d_s", "x3d_m", "X3D_MEAN", "X3D_STD"]

# PyTorchVideo's Kinetics statistics for its X3D checkpoints, for RGB in [0, 1]
X3D_MEAN = (0.45, 0.45, 0.45)
X3D_STD = (0.225, 0.225, 0.225)

STEM_WIDTH = 12  # before the width expansion
STAGE_DEPTHS = (1, 2, 5, 3)  # before the depth expansion
BOTTLENECK_EXPANSION = 2.25
SE_RATIO = 1 / 16
HEAD_FEATURES = 2048


def round_width(width: float, multiplier: float, divisor: int = 8) -> int:
    """``width * multiplier`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``),
    rounded up once more when that falls below 90 % of the exact product: X3D's channel rule."""
    exact = width * multiplier
    rounded = max(divisor, int(exact + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * exact else rounded


class StemConv(nn.Module):
    """The stem's factorised convolution: ``conv_t`` spatial 1x3x3 stride (1, 2, 2), then ``conv_xy``
    temporal 5x1x1, depthwise (the names are PyTorchVideo's, swapped as they are there)."""

    def __init__(self, out_channels: int, temporal_kernel: int = 5) -> None:
        super().__init__()
        self.conv_t = nn.Conv3d(3, out_channels, kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1),
                                bias=False)
        self.conv_xy = nn.Conv3d(out_channels, out_channels, kernel_size=(temporal_kernel, 1, 1),
                                 padding=(temporal_kernel // 2, 0, 0), groups=out_channels, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_xy(self.conv_t(x))


class Stem(nn.Module):
    """(N, 3, T, H, W) -> (N, C, T, H/2, W/2): :class:`StemConv`, BatchNorm, ReLU."""

    def __init__(self, out_channels: int) -> None:
        super().__init__()
        self.conv = StemConv(out_channels)
        self.norm = nn.BatchNorm3d(out_channels)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.norm(self.conv(x)))


class SqueezeExcitation(nn.Module):
    """Channel gates from the clip-wide mean: ``x * sigmoid(W2 relu(W1 mean(x)))`` (Hu et al. 2018)."""

    def __init__(self, channels: int, reduced: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(channels, reduced, kernel_size=1),
            nn.ReLU(inplace=True),
            nn.Conv3d(reduced, channels, kernel_size=1),
            nn.Sigmoid(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x * self.block(x.mean(dim=(2, 3, 4), keepdim=True))  # gates (N, C, 1, 1, 1)


class Bottleneck(nn.Module):
    """The residual branch: 1x1x1 ``conv_a`` -> depthwise 3x3x3 ``conv_b`` (strided in space) -> BN and
    optional squeeze-excitation (``norm_b``) -> swish -> 1x1x1 ``conv_c`` -> ``norm_c``."""

    # conv -> BatchNorm pairs applied one right after the other, for fuse_for_inference
    conv_bn_pairs = (("conv_a", "norm_a"), ("conv_b", "norm_b.0"), ("conv_c", "norm_c"))

    def __init__(self, in_channels: int, inner: int, out_channels: int, spatial_stride: int, se: bool) -> None:
        super().__init__()
        self.conv_a = nn.Conv3d(in_channels, inner, kernel_size=1, bias=False)
        self.norm_a = nn.BatchNorm3d(inner)
        self.act_a = nn.ReLU(inplace=True)
        self.conv_b = nn.Conv3d(inner, inner, kernel_size=3, stride=(1, spatial_stride, spatial_stride), padding=1,
                                groups=inner, bias=False)
        gate = SqueezeExcitation(inner, round_width(inner, SE_RATIO)) if se else nn.Identity()
        self.norm_b = nn.Sequential(nn.BatchNorm3d(inner), gate)
        self.act_b = nn.SiLU(inplace=True)  # swish
        self.conv_c = nn.Conv3d(inner, out_channels, kernel_size=1, bias=False)
        self.norm_c = nn.BatchNorm3d(out_channels)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act_a(self.norm_a(self.conv_a(x)))
        x = self.act_b(self.norm_b(self.conv_b(x)))
        return self.norm_c(self.conv_c(x))


class ResBlock(nn.Module):
    """``relu(shortcut(x) + branch2(x))``; the shortcut (``branch1_conv``, ``branch1_norm``) is a strided
    1x1x1 convolution with BatchNorm where the block changes the width, the identity otherwise."""

    conv_bn_pairs = (("branch1_conv", "branch1_norm"),)

    def __init__(self, in_channels: int, inner: int, out_channels: int, spatial_stride: int, se: bool) -> None:
        super().__init__()
        self.branch1_conv: nn.Module | None = None
        self.branch1_norm: nn.Module | None = None
        if in_channels != out_channels or spatial_stride != 1:
            self.branch1_conv = nn.Conv3d(in_channels, out_channels, kernel_size=1,
                                          stride=(1, spatial_stride, spatial_stride), bias=False)
            if in_channels != out_channels:
                self.branch1_norm = nn.BatchNorm3d(out_channels)
        self.branch2 = Bottleneck(in_channels, inner, out_channels, spatial_stride, se)
        self.activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        if self.branch1_conv is not None:
            shortcut = self.branch1_conv(x)
        if self.branch1_norm is not None:
            shortcut = self.branch1_norm(shortcut)
        return self.activation(shortcut + self.branch2(x))


class ResStage(nn.Module):
    """``depth`` blocks; the first halves H and W, blocks 0, 2, 4, ... have squeeze-excitation."""

    def __init__(self, in_channels: int, out_channels: int, depth: int) -> None:
        super().__init__()
        inner = int(BOTTLENECK_EXPANSION * out_channels)
        self.res_blocks = nn.ModuleList(
            ResBlock(in_channels if i == 0 else out_channels, inner, out_channels, 2 if i == 0 else 1,
                     se=i % 2 == 0)
            for i in range(depth)
        )

    def forward(self, x: Tensor) -> Tensor:
        for block in self.res_blocks:
            x = block(x)
        return x


class ProjectedPool(nn.Module):
    """X3D's conv5 and pooling: 1x1x1 ``pre_conv`` + BN + ReLU, global average, 1x1x1 ``post_conv`` + ReLU.

    (N, C, T, H, W) -> (N, features, 1, 1, 1)."""

    conv_bn_pairs = (("pre_conv", "pre_norm"),)

    def __init__(self, in_channels: int, inner: int, features: int) -> None:
        super().__init__()
        self.pre_conv = nn.Conv3d(in_channels, inner, kernel_size=1, bias=False)
        self.pre_norm = nn.BatchNorm3d(inner)
        self.pre_act = nn.ReLU(inplace=True)
        self.pool = nn.AdaptiveAvgPool3d(1)
        self.post_conv = nn.Conv3d(inner, features, kernel_size=1, bias=False)
        self.post_act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.pre_act(self.pre_norm(self.pre_conv(x))))
        return self.post_act(self.post_conv(x))


class Head(nn.Module):
    """:class:`ProjectedPool` (``pool``), ``dropout`` and the classifier ``proj``: (N, C, T, H, W) -> logits."""

    def __init__(self, in_channels: int, inner: int, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.pool = ProjectedPool(in_channels, inner, HEAD_FEATURES)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(HEAD_FEATURES, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.flatten(self.pool(x), 1)  # (N, 2048)
        return self.proj(self.dropout(x))


class X3D(TapModel):
    """X3D with PyTorchVideo's module tree (see the module docstring for the keys).

    ::

        clip (N, 3, 16, 224, 224)                        X3D-M; X3D-S: 13 x 160 x 160
          -> blocks.0  stem                  (N,  24, 16, 112, 112)
          -> blocks.1  res2,  3 blocks       (N,  24, 16,  56,  56)
          -> blocks.2  res3,  5 blocks       (N,  48, 16,  28,  28)
          -> blocks.3  res4, 11 blocks       (N,  96, 16,  14,  14)   tap "mid"
          -> blocks.4  res5,  7 blocks       (N, 192, 16,   7,   7)   tap "final"
          -> blocks.5  conv5 (432) + BN + ReLU, global average, 2048 + ReLU, dropout, proj  (N, num_classes)

    The stages' inner (depthwise) widths are 2.25 x their output widths: 54, 108, 216, 432. X3D-S and
    X3D-M differ only in their input (clip length and crop), so they share the same weights' shapes.
    ``width_factor`` and ``depth_factor`` are the paper's expansion factors (2.0 and 2.2 for X3D-S/M):
    smaller ones give a narrower, shallower X3D, a 3D teacher that trains in CPU minutes.
    """

    classifier_name = "blocks.5.proj"
    _trunk = ("blocks.0", "blocks.1", "blocks.2", "blocks.3", "blocks.4")

    def __init__(self, *, num_classes: int = 400, dropout: float = 0.5, width_factor: float = 2.0,
                 depth_factor: float = 2.2, preprocess: Preprocess) -> None:
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        for field, value in (("width_factor", width_factor), ("depth_factor", depth_factor)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"{field} must be a positive number, got {value!r}")
        stem_width = round_width(STEM_WIDTH, width_factor)
        base = [STEM_WIDTH]
        for _ in STAGE_DEPTHS[1:]:
            base.append(round_width(base[-1], 2.0))  # each stage doubles the width
        widths = [round_width(w, width_factor) for w in base]  # 24, 48, 96, 192
        depths = [math.ceil(d * depth_factor) for d in STAGE_DEPTHS]  # 3, 5, 11, 7

        stages: list[nn.Module] = [Stem(stem_width)]
        in_channels = stem_width
        for width, depth in zip(widths, depths):
            stages.append(ResStage(in_channels, width, depth))
            in_channels = width
        stages.append(Head(widths[-1], int(BOTTLENECK_EXPANSION * widths[-1]), num_classes, dropout))
        self.blocks = nn.ModuleList(stages)
        init_weights(self)

        self.feature_info = (
            TapInfo("mid", widths[2], (1, 16, 16), "blocks.3"),
            TapInfo("final", widths[3], (1, 32, 32), "blocks.4"),
        )
        self.preprocess = preprocess

    def forward_features(self, x: Tensor) -> Dict[str, Tensor]:
        """``x`` (N, 3, T, H, W) -> ``{"mid": (N, 96, T, H/16, W/16), "final": (N, 192, T, H/32, W/32)}``."""
        if not torch.jit.is_scripting():
            self.check_input(x)
        x = self.blocks[0](x)  # stem (N, 24, 16, 112, 112) at 16x224x224
        x = self.blocks[1](x)  # res2 (N, 24, 16, 56, 56)
        x = self.blocks[2](x)  # res3 (N, 48, 16, 28, 28)
        mid = self.blocks[3](x)  # res4 (N, 96, 16, 14, 14)
        final = self.blocks[4](mid)  # res5 (N, 192, 16, 7, 7)
        return {"mid": mid, "final": final}

    def forward_head(self, features: Dict[str, Tensor]) -> Tensor:
        """``features["final"]`` (N, 192, T', H', W') -> logits (N, num_classes)."""
        return self.blocks[5](features["final"])


@register_model
def x3d_s(*, num_classes: int = 400, dropout: float = 0.5) -> X3D:
    """X3D-S: 3.79 M parameters with 400 classes, 1.96 GMACs at its 13 x 160 x 160 clip (13 frames taken
    every 6th, short side 182, centre crop 160).

    Checkpoints: PyTorchVideo's Kinetics-400 ``X3D_S.pyth`` (weights under ``model_state``) loads as it is;
    a ``dsn train`` checkpoint of it.
    """
    preprocess = Preprocess(clip_len=13, crop_size=160, resize=182, mean=X3D_MEAN, std=X3D_STD, frame_stride=6)
    return X3D(num_classes=num_classes, dropout=dropout, preprocess=preprocess)


@register_model
def x3d_m(*, num_classes: int = 400, dropout: float = 0.5) -> X3D:
    """X3D-M: X3D-S's network at a larger clip, 16 x 224 x 224 (16 frames taken every 5th, short side
    256, centre crop 224): 4.73 GMACs.

    Checkpoints: PyTorchVideo's Kinetics-400 ``X3D_M.pyth`` (weights under ``model_state``) loads as it is;
    a ``dsn train`` checkpoint of it.
    """
    preprocess = Preprocess(clip_len=16, crop_size=224, resize=256, mean=X3D_MEAN, std=X3D_STD, frame_stride=5)
    return X3D(num_classes=num_classes, dropout=dropout, preprocess=preprocess)

