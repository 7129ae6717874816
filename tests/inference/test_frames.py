"""The frame graph (3D convolutions and pools as 2D ones over frames) computes what the model computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distilled_shufflenet.inference.frames import frame_conv, frame_graph, frame_pool
from distilled_shufflenet.models import create_model
from distilled_shufflenet.models.student import SpatialMaxPool


@pytest.mark.parametrize("kernel, stride, padding", [
    ((1, 3, 3), (1, 2, 2), (0, 1, 1)),  # over frames
    ((1, 1, 1), (2, 2, 2), (0, 0, 0)),  # over every other frame
    ((3, 1, 1), (2, 1, 1), (1, 0, 0)),  # over (T, H*W)
    ((3, 3, 3), (2, 2, 2), (1, 1, 1)),  # over windows of frames: a stride-2 shortcut
    ((3, 7, 7), (1, 2, 2), (1, 3, 3)),  # the stem
    ((2, 3, 3), (1, 1, 1), (0, 1, 1)),  # an even window, no time padding
])
def test_frame_conv_is_the_same_convolution(kernel, stride, padding) -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(4, 6, kernel, stride, padding, bias=True).eval()
    x = torch.randn(2, 4, 5, 9, 11)  # odd sizes: the rounding of strided outputs
    rewritten = frame_conv(conv)
    assert not isinstance(rewritten, nn.Conv3d)
    assert all(p.dim() == 4 for n, p in rewritten.named_parameters() if n.endswith("weight"))  # what int8 needs
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), conv(x), rtol=1e-5, atol=1e-5)


def test_frame_conv_leaves_what_it_cannot_or_should_not_rewrite() -> None:
    assert frame_conv(nn.Conv3d(4, 4, 3, padding=1, groups=4)) is None  # depthwise: slow as int8 2D
    assert frame_conv(nn.Conv3d(4, 4, 3, padding=2, dilation=2)) is None
    assert frame_conv(nn.Conv3d(4, 4, 3, padding="same")) is None
    assert frame_pool(nn.MaxPool3d(3, 2, 1)) is None  # pools over time too


@pytest.mark.parametrize("pool", [SpatialMaxPool(), nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1))])
def test_frame_pool_is_the_same_pool(pool) -> None:
    x = torch.randn(2, 3, 4, 9, 10)
    with torch.no_grad():
        torch.testing.assert_close(frame_pool(pool)(x), pool(x))


@pytest.mark.parametrize("name, clip", [("shufflenet2plus1d", (16, 64)), ("x3d_s", (4, 48)), ("r2plus1d_18", (8, 48))])
def test_frame_graph_computes_the_model(name, clip) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=5).eval()
    graph = frame_graph(model)
    left = [m for m in graph.modules() if isinstance(m, nn.Conv3d)]
    assert graph.frame_ops > 0 and all(m.groups > 1 for m in left)  # only depthwise convolutions stay 3D
    x = torch.randn(2, 3, clip[0], clip[1], clip[1])
    with torch.no_grad():
        expected, got = model.forward_taps(x, ("final",))["final"], graph.forward_taps(x, ("final",))["final"]
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert list(model.state_dict()) != list(graph.state_dict())  # a copy for quantisation only
    assert any(isinstance(m, nn.Conv3d) for m in model.modules())  # the model itself is untouched


def test_a_pool_after_a_convolution_over_frames_runs_on_its_frames() -> None:
    """The pool (and the ReLU before it) move into the convolution's module, so that the quantiser sees
    the pool's input come from the convolution; a pool after a convolution over time stays apart."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Sequential(nn.Conv3d(3, 4, (3, 5, 5), (1, 2, 2), (1, 2, 2)), nn.Identity(), nn.ReLU()), SpatialMaxPool(),
        nn.Conv3d(4, 4, (3, 1, 1), padding=(1, 0, 0)), nn.MaxPool3d((1, 2, 2), (1, 2, 2)),
    ).eval()
    graph = frame_graph(model)
    host = graph[0][0]
    assert [type(m) for m in host.post] == [nn.ReLU, nn.MaxPool2d]
    assert isinstance(graph[0][2], nn.Identity) and isinstance(graph[1], nn.Identity)
    assert not isinstance(graph[3], nn.Identity) and len(graph[3].post) == 0  # after a (3,1,1) convolution
    x = torch.randn(2, 3, 5, 17, 19)
    with torch.no_grad():
        torch.testing.assert_close(graph(x), model(x), rtol=1e-5, atol=1e-5)
