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
from distilled_shufflenet.engine.distill import DistillConfig, distillation_datasets
from distilled_shufflenet.models import create_model

STUDENT = dict(widths=[8, 16, 32], units=[1, 1, 1], adapter_channels=[64, 128], clip_len=16)
CLIP = ["--clip-len", "16", "--crop-size", "32", "--resize", "36", "--frame-stride", "1"]
# a narrow 3D teacher whose channels match the student's adapters; the 2D teacher gets adapters of its own
TEACHERS = ["--teacher2d", "resnet18", "--teacher3d", "r3d_18", "--teacher3d-arg", "widen_factor=0.25",
            "--per-teacher-adapters"]
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
    assert not (tmp_path / "r" / "last.pt").exists()
    code = main(["distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, "--teacher2d", "resnet18",
                 "--teacher3d", "r3d_18", *QUIET, "--output", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and "adapter_channels" in err and "per" in err


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
    assert json.dumps(ckpt["metrics"])  # finite figures, written once by rank 0


@pytest.mark.slow
def test_distill_with_the_teacher_cache_reuses_it_and_refuses_a_stale_one(tiny_synth: Path, tmp_path: Path,
                                                                          capsys) -> None:
    cache = tmp_path / "cache"
    common = ["--dataset", "ucf101", "--data-root", str(tiny_synth), *student_args(), *CLIP, *QUIET, "--epochs", "1",
              "--cache-teachers", str(cache), "--cache-views", "2", "--teacher2d", "resnet18",
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


def test_cached_views_keep_targets_beyond_the_float16_range() -> None:
    """Untrained deep teachers give maps of 1e5: the cache stores them scaled, and the training samples
    must carry them as they are (a float16 copy would be inf, and the loss with it)."""
    from types import SimpleNamespace

    from distilled_shufflenet.engine.distill import CachedViews

    big = torch.full((4, 2, 3, 3), 1.5e5)

    class Cache:
        root, failed, spec = "cache", {}, SimpleNamespace(views=2)

        def __len__(self) -> int:
            return 3

        def draw(self, index: int, epoch: int) -> int:
            return (index + epoch) % 2

        def clip(self, index: int, k: int) -> torch.Tensor:
            return torch.zeros(3, 4, 8, 8)

        def stored(self, index: int, k: int) -> dict[str, torch.Tensor]:
            return {"final/3d": big.clone()}

    views = CachedViews(Cache(), seed=0)
    views.set_epoch(1)
    sample = views[0]
    assert "label" not in sample
    assert torch.isfinite(sample["targets"]["final/3d"]).all()
    assert torch.equal(sample["targets"]["final/3d"].float(), big)
