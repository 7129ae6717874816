"""Checks every registered model against the shared feature interface."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from distilled_shufflenet.checkpoint import load_pretrained
from distilled_shufflenet.models import TapModel, create_model, freeze, fuse_for_inference, list_models

# small but complete configurations, so the whole registry runs in seconds
SMALL = {
    "shufflenet2plus1d": dict(stem_channels=8, widths=(8, 16, 32), units=(1, 1, 1), adapter_channels=(16, 32)),
}
ALL_MODELS = list_models()


def build(name: str) -> TapModel:
    return create_model(name, num_classes=5, **SMALL.get(name, {}))


@functools.lru_cache(maxsize=None)
def built(name: str) -> TapModel:
    """One shared instance per model, in eval mode, for the tests that only read it."""
    return build(name).eval()


def smallest_clip(model: TapModel, batch: int = 2) -> torch.Tensor:
    t, h, w = model.min_input_size()
    # the student's flatten head needs exactly its clip length
    t = max(t, model.preprocess.clip_len if model.model_name == "shufflenet2plus1d" else t)
    return torch.randn(batch, 3, t, h + 3, w + 5)  # odd sizes exercise the ceil rule


def test_registry_holds_the_student_and_the_teachers() -> None:
    expected = {"shufflenet2plus1d", "resnet18", "resnet34", "resnet50", "resnet101",
                "r3d_18", "mc3_18", "r2plus1d_18", "r3d_50", "x3d_s", "x3d_m"}
    assert expected <= set(ALL_MODELS)


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        create_model("shufflenet3d")
    assert "shufflenet3d" in str(err.value) and "r3d_18" in str(err.value)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_taps_match_feature_info(name: str) -> None:
    model = built(name)
    x = smallest_clip(model)
    n, _, t, h, w = x.shape
    with torch.no_grad():
        feats = model.forward_features(x)
        taps = model.forward_taps(x, model.tap_names)
        logits = model(x)
    assert tuple(feats) == model.tap_names == tuple(taps)
    for info in model.feature_info:
        assert tuple(feats[info.name].shape) == (n, *info.out_shape(t, h, w)), info
        torch.testing.assert_close(taps[info.name], feats[info.name])
    assert logits.shape == (n, 5)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_forward_taps_stops_after_the_last_tap_asked_for(name: str) -> None:
    model = built(name)
    last = model.feature_info[-1].module
    calls = []
    hook = model.get_submodule(last).register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad():
            out = model.forward_taps(smallest_clip(model, batch=1), ("mid",))
    finally:
        hook.remove()
    assert list(out) == ["mid"] and calls == []


@pytest.mark.parametrize("name", ALL_MODELS)
def test_state_dict_round_trip_through_a_file(name: str, tmp_path) -> None:
    a = built(name)
    b = copy.deepcopy(a)
    with torch.no_grad():
        for t in b.state_dict().values():
            t.zero_()  # so only a real load can make the outputs equal
    path = tmp_path / "weights.pt"
    torch.save({"state_dict": a.state_dict()}, path)
    load_pretrained(b, path)
    x = smallest_clip(a, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_model_carries_its_preprocessing(name: str) -> None:
    model = built(name)
    p = model.preprocess
    assert p is not None and p.clip_len >= 1 and p.crop_size > 0 and p.resize >= p.crop_size
    assert len(p.mean) == len(p.std) == 3 and all(s > 0 for s in p.std)
    assert model.model_name == name and model.model_kwargs["num_classes"] == 5


@pytest.mark.parametrize("name", ["shufflenet2plus1d", "r3d_18", "resnet18"])
@pytest.mark.parametrize(
    "bad, words",
    [
        (lambda x: x[0], "shape"),                     # wrong rank
        (lambda x: x[:, :2], "channels"),               # wrong channel count
        (lambda x: (x * 255).to(torch.uint8), "dtype"),  # wrong dtype
        (lambda x: x[..., :8, :8], "too small"),         # too small for the taps
    ],
)
def test_bad_input_names_expected_and_given_shapes(name: str, bad, words: str) -> None:
    model = built(name)
    x = bad(smallest_clip(model, batch=1))
    with pytest.raises(ValueError) as err:
        model(x)
    assert words in str(err.value)
    if words != "dtype":
        assert str(tuple(x.shape)) in str(err.value)


def test_freeze_survives_train_on_a_parent() -> None:
    teacher = freeze(build("r3d_18"))
    student = build("shufflenet2plus1d")
    both = torch.nn.ModuleDict({"teacher": teacher, "student": student}).train()
    assert student.training and not teacher.training
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_a_smaller_crop_keeps_the_resize_to_crop_ratio() -> None:
    p = built("shufflenet2plus1d").preprocess  # 224 crop of a 256 short side
    assert p.override(crop_size=64).resize == 73  # not 256: the crop must still frame the scene
    assert p.override(crop_size=64, resize=80).resize == 80
    assert p.override(clip_len=8) == p.override(clip_len=8, crop_size=224)
    with pytest.raises(ValueError, match="crop_size"):
        p.override(crop_size=112, resize=100)


@pytest.mark.parametrize("name", ALL_MODELS)
def test_folding_batchnorm_for_inference_keeps_the_outputs(name: str) -> None:
    model = built(name)
    trained = copy.deepcopy(model)
    with torch.no_grad():
        for m in trained.modules():  # BatchNorm statistics far from the identity
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    fused = fuse_for_inference(trained)
    assert fused.folded_batchnorms >= 20
    x = smallest_clip(model, batch=1)
    with torch.no_grad():
        torch.testing.assert_close(fused(x), trained(x), rtol=1e-4, atol=1e-4)
        taps = fused.forward_taps(x, ("mid",))
    assert taps["mid"].shape == trained.forward_taps(x, ("mid",))["mid"].shape
