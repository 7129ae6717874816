"""The 3D ResNet teachers: checkpoint-compatible layouts, taps and their strides, loading, bad inputs."""

from __future__ import annotations

import pytest
import torch

from distilled_shufflenet.checkpoint import CheckpointError, atomic_save, load_pretrained
from distilled_shufflenet.models import KINETICS_MEAN, KINETICS_STD, TapModel, create_model, list_models
from distilled_shufflenet.models.resnet3d import HARA_KINETICS_MEAN, HARA_KINETICS_STD, ResNet3D, VideoResNet

MODELS_3D = ("r3d_18", "mc3_18", "r2plus1d_18", "r3d_50")
# torchvision's published parameter counts (400 classes)
TORCHVISION_PARAMS = {"r3d_18": 33_371_472, "mc3_18": 11_695_440, "r2plus1d_18": 31_505_325}
# a quarter of the channels keeps r3d_50's compute and checkpoint files small; names and strides are unchanged
NARROW = dict(widen_factor=0.25)


def _meta_model(name: str, **kwargs) -> TapModel:
    # names, shapes and strides only: no memory, no initialisation, no compute (eval: batch-1 maps of 1x1x1)
    with torch.device("meta"):
        return create_model(name, **kwargs).eval()


def _conv(keys: list, key: str, out_c: int, in_c: int, kernel: tuple[int, int, int]) -> None:
    keys.append((f"{key}.weight", (out_c, in_c, *kernel)))


def _bn(keys: list, key: str, c: int) -> None:
    keys.extend([(f"{key}.weight", (c,)), (f"{key}.bias", (c,)), (f"{key}.running_mean", (c,)),
                 (f"{key}.running_var", (c,)), (f"{key}.num_batches_tracked", ())])


def torchvision_video_layout(name: str, num_classes: int = 400) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of torchvision's ``<name>().state_dict()``, in order, written out from its layout."""
    keys: list[tuple[str, tuple[int, ...]]] = []
    if name == "r2plus1d_18":
        _conv(keys, "stem.0", 45, 3, (1, 7, 7)); _bn(keys, "stem.1", 45)  # noqa: E702
        _conv(keys, "stem.3", 64, 45, (3, 1, 1)); _bn(keys, "stem.4", 64)  # noqa: E702
    else:
        _conv(keys, "stem.0", 64, 3, (3, 7, 7)); _bn(keys, "stem.1", 64)  # noqa: E702

    def unit(key: str, out_c: int, in_c: int, mid: int, stage: int) -> None:
        if name == "r2plus1d_18":
            _conv(keys, f"{key}.0", mid, in_c, (1, 3, 3)); _bn(keys, f"{key}.1", mid)  # noqa: E702
            _conv(keys, f"{key}.3", out_c, mid, (3, 1, 1))
        else:
            temporal = 3 if name == "r3d_18" or stage == 1 else 1
            _conv(keys, key, out_c, in_c, (temporal, 3, 3))

    in_c = 64
    for stage, planes in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            p = f"layer{stage}.{b}"
            mid = (in_c * planes * 27) // (in_c * 9 + 3 * planes)
            unit(f"{p}.conv1.0", planes, in_c, mid, stage); _bn(keys, f"{p}.conv1.1", planes)  # noqa: E702
            unit(f"{p}.conv2.0", planes, planes, mid, stage); _bn(keys, f"{p}.conv2.1", planes)  # noqa: E702
            if b == 0 and stage > 1:
                _conv(keys, f"{p}.downsample.0", planes, in_c, (1, 1, 1))
                _bn(keys, f"{p}.downsample.1", planes)
            in_c = planes
    keys += [("fc.weight", (num_classes, 512)), ("fc.bias", (num_classes,))]
    return keys


def hara_resnet50_layout(num_classes: int = 700) -> list[tuple[str, tuple[int, ...]]]:
    """Keys and shapes of 3D-ResNets-PyTorch's ``generate_model(50)`` state dict, in order."""
    keys: list[tuple[str, tuple[int, ...]]] = []
    _conv(keys, "conv1", 64, 3, (7, 7, 7)); _bn(keys, "bn1", 64)  # noqa: E702
    in_c = 64
    for stage, (planes, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3)), start=1):
        for b in range(blocks):
            p = f"layer{stage}.{b}"
            _conv(keys, f"{p}.conv1", planes, in_c, (1, 1, 1)); _bn(keys, f"{p}.bn1", planes)  # noqa: E702
            _conv(keys, f"{p}.conv2", planes, planes, (3, 3, 3)); _bn(keys, f"{p}.bn2", planes)  # noqa: E702
            _conv(keys, f"{p}.conv3", planes * 4, planes, (1, 1, 1)); _bn(keys, f"{p}.bn3", planes * 4)  # noqa: E702
            if b == 0:  # layer1 changes the channels (64 -> 256), layers 2-4 the stride
                _conv(keys, f"{p}.downsample.0", planes * 4, in_c, (1, 1, 1))
                _bn(keys, f"{p}.downsample.1", planes * 4)
            in_c = planes * 4
    keys += [("fc.weight", (num_classes, 2048)), ("fc.bias", (num_classes,))]
    return keys


