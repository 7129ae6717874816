"""The 3D ResNet teachers, with the module names of the code that trained their public checkpoints.

Two families:

- torchvision's video ResNets ``r3d_18``, ``mc3_18`` and ``r2plus1d_18`` (Tran et al., "A Closer Look at
  Spatiotemporal Convolutions", CVPR 2018): ``stem``, ``layer1``..``layer4`` of basic blocks, ``fc``.
  torchvision's Kinetics-400 checkpoints load into them strictly, with no key mapping.
- ``r3d_50``, the 3D ResNet-50 of 3D-ResNets-PyTorch (Hara et al., CVPR 2018): ``conv1``/``bn1``/``maxpool``,
  ``layer1``..``layer4`` of bottlenecks, ``fc``.  Its Kinetics checkpoints (``r3d50_K_200ep.pth``, a dict
  with the weights under ``state_dict``) load strictly through :func:`~distilled_shufflenet.checkpoint.load_pretrained`.

Every model offers two taps: ``mid`` (output of ``layer3``, the 14x14 scale at 224 px input for r3d_50,
at 112 px for the torchvision family) and ``final`` (output of ``layer4``).

>>> teacher = create_model("r3d_50", num_classes=700)
>>> load_pretrained(teacher, "r3d50_K_200ep.pth")
>>> taps = teacher.forward_taps(clip)  # clip (N, 3, 16, 224, 224)
>>> taps["mid"].shape, taps["final"].shape  # (N, 1024, 2, 14, 14), (N, 2048, 1, 7, 7)
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from distilled_shufflenet.models._base import (
    KINETICS_MEAN,
    KINETICS_STD,
    Preprocess,
    TapInfo,
    TapModel,
    init_weights,
    widen_channels,
)
from distilled_shufflenet.models._registry import register_model

__all__ = ["VideoResNet", "ResNet3D", "r3d_18", "mc3_18", "r2plus1d_18", "r3d_50"]

# 3D-ResNets-PyTorch's Kinetics statistics (its get_mean_std(value_scale=1, "kinetics")), for RGB in [0, 1];
# its checkpoints were trained on inputs normalised with them.
HARA_KINETICS_MEAN = (0.4345, 0.4051, 0.3775)
HARA_KINETICS_STD = (0.2768, 0.2713, 0.2737)


# ====================================================================== torchvision's video ResNets
# Conv makers: one 3D conv "unit" from in_planes to out_planes.  The class itself is the module, so the
# weight keys come out as torchvision's (``layer1.0.conv1.0.weight``, ``layer1.0.conv1.0.0.weight``).
class Conv3DSimple(nn.Conv3d):
    """A full 3x3x3 convolution (R3D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: Optional[int] = None, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=padding,
                         bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


class Conv3DNoTemporal(nn.Conv3d):
    """A 1x3x3 convolution that never mixes or strides time (the upper layers of MC3)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: Optional[int] = None, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(in_planes, out_planes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                         padding=(0, padding, padding), bias=False)

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return 1, stride, stride


class Conv2Plus1D(nn.Sequential):
    """A 3x3x3 convolution factorised into 1x3x3 (to ``midplanes``) + BN + ReLU + 3x1x1 (R(2+1)D)."""

    def __init__(self, in_planes: int, out_planes: int, midplanes: int, stride: int = 1,
                 padding: int = 1) -> None:
        super().__init__(
            nn.Conv3d(in_planes, midplanes, kernel_size=(1, 3, 3), stride=(1, stride, stride),
                      padding=(0, padding, padding), bias=False),
            nn.BatchNorm3d(midplanes),
            nn.ReLU(inplace=True),
            nn.Conv3d(midplanes, out_planes, kernel_size=(3, 1, 1), stride=(stride, 1, 1),
                      padding=(padding, 0, 0), bias=False),
        )

    @staticmethod
    def get_downsample_stride(stride: int) -> tuple[int, int, int]:
        return stride, stride, stride


ConvMaker = Union[type[Conv3DSimple], type[Conv3DNoTemporal], type[Conv2Plus1D]]


class BasicBlock(nn.Module):
    """Two conv units with a residual connection: ``relu(conv2(conv1(x)) + downsample(x))``.

    ``midplanes`` is chosen so that a (2+1)D unit has about the parameters of a full 3x3x3 one; the
    other conv makers ignore it.  Both units of a block share it, as in torchvision.
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, conv_maker: ConvMaker, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        midplanes = (inplanes * planes * 3 * 3 * 3) // (inplanes * 3 * 3 + 3 * planes)
        self.conv1 = nn.Sequential(conv_maker(inplanes, planes, midplanes, stride), nn.BatchNorm3d(planes),
                                   nn.ReLU(inplace=True))
        self.conv2 = nn.Sequential(conv_maker(planes, planes, midplanes), nn.BatchNorm3d(planes))
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv2(self.conv1(x))
        return self.relu(out + identity)


class BasicStem(nn.Sequential):
    """Conv 3x7x7 stride (1, 2, 2) + BN + ReLU: (N, 3, T, H, W) -> (N, 64, T, H/2, W/2)."""

    def __init__(self, out_planes: int = 64) -> None:
        super().__init__(
            nn.Conv3d(3, out_planes, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False),
            nn.BatchNorm3d(out_planes),
            nn.ReLU(inplace=True),
        )


class R2Plus1dStem(nn.Sequential):
    """The stem factorised: 1x7x7 stride (1, 2, 2) to 45 channels, then 3x1x1 to 64 (each + BN + ReLU).

    A narrower stem (``out_planes`` below 64) scales the 45 middle channels in proportion."""

    def __init__(self, out_planes: int = 64) -> None:
        mid = max(1, round(45 * out_planes / 64))
        super().__init__(
            nn.Conv3d(3, mid, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3), bias=False),
            nn.BatchNorm3d(mid),
            nn.ReLU(inplace=True),
            nn.Conv3d(mid, out_planes, kernel_size=(3, 1, 1), stride=(1, 1, 1), padding=(1, 0, 0), bias=False),
            nn.BatchNorm3d(out_planes),
            nn.ReLU(inplace=True),
        )


