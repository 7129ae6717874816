"""The training presets shipped in ``configs/``: each one resolves, builds its model and trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from distilled_shufflenet.cli import main
from distilled_shufflenet.engine import TrainConfig, load_checkpoint, resolve_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SYNTH_PRESETS = sorted((CONFIGS / "synthactions").glob("*.yaml"))


def test_the_synthactions_presets_cover_the_student_and_both_teachers() -> None:
    models = {resolve_config(TrainConfig, yaml_path=p).model for p in SYNTH_PRESETS}
    assert models == {"shufflenet2plus1d", "resnet18", "r3d_18"}


@pytest.mark.parametrize("preset", SYNTH_PRESETS, ids=lambda p: p.stem)
def test_a_synthactions_preset_trains_through_dsn_train(preset: Path, tiny_synth: Path, tmp_path: Path) -> None:
    wanted = resolve_config(TrainConfig, yaml_path=preset)
    run = tmp_path / "run"
    # two steps, in-process loading: the preset itself decides model, clip, crop and optimiser
    argv = ["train", "--config", str(preset), "--data-root", str(tiny_synth), "--output", str(run),
            "--max-steps", "2", "--num-workers", "0", "--no-validation", "--no-progress", "--no-plots",
            "--no-tensorboard", "--device", "cpu"]
    assert main(argv) == 0
    model, ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["model_name"] == wanted.model
    assert {k: v for k, v in ckpt["model_kwargs"].items() if k != "num_classes"} == wanted.model_kwargs
    assert ckpt["model_kwargs"]["num_classes"] == 4  # the tiny dataset's classes
    assert model.preprocess.clip_len == wanted.clip_len and model.preprocess.crop_size == wanted.crop_size
    assert ckpt["config"]["optimizer"] == wanted.optimizer and ckpt["config"]["frame_stride"] == wanted.frame_stride
