"""Targets: the paper's layout (tiny and at full size on the meta device), resampling, single-teacher
modes, the checks made before any step, and per-teacher adapters."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distilled_shufflenet.distill import (
    DistillLoss,
    Renormalize,
    StudentMaps,
    TargetBuilder,
    TeacherAdapters,
    resample,
    student_maps,
)
from distilled_shufflenet.models import create_model, freeze
from distilled_shufflenet.models.resnet2d import select_frames


def _clip(n: int = 2, t: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, t, size, size, generator=g)


def test_full_size_paper_preset_on_the_meta_device() -> None:
    with torch.device("meta"):
        student = create_model("shufflenet2plus1d")
        t2d, t3d = freeze(create_model("resnet101")), freeze(create_model("r3d_50"))
    builder = TargetBuilder(student, t2d, t3d)
    layout = builder.plan((16, 224, 224))
    assert [(p.key, p.start, p.stop, p.teacher_shape) for p in layout.parts] == [
        ("mid/2d", 0, 2, (1024, 1, 14, 14)), ("mid/3d", 2, 4, (1024, 2, 14, 14)),
        ("final/2d", 0, 1, (2048, 1, 7, 7)), ("final/3d", 1, 2, (2048, 1, 7, 7))]
    clip = torch.empty(2, 3, 16, 224, 224, device="meta")
    targets = layout.join(builder(clip, torch.tensor([0, 15])))
    assert tuple(targets["mid"].shape) == (2, 1024, 4, 14, 14)
    assert tuple(targets["final"].shape) == (2, 2048, 2, 7, 7)
    maps = layout.join(student_maps(student, clip, layout))
    assert {k: tuple(v.shape) for k, v in maps.items()} == {k: tuple(v.shape) for k, v in targets.items()}
    assert "mid" in layout.describe() and "1024x4x14x14" in layout.describe()


def test_tiny_paper_shaped_preset_builds_its_targets_from_the_right_frames(make_student, make_teacher) -> None:
    student = make_student()
    t2d, t3d = make_teacher("resnet18"), make_teacher("r3d_50", seed=2)
    builder = TargetBuilder(student, t2d, t3d)
    clip = _clip(2, 16, 64)
    index = torch.tensor([3, 11])
    parts = builder(clip, index)
    joined = builder.plan((16, 64, 64)).join(parts)
    assert tuple(joined["mid"].shape) == (2, 64, 4, 4, 4) and tuple(joined["final"].shape) == (2, 128, 2, 2, 2)
    # the 2D slots hold the image teacher's map of the chosen frame, in its own normalisation, repeated
    frame = Renormalize(student.preprocess, t2d.preprocess)(select_frames(clip, index))
    with torch.no_grad():
        ref2d = t2d.forward_taps(frame)
        ref3d = t3d.forward_taps(Renormalize(student.preprocess, t3d.preprocess)(clip))
    for slot in range(2):
        torch.testing.assert_close(parts["mid/2d"][:, :, slot], ref2d["mid"])
    torch.testing.assert_close(parts["final/2d"][:, :, 0], ref2d["final"])
    # r3d_50 at 16x64x64 gives mid 2x4x4 and final 1x2x2: already the size of their slots
    torch.testing.assert_close(parts["mid/3d"], ref3d["mid"])
    torch.testing.assert_close(parts["final/3d"], ref3d["final"])
    assert not any(v.requires_grad for v in parts.values())


def test_renormalisation_turns_one_models_input_into_the_others(make_student, make_teacher) -> None:
    from distilled_shufflenet.data.transforms import normalize

    student, t3d = make_student(), make_teacher("r3d_50")
    rgb = torch.rand(3, 4, 8, 8)
    x_student = normalize(rgb, student.preprocess.mean, student.preprocess.std)
    x_teacher = normalize(rgb, t3d.preprocess.mean, t3d.preprocess.std)
    torch.testing.assert_close(Renormalize(student.preprocess, t3d.preprocess)(x_student[None])[0], x_teacher)
    same = Renormalize(student.preprocess, student.preprocess)
    assert same(x_student) is x_student


def test_resample_pools_where_larger_and_repeats_where_shorter() -> None:
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(1, 1, 2, 4, 4)
    y = resample(x, (4, 2, 2))  # time doubled by repetition, space halved by average pooling
    pooled = F.avg_pool3d(x, (1, 2, 2))
    torch.testing.assert_close(y, pooled.repeat_interleave(2, dim=2))
    assert resample(x, (2, 4, 4)) is x


def test_the_3d_map_is_pooled_to_its_slots(student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    clip = _clip()
    parts = builder(clip, torch.tensor([0, 1]))
    with torch.no_grad():
        ref = teacher3d.forward_taps(Renormalize(student.preprocess, teacher3d.preprocess)(clip))
    # r3d_18 at 16x32x32: mid 4x4x4 -> 2 slots of 2x2, final 2x2x2 -> 1 slot of 1x1
    assert tuple(ref["mid"].shape[2:]) == (4, 4, 4)
    torch.testing.assert_close(parts["mid/3d"], F.adaptive_avg_pool3d(ref["mid"], (2, 2, 2)))
    torch.testing.assert_close(parts["final/3d"], ref["final"].mean(dim=(2, 3, 4), keepdim=True))


def test_frame_index_defaults_to_draws_from_the_generator(student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    clip = _clip(2)
    a = builder(clip, generator=torch.Generator().manual_seed(5))
    b = builder(clip, generator=torch.Generator().manual_seed(5))
    drawn = torch.randint(0, 16, (2,), generator=torch.Generator().manual_seed(5))
    c = builder(clip, drawn)
    for k in a:
        torch.testing.assert_close(a[k], b[k])
        torch.testing.assert_close(a[k], c[k])


def test_frame_targets_hold_the_2d_target_of_every_frame(student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    clip = _clip(2)
    every = builder.frame_targets(clip)
    assert set(every) == {"mid/2d", "final/2d"}
    for t in (0, 5, 15):
        one = builder(clip, torch.tensor([t, t]), compact=True)
        for key, maps in every.items():
            assert maps.shape[2] == 16
            torch.testing.assert_close(maps[:, :, t : t + 1], one[key])
    assert not torch.allclose(every["final/2d"][:, :, 0], every["final/2d"][:, :, 15])  # the frames differ
    with pytest.raises(ValueError, match="no 2D teacher"):
        TargetBuilder(student, None, teacher3d, teachers="3d").frame_targets(clip)


@pytest.mark.parametrize("mode", ["2d", "3d"])
def test_single_teacher_modes_give_every_slot_to_the_one_teacher(mode: str, teacher2d, teacher3d,
                                                                 make_student) -> None:
    student = make_student(clip_len=8)
    builder = TargetBuilder(student, teacher2d if mode == "2d" else None, teacher3d if mode == "3d" else None,
                            teachers=mode)
    parts = builder(_clip(2, 8), torch.tensor([0, 7]))
    # at 8 frames the student has 2 mid slots and 1 final slot: too few to split, all for one teacher
    assert sorted(parts) == sorted([f"mid/{mode}", f"final/{mode}"])
    assert tuple(parts[f"mid/{mode}"].shape) == (2, 64, 2, 2, 2)
    assert tuple(parts[f"final/{mode}"].shape) == (2, 128, 1, 1, 1)
    with pytest.raises(ValueError, match="cannot be split") as e:
        TargetBuilder(student, teacher2d, teacher3d).plan((8, 32, 32))
    # the advice names the flags and config fields, not the library's arguments
    assert "--teachers 2d or --teachers 3d" in str(e.value) and "--clip-len" in str(e.value)
    assert "teachers='" not in str(e.value)


def test_split_as_fraction_count_or_per_tap(student, teacher2d, teacher3d) -> None:
    def spans(split):
        layout = TargetBuilder(student, teacher2d, teacher3d, split=split).plan((32, 32, 32))
        return [(p.key, p.start, p.stop) for p in layout.parts]

    # at 32 frames: mid has 8 slots, final 4
    assert spans(0.5) == [("mid/2d", 0, 4), ("mid/3d", 4, 8), ("final/2d", 0, 2), ("final/3d", 2, 4)]
    assert spans(0.25)[0] == ("mid/2d", 0, 2) and spans(0.25)[2] == ("final/2d", 0, 1)
    assert spans(1)[0] == ("mid/2d", 0, 1)
    assert spans({"mid": 3, "final": 1})[:2] == [("mid/2d", 0, 3), ("mid/3d", 3, 8)]
    for bad in (0.0, 1.0, 0, {"mid": 1}, "half"):
        with pytest.raises(ValueError, match="split"):
            TargetBuilder(student, teacher2d, teacher3d, split=bad)
    with pytest.raises(ValueError, match="3D teacher would get 0|cannot be split"):
        TargetBuilder(student, teacher2d, teacher3d, split=4).plan((16, 32, 32))


def test_a_clip_too_short_or_small_for_a_teacher_is_refused_before_any_step(student, teacher2d, make_student,
                                                                            make_teacher) -> None:
    r3d_50 = make_teacher("r3d_50")  # needs 16 frames and 64 px for its final tap
    with pytest.raises(ValueError, match=r"r3d_50 needs a clip of at least T>=16.*8x64x64"):
        TargetBuilder(make_student(clip_len=8), teacher3d=r3d_50, teachers="3d").plan((8, 64, 64))
    with pytest.raises(ValueError, match=r"2D teacher resnet18 needs .*H>=32, W>=32"):
        TargetBuilder(student, teacher2d, r3d_50).plan((16, 16, 16))


def test_channel_mismatch_names_the_teacher_and_offers_both_fixes(teacher3d, make_student) -> None:
    student = make_student()
    torch.manual_seed(0)
    wide2d = freeze(create_model("resnet18", num_classes=5, widen_factor=0.5))  # 128 / 256 channels
    with pytest.raises(ValueError) as e:
        TargetBuilder(student, wide2d, teacher3d).plan((16, 32, 32))
    msg = str(e.value)
    assert "2D teacher resnet18 gives 128 channels at mid, the student's adapt_mid gives 64" in msg
    assert "one adapter per teacher" in msg
    assert "adapter_channels" not in msg  # the two teachers disagree: matching adapters cannot serve both
    wide3d = freeze(create_model("r3d_18", num_classes=5, widen_factor=0.5))
    with pytest.raises(ValueError, match=r"--model-arg adapter_channels=\[128,256\]") as e:
        TargetBuilder(student, wide2d, wide3d).plan((16, 32, 32))
    # the advice names the flag and the config field, never a library call
    assert "--per-teacher-adapters" in msg and "per_teacher_adapters: true" in msg
    assert "TargetBuilder(" not in msg and "=True" not in msg
    assert "config field model_kwargs" in str(e.value)
    with pytest.raises(ValueError, match="not frozen"):
        TargetBuilder(student, create_model("resnet18", widen_factor=0.25), teacher3d)
    with pytest.raises(ValueError, match="3D model"):
        TargetBuilder(student, teacher3d, teacher3d)


def test_one_adapter_per_teacher_where_channels_differ(teacher3d, make_student) -> None:
    student = make_student()
    torch.manual_seed(0)
    wide2d = freeze(create_model("resnet18", num_classes=5, widen_factor=0.5))
    builder = TargetBuilder(student, wide2d, teacher3d, per_teacher_adapters=True)
    layout = builder.plan((16, 32, 32))
    adapters = TeacherAdapters(student, layout)
    assert sorted(adapters.adapters) == ["final_2d", "mid_2d"]  # the 3D teacher matches the student's own
    assert adapters.get("mid/3d") is None
    clip = _clip()
    maps = StudentMaps(student, adapters)(clip, layout)
    targets = builder(clip, torch.tensor([0, 3]))
    assert {k: tuple(v.shape) for k, v in maps.items()} == {k: tuple(v.shape) for k, v in targets.items()}
    assert tuple(maps["mid/2d"].shape) == (2, 128, 2, 2, 2) and tuple(maps["mid/3d"].shape) == (2, 64, 2, 2, 2)
    loss, _ = DistillLoss()(maps, targets)
    loss.backward()
    assert adapters.adapters["mid_2d"][0].weight.grad is not None
    assert student.adapt_mid[0].weight.grad is not None  # the 3D slots train the student's own adapter
    with pytest.raises(ValueError, match="different channels"):
        layout.join(targets)
    # the student's checkpoint stays the student's
    assert not any(k.startswith("adapters") for k in student.state_dict())


def test_student_maps_are_the_adapted_taps_sliced_to_the_slots(student, teacher2d, teacher3d) -> None:
    layout = TargetBuilder(student, teacher2d, teacher3d).plan((16, 32, 32))
    clip = _clip()
    student.eval()
    with torch.no_grad():
        maps = layout.join(student_maps(student, clip, layout))
        feats = student.forward_features(clip)
        torch.testing.assert_close(maps["mid"], student.adapt_mid(feats["mid"]))
        torch.testing.assert_close(maps["final"], student.adapt_final(feats["final"]))


def test_stride3d_shows_the_3d_teacher_every_nth_frame(student, teacher2d, teacher3d) -> None:
    clip = torch.randn(2, 3, 16, 64, 64)
    builder = TargetBuilder(student, teacher2d, teacher3d, stride3d=2)
    layout = builder.plan((16, 64, 64))
    assert layout.part("mid/3d").teacher_shape[1] == teacher3d.tap("mid").out_shape(8, 64, 64)[1]
    seen = []
    original = teacher3d.forward_taps
    teacher3d.forward_taps = lambda x, taps: seen.append(x.shape) or original(x, taps)
    try:
        parts = builder(clip, torch.zeros(2, dtype=torch.long))
    finally:
        del teacher3d.forward_taps
    assert seen == [torch.Size([2, 3, 8, 64, 64])]
    direct = teacher3d.forward_taps(builder.renorm3d(clip[:, :, ::2]), ("mid",))["mid"]
    assert torch.allclose(parts["mid/3d"], resample(direct, layout.part("mid/3d").shape[1:]))
    with pytest.raises(ValueError, match="stride3d"):
        TargetBuilder(student, teacher2d, teacher3d, stride3d=0)
