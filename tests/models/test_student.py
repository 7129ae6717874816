"""The (2+1)D ShuffleNet student: architecture of the paper preset, taps, heads, validation, export."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from distilled_shufflenet.models import IMAGENET_MEAN, create_model
from distilled_shufflenet.models.student import (
    DownUnit,
    ShuffleNet2Plus1D,
    SpatialConv3d,
    SpatialMaxPool,
    TemporalConv3d,
    Unit,
    channel_shuffle,
    shufflenet2plus1d,
)

TINY = dict(num_classes=5, stem_channels=8, widths=(8, 16, 32), units=(1, 1, 1), adapter_channels=(16, 32))
BACKBONE = ("stem", "stage2", "stage3", "stage4")


def tiny(**kwargs) -> ShuffleNet2Plus1D:
    torch.manual_seed(0)
    return shufflenet2plus1d(**{**TINY, **kwargs})


def n_params(model: nn.Module, names: tuple[str, ...]) -> int:
    return sum(p.numel() for name in names for p in getattr(model, name).parameters())


@pytest.fixture(scope="module")
def paper() -> ShuffleNet2Plus1D:
    return create_model("shufflenet2plus1d").eval()


# ------------------------------------------------------------------------------------------ architecture
def test_paper_preset_parameter_counts(paper: ShuffleNet2Plus1D) -> None:
    backbone = n_params(paper, BACKBONE)
    adapters = n_params(paper, ("adapt_mid", "adapt_final"))
    assert backbone == 15_845_440 and round(backbone / 1e6, 2) == 15.85
    assert adapters == 1_316_864 and round((backbone + adapters) / 1e6, 2) == 17.16
    # flatten head: 1024 + 2048 x 2 time steps
    assert (paper.fc.in_features, paper.fc.out_features) == (5120, 101)


def test_paper_preset_layers(paper: ShuffleNet2Plus1D) -> None:
    assert [name for name, _ in paper.named_children()] == [*BACKBONE, "adapt_mid", "adapt_final", "dropout", "fc"]
    assert not list(paper.dropout.parameters())
    assert [len(getattr(paper, s)) for s in ("stage2", "stage3", "stage4")] == [5, 13, 5]
    stem_conv = paper.stem[0][0]
    assert (stem_conv.in_channels, stem_conv.out_channels) == (3, 64)
    assert (stem_conv.kernel_size, stem_conv.stride, stem_conv.padding) == ((3, 7, 7), (1, 2, 2), (1, 3, 3))
    assert isinstance(paper.stem[1], SpatialMaxPool)
    down = paper.stage3[0]
    assert [c[0].kernel_size for c in down.branch] == [(1, 3, 3), (3, 1, 1), (1, 3, 3), (3, 1, 1)]
    assert [c[0].stride for c in down.branch] == [(1, 2, 2), (2, 1, 1), (1, 1, 1), (1, 1, 1)]
    assert (down.shortcut[0].kernel_size, down.shortcut[0].stride) == ((3, 3, 3), (2, 2, 2))
    assert (down.branch[0][0].in_channels, down.branch[0][0].out_channels) == (128, 128)
    assert paper.stage3[1].branch[0][0].in_channels == 128  # a unit's branch sees half of the 2w channels
    assert paper.adapt_mid[0].kernel_size == (1, 1, 1) and paper.adapt_final[0].out_channels == 2048
    convs = [m for m in paper.modules() if isinstance(m, nn.Conv3d)]
    assert all(c.bias is None for c in convs)
    assert len(convs) == sum(isinstance(m, nn.BatchNorm3d) for m in paper.modules())


def _executed_layers(model: nn.Module, x: torch.Tensor) -> list[tuple]:
    """The leaf layers a forward pass runs, in order: convolutions with their channels, kernel and stride,
    BatchNorm with its channels, then ``relu``, ``pool``, ``dropout``, ``fc``."""
    trace: list[tuple] = []

    def record(module: nn.Module, *_) -> None:
        if isinstance(module, nn.Conv3d):
            trace.append(("conv", module.in_channels, module.out_channels, module.kernel_size, module.stride))
        elif isinstance(module, nn.BatchNorm3d):
            trace.append(("bn", module.num_features))
        else:
            names = {nn.ReLU: "relu", SpatialMaxPool: "pool", nn.Dropout: "dropout", nn.Linear: "fc"}
            trace.append((names.get(type(module), type(module).__name__),))

    hooks = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        for h in hooks:
            h.remove()
    return trace


def _method_layers(stem: int, widths: tuple[int, ...], units: tuple[int, ...],
                   adapters: tuple[int, int]) -> list[tuple]:
    """The layer sequence the method describes: every convolution bias-free and followed by BN and ReLU."""

    def cbr(cin: int, cout: int, kernel: tuple, stride: tuple = (1, 1, 1)) -> list[tuple]:
        return [("conv", cin, cout, kernel, stride), ("bn", cout), ("relu",)]

    s, t = (1, 3, 3), (3, 1, 1)
    layers = cbr(3, stem, (3, 7, 7), (1, 2, 2)) + [("pool",)]
    cin = stem
    for w, n in zip(widths, units):
        # down-unit: the (2+1)D branch (strided spatial, strided temporal, spatial, temporal), then the shortcut
        layers += cbr(cin, w, s, (1, 2, 2)) + cbr(w, w, t, (2, 1, 1)) + cbr(w, w, s) + cbr(w, w, t)
        layers += cbr(cin, w, (3, 3, 3), (2, 2, 2))
        for _ in range(n):  # units: the branch on half of the 2w channels
            layers += cbr(w, w, s) + cbr(w, w, t) + cbr(w, w, s) + cbr(w, w, t)
        cin = 2 * w
    layers += cbr(2 * widths[1], adapters[0], (1, 1, 1)) + cbr(2 * widths[2], adapters[1], (1, 1, 1))
    return layers + [("dropout",), ("fc",)]


def test_every_convolution_is_followed_by_batchnorm_and_relu() -> None:
    # the tiny student runs exactly the method's sequence, adapters and down-unit shortcuts included
    model = tiny(dropout=0.2)
    assert _executed_layers(model, torch.randn(1, 3, 16, 32, 32)) == _method_layers(8, (8, 16, 32), (1, 1, 1), (16, 32))
    # the adapters' and the shortcuts' outputs are rectified: never negative, some exactly zero
    outputs = {}
    watched = {"adapt_mid": model.adapt_mid, "adapt_final": model.adapt_final, "shortcut": model.stage3[0].shortcut}
    hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: outputs.__setitem__(k, out)) for k, m in watched.items()]
    model.train()(torch.randn(2, 3, 16, 32, 32))  # batch statistics: BN outputs are centred, ReLU must cut them
    for h in hooks:
        h.remove()
    for name, out in outputs.items():
        assert out.min() >= 0 and (out == 0).float().mean() > 0.2, name


def test_paper_preset_layer_sequence(paper: ShuffleNet2Plus1D) -> None:
    trace = _executed_layers(paper, torch.zeros(1, 3, 16, 32, 32))  # the smallest input of its taps
    assert trace == _method_layers(64, (64, 128, 256), (4, 12, 4), (1024, 2048))


def test_paper_preset_multiply_accumulates() -> None:
    from distilled_shufflenet.bench import count_flops

    # from the method's table at 16 x 224 x 224: every convolution, the adapters and the classifier
    def half(n: int) -> int:
        return -(-n // 2)

    t, h, w = 16, 112, 112
    macs = 64 * 3 * 3 * 7 * 7 * t * h * w  # stem convolution
    h, w, cin = 56, 56, 64  # after the max-pool
    volumes = []
    for width, n in ((64, 4), (128, 12), (256, 4)):
        macs += width * cin * 9 * t * half(h) * half(w)  # the first (spatially strided) branch conv
        t, h, w = half(t), half(h), half(w)
        v = t * h * w
        macs += width * width * (3 + 9 + 3) * v + width * cin * 27 * v + n * width * width * 24 * v
        cin = 2 * width
        volumes.append(v)
    macs += 256 * 1024 * volumes[1] + 512 * 2048 * volumes[2] + 5120 * 101
    assert macs == 15_453_119_488  # 15.45 G multiply-accumulates (the paper's "12.07 GFLOPs" counts otherwise)
    with torch.device("meta"):  # shapes only
        paper = create_model("shufflenet2plus1d").eval()
        assert count_flops(paper, torch.empty(1, 3, 16, 224, 224)) == 2 * macs


def test_paper_preset_metadata(paper: ShuffleNet2Plus1D) -> None:
    assert paper.model_name == "shufflenet2plus1d" and paper.tap_names == ("mid", "final")
    assert [(i.channels, i.stride, i.module) for i in paper.feature_info] == [
        (256, (4, 16, 16), "stage3"), (512, (8, 32, 32), "stage4")]
    p = paper.preprocess
    assert (p.clip_len, p.crop_size, p.resize, p.mean) == (16, 224, 256, IMAGENET_MEAN)
    no_pool = tiny(stem_pool=False)
    assert [i.stride for i in no_pool.feature_info] == [(4, 8, 8), (8, 16, 16)]


def test_paper_preset_tap_shapes_at_16x224(paper: ShuffleNet2Plus1D) -> None:
    with torch.no_grad():
        feats = paper.forward_features(torch.randn(1, 3, 16, 224, 224))
    assert feats["mid"].shape == (1, 256, 4, 14, 14) and feats["final"].shape == (1, 512, 2, 7, 7)
    for info in paper.feature_info:
        assert feats[info.name].shape[1:] == info.out_shape(16, 224, 224)


@pytest.mark.parametrize("stem_pool", [True, False])
@pytest.mark.parametrize("size", [(8, 112, 112), (16, 112, 112), (9, 67, 45)])
def test_tap_shapes_follow_feature_info(size: tuple[int, int, int], stem_pool: bool) -> None:
    model = tiny(stem_pool=stem_pool, head_pool="mean").eval()
    with torch.no_grad():
        feats = model.forward_features(torch.randn(2, 3, *size))
    for info in model.feature_info:
        assert feats[info.name].shape == (2, *info.out_shape(*size)), info.name
    if size == (8, 112, 112) and stem_pool:
        assert feats["mid"].shape[2:] == (2, 7, 7) and feats["final"].shape[2:] == (1, 4, 4)


def test_weight_init() -> None:
    torch.manual_seed(0)
    model = shufflenet2plus1d(num_classes=50, widths=(64, 64, 64), units=(1, 1, 1), adapter_channels=(16, 32))
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm3d)]
    assert all(bool((b.weight == 1).all() and (b.bias == 0).all()) for b in bns)
    conv = model.stage3[1].branch[0][0].weight  # (64, 64, 1, 3, 3): fan_out = 64 * 9
    assert abs(conv.std().item() / (2 / (64 * 9)) ** 0.5 - 1) < 0.05
    assert abs(model.fc.weight.std().item() / 0.01 - 1) < 0.1 and bool((model.fc.bias == 0).all())


# ------------------------------------------------------------------------------------------ building blocks
def test_channel_shuffle_interleaves_two_groups() -> None:
    x = torch.arange(6.0).view(1, 6, 1, 1, 1)
    assert channel_shuffle(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]


def test_unit_passes_the_first_half_through_and_keeps_shape() -> None:
    unit = Unit(4).eval()
    x = torch.randn(2, 8, 3, 5, 6)
    with torch.no_grad():
        y = unit(x)
        branch = unit.branch(x[:, 4:])
    assert y.shape == x.shape
    torch.testing.assert_close(y[:, 1::2], x[:, :4], rtol=0, atol=0)  # channel_shuffle(cat(branch(b), a))
    torch.testing.assert_close(y[:, 0::2], branch, rtol=0, atol=0)


def test_down_unit_halves_t_h_w_and_concatenates_both_paths() -> None:
    down = DownUnit(3, 4).eval()
    x = torch.randn(2, 3, 5, 9, 8)
    with torch.no_grad():
        y = down(x)
        main, shortcut = down.branch(x), down.shortcut(x)
    assert y.shape == (2, 8, 3, 5, 4)
    torch.testing.assert_close(y[:, 0::2], main, rtol=0, atol=0)
    torch.testing.assert_close(y[:, 1::2], shortcut, rtol=0, atol=0)


@pytest.mark.parametrize("size", [(3, 17, 13), (2, 8, 8), (1, 1, 2)])
def test_spatial_max_pool_equals_max_pool3d(size: tuple[int, int, int]) -> None:
    reference = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
    x = torch.randn(2, 5, *size, requires_grad=True)
    with torch.no_grad():  # the fast path of inference and export
        torch.testing.assert_close(SpatialMaxPool()(x), reference(x), rtol=0, atol=0)
    y, y_ref = SpatialMaxPool()(x), reference(x)  # training: with gradients
    torch.testing.assert_close(y, y_ref, rtol=0, atol=0)
    grad = torch.randn_like(y)
    (g,) = torch.autograd.grad(y, x, grad)
    (g_ref,) = torch.autograd.grad(y_ref, x, grad)
    torch.testing.assert_close(g, g_ref)


# ------------------------------------------------------------------------------------------ heads
def test_flatten_head_keeps_time_steps_and_needs_clip_len() -> None:
    model = tiny(clip_len=16).eval()
    assert model.fc.in_features == 16 + 32 * 2
    x = torch.randn(2, 3, 16, 64, 64)
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.forward_head(feats)
        final = model.adapt_final(feats["final"]).mean(dim=(3, 4)).flatten(1)  # (2, 32 * 2), channel-major
        mid = model.adapt_mid(feats["mid"]).mean(dim=(2, 3, 4))
        swapped = model.forward_head({"mid": feats["mid"], "final": feats["final"].flip(2)})
    assert logits.shape == (2, 5)
    torch.testing.assert_close(logits, model.fc(torch.cat((mid, final), 1)))
    assert not torch.allclose(logits, swapped)  # the order of the final time steps matters
    with pytest.raises(ValueError) as err:
        model(torch.randn(2, 3, 8, 64, 64))
    assert "clip_len=16" in str(err.value) and 'head_pool="mean"' in str(err.value)


def test_mean_head_takes_any_clip_length() -> None:
    model = tiny(clip_len=16, head_pool="mean").eval()
    assert model.fc.in_features == 16 + 32
    with torch.no_grad():
        for frames in (8, 16, 24):
            assert model(torch.randn(2, 3, frames, 64, 64)).shape == (2, 5)
        feats = model.forward_features(torch.randn(2, 3, 16, 64, 64))
        swapped = model.forward_head({"mid": feats["mid"], "final": feats["final"].flip(2)})
        torch.testing.assert_close(model.forward_head(feats), swapped)


def test_forward_head_names_missing_taps() -> None:
    model = tiny(clip_len=8)
    with pytest.raises(ValueError, match="final"):
        model.forward_head({"mid": torch.randn(1, 32, 2, 4, 4)})


def test_dropout_acts_in_training_only() -> None:
    model = tiny(clip_len=8, dropout=0.5)
    assert model.dropout.p == 0.5
    feats = model.eval().forward_features(torch.randn(2, 3, 8, 32, 32))
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(feats), model.forward_head(feats), rtol=0, atol=0)
        model.train()
        assert not torch.equal(model.forward_head(feats), model.forward_head(feats))


# ------------------------------------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(num_classes=0), "num_classes"),
        (dict(num_classes=True), "num_classes"),
        (dict(stem_channels=-1), "stem_channels"),
        (dict(widths=(8, 16)), "widths"),
        (dict(widths=(8, 16, 0)), "widths"),
        (dict(widths=(8, 16, 32.0)), "widths"),
        (dict(units=(1, 1)), "units"),
        (dict(units=(1, -1, 1)), "units"),
        (dict(adapter_channels=(16,)), "adapter_channels"),
        (dict(clip_len=4), "clip_len"),
        (dict(dropout=1.0), "dropout"),
        (dict(in_channels=0), "in_channels"),
        (dict(stem_pool="yes"), "stem_pool"),
    ],
)
def test_bad_kwargs_name_the_argument(kwargs: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        tiny(**kwargs)


def test_unknown_head_pool_lists_the_choices() -> None:
    with pytest.raises(ValueError) as err:
        tiny(head_pool="max")
    assert all(word in str(err.value) for word in ("head_pool", "'max'", "flatten", "mean"))


def test_the_2plus1d_stem_factorises_the_paper_stem() -> None:
    """``stem="2plus1d"``: a (1,7,7) convolution into half the stem's channels, then a (3,1,1) one; the same
    output shape and taps as the paper's stem, 2.6x fewer multiply-accumulates in the stem."""
    from torch.utils.flop_counter import FlopCounterMode

    paper, factorised = tiny(clip_len=8).eval(), tiny(clip_len=8, stem="2plus1d").eval()
    convs = [m for m in factorised.stem.modules() if isinstance(m, nn.Conv3d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size, c.stride) for c in convs] == [
        (3, 4, (1, 7, 7), (1, 2, 2)), (4, 8, (3, 1, 1), (1, 1, 1))]
    x = torch.randn(1, 3, 8, 32, 32)
    with torch.inference_mode():
        assert factorised.stem(x).shape == paper.stem(x).shape
        assert {k: v.shape for k, v in factorised.forward_features(x).items()} == \
            {k: v.shape for k, v in paper.forward_features(x).items()}
    macs = []
    for model in (paper, factorised):
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model.stem(x)
        macs.append(counter.get_total_flops() // 2)
    positions = 8 * 16 * 16  # the stem's output positions
    assert macs == [positions * 8 * 3 * 3 * 49, positions * (4 * 3 * 49 + 8 * 4 * 3)]
    assert list(tiny().state_dict()) == list(tiny(stem="3d").state_dict())  # the default is the paper's
    with pytest.raises(ValueError, match=r"stem must be one of \['3d', '2plus1d'\], got 'big'"):
        tiny(stem="big")


def test_zero_units_leaves_only_the_down_units() -> None:
    model = tiny(units=(0, 0, 0), clip_len=8).eval()
    assert [len(getattr(model, s)) for s in ("stage2", "stage3", "stage4")] == [1, 1, 1]
    with torch.no_grad():
        assert model(torch.randn(1, 3, 8, 32, 32)).shape == (1, 5)


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: torch.randn(3, 8, 64, 64), "(N, C, T, H, W)"),  # rank 4
        (lambda: torch.randn(1, 2, 8, 64, 64), "3 channels"),
        (lambda: torch.randint(0, 255, (1, 3, 8, 64, 64), dtype=torch.uint8), "dtype"),
        (lambda: torch.randn(1, 3, 4, 64, 64), "too small"),  # fewer frames than the final tap's stride
        (lambda: torch.randn(1, 3, 8, 16, 64), "too small"),
    ],
)
def test_bad_inputs_name_the_given_shape(make, words: str) -> None:
    model = tiny(clip_len=8).eval()
    x = make()
    with pytest.raises(ValueError) as err:
        model(x)
    assert words in str(err.value) and str(tuple(x.shape)) in str(err.value)


