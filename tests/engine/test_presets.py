"""The training presets shipped in ``configs/``: each one resolves, builds its model and trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from distilled_shufflenet.cli import main
from distilled_shufflenet.engine import TrainConfig, load_checkpoint, resolve_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# distill_*.yaml and finetune_*.yaml are recipes of those commands; the others are dsn train presets
SYNTH_PRESETS = sorted(p for p in (CONFIGS / "synthactions").glob("*.yaml")
                       if not p.name.startswith(("distill_", "finetune_")))


def test_the_synthactions_presets_cover_the_student_and_both_teachers() -> None:
    models = {resolve_config(TrainConfig, yaml_path=p).model for p in SYNTH_PRESETS}
    assert models == {"shufflenet2plus1d", "resnet18", "r3d_18"}
    assert (CONFIGS / "synthactions" / "distill_small.yaml").is_file()


def test_the_distillation_recipe_pairs_the_narrow_teachers_with_the_small_students_adapters() -> None:
    from distilled_shufflenet.distill import TargetBuilder
    from distilled_shufflenet.engine import FinetuneConfig
    from distilled_shufflenet.engine.distill import DistillConfig, build_teachers
    from distilled_shufflenet.models import create_model

    cfg = resolve_config(DistillConfig, yaml_path=CONFIGS / "synthactions" / "distill_small.yaml")
    student = create_model(cfg.model, **cfg.model_kwargs)
    teacher2d, teacher3d = build_teachers(cfg, "cpu")
    layout = TargetBuilder(student, teacher2d, teacher3d).plan((cfg.clip_len, cfg.crop_size, cfg.crop_size))
    assert {p.key: p.shape for p in layout.parts} == {
        "mid/2d": (64, 2, 4, 4), "mid/3d": (64, 2, 4, 4), "final/2d": (128, 1, 2, 2), "final/3d": (128, 1, 2, 2)}
    # the 3D teacher sees the frames it was trained on: 8 frames, every 4th, over the same span
    teacher = resolve_config(TrainConfig, yaml_path=CONFIGS / "synthactions" / "r3d_18.yaml")
    assert teacher.frame_stride == cfg.frame_stride * cfg.teacher3d_frame_stride
    assert teacher.clip_len == cfg.clip_len // cfg.teacher3d_frame_stride
    tune = resolve_config(FinetuneConfig, yaml_path=CONFIGS / "synthactions" / "finetune_small.yaml")
    assert tune.model is None and tune.clip_len is None  # both come from the distilled checkpoint


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
