"""The 2D ResNet teachers: torchvision layout, taps, image and clip inputs, frame selection, loading."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from distilled_shufflenet.checkpoint import CheckpointError, atomic_save, load_pretrained
from distilled_shufflenet.models import IMAGENET_MEAN, IMAGENET_STD, create_model, freeze, list_models
from distilled_shufflenet.models.resnet2d import BasicBlock, Bottleneck, ResNet2D, resnet18, select_frames

# torchvision's published parameter counts (1000 classes)
TORCHVISION_PARAMS = {
    "resnet18": 11_689_512,
    "resnet34": 21_797_672,
    "resnet50": 25_557_032,
    "resnet101": 44_549_160,
}
LAYERS = {"resnet18": (2, 2, 2, 2), "resnet34": (3, 4, 6, 3), "resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
BOTTLENECK = {"resnet18": False, "resnet34": False, "resnet50": True, "resnet101": True}


def _meta_model(name: str, **kwargs) -> ResNet2D:
    # shapes and names only: no memory, no initialisation cost
    with torch.device("meta"):
        return create_model(name, **kwargs)


def torchvision_state_dict_layout(name: str, num_classes: int = 1000) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of torchvision's ``resnetXX().state_dict()``, in order, written out from its layout."""
    bottleneck, expansion = BOTTLENECK[name], (4 if BOTTLENECK[name] else 1)
    keys: list[tuple[str, tuple[int, ...]]] = []

    def conv(key: str, out_c: int, in_c: int, k: int) -> None:
        keys.append((f"{key}.weight", (out_c, in_c, k, k)))

    def bn(key: str, c: int) -> None:
        keys.extend([(f"{key}.weight", (c,)), (f"{key}.bias", (c,)), (f"{key}.running_mean", (c,)),
                     (f"{key}.running_var", (c,)), (f"{key}.num_batches_tracked", ())])

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    in_c = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), LAYERS[name]), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            if bottleneck:
                conv(f"{p}.conv1", planes, in_c, 1); bn(f"{p}.bn1", planes)  # noqa: E702
                conv(f"{p}.conv2", planes, planes, 3); bn(f"{p}.bn2", planes)  # noqa: E702
                conv(f"{p}.conv3", planes * 4, planes, 1); bn(f"{p}.bn3", planes * 4)  # noqa: E702
            else:
                conv(f"{p}.conv1", planes, in_c, 3); bn(f"{p}.bn1", planes)  # noqa: E702
                conv(f"{p}.conv2", planes, planes, 3); bn(f"{p}.bn2", planes)  # noqa: E702
            if b == 0 and (stage > 1 or in_c != planes * expansion):
                conv(f"{p}.downsample.0", planes * expansion, in_c, 1)
                bn(f"{p}.downsample.1", planes * expansion)
            in_c = planes * expansion
    keys.append(("fc.weight", (num_classes, 512 * expansion)))
    keys.append(("fc.bias", (num_classes,)))
    return keys


@pytest.fixture(scope="module")
def r18() -> ResNet2D:
    torch.manual_seed(0)
    return create_model("resnet18", num_classes=7).eval()


# ---------------------------------------------------------------- architecture


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name):
    assert name in list_models()
    model = _meta_model(name)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


@pytest.mark.parametrize("name,count", [("resnet18", 122), ("resnet34", 218), ("resnet50", 320), ("resnet101", 626)])
def test_state_dict_keys_and_shapes_are_torchvision_s(name, count):
    state = _meta_model(name).state_dict()
    got = [(k, tuple(v.shape)) for k, v in state.items()]
    assert len(got) == count
    assert got == torchvision_state_dict_layout(name)