def _layout(model: TapModel) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


# ---------------------------------------------------------------- architecture


def test_all_four_are_registered() -> None:
    assert set(MODELS_3D) <= set(list_models())


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name: str) -> None:
    model = _meta_model(name)
    assert isinstance(model, VideoResNet)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_r3d_50_parameter_count() -> None:
    # 3D-ResNets-PyTorch's generate_model(50, n_classes=700): 46,198,976 in the trunk + 2048*700+700 in fc
    model = _meta_model("r3d_50")
    assert isinstance(model, ResNet3D)
    assert sum(p.numel() for p in model.parameters()) == 47_633_276
    assert sum(p.numel() for p in _meta_model("r3d_50", num_classes=400).parameters()) == 47_018_576


@pytest.mark.parametrize(
    "name, total, spots",
    [
        ("r3d_18", 122, {"stem.0.weight": (64, 3, 3, 7, 7), "layer1.0.conv1.0.weight": (64, 64, 3, 3, 3),
                         "layer2.0.downsample.0.weight": (128, 64, 1, 1, 1), "fc.weight": (400, 512)}),
        ("mc3_18", 122, {"layer1.1.conv2.0.weight": (64, 64, 3, 3, 3), "layer2.0.conv1.0.weight": (128, 64, 1, 3, 3),
                         "layer4.0.downsample.1.running_var": (512,)}),
        ("r2plus1d_18", 224, {"stem.0.weight": (45, 3, 1, 7, 7), "stem.3.weight": (64, 45, 3, 1, 1),
                              "layer2.0.conv1.0.0.weight": (230, 64, 1, 3, 3),
                              "layer2.0.conv1.0.1.running_mean": (230,),
                              "layer2.0.conv1.0.3.weight": (128, 230, 3, 1, 1),
                              # both units of a block share midplanes, as in torchvision
                              "layer2.0.conv2.0.0.weight": (230, 128, 1, 3, 3),
                              "layer2.0.downsample.0.weight": (128, 64, 1, 1, 1)}),
        ("r3d_50", 320, {"conv1.weight": (64, 3, 7, 7, 7), "layer1.0.conv3.weight": (256, 64, 1, 1, 1),
                         "layer1.0.downsample.0.weight": (256, 64, 1, 1, 1), "layer3.5.bn3.num_batches_tracked": (),
                         "layer4.0.downsample.0.weight": (2048, 1024, 1, 1, 1), "fc.weight": (700, 2048)}),
    ],
)
def test_state_dict_keys_are_the_original_ones(name: str, total: int, spots: dict) -> None:
    model = _meta_model(name)
    layout = _layout(model)
    assert len(layout) == total
    shapes = dict(layout)
    for key, shape in spots.items():
        assert shapes.get(key) == shape, key
    expected = hara_resnet50_layout() if name == "r3d_50" else torchvision_video_layout(name)
    assert layout == expected  # every key, shape and the order, against the layout written out above


def test_mc3_keeps_time_and_r3d_strides_it_in_the_shortcut() -> None:
    mc3, r3d = _meta_model("mc3_18"), _meta_model("r3d_18")
    assert mc3.layer2[0].downsample[0].stride == (1, 2, 2)
    assert r3d.layer2[0].downsample[0].stride == (2, 2, 2)
    assert mc3.layer1[0].conv1[0].kernel_size == (3, 3, 3) and mc3.layer3[1].conv2[0].kernel_size == (1, 3, 3)


