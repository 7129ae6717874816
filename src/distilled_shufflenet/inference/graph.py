"""Export-ready copies of a model: every shape fixed for one clip size, batch left free.

The student's eager code reads shapes from its tensors (``x.shape[2]``, ``unflatten(1, (2, -1))``) so
that it runs at any input size. Traced for ONNX, each such read becomes a chain of Shape, Gather, Slice,
Mod and Concat nodes in front of a Reshape: hundreds of them for the paper preset, which ONNX Runtime
evaluates on every call and which stop its graph optimisations (layout propagation, fusions, int8
quantisation of whole blocks). :func:`static_graph` runs the model once on an example clip, records the
shape every student block sees, and returns a copy whose blocks reshape with those numbers as constants
(the batch as ``-1``)::

    channel shuffle     Reshape(-1, 2, C/2, T, H, W) -> Transpose -> Reshape(-1, C, T, H, W)
    (1,k,k) / (k,1,1)   Conv with a 3D kernel (ONNX Runtime has no need of the 2D-convolution detour)
    max-pool (1,3,3)    MaxPool with a (1, 3, 3) window
    the head's means    MatMul with a constant averaging vector (a reduction there gave wrong logits in
                        OpenVINO with oneDNN limited to AVX2, ONEDNN_MAX_CPU_ISA=AVX2)

The copy keeps the module names and the state-dict keys of the model it came from, and computes the
same function; it only accepts clips of the recorded size (any batch).
"""

from __future__ import annotations

import copy
import types
from typing import Dict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilled_shufflenet.models.student import DownUnit, ShuffleNet2Plus1D, SpatialConv3d, SpatialMaxPool, \
    TemporalConv3d, Unit

_Shape = tuple[int, int, int, int]  # (C, T, H, W) of one clip


