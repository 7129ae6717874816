"""A run folder belongs to one run; resuming changes only what may change; signals stop a run cleanly."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.engine import FinetuneConfig, TrainConfig, fit, resolve_config
from distilled_shufflenet.engine.finetune import with_checkpoint_defaults
from distilled_shufflenet.engine.lock import LOCK, RunFolderBusy, RunLock
from distilled_shufflenet.engine.optim import cosine_factor
from distilled_shufflenet.models import create_model

from test_train import TINY, RandomClips, read_log, tiny_config, tiny_student


def _write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    holder = {"pid": pid, "host": host or socket.gethostname(), "command": "dsn train", "started": "then"}
    (folder / LOCK).write_text(json.dumps(holder))


def test_a_second_run_into_a_busy_run_folder_is_refused(tmp_path: Path) -> None:
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _write_lock(tmp_path / "run", other.pid)
        with pytest.raises(RunFolderBusy, match=rf"in use by dsn train \(pid {other.pid} on {socket.gethostname()}"):
            fit(tiny_student(), RandomClips(8), None, tiny_config(tmp_path / "run", epochs=1), classes="abc")
        assert not (tmp_path / "run" / "last.pt").exists()
    finally:
        other.kill()
        other.wait()


def test_a_lock_left_by_a_dead_run_is_taken_over_and_released(tmp_path: Path, capsys) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_lock(tmp_path / "run", dead.pid)
    (tmp_path / "run" / f".last.pt.{dead.pid}.abc123.tmp").write_bytes(b"half a checkpoint")  # left by a kill mid-write
    result = fit(tiny_student(), RandomClips(8), None, tiny_config(tmp_path / "run", epochs=1), classes="abc")
    assert result.epochs == 1 and "no longer running" in capsys.readouterr().err
    assert not (tmp_path / "run" / LOCK).exists()  # released at the end
    assert not list((tmp_path / "run").glob(".*.tmp"))


def test_a_process_may_take_a_lock_it_holds_again_until_the_outer_holder_releases(tmp_path: Path, capsys) -> None:
    outer = RunLock(tmp_path / "run").acquire()  # e.g. distill, before building its teacher cache
    inner = RunLock(tmp_path / "run").acquire()  # the training loop it then runs
    inner.release()
    assert (tmp_path / "run" / LOCK).exists()  # still held by the outer holder
    outer.release()
    assert not (tmp_path / "run").exists()  # the lock made the folder and nothing was written: it goes too
    assert "taking it over" not in capsys.readouterr().err


def test_a_moved_run_folder_keeps_the_paths_that_point_inside_it(tmp_path: Path) -> None:
    from distilled_shufflenet.engine.checkpointing import read_run_config

    run = tmp_path / "run"
    inside = run / "lists" / "train.txt"
    inside.parent.mkdir(parents=True)
    inside.write_text("")
    outside = tmp_path / "val.txt"
    outside.write_text("")
    cfg = tiny_config(run, epochs=1, dataset="list", train_list=str(inside), val_list=str(outside))
    fit(tiny_student(), RandomClips(8), None, cfg, classes="abc")
    saved = read_run_config(run)
    assert (saved["train_list"], saved["output"], saved["paths_root"]) == ("lists/train.txt", ".", ".")
    assert saved["val_list"] == str(outside)  # outside the run folder: absolute, valid from any working folder
    assert "train_list: lists/train.txt" in (run / "config.yaml").read_text()
    moved = tmp_path / "moved"
    run.rename(moved)
    cfg = resolve_config(TrainConfig, overrides={"resume": str(moved), "epochs": 2})
    assert (cfg.train_list, cfg.val_list, cfg.output) == (str(moved / "lists" / "train.txt"), str(outside), str(moved))
    # the same file spelt another way is not a change
    again = resolve_config(TrainConfig, overrides={"resume": str(moved / "last.pt"),
                                                   "train_list": str(moved / "lists" / ".." / "lists" / "train.txt")})
    assert Path(again.train_list).resolve() == (moved / "lists" / "train.txt").resolve()
    # its config.yaml given to a new run reads the same paths
    reused = resolve_config(TrainConfig, yaml_path=moved / "config.yaml", overrides={"output": str(tmp_path / "new")})
    assert (reused.train_list, reused.val_list) == (str(moved / "lists" / "train.txt"), str(outside))


def test_a_lock_held_on_another_host_is_refused_with_how_to_clear_it(tmp_path: Path) -> None:
    _write_lock(tmp_path / "run", 1, host="elsewhere")
    with pytest.raises(RunFolderBusy, match=f"delete {tmp_path / 'run' / LOCK}"):
        RunLock(tmp_path / "run").acquire()


def _cosine_run(tmp_path: Path, **kwargs) -> Path:
    cfg = tiny_config(tmp_path / "run", epochs=3, scheduler="cosine", optimizer="adam", lr=0.01, **kwargs)
    cfg.save_yaml(tmp_path / "unused.yaml")
    fit(tiny_student(), RandomClips(8), None, cfg, classes="abc")
    return tmp_path / "run"


def test_resume_refuses_a_changed_model_and_records_a_changed_length(tmp_path: Path) -> None:
    run = _cosine_run(tmp_path)
    with pytest.raises(ValueError, match=r"model: cannot change when resuming .*'shufflenet2plus1d'.*'r3d_18'"):
        resolve_config(TrainConfig, overrides={"resume": str(run), "model": "r3d_18"})
    with pytest.raises(ValueError, match=r"batch_size: cannot change"):
        resolve_config(TrainConfig, overrides={"resume": str(run), "batch_size": 8})
    with pytest.raises(ValueError, match=r"model_kwargs: cannot change"):
        resolve_config(TrainConfig, overrides={"resume": str(run), "model_kwargs": {"clip_len": 16}})
    same = resolve_config(TrainConfig, overrides={"resume": str(run), "model": "shufflenet2plus1d", "epochs": 5,
                                                  "num_workers": 0})
    assert same.epochs == 5 and same.model == "shufflenet2plus1d"


def test_a_resumed_run_with_more_epochs_follows_the_cosine_schedule_of_the_new_length(tmp_path: Path) -> None:
    run = _cosine_run(tmp_path)
    cfg = resolve_config(TrainConfig, overrides={"resume": str(run), "epochs": 5})
    fit(tiny_student(), RandomClips(8), None, cfg, classes="abc")
    lrs = [float(r["lr"]) for r in read_log(run)]
    old, new = cosine_factor(3), cosine_factor(5)
    assert lrs[:3] == pytest.approx([0.01 * old(e) for e in range(3)], rel=1e-5)
    assert lrs[3:] == pytest.approx([0.01 * new(e) for e in (3, 4)], rel=1e-5)
    assert all(lr > 0 for lr in lrs)
    saved = resolve_config(TrainConfig, overrides={"resume": str(run)})
    assert saved.epochs == 5  # config.yaml and the checkpoint say what was run


def test_resuming_a_best_checkpoint_into_a_new_folder_keeps_the_earlier_log(tmp_path: Path) -> None:
    run = _cosine_run(tmp_path)
    cfg = resolve_config(TrainConfig, overrides={"resume": str(run / "last.pt"), "output": str(tmp_path / "more"),
                                                 "epochs": 4})
    fit(tiny_student(), RandomClips(8), None, cfg, classes="abc")
    rows = read_log(tmp_path / "more")
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4] and float(rows[-1]["lr"]) > 0
    with pytest.raises(ValueError, match="already holds another run"):
        resolve_config(TrainConfig, overrides={"resume": str(run), "output": str(tmp_path / "more"),
                                               "data_root": str(tmp_path)}).validate()


def test_finetune_records_the_checkpoints_model_and_preprocessing(tmp_path: Path) -> None:
    model = create_model("r3d_18", num_classes=4, widen_factor=0.25)
    path = tmp_path / "teacher.pt"
    torch.save({"model_name": "r3d_18", "model_kwargs": {"num_classes": 4, "widen_factor": 0.25},
                "state_dict": model.state_dict(),
                "preprocess": {"clip_len": 8, "crop_size": 64, "resize": 73, "mean": [0.4] * 3, "std": [0.2] * 3},
                "config": {"frame_stride": 4}}, path)
    cfg = with_checkpoint_defaults(FinetuneConfig(checkpoint=str(path), data_root=str(tmp_path)))
    assert (cfg.model, cfg.model_kwargs) == ("r3d_18", {"widen_factor": 0.25})
    assert (cfg.clip_len, cfg.crop_size, cfg.resize, cfg.frame_stride) == (8, 64, 73, 4)
    assert cfg.to_dict()["model"] == "r3d_18"
    flags = with_checkpoint_defaults(FinetuneConfig(checkpoint=str(path), crop_size=32, frame_stride=2))
    assert (flags.clip_len, flags.crop_size, flags.frame_stride) == (8, 32, 2)  # a flag wins


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_stops_a_run_with_a_checkpoint_and_no_traceback(tiny_synth: Path, tmp_path: Path, sig) -> None:
    args = ["--data-root", str(tiny_synth), "--epochs", "50", "--batch-size", "4", "--clip-len", "8",
            "--crop-size", "32", "--resize", "36", "--num-workers", "1", "--no-progress", "--device", "cpu",
            "--no-validation", "--no-plots", "--no-tensorboard", "--model", "shufflenet2plus1d",
            "--checkpoint-every", "1", "--output", str(tmp_path / "run")]
    args += [f"--model-arg={k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    proc = subprocess.Popen([sys.executable, "-m", "distilled_shufflenet", "train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (tmp_path / "run" / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1]
    os.kill(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err
    assert "Traceback" not in err and f"--resume {tmp_path / 'run'}" in err, err
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] >= 1 and math.isfinite(ckpt["metrics"].get("train_loss", 0.0))
    assert not (tmp_path / "run" / LOCK).exists()
