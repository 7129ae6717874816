"""X3D-S / X3D-M: PyTorchVideo's key layout and parameter count, the paper's MACs, taps and preprocessing.

The expected state dict is derived here from the X3D paper's recipe (stem 24 channels, stages of
24/48/96/192 channels and 3/5/11/7 blocks, 2.25x depthwise bottlenecks, squeeze-excitation to 1/16 of
the bottleneck width rounded to 8 in blocks 0, 2, 4, ..., conv5 to 432 and a 2048-d layer) written as
PyTorchVideo names its modules, independently of the model code.
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from distilled_shufflenet.bench import count_flops
from distilled_shufflenet.checkpoint import CheckpointError, load_pretrained
from distilled_shufflenet.engine import load_checkpoint, save_checkpoint
from distilled_shufflenet.models import create_model, fuse_for_inference
from distilled_shufflenet.models.x3d import X3D, SqueezeExcitation, round_width

# PyTorchVideo's x3d_s() and x3d_m() with the Kinetics-400 head: the same network, 3,794,274 parameters
PYTORCHVIDEO_PARAMS = 3_794_274
# the X3D paper's inference cost per view (Table 4; "FLOPs" there are multiply-adds), at each model's clip
PAPER_GMACS = {"x3d_s": (1.96, (13, 160, 160)), "x3d_m": (4.73, (16, 224, 224))}


def _bn(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.weight": (channels,), f"{prefix}.bias": (channels,), f"{prefix}.running_mean": (channels,),
            f"{prefix}.running_var": (channels,), f"{prefix}.num_batches_tracked": ()}


def expected_state_shapes(num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """Key -> shape of PyTorchVideo's X3D-S/M state dict, from the paper's recipe."""
    keys = {"blocks.0.conv.conv_t.weight": (24, 3, 1, 3, 3), "blocks.0.conv.conv_xy.weight": (24, 1, 5, 1, 1),
            **_bn("blocks.0.norm", 24)}
    dim_in = 24
    stages = [(24, 54, 3, 8), (48, 108, 5, 8), (96, 216, 11, 16), (192, 432, 7, 32)]  # out, inner, blocks, SE
    for s, (out, inner, blocks, se) in enumerate(stages, start=1):
        for b in range(blocks):
            p = f"blocks.{s}.res_blocks.{b}"
            if b == 0:  # the first block strides, so its shortcut is a convolution (with BN if widths differ)
                keys[f"{p}.branch1_conv.weight"] = (out, dim_in, 1, 1, 1)
                if dim_in != out:
                    keys.update(_bn(f"{p}.branch1_norm", out))
            keys[f"{p}.branch2.conv_a.weight"] = (inner, dim_in if b == 0 else out, 1, 1, 1)
            keys.update(_bn(f"{p}.branch2.norm_a", inner))
            keys[f"{p}.branch2.conv_b.weight"] = (inner, 1, 3, 3, 3)  # depthwise
            keys.update(_bn(f"{p}.branch2.norm_b.0", inner))
            if b % 2 == 0:
                keys.update({f"{p}.branch2.norm_b.1.block.0.weight": (se, inner, 1, 1, 1),
                             f"{p}.branch2.norm_b.1.block.0.bias": (se,),
                             f"{p}.branch2.norm_b.1.block.2.weight": (inner, se, 1, 1, 1),
                             f"{p}.branch2.norm_b.1.block.2.bias": (inner,)})
            keys[f"{p}.branch2.conv_c.weight"] = (out, inner, 1, 1, 1)
            keys.update(_bn(f"{p}.branch2.norm_c", out))
        dim_in = out
    keys["blocks.5.pool.pre_conv.weight"] = (432, 192, 1, 1, 1)
    keys.update(_bn("blocks.5.pool.pre_norm", 432))
    keys["blocks.5.pool.post_conv.weight"] = (2048, 432, 1, 1, 1)
    keys["blocks.5.proj.weight"] = (num_classes, 2048)
    keys["blocks.5.proj.bias"] = (num_classes,)
    return keys


@functools.lru_cache(maxsize=None)
def built(name: str) -> X3D:
    return create_model(name).eval()


@pytest.mark.parametrize("name", ["x3d_s", "x3d_m"])
def test_state_dict_keys_and_shapes_are_pytorchvideos(name: str) -> None:
    own = {k: tuple(v.shape) for k, v in built(name).state_dict().items()}
    expected = expected_state_shapes()
    assert sorted(set(own) - set(expected)) == [] and sorted(set(expected) - set(own)) == []
    assert own == expected
    assert len(own) == 563


@pytest.mark.parametrize("name", ["x3d_s", "x3d_m"])
def test_parameter_count_is_pytorchvideos(name: str) -> None:
    model = built(name)
    assert sum(p.numel() for p in model.parameters()) == PYTORCHVIDEO_PARAMS
    params = {k: v for k, v in expected_state_shapes().items() if "running_" not in k and "batches" not in k}
    derived = sum(torch.Size(shape).numel() for shape in params.values())
    assert derived == PYTORCHVIDEO_PARAMS
    assert sum(p.numel() for p in create_model(name, num_classes=101).parameters()) == \
        PYTORCHVIDEO_PARAMS - 299 * 2049  # the classifier is 2048 x classes + classes


@pytest.mark.parametrize("name", ["x3d_s", "x3d_m"])
def test_macs_within_three_percent_of_the_paper(name: str) -> None:
    gmacs, (t, h, w) = PAPER_GMACS[name]
    assert built(name).preprocess.clip_len == t and built(name).preprocess.crop_size == h
    measured = count_flops(built(name), torch.zeros(1, 3, t, h, w)) / 2 / 1e9  # FlopCounterMode: 2 FLOPs per MAC
    assert abs(measured - gmacs) / gmacs < 0.03, measured


def test_squeeze_excitation_in_every_other_block_and_swish_inside() -> None:
    model = built("x3d_m")
    for stage in range(1, 5):
        blocks = model.blocks[stage].res_blocks
        has_se = [isinstance(b.branch2.norm_b[1], SqueezeExcitation) for b in blocks]
        assert has_se == [i % 2 == 0 for i in range(len(blocks))]
        assert all(isinstance(b.branch2.act_b, torch.nn.SiLU) for b in blocks)
        assert all(b.branch2.conv_b.groups == b.branch2.conv_b.in_channels for b in blocks)  # depthwise
    assert round_width(432, 1 / 16) == 32 and round_width(54, 1 / 16) == 8  # 27 -> 24 is under 90 %: 32


def test_taps_keep_every_frame() -> None:
    model = built("x3d_s")
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        taps = model.forward_taps(x, ("mid", "final"))
        only_mid = model.forward_taps(x, ("mid",))
    assert taps["mid"].shape == (1, 96, 4, 4, 4) and taps["final"].shape == (1, 192, 4, 2, 2)
    torch.testing.assert_close(only_mid["mid"], taps["mid"])
    assert [(i.name, i.channels, i.stride, i.module) for i in model.feature_info] == [
        ("mid", 96, (1, 16, 16), "blocks.3"), ("final", 192, (1, 32, 32), "blocks.4")]


def test_each_model_carries_its_own_clip() -> None:
    s, m = built("x3d_s").preprocess, built("x3d_m").preprocess
    assert (s.clip_len, s.frame_stride, s.crop_size, s.resize) == (13, 6, 160, 182)
    assert (m.clip_len, m.frame_stride, m.crop_size, m.resize) == (16, 5, 224, 256)
    assert s.mean == m.mean == (0.45,) * 3 and s.std == m.std == (0.225,) * 3
    assert s.override(crop_size=64).frame_stride == 6


def _pytorchvideo_style_checkpoint(path: Path, num_classes: int = 400) -> dict[str, torch.Tensor]:
    """A file laid out as PyTorchVideo's model zoo writes them: weights under ``model_state``."""
    generator = torch.Generator().manual_seed(0)
    state = {k: (torch.randn(shape, generator=generator) if shape else torch.tensor(7))
             for k, shape in expected_state_shapes(num_classes).items()}
    for k in state:
        if k.endswith("running_var"):
            state[k] = state[k].abs() + 0.5
    torch.save({"model_state": state, "epoch": 196, "cfg": "MODEL:\n  ARCH: x3d\n"}, path)
    return state