def test_state_dict_anchor_keys():
    k18 = list(_meta_model("resnet18").state_dict())
    k50 = list(_meta_model("resnet50").state_dict())
    first = ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
             "bn1.num_batches_tracked"]
    assert k18[:6] == first and k50[:6] == first
    assert k18[6:8] == ["layer1.0.conv1.weight", "layer1.0.bn1.weight"]
    assert k18[-2:] == k50[-2:] == ["fc.weight", "fc.bias"]
    # ResNet-50's first block widens 64 -> 256 channels, so it has a projection shortcut; ResNet-18's has not
    assert "layer1.0.downsample.0.weight" in k50 and "layer1.0.downsample.1.running_var" in k50
    assert "layer1.0.downsample.0.weight" not in k18
    assert "layer2.0.downsample.0.weight" in k18 and "layer2.1.downsample.0.weight" not in k18
    assert "layer4.2.conv3.weight" in k50 and "layer4.1.conv3.weight" not in k18
    assert not any(".conv3." in k for k in k18)


def test_resnet50_is_v1_5_stride_on_the_3x3_conv():
    model = _meta_model("resnet50")
    for layer in (model.layer2, model.layer3, model.layer4):
        first = layer[0]
        assert isinstance(first, Bottleneck)
        assert first.conv1.stride == (1, 1) and first.conv2.stride == (2, 2) and first.conv3.stride == (1, 1)
        assert first.downsample[0].stride == (2, 2)
    assert model.layer1[0].conv2.stride == (1, 1)
    assert isinstance(_meta_model("resnet34").layer3[0], BasicBlock)


def test_metadata_taps_and_preprocess():
    for name, (mid, final) in {"resnet18": (256, 512), "resnet34": (256, 512),
                               "resnet50": (1024, 2048), "resnet101": (1024, 2048)}.items():
        model = _meta_model(name)
        assert model.tap_names == ("mid", "final")
        assert model.tap("mid").channels == mid and model.tap("mid").stride == (1, 16, 16)
        assert model.tap("final").channels == final and model.tap("final").stride == (1, 32, 32)
        assert model.tap("mid").module == "layer3" and model.tap("final").module == "layer4"
    model = _meta_model("resnet101")
    assert model.classifier_name == "fc" and model.fc.out_features == 1000
    assert model._trunk == ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
    pre = model.preprocess
    assert (pre.clip_len, pre.crop_size, pre.resize) == (1, 224, 256)
    assert pre.mean == IMAGENET_MEAN and pre.std == IMAGENET_STD
    assert model.min_input_size(("mid",)) == (1, 16, 16)


def test_initialisation_is_torchvision_s():
    torch.manual_seed(0)
    model = resnet18()
    # kaiming normal, fan_out, ReLU gain: std = sqrt(2 / (out_channels * k * k))
    w = model.layer1[0].conv1.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.05)
    w = model.conv1.weight
    assert w.std().item() == pytest.approx(math.sqrt(2 / (64 * 49)), rel=0.05)
    assert torch.all(model.bn1.weight == 1) and torch.all(model.layer4[1].bn2.bias == 0)
    assert torch.all(model.layer4[1].bn2.weight == 1)

    zero = resnet18(zero_init_residual=True)
    assert all(torch.all(block.bn2.weight == 0) for layer in (zero.layer1, zero.layer4) for block in layer)
    assert torch.all(zero.layer1[0].bn1.weight == 1)
    small = ResNet2D(Bottleneck, [1, 1, 1, 1], num_classes=3, zero_init_residual=True)
    assert all(torch.all(layer[0].bn3.weight == 0) for layer in (small.layer1, small.layer2, small.layer3))
    assert torch.all(small.layer1[0].bn2.weight == 1)


def test_bad_builder_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        resnet18(num_classes=0)
    with pytest.raises(ValueError, match="layers"):
        ResNet2D(BasicBlock, [2, 2, 2])
    with pytest.raises(TypeError):
        resnet18(10)  # keyword-only


# ---------------------------------------------------------------- forward


