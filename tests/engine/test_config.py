"""Configs: the method's defaults, YAML < flags, and validation that names the field before training."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pytest
import yaml

from distilled_shufflenet.cli import main
from distilled_shufflenet.engine import FinetuneConfig, TrainConfig, resolve_config, train
from distilled_shufflenet.engine.distill import DistillConfig
from distilled_shufflenet.engine.config import run_config_from_args
from distilled_shufflenet.options import add_config_arguments, build_config

TINY = {"widths": [8, 16, 32], "units": [1, 1, 1], "adapter_channels": [16, 32], "clip_len": 8}


def parse(cls: type, argv: list[str]):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return run_config_from_args(cls, parser.parse_args(argv))


def test_finetune_defaults_are_the_method_recipe() -> None:
    cfg = FinetuneConfig()
    assert (cfg.optimizer, cfg.momentum, cfg.nesterov, cfg.lr, cfg.batch_size) == ("sgd", 0.9, True, 1e-3, 16)
    assert (cfg.scheduler, cfg.gamma, cfg.plateau_patience) == ("plateau", 0.1, 10)
    assert cfg.early_stop_patience > 0 and not cfg.freeze_backbone


def test_the_labelled_dataset_kinds_are_named_once_by_the_data_layer() -> None:
    from distilled_shufflenet.data.factory import LABELLED_KINDS
    from distilled_shufflenet.engine.evaluate import EvalConfig

    for cls in (TrainConfig, FinetuneConfig, EvalConfig):
        (dataset,) = (f for f in dataclasses.fields(cls) if f.name == "dataset")
        assert dataset.metadata["choices"] is LABELLED_KINDS, cls.__name__  # the same tuple, not a copy


def test_yaml_overrides_defaults_and_flags_override_yaml(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"lr": "1e-2", "epochs": 3, "betas": [0.8, 0.9], "model_kwargs": TINY}))
    cfg = parse(TrainConfig, ["--config", str(path), "--epochs", "5", "--no-nesterov", "--model-arg", "dropout=0.2"])
    assert cfg.lr == 0.01 and cfg.epochs == 5 and cfg.nesterov is False and cfg.betas == (0.8, 0.9)
    assert cfg.model_kwargs == {**TINY, "dropout": 0.2}  # builder arguments add up
    assert cfg.batch_size == 16  # untouched: the default


def test_an_unknown_yaml_key_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("lr: 0.01\nlearning_rat: 0.1\n")
    with pytest.raises(ValueError, match=r"run.yaml: unknown key\(s\) learning_rat"):
        resolve_config(TrainConfig, yaml_path=path)


@pytest.mark.parametrize("values, field", [
    ({"batch_size": "8"}, "batch_size"),
    ({"lr": True}, "lr"),
    ({"lr": "fast"}, "lr"),
    ({"betas": [0.9]}, "betas"),
    ({"model_kwargs": [1, 2]}, "model_kwargs"),
])
def test_a_value_of_the_wrong_type_names_its_field(values: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"{field}: expected"):
        build_config(TrainConfig, values, source="run.yaml")


@pytest.mark.parametrize("change, field", [
    ({"model": "resnet9000"}, "model"),
    ({"lr": 0.0}, "lr"),
    ({"lr": -1e-3}, "lr"),
    ({"epochs": 0}, "epochs"),
    ({"clip_len": 0}, "clip_len"),
    ({"split": 4}, "split"),
    ({"optimizer": "rmsprop"}, "optimizer"),
    ({"momentum": 1.5}, "momentum"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"data_root": None}, "data_root"),
    ({"data_root": "/nonexistent/videos"}, "data_root"),
    ({"init": "/nonexistent/r3d18.pth"}, "init"),
    ({"dataset": "list"}, "train_list"),
])
def test_bad_values_are_refused_with_the_field_named(tmp_path: Path, change: dict, field: str) -> None:
    cfg = TrainConfig(**{"data_root": str(tmp_path), "output": str(tmp_path / "run"), **change})
    with pytest.raises((ValueError, FileNotFoundError), match=f"^{field}: "):
        cfg.validate()



@pytest.mark.parametrize("change", [
    {"teacher_weights": (-1.0, 1.0)},
    {"teacher_weights": (0.0, 0.0)},
    {"teachers": "2d", "teacher_weights": (0.0, 1.0)},
    {"teachers": "3d", "teacher_weights": (1.0, 0.0)},
])
def test_teacher_weights_must_keep_a_teacher_that_is_distilled_from(tmp_path: Path, change: dict) -> None:
    cfg = DistillConfig(**{"data_root": str(tmp_path), "output": str(tmp_path / "run"), "allow_random_teachers": True,
                           **change})
    with pytest.raises(ValueError, match="^teacher_weights: "):
        cfg.validate()
    # the 3D teacher alone, the 2D teacher's slots dropped: a legitimate ablation of the paper's target
    DistillConfig(data_root=str(tmp_path), output=str(tmp_path / "run2"), teacher_weights=(0.0, 1.0),
                  allow_random_teachers=True).validate()


def test_finetune_needs_a_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="^checkpoint: required"):
        FinetuneConfig(data_root=str(tmp_path)).validate()


@pytest.mark.parametrize("change, words", [
    ({"clip_len": 4}, "cannot take clips of 4 x 224 x 224"),  # shorter than the final tap's stride
    ({"clip_len": 16}, "clip_len=8"),  # the paper's flatten head was built for 8-frame clips
    ({"crop_size": 16}, "cannot take clips of 8 x 16 x 16"),
])
def test_a_clip_the_model_cannot_take_fails_before_any_training(tmp_path: Path, change: dict, words: str) -> None:
    run = tmp_path / "run"
    cfg = TrainConfig(model_kwargs=TINY, data_root=str(tmp_path), output=str(run), device="cpu", **change)
    with pytest.raises(ValueError, match="^clip_len / crop_size: ") as info:
        train(cfg)
    assert words in str(info.value)
    assert not run.exists()  # nothing was written: no training started


def test_bad_builder_arguments_name_model_kwargs(tmp_path: Path) -> None:
    cfg = TrainConfig(model_kwargs={**TINY, "widht": 3}, data_root=str(tmp_path), output=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="^model_kwargs: shufflenet2plus1d cannot be built.*widht"):
        train(cfg)


def test_the_cli_reports_bad_input_in_one_line_with_exit_code_2(tmp_path: Path, capsys) -> None:
    assert main(["train", "--data-root", str(tmp_path / "missing"), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("dsn train: error: data_root: ") and "\n" not in err
    assert main(["train", "--model", "nope", "--data-root", str(tmp_path)]) == 2
    assert "model: unknown model 'nope'" in capsys.readouterr().err


def test_an_existing_run_is_not_overwritten_without_resume(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"^output: .*--resume"):
        TrainConfig(data_root=str(tmp_path), output=str(tmp_path / "run")).validate()


def test_resume_starts_from_the_runs_saved_config(tmp_path: Path) -> None:
    import torch

    saved = TrainConfig(data_root=str(tmp_path), output="elsewhere/run", lr=0.05, epochs=3, model_kwargs=TINY)
    run = tmp_path / "moved_run"
    run.mkdir()
    torch.save({"model_name": "shufflenet2plus1d", "model_kwargs": {}, "state_dict": {}, "config": saved.to_dict()},
               run / "last.pt")
    cfg = resolve_config(TrainConfig, overrides={"resume": str(run), "epochs": 6})
    assert cfg.lr == 0.05 and cfg.epochs == 6 and cfg.model_kwargs == TINY
    assert cfg.output == str(run) and cfg.resume == str(run)  # the run folder is where the checkpoint is


def test_the_saved_config_yaml_reads_back_to_the_same_config(tmp_path: Path) -> None:
    cfg = FinetuneConfig(checkpoint="distilled.pt", data_root="videos", betas=(0.8, 0.99), model_kwargs=TINY)
    path = cfg.save_yaml(tmp_path / "config.yaml")
    again = build_config(FinetuneConfig, yaml.safe_load(path.read_text()))
    assert again == cfg
