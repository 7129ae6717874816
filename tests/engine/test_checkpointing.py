"""Run checkpoints: self-describing, atomic, rebuilt from the file alone; generator states round-trip."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distilled_shufflenet.checkpoint import CheckpointError, read_checkpoint
from distilled_shufflenet.engine import load_checkpoint, save_checkpoint
from distilled_shufflenet.engine.checkpointing import resolve_checkpoint_path
from distilled_shufflenet.engine.runtime import rng_state, set_rng_state
from distilled_shufflenet.models import Preprocess, create_model

TINY = dict(widths=(8, 16, 32), units=(1, 1, 1), adapter_channels=(16, 32), clip_len=8, num_classes=3)


def test_a_training_checkpoint_describes_itself_and_rebuilds_its_model(tmp_path: Path) -> None:
    from test_train import RandomClips, fit, tiny_config, tiny_student

    val = RandomClips(n=3, seed=1, augment=False)
    result = fit(tiny_student(), RandomClips(8), val, tiny_config(tmp_path / "run", epochs=1),
                 classes=RandomClips.classes, preprocess=Preprocess(8, 32, 36, (0.5,) * 3, (0.25,) * 3))
    assert result.best_checkpoint == tmp_path / "run" / "best.pt"
    ckpt = read_checkpoint(result.last_checkpoint)  # weights_only: plain containers and tensors only
    for key in ("model_name", "model_kwargs", "state_dict", "classes", "preprocess", "config", "epoch", "step",
                "metrics", "optimizer", "scheduler", "scaler", "rng", "data", "progress"):
        assert key in ckpt, key
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (1, 0, 2)
    assert ckpt["data"] == {"sampler": "EpochSampler", "seed": 0, "epoch": 1, "position": 0, "batch_size": 4,
                            "world_size": 1}
    assert set(ckpt["metrics"]) >= {"train_loss", "val_loss", "val_top1", "val_top5", "lr"}

    model, again = load_checkpoint(tmp_path / "run")  # a run folder means its last.pt
    assert model.model_name == "shufflenet2plus1d" and not model.training
    assert model.model_kwargs == {**TINY, "num_classes": 3}
    for key, value in result.model.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert again["classes"] == ["a", "b", "c"]
    assert model.preprocess == Preprocess(8, 32, 36, (0.5,) * 3, (0.25,) * 3)
    x = torch.randn(2, 3, 8, 32, 32)
    assert torch.equal(model(x), result.model.eval()(x))


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = create_model("shufflenet2plus1d", **TINY)
    path = save_checkpoint(tmp_path / "x" / "last.pt", {"model_name": net.model_name,
                                                        "model_kwargs": net.model_kwargs,
                                                        "state_dict": net.state_dict(), "classes": ["a", "b", "c"]})
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary file left behind
    model, ckpt = load_checkpoint(path)
    assert ckpt["format"] == "distilled_shufflenet.run/1" and ckpt["classes"] == ["a", "b", "c"]
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in model.state_dict().items())


def test_load_checkpoint_refuses_what_it_cannot_rebuild(tmp_path: Path) -> None:
    net = create_model("shufflenet2plus1d", **TINY)
    bare = tmp_path / "bare.pt"
    torch.save(net.state_dict(), bare)
    with pytest.raises(CheckpointError, match="not a run checkpoint.*load_pretrained"):
        load_checkpoint(bare)
    wrong = tmp_path / "wrong.pt"
    kwargs = {**TINY, "num_classes": 5}
    torch.save({"model_name": "shufflenet2plus1d", "model_kwargs": kwargs, "state_dict": net.state_dict()}, wrong)
    with pytest.raises(CheckpointError, match="wrong.pt: weights do not fit shufflenet2plus1d"):
        load_checkpoint(wrong)
    with pytest.raises(CheckpointError, match="holds no last.pt"):
        resolve_checkpoint_path(tmp_path)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(wrong.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)


def test_generator_states_round_trip_through_a_weights_only_file(tmp_path: Path) -> None:
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leaves a cached Gaussian in NumPy's state
    torch.save(rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.randn(), torch.rand(3))
    state = read_checkpoint(tmp_path / "rng.pt")
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    set_rng_state(state)
    got = (random.random(), np.random.randn(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