def test_image_batch_forward(r18):
    x = torch.randn(2, 3, 50, 50)  # not a multiple of the strides: taps are ceil(size / stride)
    feats = r18.forward_features(x)
    assert set(feats) == {"mid", "final"}
    c, _, h, w = r18.tap("mid").out_shape(1, 50, 50)
    assert feats["mid"].shape == (2, c, h, w) == (2, 256, 4, 4)
    c, _, h, w = r18.tap("final").out_shape(1, 50, 50)
    assert feats["final"].shape == (2, c, h, w) == (2, 512, 2, 2)
    logits = r18(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert torch.allclose(r18.forward_head(feats), logits)


def test_clip_taps_equal_per_frame_image_taps(r18):
    torch.manual_seed(1)
    clip = torch.randn(2, 3, 3, 48, 64)  # (N, C, T, H, W)
    feats = r18.forward_features(clip)
    assert feats["mid"].shape == (2, 256, 3, 3, 4)
    assert feats["final"].shape == (2, 512, 3, 2, 2)
    per_frame = [r18.forward_features(clip[:, :, t]) for t in range(3)]
    for name in ("mid", "final"):
        expected = torch.stack([f[name] for f in per_frame], dim=2)  # (N, C, T, h, w)
        assert torch.allclose(feats[name], expected, atol=1e-5)
    # forward_taps goes through the generic trunk loop and the same folding
    taps = r18.forward_taps(clip, ("final", "mid"))
    assert list(taps) == ["final", "mid"]
    assert torch.allclose(taps["mid"], feats["mid"], atol=1e-6)
    assert torch.allclose(taps["final"], feats["final"], atol=1e-6)
    # clip logits are the frame logits averaged over time
    logits = r18(clip)
    assert logits.shape == (2, 7)
    frame_logits = torch.stack([r18(clip[:, :, t]) for t in range(3)], dim=1)  # (N, T, K)
    assert torch.allclose(logits, frame_logits.mean(1), atol=1e-5)
    # frames of different samples are not mixed up
    assert not torch.allclose(feats["final"][0], feats["final"][1])


def test_resnet50_clip_forward():
    torch.manual_seed(0)
    model = create_model("resnet50", num_classes=5).eval()
    clip = torch.randn(1, 3, 2, 32, 32)
    feats = model.forward_features(clip)
    assert feats["mid"].shape == (1, 1024, 2, 2, 2)
    assert feats["final"].shape == (1, 2048, 2, 1, 1)
    assert model(clip).shape == (1, 5)
    assert model.forward_taps(clip[:, :, 0], ("mid",))["mid"].shape == (1, 1024, 2, 2)


def test_forward_taps_stops_after_the_last_requested_tap(r18):
    calls: list[str] = []
    handles = [getattr(r18, n).register_forward_hook(lambda *_, n=n: calls.append(n)) for n in ("layer3", "layer4")]
    try:
        out = r18.forward_taps(torch.randn(1, 3, 32, 32), ("mid",))
        assert calls == ["layer3"]
        assert out["mid"].shape == (1, 256, 2, 2)
        calls.clear()
        r18.forward_taps(torch.randn(1, 3, 2, 32, 32), "final")
        assert calls == ["layer3", "layer4"]
    finally:
        for h in handles:
            h.remove()


def test_other_input_channels():
    model = resnet18(in_channels=1, num_classes=2).eval()
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)
    with pytest.raises(ValueError, match="1 channels"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_scripted_model_matches_eager(r18):
    scripted = torch.jit.script(r18)
    image, clip = torch.randn(1, 3, 32, 32), torch.randn(1, 3, 2, 32, 32)
    assert torch.allclose(scripted(image), r18(image), atol=1e-5)
    assert torch.allclose(scripted(clip), r18(clip), atol=1e-5)
    assert scripted.forward_features(clip)["mid"].shape == (1, 256, 2, 2, 2)


# ---------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "x,expected",
    [
        (torch.randn(3, 32, 32), r"\(N, C, H, W\) or \(N, C, T, H, W\).*\(3, 32, 32\)"),
        (torch.randn(1, 3, 2, 2, 32, 32), r"\(1, 3, 2, 2, 32, 32\)"),
        (torch.randn(2, 1, 32, 32), r"3 channels.*\(2, 1, 32, 32\)"),
        (torch.randn(1, 4, 2, 32, 32), r"3 channels.*\(1, 4, 2, 32, 32\)"),
        (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), "floating-point.*uint8"),
        (torch.randn(1, 3, 31, 64), r"\(1, 3, 31, 64\) is too small.*H>=32"),
        (torch.randn(1, 3, 2, 64, 16), r"\(1, 3, 2, 64, 16\) is too small.*W>=32"),
    ],
)
def test_bad_inputs_raise_value_errors_naming_the_shapes(r18, x, expected):
    with pytest.raises(ValueError, match=expected):
        r18(x)