@pytest.mark.parametrize(
    "name, kwargs, mid, final",
    [
        ("r3d_18", {}, (4, 8, 8), (8, 16, 16)),
        ("r2plus1d_18", {}, (4, 8, 8), (8, 16, 16)),
        ("mc3_18", {}, (1, 8, 8), (1, 16, 16)),
        ("r3d_50", {}, (8, 16, 16), (16, 32, 32)),
        ("r3d_50", dict(no_max_pool=True), (4, 8, 8), (8, 16, 16)),
        ("r3d_50", dict(conv1_t_stride=2), (16, 16, 16), (32, 32, 32)),
        ("r3d_50", dict(conv1_t_stride=2, no_max_pool=True), (8, 8, 8), (16, 16, 16)),
    ],
)
def test_tap_strides(name: str, kwargs: dict, mid: tuple, final: tuple) -> None:
    model = _meta_model(name, **kwargs)
    assert [(i.name, i.stride, i.module) for i in model.feature_info] == [("mid", mid, "layer3"),
                                                                          ("final", final, "layer4")]
    if kwargs.get("no_max_pool"):
        assert "maxpool" not in model._trunk


def test_tap_channels_follow_widen_factor() -> None:
    assert [i.channels for i in _meta_model("r3d_50").feature_info] == [1024, 2048]
    assert [i.channels for i in _meta_model("r3d_50", widen_factor=0.5).feature_info] == [512, 1024]
    for name in ("r3d_18", "mc3_18", "r2plus1d_18"):
        assert [i.channels for i in _meta_model(name).feature_info] == [256, 512]
        assert [i.channels for i in _meta_model(name, widen_factor=0.25).feature_info] == [64, 128]


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_a_narrow_torchvision_family_model_scales_every_stage(name: str) -> None:
    model = _meta_model(name, num_classes=10, widen_factor=0.25)
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["fc.weight"] == (10, 128)
    assert shapes["layer1.0.conv2.1.weight"] == (16,)  # the BN after each block's second unit
    assert shapes["layer4.1.conv2.1.weight"] == (128,)
    if name == "r2plus1d_18":
        # the factorised stem keeps torchvision's 45:64 ratio: round(45 / 4) = 11 middle channels
        assert shapes["stem.0.weight"] == (11, 3, 1, 7, 7) and shapes["stem.3.weight"] == (16, 11, 3, 1, 1)
    else:
        assert shapes["stem.0.weight"] == (16, 3, 3, 7, 7)
    taps = model.forward_taps(torch.empty(2, 3, 8, 64, 64, device="meta"))
    assert taps["mid"].shape[1] == 64 and taps["final"].shape[1] == 128
    assert tuple(model(torch.empty(2, 3, 8, 64, 64, device="meta")).shape) == (2, 10)
    # a quarter of the width is about a sixteenth of the weights
    full = sum(p.numel() for p in _meta_model(name, num_classes=10).parameters())
    narrow = sum(p.numel() for p in model.parameters())
    assert 1 / 18 < narrow / full < 1 / 14


def test_r3d_50_at_16x224x224_gives_the_methods_teacher_maps() -> None:
    model = _meta_model("r3d_50")
    taps = model.forward_taps(torch.empty(1, 3, 16, 224, 224, device="meta"))
    assert tuple(taps["mid"].shape) == (1, 1024, 2, 14, 14)
    assert tuple(taps["final"].shape) == (1, 2048, 1, 7, 7)
    assert tuple(model(torch.empty(1, 3, 16, 224, 224, device="meta")).shape) == (1, 700)


@pytest.mark.parametrize("name", ["r3d_18", "mc3_18", "r2plus1d_18"])
def test_torchvision_family_at_its_own_16x112x112(name: str) -> None:
    taps = _meta_model(name).forward_taps(torch.empty(2, 3, 16, 112, 112, device="meta"))
    t_mid, t_final = (16, 16) if name == "mc3_18" else (4, 2)
    assert tuple(taps["mid"].shape) == (2, 256, t_mid, 14, 14)
    assert tuple(taps["final"].shape) == (2, 512, t_final, 7, 7)


def test_builder_arguments_are_checked() -> None:
    for kwargs, field in [(dict(num_classes=0), "num_classes"), (dict(conv1_t_size=4), "conv1_t_size"),
                          (dict(conv1_t_stride=0), "conv1_t_stride"), (dict(widen_factor=0.0), "widen_factor")]:
        with pytest.raises(ValueError, match=field):
            _meta_model("r3d_50", **kwargs)
    with pytest.raises(ValueError, match="num_classes"):
        _meta_model("r3d_18", num_classes=-1)
    for bad in (0.0, -1.0, 0.01, "half", True):
        with pytest.raises(ValueError, match="widen_factor"):
            _meta_model("r2plus1d_18", widen_factor=bad)


