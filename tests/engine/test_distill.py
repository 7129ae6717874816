"""dsn distill on the training loop: no labels on the data path, held-out groups, the student checkpoint
dsn finetune reads, exact resume after SIGKILL, torchrun, and clear errors before the first step."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.cli import main
from distilled_shufflenet.data import LabelledVideoClips, VideoClips
from distilled_shufflenet.distill import TargetBuilder
from distilled_shufflenet.distill.cache import TeacherCache
from distilled_shufflenet.engine.distill import DistillConfig, distillation_datasets
from distilled_shufflenet.models import create_model

STUDENT = dict(widths=[8, 16, 32], units=[1, 1, 1], adapter_channels=[64, 128], clip_len=16)
CLIP = ["--clip-len", "16", "--crop-size", "32", "--resize", "36", "--frame-stride", "1"]
# a narrow 3D teacher whose channels match the student's adapters; the 2D teacher gets adapters of its own.
# Random weights, on purpose: the tests check the machinery, not what the student learns
TEACHERS = ["--teacher2d", "resnet18", "--teacher3d", "r3d_18", "--teacher3d-arg", "widen_factor=0.25",
            "--per-teacher-adapters", "--allow-random-teachers"]
QUIET = ["--num-workers", "0", "--no-progress", "--device", "cpu", "--no-tensorboard", "--batch-size", "4"]


def student_args() -> list[str]:
    return [f"--model-arg={k}={v}" for k, v in STUDENT.items()]


def test_the_distillation_data_path_has_no_labels(tiny_synth: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # reading a label anywhere on this path would fail
    monkeypatch.setattr(LabelledVideoClips, "_extra", lambda self, i: pytest.fail("a label was read"))
    cfg = DistillConfig(dataset="ucf101", data_root=str(tiny_synth), clip_len=8, crop_size=32, resize=36)
    from distilled_shufflenet.models import Preprocess

    pre = Preprocess(8, 32, 36, (0.45,) * 3, (0.225,) * 3)
    train, val = distillation_datasets(cfg, pre)
    assert type(train) is VideoClips and type(val) is VideoClips
    assert not hasattr(train, "labels") and not hasattr(train, "classes")
    sample = train[0]
    assert set(sample) == {"clip", "index"} and sample["clip"].shape == (3, 8, 32, 32)
    assert len(train) + len(val) == 24  # the training split only; the 8 test videos are not used
    with_test = DistillConfig(dataset="ucf101", data_root=str(tiny_synth), include_test=True, val_fraction=0.0)
    assert len(distillation_datasets(with_test, pre)[0]) == 32


@pytest.mark.slow
def test_distill_on_a_bare_folder_then_finetune_reads_the_student(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    # a folder of videos with no split files and no class names
    bare = tmp_path / "footage"
    bare.mkdir()
    for i, video in enumerate(sorted(tiny_synth.rglob("*.avi"))[:12]):
        shutil.copy(video, bare / f"clip{i:03d}.avi")
    extra = tmp_path / "more"
    extra.mkdir()
    for i, video in enumerate(sorted(tiny_synth.rglob("*.avi"))[12:16]):
        shutil.copy(video, extra / f"other{i}.avi")
    run = tmp_path / "distill"
    code = main(["distill", "--data-root", str(bare), "--extra-unlabelled", str(extra), *student_args(), *CLIP,
                 *TEACHERS, *QUIET, "--epochs", "1", "--val-fraction", "0.2", "--output", str(run)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "distilling on 12 unlabelled videos, 4 held out" in out
    for name in ("last.pt", "best.pt", "log.csv", "curves.png", "config.yaml"):
        assert (run / name).is_file(), name
    ckpt = read_checkpoint(run / "last.pt")
    assert ckpt["model_name"] == "shufflenet2plus1d" and not any(k.startswith("fc.") for k in ckpt["state_dict"])
    assert set(ckpt["objective"]["adapters"]) and ckpt["distillation"]["teachers"] == "both"
    header = (run / "log.csv").read_text().splitlines()[0].split(",")
    assert {"train_mid_2d", "train_final_3d", "val_loss", "val_final_2d"} <= set(header)

    tuned = tmp_path / "finetune"
    code = main(["finetune", "--checkpoint", str(run / "last.pt"), "--data-root", str(tiny_synth), *QUIET,
                 "--epochs", "1", "--output", str(tuned)])
    assert code == 0
    saved = (tuned / "config.yaml").read_text()
    assert "model: shufflenet2plus1d" in saved and "clip_len: 16" in saved and "crop_size: 32" in saved
    finetuned = read_checkpoint(tuned / "last.pt")
    assert finetuned["state_dict"]["fc.weight"].shape[0] == 4
    # the adapters distillation trained are where fine-tuning started (one epoch of SGD moves them a little)
    before, after = ckpt["state_dict"]["adapt_final.0.weight"], finetuned["state_dict"]["adapt_final.0.weight"]
    assert torch.allclose(before, after, atol=0.05) and not torch.allclose(before, create_model(
        "shufflenet2plus1d", **{**STUDENT, "adapter_channels": tuple(STUDENT["adapter_channels"])}
    ).state_dict()["adapt_final.0.weight"], atol=1e-3)


def test_teachers_that_cannot_fill_the_slots_fail_before_any_step(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    code = main(["distill", "--data-root", str(tiny_synth), *student_args()[:-1], "--model-arg=clip_len=8",
                 "--clip-len", "8", "--crop-size", "32", *TEACHERS, *QUIET, "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "tap final" in err and "Traceback" not in err
    assert "--teachers 2d" in err and "--clip-len" in err and "teachers='" not in err
    assert not (tmp_path / "r" / "last.pt").exists()
    code = main(["distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, "--teacher2d", "resnet18",
                 "--teacher3d", "r3d_18", "--allow-random-teachers", *QUIET, "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "adapter_channels" in err and "--per-teacher-adapters" in err
    assert "TargetBuilder(" not in err and "per_teacher_adapters=True" not in err  # flags, not library calls


def test_a_teacher_file_of_another_architecture_is_named(tmp_path: Path, tiny_synth: Path, capsys) -> None:
    wrong = tmp_path / "wrong.pt"
    torch.save(create_model("resnet34").state_dict(), wrong)
    code = main(["distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, *TEACHERS[2:],
                 "--teacher2d", f"resnet18:{wrong}", *QUIET, "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and str(wrong) in err and "does not fit resnet18" in err


@pytest.mark.slow
def test_a_distillation_killed_with_sigkill_resumes_to_the_same_weights(tiny_synth: Path, tmp_path: Path,
                                                                        kill_and_resume) -> None:
    args = ["--data-root", str(tiny_synth), *student_args(), *CLIP, *TEACHERS, *QUIET, "--epochs", "3",
            "--no-plots", "--deterministic", "--seed", "5", "--checkpoint-every", "2", "--val-fraction", "0"]
    a, stopped_at, b = kill_and_resume("distill", args, tmp_path)
    total = a["step"]
    assert 0 < stopped_at < total
    assert b["step"] == total
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    for key, value in a["objective"]["adapters"].items():
        assert torch.equal(value, b["objective"]["adapters"][key]), key


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_two_processes_under_torchrun_distil_the_same_weights(tiny_synth: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "distilled_shufflenet", "distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, *TEACHERS,
           *QUIET, "--epochs", "1", "--batch-size", "2", "--val-fraction", "0.2", "--output", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=380)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ckpt = read_checkpoint(out / "last.pt")
    # the 32 videos of the folder, one actor group of 8 held out: 24 / (2 ranks x batch 2) steps
    assert ckpt["step"] == 24 // 4 and ckpt["data"]["world_size"] == 2
    rows = (out / "log.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].split(",")[0] == "1"
    assert json.dumps(ckpt["metrics"], allow_nan=False)  # finite figures, written once by rank 0


@pytest.mark.slow
def test_distill_with_the_teacher_cache_reuses_it_and_refuses_a_stale_one(tiny_synth: Path, tmp_path: Path,
                                                                          capsys) -> None:
    cache = tmp_path / "cache"
    common = ["--dataset", "ucf101", "--data-root", str(tiny_synth), *student_args(), *CLIP, *QUIET, "--epochs", "1",
              "--cache-teachers", str(cache), "--cache-views", "2", "--allow-random-teachers", "--teacher2d", "resnet18",
              "--teacher2d-arg", "widen_factor=0.25", "--teacher3d", "r3d_18", "--teacher3d-arg", "widen_factor=0.25"]
    assert main(["distill", *common, "--output", str(tmp_path / "a")]) == 0
    first = capsys.readouterr().out
    assert "0 shards done" in first and (tmp_path / "a" / "maps.png").is_file()
    shards = sorted(cache.glob("shard-*.pt"))
    stamps = [p.stat().st_mtime_ns for p in shards]
    assert main(["distill", *common, "--output", str(tmp_path / "b")]) == 0
    assert [p.stat().st_mtime_ns for p in shards] == stamps  # read back, not recomputed
    ckpt = read_checkpoint(tmp_path / "b" / "last.pt")
    assert ckpt["distillation"]["cache"] == str(cache) and ckpt["step"] == 16 // 4

    stale = [a if a != "widen_factor=0.25" else "widen_factor=0.5" for a in common[:-1]] + [common[-1]]
    stale[stale.index("--teacher3d-arg") + 1] = "widen_factor=0.25"
    code = main(["distill", *stale, "--model-arg=adapter_channels=[128,256]", "--teachers", "2d",
                 "--output", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and "built for something else" in err and "Traceback" not in err


def test_teacher2d_frame_middle_shows_the_2d_teacher_the_clips_middle_frame(tiny_synth: Path, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # on the fly: every step's 2D frame is the middle one (the paper's draw would spread over the clip)
    seen: list[torch.Tensor] = []
    forward = TargetBuilder.forward
    monkeypatch.setattr(TargetBuilder, "forward", lambda self, clip, frame_index=None, **kw: (
        seen.append(torch.as_tensor(frame_index).clone()), forward(self, clip, frame_index, **kw))[1])
    common = ["--dataset", "ucf101", "--data-root", str(tiny_synth), *student_args(), *CLIP, *QUIET, *TEACHERS,
              "--epochs", "1", "--max-steps", "3", "--no-validation", "--teacher2d-frame", "middle"]
    assert main(["distill", *common, "--output", str(tmp_path / "fly")]) == 0
    assert len(seen) == 3 and all(s.tolist() == [8] * 4 for s in seen)
    # with the teacher cache: every stored view records the middle frame
    cache = tmp_path / "cache"
    assert main(["distill", *common, "--cache-teachers", str(cache), "--cache-views", "2",
                 "--output", str(tmp_path / "cached")]) == 0
    stored = TeacherCache.open(cache)
    assert {stored.view(i, k).frame2d for i in range(4) for k in range(2)} == {8}


def test_a_teacher_without_weights_is_refused_unless_random_teachers_are_allowed(tiny_synth: Path, tmp_path: Path,
                                                                                 capsys) -> None:
    run = tmp_path / "r"
    code = main(["distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, *TEACHERS[:-1], *QUIET,
                 "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "teacher2d: resnet18 is given without a weights file" in err
    assert "--teacher2d resnet18:FILE" in err and "--allow-random-teachers" in err and "Traceback" not in err
    assert not run.exists()  # refused before any work
    # the library names the config fields; a teacher given with its file needs no permission
    weights = tmp_path / "r3d.pt"
    torch.save(create_model("r3d_18", widen_factor=0.25).state_dict(), weights)
    with pytest.raises(ValueError, match=r"teacher3d: r3d_18 .*allow_random_teachers: true"):
        DistillConfig(data_root=str(tiny_synth), teachers="3d", teacher3d="r3d_18").validate()
    DistillConfig(data_root=str(tiny_synth), teachers="3d", teacher3d=f"r3d_18:{weights}").validate()
    DistillConfig(data_root=str(tiny_synth), allow_random_teachers=True).validate()


def test_distill_help_says_validation_holds_out_training_videos(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    validation = text.split("--validation, --no-validation")[1].split("--val-fraction")[0]
    assert "held-out videos" in validation and "official test split" not in validation


def test_a_busy_run_folder_is_refused_before_the_teacher_cache_is_built(tiny_synth: Path, tmp_path: Path,
                                                                          capsys) -> None:
    import socket

    run, cache = tmp_path / "run", tmp_path / "cache"
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        run.mkdir()
        holder = {"pid": other.pid, "host": socket.gethostname(), "command": "dsn distill", "started": "then"}
        (run / ".lock").write_text(json.dumps(holder))
        code = main(["distill", "--dataset", "ucf101", "--data-root", str(tiny_synth), *student_args(), *CLIP,
                     *TEACHERS, *QUIET, "--cache-teachers", str(cache), "--output", str(run)])
        err = capsys.readouterr().err
        assert code == 2 and f"in use by dsn distill (pid {other.pid}" in err
        assert not cache.exists()  # nothing was computed for a run that cannot go on
    finally:
        other.kill()
        other.wait()
    assert json.loads((run / ".lock").read_text())["pid"] == other.pid  # the holder's lock is left alone


def test_a_run_that_trains_no_step_is_an_error_naming_the_videos(tmp_path: Path, capsys) -> None:
    footage = tmp_path / "footage"
    footage.mkdir()
    for i in range(6):
        (footage / f"broken{i}.avi").write_bytes(b"not a video at all" * 40)
    run = tmp_path / "r"
    code = main(["distill", "--data-root", str(footage), *student_args(), *CLIP, *TEACHERS, *QUIET, "--epochs", "1",
                 "--val-fraction", "0", "--no-maps-png", "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and "epoch 1: no training step was made" in err and "Traceback" not in err
    assert "broken0.avi" in err and "broken5.avi" in err
    assert not (run / "last.pt").exists()


@pytest.mark.slow
def test_tap_and_teacher_weights_reach_the_logged_loss(tiny_synth: Path, tmp_path: Path) -> None:
    import csv

    run = tmp_path / "r"
    code = main(["distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, *TEACHERS, *QUIET, "--epochs", "1",
                 "--val-fraction", "0.25", "--no-maps-png", "--tap-weights", "0.2", "0.8", "--teacher-weights", "0",
                 "1", "--output", str(run)])
    assert code == 0
    (row,) = list(csv.DictReader((run / "log.csv").open()))
    value = {k: float(v) for k, v in row.items() if v}
    for prefix in ("train_", "val_"):
        total = value[f"{prefix}loss"]
        mid, final = value[f"{prefix}mid"], value[f"{prefix}final"]
        # each tap's loss is its 3D part alone (the 2D teacher weighs 0), the total 0.2 x mid + 0.8 x final
        assert mid == pytest.approx(value[f"{prefix}mid_3d"], rel=1e-4)
        assert final == pytest.approx(value[f"{prefix}final_3d"], rel=1e-4)
        assert total == pytest.approx(0.2 * mid + 0.8 * final, rel=1e-4)
        # the 2D parts are logged, and far enough from the 3D ones that a swap would show
        assert abs(value[f"{prefix}mid_2d"] - mid) > 1e-2 * mid
        assert abs(value[f"{prefix}final_2d"] - final) > 1e-2 * final
        assert abs(total - (0.8 * mid + 0.2 * final)) > 1e-3 * total