def _shuffle(x: Tensor, shape: _Shape, groups: int = 2) -> Tensor:
    """``channel_shuffle`` with constant sizes: ``(N, C, T, H, W) -> (N, C, T, H, W)``."""
    c, t, h, w = shape
    return x.reshape(-1, groups, c // groups, t, h, w).transpose(1, 2).reshape(-1, c, t, h, w)


class StaticUnit(nn.Module):
    """:class:`~distilled_shufflenet.models.student.Unit` for inputs of one shape ``(C, T, H, W)``."""

    def __init__(self, unit: Unit, shape: _Shape) -> None:
        super().__init__()
        self.branch = unit.branch
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        half = self.shape[0] // 2
        a, b = x.split(half, dim=1)  # (N, C/2, T, H, W) each
        return _shuffle(torch.cat((self.branch(b), a), dim=1), self.shape)


class StaticDownUnit(nn.Module):
    """:class:`~distilled_shufflenet.models.student.DownUnit` whose output has shape ``out_shape``."""

    def __init__(self, unit: DownUnit, out_shape: _Shape) -> None:
        super().__init__()
        self.branch = unit.branch
        self.shortcut = unit.shortcut
        self.out_shape = out_shape

    def forward(self, x: Tensor) -> Tensor:
        return _shuffle(torch.cat((self.branch(x), self.shortcut(x)), dim=1), self.out_shape)


class PlainConv3d(nn.Conv3d):
    """A :class:`SpatialConv3d` / :class:`TemporalConv3d` computed as the ``Conv3d`` it stands for."""

    def forward(self, x: Tensor) -> Tensor:
        return F.conv3d(x, self.weight, self.bias, self.stride, self.padding)


class FramePool(nn.Module):
    """:class:`SpatialMaxPool` as one ``max_pool3d`` with a ``(1, 3, 3)`` window (a single MaxPool node)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(x, (1, 3, 3), (1, 2, 2), (0, 1, 1))


class FrameConv2d(nn.Conv3d):
    """A ``(1, k, k)`` convolution as a 2D convolution over the frames of clips of one shape: quantised
    2D convolutions run in ONNX Runtime's fast int8 kernels, 3D ones in a generic path."""

    def forward(self, x: Tensor) -> Tensor:
        c, t, h, w = self.in_shape
        c2, _, h2, w2 = self.out_shape
        frames = x.transpose(1, 2).reshape(-1, c, h, w)  # (N*T, C, H, W)
        y = F.conv2d(frames, self.weight[:, :, 0], self.bias, self.stride[1:], self.padding[1:])
        return y.reshape(-1, t, c2, h2, w2).transpose(1, 2)  # (N, C', T, H', W')


class TimeConv2d(nn.Conv3d):
    """A ``(k, 1, 1)`` convolution as a 2D convolution over ``(T, H*W)`` (a free reshape), for clips of one shape."""

    def forward(self, x: Tensor) -> Tensor:
        c, t, h, w = self.in_shape
        c2, t2 = self.out_shape[:2]
        y = F.conv2d(x.reshape(-1, c, t, h * w), self.weight[..., 0], self.bias, (self.stride[0], 1),
                     (self.padding[0], 0))  # (N, C', T', H*W)
        return y.reshape(-1, c2, t2, h, w)


def _as(conv: nn.Conv3d, cls: type, shapes: tuple[_Shape, _Shape] | None = None) -> nn.Conv3d:
    out = copy.copy(conv)  # shares the parameters; only the class (the forward) changes
    out.__class__ = cls
    if shapes is not None:
        out.in_shape, out.out_shape = shapes
    return out


def _record_shapes(model: nn.Module, example: Tensor) -> dict[nn.Module, tuple[_Shape, _Shape]]:
    """``{block: (input shape, output shape)}`` without the batch, for every student block in ``model``."""
    shapes: dict[nn.Module, tuple[_Shape, _Shape]] = {}
    hooks = [
        m.register_forward_hook(lambda m, args, out: shapes.__setitem__(m, (tuple(args[0].shape[1:]),
                                                                             tuple(out.shape[1:]))))
        for m in model.modules() if isinstance(m, (Unit, DownUnit, SpatialConv3d, TemporalConv3d))
    ]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    return shapes


def mean_from(x: Tensor, start_dim: int) -> Tensor:
    """The mean over every dimension from ``start_dim`` on, as a product with a constant averaging vector:
    ``(N, C, T, H, W)``, 2 -> ``(N, C)``; traced, the reshape and the vector are constants (batch free)."""
    n = 1
    for size in x.shape[start_dim:]:
        n *= int(size)
    y = x.reshape([-1] + [int(size) for size in x.shape[1:start_dim]] + [n])
    return y @ torch.full((n,), 1.0 / n, dtype=y.dtype, device=y.device)


def _static_head(self: ShuffleNet2Plus1D, features: Dict[str, Tensor]) -> Tensor:
    """:meth:`ShuffleNet2Plus1D.forward_head` with its means as :func:`mean_from`."""
    mid = mean_from(self.adapt_mid(features["mid"]), 2)  # (N, 1024)
    final = self.adapt_final(features["final"])  # (N, 2048, 2, 7, 7)
    final = mean_from(final, 3).flatten(1) if self.head_pool == "flatten" else mean_from(final, 2)
    return self.fc(self.dropout(torch.cat((mid, final), dim=1)))  # (N, num_classes)


CONV_LAYOUTS = ("conv3d", "conv2d")


def static_graph(model: nn.Module, example: Tensor, *, convs: str = "conv3d") -> nn.Module:
    """An eval copy of ``model`` whose student blocks use constant shapes for clips shaped like
    ``example`` (``(N, C, T, H, W)``; the batch stays free). Models without such blocks are copied as they
    are. The copy's ``static_input`` holds ``(C, T, H, W)``.

    ``convs="conv3d"`` runs the factorised convolutions as the 3D convolutions they are (no layout
    changes: best for fp32 in ONNX Runtime); ``"conv2d"`` as 2D convolutions over frames or over
    ``(T, H*W)`` (a transpose pair around each spatial one: best for int8)."""
    if convs not in CONV_LAYOUTS:
        raise ValueError(f"convs: expected one of {', '.join(CONV_LAYOUTS)}, got {convs!r}")
    graph = copy.deepcopy(model).eval()
    shapes = _record_shapes(graph, example)
    for parent in list(graph.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, Unit):
                parent._modules[name] = StaticUnit(child, shapes[child][0])
            elif isinstance(child, DownUnit):
                parent._modules[name] = StaticDownUnit(child, shapes[child][1])
            elif isinstance(child, (SpatialConv3d, TemporalConv3d)) and convs == "conv3d":
                parent._modules[name] = _as(child, PlainConv3d)
            elif isinstance(child, (SpatialConv3d, TemporalConv3d)):
                cls = FrameConv2d if isinstance(child, SpatialConv3d) else TimeConv2d
                parent._modules[name] = _as(child, cls, shapes[child])
            elif isinstance(child, SpatialMaxPool):
                parent._modules[name] = FramePool()
    if isinstance(graph, ShuffleNet2Plus1D):
        graph.forward_head = types.MethodType(_static_head, graph)
    graph.static_input = tuple(example.shape[1:])
    return graph