def test_preprocessing_matches_the_training_code_of_each_family() -> None:
    p = _meta_model("r2plus1d_18").preprocess
    assert (p.clip_len, p.crop_size, p.resize, p.mean, p.std) == (16, 112, 128, KINETICS_MEAN, KINETICS_STD)
    p = _meta_model("r3d_50").preprocess
    assert (p.clip_len, p.crop_size, p.resize) == (16, 112, 112)
    assert p.mean == HARA_KINETICS_MEAN == (0.4345, 0.4051, 0.3775)
    assert p.std == HARA_KINETICS_STD == (0.2768, 0.2713, 0.2737)


# ---------------------------------------------------------------- computing the taps


@pytest.mark.parametrize(
    "name, kwargs, size",
    [
        ("r3d_18", {}, (9, 17, 20)),  # sizes that are not multiples of the strides exercise the ceil rule
        ("mc3_18", {}, (3, 18, 17)),
        ("r2plus1d_18", {}, (8, 16, 19)),
        ("r3d_50", NARROW, (17, 33, 35)),
        ("r3d_50", dict(NARROW, no_max_pool=True, conv1_t_stride=2), (16, 20, 17)),
    ],
)
def test_taps_computed_match_feature_info(name: str, kwargs: dict, size: tuple) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **kwargs).eval()
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        feats = model.forward_features(x)
        taps = model.forward_taps(x, ("final", "mid"))
        logits = model(x)
    assert list(feats) == ["mid", "final"] and list(taps) == ["final", "mid"]
    for info in model.feature_info:
        assert tuple(feats[info.name].shape) == (2, *info.out_shape(*size)), info
        torch.testing.assert_close(taps[info.name], feats[info.name])
    # the head is global average pooling of "final" and fc
    torch.testing.assert_close(logits, model.fc(feats["final"].mean(dim=(2, 3, 4))))
    assert logits.shape == (2, 7)


@pytest.mark.parametrize("name", MODELS_3D)
def test_forward_taps_stops_after_mid(name: str) -> None:
    model = _meta_model(name)
    calls: list[str] = []
    model.layer3.register_forward_hook(lambda *a: calls.append("layer3"))
    model.layer4.register_forward_hook(lambda *a: calls.append("layer4"))
    t, h, w = model.min_input_size()
    x = torch.empty(1, 3, t, h, w, device="meta")
    assert list(model.forward_taps(x, ("mid",))) == ["mid"]
    assert calls == ["layer3"]
    model.forward_taps(x, ("final",))
    assert calls == ["layer3", "layer3", "layer4"]


def test_mid_alone_needs_only_its_own_stride() -> None:
    model = _meta_model("r3d_50")
    x = torch.empty(1, 3, 8, 16, 16, device="meta")  # enough for "mid" (stride 8x16x16), not for "final"
    assert tuple(model.forward_taps(x, ("mid",))["mid"].shape) == (1, 1024, 1, 1, 1)
    with pytest.raises(ValueError, match="T>=16"):
        model.forward_features(x)


@pytest.mark.parametrize(
    "shape, dtype, words",
    [
        ((1, 3, 32, 32), torch.float32, "(N, C, T, H, W)"),   # an image batch, not a clip
        ((1, 1, 16, 32, 32), torch.float32, "3 channels"),    # grey
        ((1, 3, 8, 64, 64), torch.float32, "T>=16"),          # too short for the final tap
        ((1, 3, 16, 16, 64), torch.float32, "H>=32"),         # too small
        ((1, 3, 16, 32, 32), torch.uint8, "floating-point"),  # unnormalised frames
    ],
)
def test_bad_inputs_raise_value_errors_with_shapes(shape: tuple, dtype: torch.dtype, words: str) -> None:
    model = _meta_model("r3d_50")
    x = torch.empty(shape, dtype=dtype, device="meta")
    for call in (lambda: model(x), lambda: model.forward_taps(x, ("mid", "final"))):
        with pytest.raises(ValueError) as err:
            call()
        assert words in str(err.value)
        if dtype.is_floating_point:
            assert str(shape) in str(err.value)


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("name, kwargs", [("r2plus1d_18", {}), ("r3d_50", dict(NARROW, no_max_pool=True))])
def test_forward_scripts(name: str, kwargs: dict) -> None:
    model = create_model(name, num_classes=3, **kwargs).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(1, 3, *model.min_input_size())
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x))


# ---------------------------------------------------------------- loading checkpoints


