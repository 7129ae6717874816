"""Copies of a video model whose 3D convolutions and pools are 2D ones over frames, for int8.

PyTorch's x86 int8 path (:func:`~.quantize.quantize_pt2e` compiled by inductor) runs a convolution in
oneDNN's int8 kernel only when it is a 2D convolution whose weight is a constant 4-D tensor. The
student's factorised convolutions compute 2D convolutions from a slice of their 5-D weight, which the
pattern does not match, and its full 3D convolutions (the stem, the stride-2 shortcuts) are 3D: left as
they are, every one of them runs in fp32 between a dequantise and a quantise, at no gain. This copy
turns each dense ``Conv3d`` into the 2D convolution it amounts to, with a 4-D weight of its own (grouped
ones, such as X3D's depthwise convolutions, stay 3D: their int8 2D forms are far slower)::

    (1, k, k)           2D convolution over the N*T frames                      (N*T, C, H, W)
    (k, 1, 1)           2D convolution over (T, H*W), a free reshape              (N, C, T, H*W)
    (kt, kh, kw)        2D convolution over the frames of each time window, the kt frames of a window
                        stacked on the channels (a copy of the input, kt / stride_t times its size)
    max-pool (1, k, k)  2D max-pool over the frames

A frame-wise max-pool that follows a convolution over frames (the student's stem) runs inside that
convolution's module, with the ReLU between them, on its frames (``post``): between two modules the
frames go back to a clip and out again, and the quantiser cannot follow int8 values through that
reshaping, so the pool ran in fp32 on the largest activation of the network (the stem's output). On a
2-core AVX2 CPU the paper preset's int8 model ran 16 % faster (median; 10 % for the fastest calls) with
the pool merged, side by side in one process.

The copy computes the same function as the model, at any clip size, and keeps its module names; its
state dict differs (it is for quantisation, not for checkpoints).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distilled_shufflenet.models.student import SpatialMaxPool


class _FrameOp(nn.Module):
    """Applies ``op`` then the frame-wise modules ``post`` to every frame:
    ``(N, C, T, H, W) -> (N, C', T, H', W')``."""

    def __init__(self, op: nn.Module, time_stride: int = 1) -> None:
        super().__init__()
        self.op, self.time_stride = op, time_stride
        self.post = nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        if self.time_stride > 1:
            x = x[:, :, ::self.time_stride]
        t = x.shape[2]
        y = self.post(self.op(x.transpose(1, 2).flatten(0, 1)))  # (N*T, C', H', W')
        return y.unflatten(0, (-1, t)).transpose(1, 2)


class TimeConv(nn.Module):
    """A ``(k, 1, 1)`` ``Conv3d`` as the 2D convolution ``conv`` over ``(T, H*W)``."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: Tensor) -> Tensor:
        h = x.shape[3]
        return self.conv(x.flatten(3)).unflatten(3, (h, -1))  # (N, C', T', H, W)


class WindowConv(nn.Module):
    """A ``(kt, kh, kw)`` ``Conv3d`` as the 2D convolution ``conv`` over the frames of each time window,
    the ``kt`` frames of a window stacked on the channels (channel ``c * kt + k`` is frame ``k`` of input
    channel ``c``), then the frame-wise modules ``post``."""

    def __init__(self, conv: nn.Conv2d, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv, self.kernel, self.stride, self.padding = conv, kernel, stride, padding
        self.post = nn.Sequential()

    def forward(self, x: Tensor) -> Tensor:
        x = F.pad(x, (0, 0, 0, 0, self.padding, self.padding))
        t = (x.shape[2] - self.kernel) // self.stride + 1
        span = self.stride * (t - 1) + 1
        windows = torch.stack([x[:, :, k:k + span:self.stride] for k in range(self.kernel)], 2)  # (N, C, kt, T', H, W)
        y = self.post(self.conv(windows.permute(0, 3, 1, 2, 4, 5).flatten(0, 1).flatten(1, 2)))  # (N*T', C', H', W')
        return y.unflatten(0, (-1, t)).transpose(1, 2)


def _conv2d(conv: nn.Conv3d, weight: Tensor, kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int]) -> nn.Conv2d:
    """An ungrouped ``Conv2d`` with ``weight`` (a 4-D form of ``conv``'s) and ``conv``'s bias."""
    out = nn.Conv2d(weight.shape[1], conv.out_channels, kernel, stride, padding, bias=conv.bias is not None)
    out.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if conv.bias is not None:
        out.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
    return out


def frame_conv(conv: nn.Conv3d) -> nn.Module | None:
    """The 2D form of ``conv`` (same function), or ``None`` where it has none here (dilation, string
    padding, a padding mode other than zeros) or should keep its 3D form: grouped convolutions (X3D's
    depthwise ones), whose int8 kernels run many times slower than fp32 3D ones."""
    if (isinstance(conv.padding, str) or conv.dilation != (1, 1, 1) or conv.padding_mode != "zeros"
            or conv.groups != 1):
        return None
    (kt, kh, kw), (st, sh, sw), (pt, ph, pw) = conv.kernel_size, conv.stride, conv.padding
    w = conv.weight
    if kt == 1 and pt == 0:
        return _FrameOp(_conv2d(conv, w[:, :, 0], (kh, kw), (sh, sw), (ph, pw)), st)
    if (kh, kw, sh, sw, ph, pw) == (1, 1, 1, 1, 0, 0):
        return TimeConv(_conv2d(conv, w[..., 0], (kt, 1), (st, 1), (pt, 0)))
    return WindowConv(_conv2d(conv, w.flatten(1, 2), (kh, kw), (sh, sw), (ph, pw)), kt, st, pt)


def frame_pool(pool: nn.Module) -> nn.Module | None:
    """The 2D form of a max-pool over the frames (``SpatialMaxPool``, ``MaxPool3d`` with a ``(1, k, k)``
    window), or ``None``."""
    if isinstance(pool, SpatialMaxPool):
        return _FrameOp(nn.MaxPool2d(3, 2, 1))
    if isinstance(pool, nn.MaxPool3d):
        k, s, p, d = (v if isinstance(v, tuple) else (v,) * 3
                      for v in (pool.kernel_size, pool.stride, pool.padding, pool.dilation))
        if k[0] == 1 and s[0] == 1 and p[0] == 0 and d == (1, 1, 1):
            return _FrameOp(nn.MaxPool2d(k[1:], s[1:], p[1:], ceil_mode=pool.ceil_mode))
    return None


def frame_graph(model: nn.Module) -> nn.Module:
    """An eval copy of ``model`` with every ``Conv3d`` and frame-wise max-pool it can rewrite as 2D ones
    over frames (module names kept; see the module's description). ``copy.frame_ops`` counts them."""
    graph = copy.deepcopy(model).eval()
    count = 0
    for parent in list(graph.modules()):
        for name, child in list(parent._modules.items()):
            if isinstance(child, nn.Conv3d):
                new = frame_conv(child)
            elif isinstance(child, (SpatialMaxPool, nn.MaxPool3d)):
                new = frame_pool(child)
            else:
                continue
            if new is not None:
                parent._modules[name] = new
                count += 1
    for seq in [m for m in graph.modules() if isinstance(m, nn.Sequential)]:
        _merge_pools(seq)
    graph.frame_ops = count
    return graph


def _leaves(seq: nn.Sequential) -> list[tuple[nn.Module, str]]:
    """``(parent, name)`` of the modules ``seq`` runs, in order, nested sequential modules opened."""
    out = []
    for name, child in seq._modules.items():
        out.extend(_leaves(child) if isinstance(child, nn.Sequential) else [(seq, name)])
    return out


def _merge_pools(seq: nn.Sequential) -> None:
    """Move each frame-wise pool that ``seq`` runs right after a module over frames (``ReLU`` and
    ``Identity`` modules between them allowed) into that module's ``post``, with the ``ReLU`` modules,
    leaving ``Identity`` in their places."""
    leaves = _leaves(seq)

    def at(k: int) -> nn.Module:  # looked up each time: earlier merges leave Identity in the tree
        return leaves[k][0]._modules[leaves[k][1]]

    for i in range(len(leaves)):
        pool = at(i)
        if not (isinstance(pool, _FrameOp) and isinstance(pool.op, nn.MaxPool2d) and pool.time_stride == 1):
            continue
        j = i - 1
        while j >= 0 and isinstance(at(j), (nn.ReLU, nn.Identity)):
            j -= 1
        host = at(j) if j >= 0 else None
        if not isinstance(host, (_FrameOp, WindowConv)):
            continue
        for k in range(j + 1, i + 1):
            if not isinstance(at(k), nn.Identity):
                host.post.append(pool.op if k == i else at(k))
                parent, name = leaves[k]
                parent._modules[name] = nn.Identity()
