"""The dsn command as a whole: every subcommand is reachable and documented."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distilled_shufflenet.cli import build_parser, main

COMMANDS = ("models", "bench", "data", "train", "finetune", "evaluate")


def test_help_lists_every_subcommand(capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    for command in COMMANDS:
        assert f"    {command}" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_each_subcommand_has_help(command: str, capsys) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    assert f"dsn {command}" in capsys.readouterr().out


def test_python_dash_m_runs_the_command() -> None:
    result = subprocess.run([sys.executable, "-m", "distilled_shufflenet", "--version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("dsn ")


def test_a_folder_given_as_config_file_is_named_as_such(tmp_path, capsys) -> None:
    assert main(["train", "--config", str(tmp_path), "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"dsn train: error: config: {tmp_path} is a folder; expected a YAML file")
    assert "no such file" not in err


def test_an_os_error_is_reported_without_its_errno(tmp_path, capsys, monkeypatch) -> None:
    from distilled_shufflenet.cli import data

    def fail(args):
        raise PermissionError(13, "Permission denied", str(tmp_path / "x.pt"))

    monkeypatch.setattr(data, "_run_check", fail)
    assert main(["data", "check", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"dsn data check: error: {tmp_path / 'x.pt'}: permission denied\n"


def test_missing_hmdb51_videos_are_reported_with_the_flag_to_pass(tmp_path, capsys) -> None:
    splits = tmp_path / "splits"
    splits.mkdir()
    for cls in ("brush_hair", "cartwheel"):
        (splits / f"{cls}_test_split1.txt").write_text(f"{cls}_a.avi 1 \n{cls}_b.avi 2 \n{cls}_c.avi 0 \n")
    args = ["train", "--dataset", "hmdb51", "--data-root", str(tmp_path), "--splits-dir", str(splits),
            "--device", "cpu", "--output", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsn train: error: 2 of 2 videos listed in ") and "brush_hair_a.avi" in err
    assert err.rstrip().endswith("(pass --skip-missing to leave them out)") and "skip_missing" not in err


def _distilled_checkpoint(path: Path) -> Path:
    """A tiny student as dsn distill writes it: no classifier in the weights, no classes."""
    from distilled_shufflenet.engine.checkpointing import save_checkpoint
    from distilled_shufflenet.models import create_model

    torch.manual_seed(0)
    student = create_model("shufflenet2plus1d", num_classes=4, widths=(8, 16, 32), units=(1, 1, 1),
                           adapter_channels=(16, 32), clip_len=8)
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("fc.")}
    return save_checkpoint(path, {"command": "distill", "model_name": "shufflenet2plus1d",
                                  "model_kwargs": dict(student.model_kwargs), "state_dict": state, "classes": [],
                                  "preprocess": student.preprocess.to_dict()})


@pytest.mark.parametrize("command", ["predict", "export", "evaluate"])
def test_a_distilled_checkpoint_is_named_with_the_fine_tuning_to_run(command: str, tmp_path, capsys) -> None:
    ckpt = _distilled_checkpoint(tmp_path / "distilled.pt")
    args = {"predict": ["predict", str(ckpt), str(tmp_path / "clip.avi"), "--backend", "torch-fp32"],
            "export": ["export", str(ckpt), "-o", str(tmp_path / "s.onnx")],
            "evaluate": ["evaluate", str(ckpt), "--data-root", str(tmp_path), "--device", "cpu", "--no-progress"]}
    assert main(args[command]) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {ckpt}: a distilled student without a classifier" in err, err
    assert f"dsn finetune --checkpoint {ckpt}" in err
    assert "Missing key" not in err and "fc.weight" not in err
    assert not (tmp_path / "s.onnx").exists()


def test_models_states_the_checkpoints_of_every_model(capsys) -> None:
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    cards = out.split("\n\n")
    assert len(cards) >= 11 and all("  checkpoints: " in card for card in cards)
    assert "not stated" not in out
    assert "X3D_S.pyth" in out.split("x3d_s  (")[1].split("checkpoints: ")[1].split("\n")[0]