def test_other_input_channel_counts() -> None:
    model = tiny(in_channels=2, clip_len=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 2, 8, 32, 32)).shape == (1, 5)
    with pytest.raises(ValueError, match="2 channels"):
        model(torch.randn(1, 3, 8, 32, 32))


# ------------------------------------------------------------------------------------------ taps, gradients
def test_forward_taps_matches_forward_features_and_stops_early() -> None:
    model = tiny(clip_len=8).eval()
    calls: list[int] = []
    model.stage4.register_forward_hook(lambda *args: calls.append(1))
    x = torch.randn(2, 3, 8, 64, 64)
    with torch.no_grad():
        mid = model.forward_taps(x, ("mid",))
        assert calls == []
        both = model.forward_taps(x, ("final", "mid"))
        feats = model.forward_features(x)
    assert list(mid) == ["mid"] and list(both) == ["final", "mid"]
    torch.testing.assert_close(mid["mid"], feats["mid"], rtol=0, atol=0)
    torch.testing.assert_close(both["final"], feats["final"], rtol=0, atol=0)


def test_gradients_reach_every_parameter() -> None:
    model = tiny(clip_len=8).train()
    model(torch.randn(2, 3, 8, 32, 32)).square().sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert p.grad.abs().sum() > 0, name


# ------------------------------------------------------------------------------------------ export
def _export_model() -> tuple[ShuffleNet2Plus1D, torch.Tensor]:
    model = tiny(clip_len=8).eval()
    with torch.no_grad():  # non-trivial BN statistics, so a mistake in eval-mode BN would show
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm3d)):
            bn.running_mean.uniform_(-0.1, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return model, torch.randn(2, 3, 8, 64, 64)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torchscript_matches_eager() -> None:
    model, x = _export_model()
    scripted = torch.jit.script(model)
    other = torch.randn(3, 3, 8, 48, 64)
    with torch.no_grad():
        for clip in (x, other):
            torch.testing.assert_close(scripted(clip), model(clip))
        torch.testing.assert_close(scripted.forward_features(x)["mid"], model.forward_features(x)["mid"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")
def test_torch_jit_trace_matches_eager() -> None:
    model, x = _export_model()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # the input checks see constant shapes
        traced = torch.jit.trace(model, x, check_trace=False)  # compared with eager below
    other = torch.randn(3, 3, 8, 64, 64)
    with torch.no_grad():
        for clip in (x, other):
            torch.testing.assert_close(traced(clip), model(clip))


@pytest.mark.slow
def test_torch_export_with_dynamic_batch_matches_eager() -> None:
    model, x = _export_model()
    batch = torch.export.Dim("batch", min=1, max=64)
    exported = torch.export.export(model, (x,), dynamic_shapes=({0: batch},)).module()
    with torch.no_grad():
        for clip in (x, torch.randn(1, 3, 8, 64, 64), torch.randn(5, 3, 8, 64, 64)):
            torch.testing.assert_close(exported(clip), model(clip))


@pytest.mark.parametrize(
    "cls, kernel, stride, padding",
    [
        (SpatialConv3d, (1, 3, 3), (1, 1, 1), (0, 1, 1)),
        (SpatialConv3d, (1, 3, 3), (1, 2, 2), (0, 1, 1)),
        (TemporalConv3d, (3, 1, 1), (1, 1, 1), (1, 0, 0)),
        (TemporalConv3d, (3, 1, 1), (2, 1, 1), (1, 0, 0)),
    ],
)
def test_factorised_convs_equal_conv3d(cls, kernel, stride, padding) -> None:
    torch.manual_seed(0)
    fast = cls(6, 10, kernel, stride=stride, padding=padding, bias=False)
    plain = nn.Conv3d(6, 10, kernel, stride=stride, padding=padding, bias=False)
    plain.load_state_dict(fast.state_dict())  # same parameters and keys
    x = torch.randn(2, 6, 5, 9, 7, requires_grad=True)
    torch.testing.assert_close(fast(x), plain(x), rtol=1e-5, atol=1e-5)
    (g_fast,) = torch.autograd.grad(fast(x).square().sum(), x)
    (g_plain,) = torch.autograd.grad(plain(x).square().sum(), x)
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-4, atol=1e-4)


def test_every_branch_conv_of_the_student_is_factorised() -> None:
    model = tiny()
    kinds = [type(m) for m in model.modules() if isinstance(m, nn.Conv3d)]
    # per unit: 2 spatial + 2 temporal; the stem and the down-units' 3x3x3 shortcuts stay plain
    assert kinds.count(SpatialConv3d) == kinds.count(TemporalConv3d) == 2 * (3 + 3)