def test_a_pytorchvideo_checkpoint_loads_strictly(tmp_path: Path) -> None:
    path = tmp_path / "X3D_M.pyth"
    state = _pytorchvideo_style_checkpoint(path)
    model = create_model("x3d_m")
    assert load_pretrained(model, path) == {"missing": [], "unexpected": [], "wrong_shape": [], "dropped": []}
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    ucf = create_model("x3d_m", num_classes=101)
    with pytest.raises(CheckpointError, match="blocks.5.proj.weight"):
        load_pretrained(ucf, path)
    assert load_pretrained(ucf, path, drop_classifier=True)["dropped"] == ["blocks.5.proj.weight",
                                                                            "blocks.5.proj.bias"]


def test_folding_batchnorm_folds_every_bottleneck() -> None:
    model = create_model("x3d_s").eval()
    with torch.no_grad():
        for m in model.modules():  # statistics far from the identity, as after training
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    fused = fuse_for_inference(model)
    # every bottleneck's three BNs (26 blocks), the shortcut BNs of res3..res5 and conv5's; the stem's
    # follows a factorised convolution and stays
    assert fused.folded_batchnorms == 26 * 3 + 3 + 1
    assert sum(isinstance(m, torch.nn.BatchNorm3d) for m in fused.modules()) == 1
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), model(x), rtol=1e-4, atol=1e-4)