class VideoResNet(TapModel):
    """torchvision's video ResNet: a stem, four stages of :class:`BasicBlock`, pooling and ``fc``.

    ::

        clip (N, 3, 16, 112, 112)
          -> stem    (N,  64, 16, 56, 56)
          -> layer1  (N,  64, 16, 56, 56)
          -> layer2  (N, 128,  8, 28, 28)        time kept by mc3_18's layers 2-4
          -> layer3  (N, 256,  4, 14, 14)  tap "mid"
          -> layer4  (N, 512,  2,  7,  7)  tap "final"
          -> avgpool, flatten, fc  (N, num_classes)

    Channel counts scale with ``widen_factor`` (torchvision's models are 1.0). A narrow one, 0.25 say,
    is what trains in CPU minutes on a small dataset, such as the teachers of the SynthActions demo.
    """

    _trunk = ("stem", "layer1", "layer2", "layer3", "layer4")

    def __init__(self, stem: type[nn.Module], conv_makers: Sequence[ConvMaker], layers: Sequence[int],
                 num_classes: int = 400, widen_factor: float = 1.0) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        planes = widen_channels((64, 128, 256, 512), widen_factor)
        self.inplanes = planes[0]
        self.stem = stem(planes[0])
        self.layer1 = self._make_layer(conv_makers[0], planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(conv_makers[1], planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(conv_makers[2], planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(conv_makers[3], planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(planes[3] * BasicBlock.expansion, num_classes)
        init_weights(self)

        # the stem halves H and W; layers 2-4 halve them again and halve time where their conv maker does
        t = [maker.get_downsample_stride(2)[0] for maker in conv_makers[1:]]
        self.feature_info = (
            TapInfo("mid", planes[2], (t[0] * t[1], 8, 8), "layer3"),
            TapInfo("final", planes[3], (t[0] * t[1] * t[2], 16, 16), "layer4"),
        )
        # torchvision's video weights: short side 128 (128x171 frames), centre crop 112
        self.preprocess = Preprocess(clip_len=16, crop_size=112, resize=128, mean=KINETICS_MEAN,
                                     std=KINETICS_STD)

    def _make_layer(self, conv_maker: ConvMaker, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                nn.Conv3d(self.inplanes, planes * BasicBlock.expansion, kernel_size=1,
                          stride=conv_maker.get_downsample_stride(stride), bias=False),
                nn.BatchNorm3d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, conv_maker, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        layers += [BasicBlock(self.inplanes, planes, conv_maker) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Dict[str, Tensor]:
        """``x`` (N, 3, T, H, W) -> ``{"mid": (N, 256, ...), "final": (N, 512, ...)}`` (see ``feature_info``)."""
        if not torch.jit.is_scripting():
            self.check_input(x)
        x = self.stem(x)  # (N, 64, 16, 56, 56) at 16x112x112
        x = self.layer1(x)  # (N, 64, 16, 56, 56)
        x = self.layer2(x)  # (N, 128, 8, 28, 28)
        mid = self.layer3(x)  # (N, 256, 4, 14, 14)
        final = self.layer4(mid)  # (N, 512, 2, 7, 7)
        return {"mid": mid, "final": final}

    def forward_head(self, features: Dict[str, Tensor]) -> Tensor:
        """``features["final"]`` (N, 512, T', H', W') -> logits (N, num_classes)."""
        x = self.avgpool(features["final"])  # (N, 512, 1, 1, 1)
        return self.fc(torch.flatten(x, 1))


def _video_resnet(stem: type[nn.Module], conv_makers: Sequence[ConvMaker], num_classes: int,
                  widen_factor: float) -> VideoResNet:
    return VideoResNet(stem, conv_makers, layers=(2, 2, 2, 2), num_classes=num_classes, widen_factor=widen_factor)


@register_model
def r3d_18(*, num_classes: int = 400, widen_factor: float = 1.0) -> VideoResNet:
    """R3D-18: full 3x3x3 convolutions everywhere (33.4 M parameters with 400 classes).

    Checkpoints: torchvision's Kinetics-400 weights for r3d_18 load as they are (``widen_factor=1``); a
    ``dsn train`` checkpoint of it.
    """
    return _video_resnet(BasicStem, [Conv3DSimple] * 4, num_classes, widen_factor)


@register_model
def mc3_18(*, num_classes: int = 400, widen_factor: float = 1.0) -> VideoResNet:
    """MC3-18: 3x3x3 convolutions in layer1, 1x3x3 (no time) in layers 2-4 (11.7 M parameters).

    Checkpoints: torchvision's Kinetics-400 weights for mc3_18 load as they are (``widen_factor=1``); a
    ``dsn train`` checkpoint of it.
    """
    return _video_resnet(BasicStem, [Conv3DSimple] + [Conv3DNoTemporal] * 3, num_classes, widen_factor)


@register_model
def r2plus1d_18(*, num_classes: int = 400, widen_factor: float = 1.0) -> VideoResNet:
    """R(2+1)D-18: every 3D convolution factorised into spatial + temporal (31.5 M parameters).

    Checkpoints: torchvision's Kinetics-400 weights for r2plus1d_18 load as they are (``widen_factor=1``); a
    ``dsn train`` checkpoint of it.
    """
    return _video_resnet(R2Plus1dStem, [Conv2Plus1D] * 4, num_classes, widen_factor)


# ====================================================================== 3D-ResNets-PyTorch's ResNet
class Bottleneck(nn.Module):
    """1x1x1 -> 3x3x3 (strided) -> 1x1x1 to ``planes * 4`` channels, plus the shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_planes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = nn.Conv3d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet3D(TapModel):
    """The 3D ResNet of 3D-ResNets-PyTorch (bottleneck blocks, shortcut type B).

    ::

        clip (N, 3, 16, 224, 224)
          -> conv1 7x7x7 /(1,2,2), bn1, relu  (N,   64, 16, 112, 112)
          -> maxpool 3x3x3 /2                 (N,   64,  8,  56,  56)   skipped with no_max_pool
          -> layer1                           (N,  256,  8,  56,  56)
          -> layer2                           (N,  512,  4,  28,  28)
          -> layer3                           (N, 1024,  2,  14,  14)   tap "mid"
          -> layer4                           (N, 2048,  1,   7,   7)   tap "final"
          -> avgpool, flatten, fc             (N, num_classes)

    Channel counts scale with ``widen_factor``; ``conv1_t_stride`` and ``no_max_pool`` change the strides
    of the taps, which ``feature_info`` reports.
    """

    def __init__(self, layers: Sequence[int], *, num_classes: int = 700, conv1_t_size: int = 7,
                 conv1_t_stride: int = 1, no_max_pool: bool = False, widen_factor: float = 1.0) -> None:
        super().__init__()
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("conv1_t_stride", conv1_t_stride)
        _check_positive_int("conv1_t_size", conv1_t_size)
        if conv1_t_size % 2 == 0:
            # an even kernel with padding size // 2 adds a frame, and the taps would no longer be
            # ceil(T / stride) frames long
            raise ValueError(f"conv1_t_size must be odd, got {conv1_t_size}")
        planes = widen_channels((64, 128, 256, 512), widen_factor)

        self.in_planes = planes[0]
        self.no_max_pool = no_max_pool
        self.conv1 = nn.Conv3d(3, self.in_planes, kernel_size=(conv1_t_size, 7, 7),
                               stride=(conv1_t_stride, 2, 2), padding=(conv1_t_size // 2, 3, 3), bias=False)
        self.bn1 = nn.BatchNorm3d(self.in_planes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)  # parameter-free: kept either way
        self.layer1 = self._make_layer(planes[0], layers[0], stride=1)
        self.layer2 = self._make_layer(planes[1], layers[1], stride=2)
        self.layer3 = self._make_layer(planes[2], layers[2], stride=2)
        self.layer4 = self._make_layer(planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
        self.fc = nn.Linear(planes[3] * Bottleneck.expansion, num_classes)
        init_weights(self, linear_std=None)  # as 3D-ResNets-PyTorch: fc left at PyTorch's default

        pool = 1 if no_max_pool else 2
        self._trunk = ("conv1", "bn1", "relu") + (() if no_max_pool else ("maxpool",)) + (
            "layer1", "layer2", "layer3", "layer4")
        t, s = conv1_t_stride * pool, 2 * pool  # strides after the stem
        self.feature_info = (
            TapInfo("mid", planes[2] * Bottleneck.expansion, (4 * t, 4 * s, 4 * s), "layer3"),
            TapInfo("final", planes[3] * Bottleneck.expansion, (8 * t, 8 * s, 8 * s), "layer4"),
        )
        self.preprocess = Preprocess(clip_len=16, crop_size=112, resize=112, mean=HARA_KINETICS_MEAN,
                                     std=HARA_KINETICS_STD)

    def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.in_planes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv3d(self.in_planes, planes * Bottleneck.expansion, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm3d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.in_planes, planes, stride, downsample)]
        self.in_planes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.in_planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward_features(self, x: Tensor) -> Dict[str, Tensor]:
        """``x`` (N, 3, T, H, W) -> ``{"mid": (N, 1024, ...), "final": (N, 2048, ...)}`` (see ``feature_info``)."""
        if not torch.jit.is_scripting():
            self.check_input(x)
        x = self.relu(self.bn1(self.conv1(x)))  # (N, 64, 16, 112, 112) at 16x224x224
        if not self.no_max_pool:
            x = self.maxpool(x)  # (N, 64, 8, 56, 56)
        x = self.layer1(x)  # (N, 256, 8, 56, 56)
        x = self.layer2(x)  # (N, 512, 4, 28, 28)
        mid = self.layer3(x)  # (N, 1024, 2, 14, 14)
        final = self.layer4(mid)  # (N, 2048, 1, 7, 7)
        return {"mid": mid, "final": final}

    def forward_head(self, features: Dict[str, Tensor]) -> Tensor:
        """``features["final"]`` (N, 2048, T', H', W') -> logits (N, num_classes)."""
        x = self.avgpool(features["final"])  # (N, 2048, 1, 1, 1)
        return self.fc(torch.flatten(x, 1))


@register_model
def r3d_50(*, num_classes: int = 700, conv1_t_size: int = 7, conv1_t_stride: int = 1, no_max_pool: bool = False,
           widen_factor: float = 1.0) -> ResNet3D:
    """3D ResNet-50 of 3D-ResNets-PyTorch; the defaults fit its Kinetics-700 checkpoint ``r3d50_K_200ep.pth``.

    Checkpoints: 3D-ResNets-PyTorch's ResNet-50 checkpoints (``r3d50_K_200ep.pth``, Kinetics-700; others
    with the matching ``num_classes``); a ``dsn train`` checkpoint of it.
    """
    return ResNet3D((3, 4, 6, 3), num_classes=num_classes, conv1_t_size=conv1_t_size,
                    conv1_t_stride=conv1_t_stride, no_max_pool=no_max_pool, widen_factor=widen_factor)


def _check_positive_int(field: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{field} must be a positive integer, got {value!r}")