def test_tap_size_limits_depend_on_the_requested_taps(r18):
    x = torch.randn(1, 3, 16, 16)
    assert r18.forward_taps(x, ("mid",))["mid"].shape == (1, 256, 1, 1)
    with pytest.raises(ValueError, match=r"\(1, 3, 16, 16\) is too small for final.*H>=32"):
        r18.forward_taps(x, ("final",))
    with pytest.raises(ValueError, match="no tap 'layer3'"):
        r18.forward_taps(x, ("layer3",))


# ---------------------------------------------------------------- select_frames


def test_select_frames():
    clip = torch.randn(3, 3, 4, 8, 8)  # (N, C, T, H, W)
    index = torch.tensor([0, 3, 2])
    frames = select_frames(clip, index)
    assert frames.shape == (3, 3, 8, 8)
    for i, t in enumerate(index.tolist()):
        assert torch.equal(frames[i], clip[i, :, t])
    same = select_frames(clip, 1)
    assert torch.equal(same, clip[:, :, 1])
    assert torch.equal(select_frames(clip, torch.tensor(2)), clip[:, :, 2])
    assert torch.equal(ResNet2D.select_frames(clip, index), frames)
    assert torch.equal(select_frames(clip, index.to(torch.int32)), frames)


@pytest.mark.parametrize(
    "clip,index,expected",
    [
        (torch.zeros(2, 3, 4, 8, 8), 4, r"\[0, 4\).*max 4"),
        (torch.zeros(2, 3, 4, 8, 8), -1, r"\[0, 4\).*min -1"),
        (torch.zeros(2, 3, 4, 8, 8), torch.tensor([0, 7]), r"\[0, 4\).*max 7"),
        (torch.zeros(2, 3, 4, 8, 8), torch.tensor([0, 1, 2]), r"shape \(2,\).*got \(3,\)"),
        (torch.zeros(2, 3, 4, 8, 8), torch.tensor([0.0, 1.0]), "integer tensor.*float32"),
        (torch.zeros(2, 3, 4, 8, 8), 1.0, "int or an integer tensor"),
        (torch.zeros(2, 3, 8, 8), 0, r"\(N, C, T, H, W\).*\(2, 3, 8, 8\)"),
    ],
)
def test_select_frames_rejects_bad_indices(clip, index, expected):
    with pytest.raises(ValueError, match=expected):
        select_frames(clip, index)


def test_teacher_sees_one_frame_of_each_clip(r18):
    clip = torch.randn(2, 3, 4, 32, 32)
    index = torch.tensor([3, 1])
    taps = r18.forward_taps(select_frames(clip, index), ("mid", "final"))
    clip_taps = r18.forward_features(clip)
    for name in ("mid", "final"):
        expected = clip_taps[name][torch.arange(2), :, index]  # (N, C, h, w)
        assert torch.allclose(taps[name], expected, atol=1e-5)


# ---------------------------------------------------------------- checkpoints and freezing


