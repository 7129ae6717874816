"""Inference copies of a model with each BatchNorm folded into the convolution before it.

In eval mode a BatchNorm after a convolution is an affine map per channel, so it can be folded into the
convolution's weight and bias: the same function with one pass over the activations fewer. Module names
stay where they were (a folded BatchNorm becomes ``nn.Identity``), so ``forward_taps`` and the rest of
the feature interface work unchanged; the state dict of the copy has convolution biases and no
BatchNorm entries, so it is for inference and export, not for training or checkpoints.
"""

from __future__ import annotations

import copy

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV_BN = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return any(isinstance(conv, c) and type(bn) is b for c, b in _CONV_BN) and (
        bn.track_running_stats and bn.num_features == conv.out_channels
    )


def _fold_children(module: nn.Module) -> int:
    """Fold conv -> BN pairs among ``module``'s direct children; returns how many were folded.

    Pairs are consecutive entries of an ``nn.Sequential``, ResNet-style siblings ``convK`` / ``bnK``,
    which are always applied one right after the other, and the pairs a module lists in its
    ``conv_bn_pairs`` attribute (``("conv_b", "norm_b.0")``: the BatchNorm may sit inside a child)."""
    folded = 0
    if isinstance(module, nn.Sequential):
        names = list(module._modules)
        pairs = list(zip(names, names[1:]))
    else:
        pairs = [(name, "bn" + name[4:]) for name in module._modules if name.startswith("conv") and name[4:].isdigit()]
        pairs += list(getattr(module, "conv_bn_pairs", ()))
    for conv_name, bn_path in pairs:
        owner_path, _, bn_name = bn_path.rpartition(".")
        owner = module.get_submodule(owner_path) if owner_path else module
        conv, bn = module._modules.get(conv_name), owner._modules.get(bn_name)
        if conv is not None and bn is not None and _foldable(conv, bn):
            module._modules[conv_name] = fuse_conv_bn_eval(conv, bn)
            owner._modules[bn_name] = nn.Identity()
            folded += 1
    return folded


def fuse_for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every BatchNorm that directly follows a convolution folded
    into it; ``model`` itself is left as it is. ``fused.folded_batchnorms`` says how many were folded."""
    fused = copy.deepcopy(model).eval()
    fused.folded_batchnorms = sum(_fold_children(m) for m in list(fused.modules()))
    return fused
