"""2D ResNets (v1.5), the image teachers, with torchvision's module and parameter names.

The layout, initialisation and state-dict keys are those of torchvision's ``resnet18`` .. ``resnet101``
(the stride of a Bottleneck sits on its 3x3 conv), so torchvision's ImageNet checkpoints load with
``load_pretrained(model, path)`` strictly and without any key mapping.

A 2D teacher takes images or clips::

    image (N, 3, H, W) ----------------------------------------> taps (N, C, h, w), logits (N, K)
    clip (N, 3, T, H, W) -> fold frames (N*T, 3, H, W) -> trunk -> taps (N, C, T, h, w)
                                                               -> logits averaged over frames (N, K)

    conv1 -> bn1 -> relu -> maxpool -> layer1 -> layer2 -> layer3 -> layer4 -> avgpool -> fc
                                                           (mid)     (final)

At 224 x 224, ``mid`` is (1024, 14, 14) and ``final`` (2048, 7, 7) for ResNet-50/101 (256 / 512 channels
for ResNet-18/34).  The distillation stage shows the teacher one frame per student clip, taken with
:func:`select_frames`.
"""

from __future__ import annotations

from typing import Dict, List, Tuple, Type, Union

import torch
from torch import Tensor, nn

from distilled_shufflenet.models._base import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Preprocess,
    TapInfo,
    TapModel,
    init_weights,
    widen_channels,
)
from distilled_shufflenet.models._registry import register_model


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv1x1(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False)


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut (ResNet-18/34): (N, C, H, W) -> (N, planes, H/stride, W/stride)."""

    expansion = 1

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carrying the stride: v1.5), 1x1 expand, and a shortcut (ResNet-50/101):
    (N, C, H, W) -> (N, 4 * planes, H/stride, W/stride)."""

    expansion = 4

    def __init__(self, in_channels: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = _conv1x1(in_channels, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


Block = Union[Type[BasicBlock], Type[Bottleneck]]


def _make_layer(block: Block, in_channels: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    """One stage: ``blocks`` blocks, the first one changing stride and width (with a 1x1 conv + BN
    shortcut, ``downsample``, when either changes)."""
    out_channels = planes * block.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(_conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))
    layers: List[nn.Module] = [block(in_channels, planes, stride, downsample)]
    layers += [block(out_channels, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)


class ResNet2D(TapModel):
    """A torchvision-compatible 2D ResNet with taps ``mid`` (``layer3``, stride 16) and ``final``
    (``layer4``, stride 32).

    Takes an image batch (N, 3, H, W) or a clip batch (N, 3, T, H, W); a clip's frames are folded into the
    batch, its taps come back as (N, C, T, h, w) and its logits are the per-frame logits averaged over T.

    Channel counts scale with ``widen_factor`` (every stage's 64 / 128 / 256 / 512 planes are multiplied
    by it; 1.0 is torchvision's layout). A narrow teacher, ``resnet18`` at 0.25 with 64 / 128 channels
    at ``mid`` / ``final``, trains in CPU minutes and pairs with a small student's adapters.
    """

    classifier_name = "fc"
    _trunk = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

    def __init__(
        self,
        block: Block,
        layers: Tuple[int, int, int, int] | List[int],
        *,
        num_classes: int = 1000,
        zero_init_residual: bool = False,
        in_channels: int = 3,
        widen_factor: float = 1.0,
    ) -> None:
        super().__init__()
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"ResNet2D: layers must be 4 positive block counts, got {list(layers)}")
        if num_classes < 1:
            raise ValueError(f"ResNet2D: num_classes must be >= 1, got {num_classes}")
        if in_channels < 1:
            raise ValueError(f"ResNet2D: in_channels must be >= 1, got {in_channels}")
        planes = widen_channels((64, 128, 256, 512), widen_factor)  # torchvision's at widen_factor=1
        e = block.expansion
        self.in_channels = in_channels
        self.conv1 = nn.Conv2d(in_channels, planes[0], kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(planes[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = _make_layer(block, planes[0], planes[0], layers[0], stride=1)
        self.layer2 = _make_layer(block, planes[0] * e, planes[1], layers[1], stride=2)
        self.layer3 = _make_layer(block, planes[1] * e, planes[2], layers[2], stride=2)
        self.layer4 = _make_layer(block, planes[2] * e, planes[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(planes[3] * e, num_classes)

        self.feature_info = (
            TapInfo("mid", planes[2] * e, (1, 16, 16), "layer3"),
            TapInfo("final", planes[3] * e, (1, 32, 32), "layer4"),
        )
        self.preprocess = Preprocess(clip_len=1, crop_size=224, resize=256, mean=IMAGENET_MEAN, std=IMAGENET_STD)
        self._init_weights(zero_init_residual)

    def _init_weights(self, zero_init_residual: bool) -> None:
        init_weights(self, linear_std=None)  # torchvision's; the Linear keeps PyTorch's default
        if zero_init_residual:
            # each residual branch starts at zero, so every block starts as the identity
            for m in self.modules():
                if isinstance(m, Bottleneck):
                    nn.init.zeros_(m.bn3.weight)
                elif isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    # ---------------------------------------------------------------- clip folding
    def _accepted_ranks(self) -> tuple[int, ...]:
        return (4, 5)

    def _enter(self, x: Tensor) -> Tuple[Tensor, int]:
        """Fold a clip's frames into the batch: (N, C, T, H, W) -> (N*T, C, H, W); images pass as they are.
        Returns the tensor and T (0 for an image batch)."""
        if x.dim() == 5:
            frames = x.shape[2]
            return x.transpose(1, 2).flatten(0, 1), frames  # (N*T, C, H, W)
        return x, 0

    def _leave(self, x: Tensor, fold: int) -> Tensor:
        """Undo :meth:`_enter` on a feature map: (N*T, C, h, w) -> (N, C, T, h, w) when ``fold`` = T > 0."""
        if fold > 0:
            return x.unflatten(0, (-1, fold)).transpose(1, 2)  # (N, C, T, h, w)
        return x

    # ---------------------------------------------------------------- features and head
    def forward_features(self, x: Tensor) -> Dict[str, Tensor]:
        """``{"mid": layer3 output, "final": layer4 output}``; (N, C, h, w) for images, (N, C, T, h, w)
        for clips."""
        if not torch.jit.is_scripting():
            self.check_input(x)
        x, fold = self._enter(x)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (N', 64, H/4, W/4)
        x = self.layer2(self.layer1(x))  # (N', 128e, H/8, W/8)
        mid = self.layer3(x)  # (N', 256e, H/16, W/16)
        final = self.layer4(mid)  # (N', 512e, H/32, W/32)
        return {"mid": self._leave(mid, fold), "final": self._leave(final, fold)}

    def forward_head(self, features: Dict[str, Tensor]) -> Tensor:
        """Logits from ``features["final"]``: (N, K) for images; for clips (N, C, T, h, w) the per-frame
        logits averaged over T, (N, K)."""
        x = features["final"]
        frames = 0
        if x.dim() == 5:
            frames = x.shape[2]
            x = x.transpose(1, 2).flatten(0, 1)  # (N*T, C, h, w)
        x = torch.flatten(self.avgpool(x), 1)  # (N', C)
        logits = self.fc(x)  # (N', K)
        if frames > 0:
            logits = logits.unflatten(0, (-1, frames)).mean(1)  # (N, K)
        return logits

    @staticmethod
    def select_frames(clip: Tensor, index: Union[Tensor, int]) -> Tensor:
        """See :func:`select_frames`."""
        return select_frames(clip, index)


def select_frames(clip: Tensor, index: Union[Tensor, int]) -> Tensor:
    """One frame of each clip: (N, C, T, H, W) -> (N, C, H, W).

    ``index`` is an integer tensor of shape (N,) (one frame index per clip) or one int for every clip;
    indices must lie in ``[0, T)``.  The distillation stage shows the 2D teacher one random frame of each
    student clip this way.
    """
    if not isinstance(clip, Tensor) or clip.dim() != 5:
        given = tuple(clip.shape) if isinstance(clip, Tensor) else type(clip).__name__
        raise ValueError(f"select_frames: clip must be a (N, C, T, H, W) tensor, got {given}")
    n, frames = clip.shape[0], clip.shape[2]
    if isinstance(index, Tensor):
        if index.is_floating_point() or index.is_complex() or index.dtype == torch.bool:
            raise ValueError(f"select_frames: index must be an integer tensor, got dtype {index.dtype}")
        if index.dim() == 0:
            index = index.expand(n)
        if tuple(index.shape) != (n,):
            raise ValueError(
                f"select_frames: index must have shape ({n},) for a clip batch of shape {tuple(clip.shape)}, "
                f"got {tuple(index.shape)}"
            )
    elif isinstance(index, int) and not isinstance(index, bool):
        index = torch.full((n,), index, dtype=torch.long)
    else:
        raise ValueError(f"select_frames: index must be an int or an integer tensor, got {type(index).__name__}")
    if n > 0 and (int(index.min()) < 0 or int(index.max()) >= frames):
        raise ValueError(
            f"select_frames: frame indices must lie in [0, {frames}) for a clip of shape {tuple(clip.shape)}, "
            f"got min {int(index.min())}, max {int(index.max())}"
        )
    index = index.to(device=clip.device, dtype=torch.long)
    batch = torch.arange(n, device=clip.device)
    return clip.transpose(1, 2)[batch, index]  # (N, C, H, W)


def _resnet(block: Block, layers: List[int], **kwargs) -> ResNet2D:
    return ResNet2D(block, layers, **kwargs)


@register_model
def resnet18(*, num_classes: int = 1000, zero_init_residual: bool = False, in_channels: int = 3,
             widen_factor: float = 1.0) -> ResNet2D:
    """ResNet-18 (torchvision layout, 11,689,512 parameters with 1000 classes); taps 256 / 512 channels.

    Checkpoints: torchvision's ImageNet weights for resnet18 load as they are (same module and parameter names);
    a ``dsn train`` checkpoint of it.
    """
    return _resnet(BasicBlock, [2, 2, 2, 2], num_classes=num_classes,
                   zero_init_residual=zero_init_residual, in_channels=in_channels, widen_factor=widen_factor)


@register_model
def resnet34(*, num_classes: int = 1000, zero_init_residual: bool = False, in_channels: int = 3,
             widen_factor: float = 1.0) -> ResNet2D:
    """ResNet-34 (torchvision layout, 21,797,672 parameters with 1000 classes); taps 256 / 512 channels.

    Checkpoints: torchvision's ImageNet weights for resnet34 load as they are (same module and parameter names);
    a ``dsn train`` checkpoint of it.
    """
    return _resnet(BasicBlock, [3, 4, 6, 3], num_classes=num_classes,
                   zero_init_residual=zero_init_residual, in_channels=in_channels, widen_factor=widen_factor)


@register_model
def resnet50(*, num_classes: int = 1000, zero_init_residual: bool = False, in_channels: int = 3,
             widen_factor: float = 1.0) -> ResNet2D:
    """ResNet-50 v1.5 (torchvision layout, 25,557,032 parameters with 1000 classes); taps 1024 / 2048
    channels.

    Checkpoints: torchvision's ImageNet weights for resnet50 load as they are (same module and parameter names);
    a ``dsn train`` checkpoint of it.
    """
    return _resnet(Bottleneck, [3, 4, 6, 3], num_classes=num_classes,
                   zero_init_residual=zero_init_residual, in_channels=in_channels, widen_factor=widen_factor)


@register_model
def resnet101(*, num_classes: int = 1000, zero_init_residual: bool = False, in_channels: int = 3,
              widen_factor: float = 1.0) -> ResNet2D:
    """ResNet-101 v1.5 (torchvision layout, 44,549,160 parameters with 1000 classes), the paper's 2D
    teacher; taps 1024 / 2048 channels.

    Checkpoints: torchvision's ImageNet weights for resnet101 load as they are (same module and parameter names);
    a ``dsn train`` checkpoint of it.
    """
    return _resnet(Bottleneck, [3, 4, 23, 3], num_classes=num_classes,
                   zero_init_residual=zero_init_residual, in_channels=in_channels, widen_factor=widen_factor)
