"""Teacher specs and building: parsing, strict loading of bare weights and of this project's run
checkpoints, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from distilled_shufflenet.checkpoint import CheckpointError, atomic_save
from distilled_shufflenet.distill import TeacherSpec, build_teacher, parse_teacher_args
from distilled_shufflenet.models import create_model


def test_spec_parsing() -> None:
    spec = TeacherSpec.parse("resnet18:/some/dir/w.pth", ["widen_factor=0.25", "num_classes=10"])
    assert (spec.name, spec.path, dict(spec.kwargs)) == ("resnet18", Path("/some/dir/w.pth"),
                                                         {"widen_factor": 0.25, "num_classes": 10})
    assert TeacherSpec.parse("r3d_50").path is None
    assert parse_teacher_args(["no_max_pool=true", "name=abc", "sizes=[1, 2]"]) == {
        "no_max_pool": True, "name": "abc", "sizes": [1, 2]}
    with pytest.raises(ValueError, match="unknown model 'resnet7'"):
        TeacherSpec.parse("resnet7:/x.pth")
    with pytest.raises(ValueError, match="empty PATH"):
        TeacherSpec.parse("resnet18:")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_teacher_args(["widen_factor"])
    with pytest.raises(ValueError, match="given twice"):
        parse_teacher_args(["a=1", "a=2"])


def test_bare_weights_load_strictly_and_the_teacher_is_frozen(tmp_path: Path) -> None:
    torch.manual_seed(0)
    source = create_model("resnet18", num_classes=5, widen_factor=0.25)
    atomic_save(source.state_dict(), tmp_path / "r18.pth")
    spec = TeacherSpec.parse(f"resnet18:{tmp_path / 'r18.pth'}", ["num_classes=5", "widen_factor=0.25"])
    teacher = build_teacher(spec, kind="2d")
    assert teacher.frozen and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    for k, v in source.state_dict().items():
        assert torch.equal(teacher.state_dict()[k], v)
    with pytest.raises(ValueError, match="resnet18 is a 2D model, a 3D teacher is expected"):
        build_teacher(spec, kind="3d")


def test_a_checkpoint_of_another_architecture_names_the_file_and_the_keys(tmp_path: Path) -> None:
    atomic_save(create_model("r3d_18", widen_factor=0.25).state_dict(), tmp_path / "r3d.pth")
    with pytest.raises(CheckpointError) as e:
        build_teacher(TeacherSpec.parse(f"resnet18:{tmp_path / 'r3d.pth'}", ["widen_factor=0.25"]))
    msg = str(e.value)
    assert str(tmp_path / "r3d.pth") in msg and "missing keys" in msg and "unexpected keys" in msg
    assert "conv1.weight" in msg and "stem.0.weight" in msg


def test_a_run_checkpoint_gives_its_architecture_and_preprocessing(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("r3d_18", num_classes=4, widen_factor=0.25)
    path = tmp_path / "last.pt"
    pre = {"clip_len": 8, "crop_size": 64, "resize": 73, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}
    atomic_save({"format": "distilled_shufflenet.run/1", "model_name": "r3d_18",
                 "model_kwargs": {"num_classes": 4, "widen_factor": 0.25}, "state_dict": model.state_dict(),
                 "preprocess": pre, "epoch": 3}, path)
    teacher = build_teacher(TeacherSpec.parse(f"r3d_18:{path}"), kind="3d")
    assert teacher.model_kwargs == {"num_classes": 4, "widen_factor": 0.25}
    assert teacher.preprocess.mean == (0.5, 0.5, 0.5) and teacher.preprocess.crop_size == 64
    assert torch.equal(teacher.state_dict()["fc.weight"], model.state_dict()["fc.weight"])
    with pytest.raises(CheckpointError, match="holds a 'r3d_18' model"):
        build_teacher(TeacherSpec.parse(f"mc3_18:{path}"))
    # from dsn distill, the fix names the flag and the config field, not the library's field_name argument
    with pytest.raises(CheckpointError, match=rf"give it as r3d_18:{path} \(dsn distill --teacher3d, config field "
                                              r"teacher3d\)"):
        build_teacher(TeacherSpec.parse(f"mc3_18:{path}"), field_name="teacher3d")
    with pytest.raises(CheckpointError, match=r"widen_factor=0.5 \(checkpoint: 0.25\)"):
        build_teacher(TeacherSpec.parse(f"r3d_18:{path}", ["widen_factor=0.5"]))
    with pytest.raises(CheckpointError, match="no such file"):
        build_teacher(TeacherSpec.parse(f"r3d_18:{tmp_path / 'absent.pt'}"))