def test_run_checkpoint_keeps_the_frame_stride(tmp_path: Path) -> None:
    net = built("x3d_s")
    ckpt = {"model_name": net.model_name, "model_kwargs": net.model_kwargs, "state_dict": net.state_dict(),
            "classes": [str(i) for i in range(400)], "preprocess": net.preprocess.to_dict()}
    path = save_checkpoint(tmp_path / "last.pt", ckpt)
    model, _ = load_checkpoint(path)
    assert model.preprocess == net.preprocess and model.preprocess.frame_stride == 6


def test_smaller_expansion_factors_give_a_smaller_x3d() -> None:
    small = X3D(num_classes=5, width_factor=1.0, depth_factor=1.0, preprocess=built("x3d_s").preprocess)
    assert [len(small.blocks[s].res_blocks) for s in range(1, 5)] == [1, 2, 5, 3]
    assert [(i.name, i.channels) for i in small.feature_info] == [("mid", 48), ("final", 96)]
    x = torch.randn(2, 3, 4, 64, 64)
    with torch.no_grad():
        taps = small.forward_taps(x)
        assert small(x).shape == (2, 5)
    assert taps["mid"].shape == (2, 48, 4, 4, 4) and taps["final"].shape == (2, 96, 4, 2, 2)
    with pytest.raises(ValueError, match="depth_factor"):
        X3D(depth_factor=0, preprocess=small.preprocess)


def test_bad_arguments_name_the_field() -> None:
    with pytest.raises(ValueError, match="num_classes"):
        create_model("x3d_s", num_classes=0)
    with pytest.raises(ValueError, match="dropout"):
        create_model("x3d_m", dropout=1.5)


@pytest.mark.slow
def test_exports_with_the_same_outputs() -> None:
    model = fuse_for_inference(built("x3d_s"))
    x = torch.randn(1, 3, 4, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.export(model, (x,)).module()(x), model(x))