@pytest.fixture(scope="module")
def kinetics700_r3d_50(tmp_path_factory) -> tuple:
    """A 700-class r3d_50 and its checkpoint saved as 3D-ResNets-PyTorch saves them."""
    torch.manual_seed(0)
    model = create_model("r3d_50", num_classes=700, **NARROW).eval()
    with torch.no_grad():  # non-default statistics, so that a load that skipped buffers would show
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm3d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    path = tmp_path_factory.mktemp("r3d50") / "r3d50_K_200ep.pth"
    atomic_save({"epoch": 200, "arch": "resnet", "state_dict": model.state_dict(),
                 "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}}, path)
    return model, path


def _same_weights(a: torch.nn.Module, b: torch.nn.Module, skip: str = "\0") -> None:
    sa, sb = a.state_dict(), b.state_dict()
    for key in sa:
        if not key.startswith(skip):
            torch.testing.assert_close(sa[key], sb[key], rtol=0, atol=0, msg=key)


def test_hara_checkpoint_loads_strictly(kinetics700_r3d_50) -> None:
    source, path = kinetics700_r3d_50
    model = create_model("r3d_50", num_classes=700, **NARROW).eval()
    report = load_pretrained(model, path)
    assert report == {"missing": [], "unexpected": [], "wrong_shape": [], "dropped": []}
    _same_weights(source, model)


def test_dataparallel_prefix_is_removed(tmp_path) -> None:
    source = create_model("mc3_18").eval()
    path = tmp_path / "mc3_18_dp.pth"
    atomic_save({f"module.{k}": v for k, v in source.state_dict().items()}, path)
    model = create_model("mc3_18")
    load_pretrained(model, path)
    _same_weights(source, model)


def test_drop_classifier_fine_tunes_a_kinetics_teacher_on_101_classes(kinetics700_r3d_50) -> None:
    source, path = kinetics700_r3d_50
    model = create_model("r3d_50", num_classes=101, **NARROW)
    fresh_fc = {k: v.clone() for k, v in model.fc.state_dict().items()}
    report = load_pretrained(model, path, drop_classifier=True)
    assert sorted(report["dropped"]) == ["fc.bias", "fc.weight"]
    assert report["unexpected"] == [] and report["wrong_shape"] == []
    _same_weights(source, model, skip="fc.")
    for k, v in model.fc.state_dict().items():
        torch.testing.assert_close(v, fresh_fc[k], rtol=0, atol=0)
    assert model.fc.weight.shape == (101, 512)


def test_strict_load_of_a_mismatched_checkpoint_lists_what_does_not_fit(kinetics700_r3d_50, tmp_path) -> None:
    source, path = kinetics700_r3d_50
    model = create_model("r3d_50", num_classes=101, **NARROW)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_pretrained(model, path)
    msg = str(err.value)
    assert str(path) in msg and "2 keys with the wrong shape" in msg
    assert "fc.weight (checkpoint (700, 512), model (101, 512))" in msg
    for key, value in model.state_dict().items():  # a refused load changes nothing
        torch.testing.assert_close(value, before[key], rtol=0, atol=0, msg=key)

    state = source.state_dict()
    del state["layer4.2.bn3.weight"], state["layer4.2.bn3.bias"], state["conv1.weight"]
    state["layer5.0.conv1.weight"] = torch.zeros(1)
    state["layer1.0.conv2.weight"] = torch.zeros(16, 16, 1, 3, 3)
    broken = tmp_path / "broken.pth"
    atomic_save({"state_dict": state, "arch": "resnet"}, broken)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(create_model("r3d_50", num_classes=700, **NARROW), broken)
    msg = str(err.value)
    assert str(broken) in msg
    assert "3 missing keys: conv1.weight, layer4.2.bn3.weight, layer4.2.bn3.bias" in msg
    assert "1 unexpected keys: layer5.0.conv1.weight" in msg
    assert "1 keys with the wrong shape: layer1.0.conv2.weight (checkpoint (16, 16, 1, 3, 3)" in msg


def test_unreadable_files_are_named(kinetics700_r3d_50, tmp_path) -> None:
    _, path = kinetics700_r3d_50
    truncated = tmp_path / "truncated.pth"
    data = path.read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    text = tmp_path / "r3d50_K_200ep.txt"
    text.write_text("https://example.org/r3d50_K_200ep.pth\n")
    missing = tmp_path / "absent.pth"
    model = _meta_model("r3d_50", num_classes=700, **NARROW)  # the file is refused before any weight is read
    for bad, words in [(truncated, "truncated or corrupt"), (text, "not a PyTorch checkpoint"),
                       (missing, "no such file")]:
        with pytest.raises(CheckpointError) as err:
            load_pretrained(model, bad)
        assert str(bad) in str(err.value) and words in str(err.value)