def test_state_dict_round_trip_loads_strictly(tmp_path):
    torch.manual_seed(0)
    source = create_model("resnet18", num_classes=4)
    source.train()
    source(torch.randn(2, 3, 32, 32))  # moves BN running statistics away from their initial values
    source.eval()
    path = atomic_save(source.state_dict(), tmp_path / "resnet18.pth")

    torch.manual_seed(1)
    target = create_model("resnet18", num_classes=4).eval()
    x = torch.randn(1, 3, 2, 32, 32)
    assert not torch.allclose(target(x), source(x))
    report = load_pretrained(target, path)
    assert report["missing"] == [] and report["unexpected"] == [] and report["wrong_shape"] == []
    assert torch.equal(target(x), source(x))
    assert torch.equal(target.bn1.running_mean, source.bn1.running_mean)
    assert int(target.bn1.num_batches_tracked) == 1

    # a strict load notices a key that torchvision's layout would not have
    state = source.state_dict()
    state["layer1.0.downsample.0.weight"] = torch.zeros(64, 64, 1, 1)
    bad = atomic_save(state, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected keys: layer1.0.downsample.0.weight"):
        load_pretrained(create_model("resnet18", num_classes=4), bad)


def test_freeze_keeps_eval_mode_under_a_training_parent():
    model = freeze(resnet18(num_classes=3))
    parent = nn.Sequential(model)
    parent.train()
    assert parent.training and not model.training
    assert not any(m.training for m in model.modules())
    assert not any(p.requires_grad for p in model.parameters())
    before = model.bn1.running_mean.clone()
    parent(torch.randn(2, 3, 32, 32))
    assert torch.equal(model.bn1.running_mean, before)
    assert int(model.bn1.num_batches_tracked) == 0


# ---------------------------------------------------------------- widen_factor


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_widen_factor_one_keeps_torchvision_names_shapes_and_counts(name):
    default = {k: tuple(v.shape) for k, v in _meta_model(name).state_dict().items()}
    explicit = {k: tuple(v.shape) for k, v in _meta_model(name, widen_factor=1.0).state_dict().items()}
    assert list(explicit.items()) == list(default.items()) == torchvision_state_dict_layout(name)


@pytest.mark.parametrize("name, mid, final", [("resnet18", 64, 128), ("resnet34", 64, 128),
                                               ("resnet50", 256, 512), ("resnet101", 256, 512)])
def test_widen_factor_scales_every_stage(name, mid, final):
    model = _meta_model(name, num_classes=5, widen_factor=0.25)
    assert [i.channels for i in model.feature_info] == [mid, final]
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["conv1.weight"] == (16, 3, 7, 7) and shapes["bn1.weight"] == (16,)
    assert shapes["fc.weight"] == (5, final)
    assert set(shapes) == {k for k, _ in torchvision_state_dict_layout(name, 5)}  # the same names
    taps = model.forward_taps(torch.empty(2, 3, 4, 64, 64, device="meta"))
    assert tuple(taps["mid"].shape) == (2, mid, 4, 4, 4) and tuple(taps["final"].shape) == (2, final, 4, 2, 2)
    full = sum(p.numel() for p in _meta_model(name, num_classes=5).parameters())
    narrow = sum(p.numel() for p in model.parameters())
    assert 1 / 18 < narrow / full < 1 / 14  # a quarter of the width is about a sixteenth of the weights


def test_narrow_resnet18_runs_and_its_maps_fit_the_small_students_adapters():
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=3, widen_factor=0.25).eval()
    assert model.model_kwargs == {"num_classes": 3, "widen_factor": 0.25}
    with torch.no_grad():
        taps = model.forward_taps(torch.randn(2, 3, 64, 64))
    assert tuple(taps["mid"].shape) == (2, 64, 4, 4) and tuple(taps["final"].shape) == (2, 128, 2, 2)


@pytest.mark.parametrize("bad", [0.0, -0.5, 0.001, "half", True, None])
def test_bad_widen_factor_is_named(bad):
    with pytest.raises(ValueError, match="widen_factor"):
        _meta_model("resnet50", widen_factor=bad)
