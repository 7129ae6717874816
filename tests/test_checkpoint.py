"""Checkpoint files: clear errors for bad files, strict loads that say what does not fit, atomic writes."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from distilled_shufflenet.checkpoint import (
    CheckpointError,
    atomic_save,
    extract_state_dict,
    load_pretrained,
    read_checkpoint,
)


class Tiny(nn.Module):
    classifier_name = "fc"

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.fc = nn.Linear(6, classes)


def test_missing_empty_truncated_and_foreign_files_are_named(tmp_path) -> None:
    good = tmp_path / "good.pt"
    torch.save(Tiny().state_dict(), good)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    text = tmp_path / "notes.pth"
    text.write_text("these are not weights\n")
    empty = tmp_path / "empty.pt"
    empty.touch()
    for path, words in [(tmp_path / "absent.pt", "no such file"), (empty, "empty"),
                        (truncated, "truncated or corrupt"), (text, "not a PyTorch checkpoint"),
                        (tmp_path, "directory")]:
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        assert str(path) in str(err.value) and words in str(err.value)


def test_pickled_objects_are_refused_not_executed(tmp_path) -> None:
    path = tmp_path / "model.pt"
    torch.save(Tiny(), path)  # a whole module: needs unpickling arbitrary classes
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_nested_and_dataparallel_state_dicts_load(tmp_path) -> None:
    src = Tiny()
    for i, wrap in enumerate([lambda sd: sd, lambda sd: {"state_dict": sd, "arch": "x", "epoch": 3},
                              lambda sd: {"model": sd}, lambda sd: {f"module.{k}": v for k, v in sd.items()}]):
        path = tmp_path / f"w{i}.pt"
        torch.save(wrap(src.state_dict()), path)
        dst = Tiny()
        load_pretrained(dst, path)
        for (k, a), b in zip(src.state_dict().items(), dst.state_dict().values()):
            assert torch.equal(a, b), k


def test_strict_mismatch_lists_keys_with_counts(tmp_path) -> None:
    sd = Tiny(classes=7).state_dict()
    sd["extra.weight"] = torch.zeros(1)
    del sd["body.bias"]
    path = tmp_path / "other.pt"
    torch.save(sd, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(Tiny(), path)
    msg = str(err.value)
    assert str(path) in msg
    assert "1 missing keys: body.bias" in msg
    assert "1 unexpected keys: extra.weight" in msg
    assert "2 keys with the wrong shape" in msg and "fc.weight (checkpoint (7, 6), model (3, 6))" in msg


def test_drop_classifier_keeps_the_new_head_and_loads_the_rest(tmp_path) -> None:
    src = Tiny(classes=700)
    path = tmp_path / "kinetics.pt"
    torch.save(src.state_dict(), path)
    dst = Tiny(classes=101)
    head = dst.fc.weight.clone()
    report = load_pretrained(dst, path, drop_classifier=True)
    assert torch.equal(dst.body.weight, src.body.weight) and torch.equal(dst.fc.weight, head)
    assert sorted(report["dropped"]) == ["fc.bias", "fc.weight"]


def test_a_state_dict_of_non_tensors_is_refused() -> None:
    with pytest.raises(CheckpointError, match="expected a state dict"):
        extract_state_dict({"epoch": 3})


def test_atomic_save_never_leaves_a_partial_file(tmp_path, monkeypatch) -> None:
    path = tmp_path / "ckpt.pt"
    atomic_save({"a": torch.ones(2)}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        atomic_save({"a": torch.zeros(2)}, path)
    monkeypatch.undo()
    assert torch.equal(read_checkpoint(path)["a"], torch.ones(2))  # the old file is intact
    assert os.listdir(tmp_path) == ["ckpt.pt"]  # no temporary left behind


def test_atomic_writes_get_the_usual_permissions(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        path = atomic_save({"a": torch.ones(1)}, tmp_path / "ckpt.pt")
    finally:
        os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o644  # readable by others, like any torch.save output


def test_first_line_of_an_error() -> None:
    from distilled_shufflenet._text import first_line

    assert first_line(RuntimeError("bad header\nat offset 12")) == "bad header"
    assert first_line(EOFError()) == "EOFError"  # an empty message is named by its type


def test_exported_models_are_named_and_torch_unsafe_advice_is_never_passed_on(tmp_path) -> None:
    """An ONNX or TorchScript file given as a checkpoint is said to be one; no message repeats PyTorch's
    advice to load with weights_only=False, which would run whatever code the file holds."""
    model = Tiny().eval()
    script = tmp_path / "model.ts"
    torch.jit.save(torch.jit.script(model.fc), str(script))
    onnx_file = tmp_path / "model.onnx"
    torch.onnx.export(model.fc, (torch.zeros(1, 6),), str(onnx_file), dynamo=False)
    pickled = tmp_path / "module.pt"
    torch.save(model, pickled)  # a whole module: a safe load refuses to unpickle its classes
    for path, words in [(script, "an exported TorchScript model"), (onnx_file, "an exported ONNX model"),
                        (pickled, "holds a pickled")]:
        with pytest.raises(CheckpointError) as err:
            read_checkpoint(path)
        message = str(err.value)
        assert str(path) in message and words in message, message
        assert "weights_only" not in message and "will likely succeed" not in message, message
