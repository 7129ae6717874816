"""The training loop: learning, exact resumption, NaN handling, the linear probe, the CLI end to end."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from torch.utils.data import Dataset

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.engine import FinetuneConfig, NonFiniteLossError, TrainConfig, fit, load_checkpoint
from distilled_shufflenet.engine.checkpointing import save_checkpoint
from distilled_shufflenet.engine.finetune import student_spec, with_checkpoint_defaults
from distilled_shufflenet.engine.runtime import EpochSampler
from distilled_shufflenet.models import create_model

TINY = dict(widths=(8, 16, 32), units=(1, 1, 1), adapter_channels=(16, 32), clip_len=8)


def tiny_student(num_classes: int = 3, seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("shufflenet2plus1d", num_classes=num_classes, **{**TINY, **kwargs})


class RandomClips(Dataset):
    """``n`` noise clips (3, 8, 32, 32) whose class shifts the mean of one channel; each read adds fresh noise
    and a random flip drawn from the global torch generator (so augmentation randomness is exercised)."""

    classes = ("a", "b", "c")

    def __init__(self, n: int = 12, seed: int = 0, augment: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.labels = torch.arange(n) % 3
        self.clips = torch.randn(n, 3, 8, 32, 32, generator=g)
        self.clips[torch.arange(n), self.labels] += 1.5
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        clip = self.clips[i]
        if self.augment:
            clip = clip + 0.1 * torch.randn_like(clip)
            if torch.rand(()) < 0.5:
                clip = clip.flip(-1)
        return {"clip": clip, "index": i, "label": int(self.labels[i])}


def tiny_config(out: Path, cls: type = TrainConfig, **kwargs) -> TrainConfig:
    base = dict(output=str(out), batch_size=4, epochs=2, num_workers=0, device="cpu", progress=False,
                tensorboard=False, plots=False, scheduler="none", early_stop_patience=0)
    return cls(**{**base, **kwargs})


def read_log(run_dir: Path) -> list[dict[str, str]]:
    with (Path(run_dir) / "log.csv").open() as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_training_reduces_the_loss_on_a_fixed_batch(tmp_path: Path) -> None:
    data = RandomClips(n=4, augment=False)  # batch 4: every epoch is the same single batch
    # 10 steps: after 6 the loss sat near 0.8 of its start, on either side depending on the thread count
    cfg = tiny_config(tmp_path / "run", epochs=10, optimizer="adam", lr=0.01, weight_decay=0.0)
    result = fit(tiny_student(), data, None, cfg, classes=data.classes)
    losses = [float(r["train_loss"]) for r in read_log(result.run_dir)]
    assert len(losses) == 10 and result.steps == 10 and result.stopped == "completed"
    assert losses[-1] < 0.8 * losses[0], losses
    assert result.best_checkpoint is None  # no validation set, so no best.pt


def test_epoch_sampler_resumes_within_an_epoch_and_reshuffles_per_epoch() -> None:
    full = EpochSampler(range(10), num_replicas=2, rank=1, seed=3)
    full.set_epoch(4)
    order = list(full)
    later = EpochSampler(range(10), num_replicas=2, rank=1, seed=3)
    later.set_epoch(4, start=2)
    assert list(later) == order[2:] and len(later) == len(order) - 2
    other = EpochSampler(range(10), num_replicas=2, rank=0, seed=3)
    other.set_epoch(4)
    assert sorted(order + list(other)) == list(range(10))  # the two ranks share the epoch out
    full.set_epoch(5)
    assert list(full) != order


def _run(out: Path, *, model_seed: int = 0, **kwargs):
    cfg = tiny_config(out, **{**dict(epochs=2, checkpoint_every=2, deterministic=True, optimizer="sgd", lr=0.05,
                                     scheduler="step", step_size=1, gamma=0.5), **kwargs})
    val = RandomClips(n=5, seed=1, augment=False)
    return fit(tiny_student(seed=model_seed, dropout=0.3), RandomClips(12), val, cfg, classes=RandomClips.classes)


def test_a_resumed_run_that_had_stopped_early_trains_no_further(tmp_path: Path) -> None:
    # a run its validation stopped (patience spent) and later resumed with room for more epochs, as the
    # demo does when it is rerun: it must stay stopped, not train one more epoch and go on if that improves
    run = tmp_path / "run"
    first = _run(run, early_stop_patience=2)
    assert first.stopped == "completed" and first.steps == 6
    ckpt = read_checkpoint(run / "last.pt")
    ckpt["progress"]["bad_epochs"] = 2  # what end_epoch leaves after two epochs without a lower loss
    save_checkpoint(run / "last.pt", ckpt)
    rows = read_log(run)
    resumed = _run(run, early_stop_patience=2, epochs=5, resume=str(run))
    assert resumed.stopped == "early_stop" and resumed.steps == 6 and resumed.epochs == 2
    assert read_log(run) == rows


@pytest.mark.slow
def test_a_run_stopped_mid_epoch_and_resumed_ends_with_exactly_the_same_weights(tmp_path: Path) -> None:
    # 12 clips, batch 4: 3 steps per epoch; 2 epochs = 6 steps.  The interrupted run stops at step 4
    # (epoch 2, batch 1), as a run killed then would have left it (checkpoint every 2 steps).
    whole = _run(tmp_path / "whole")
    part = _run(tmp_path / "part", max_steps=4)
    assert part.stopped == "max_steps" and part.steps == 4
    ckpt = read_checkpoint(tmp_path / "part" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (1, 1, 4)
    # the partial epoch is logged (training figures, no validation); the resumed run replaces that row
    partial = read_log(tmp_path / "part")
    assert [(int(r["epoch"]), int(r["step"])) for r in partial] == [(1, 3), (2, 4)]
    assert partial[-1]["train_loss"] != "" and partial[-1]["val_loss"] == ""
    # a model with other initial weights: everything must come from the checkpoint; the clips now come
    # from a worker process, and must not change for it
    resumed = _run(tmp_path / "part", model_seed=1, resume=str(tmp_path / "part"), num_workers=1)
    assert resumed.stopped == "completed" and resumed.steps == 6
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    timing = ("clips_per_s", "data_wait_share")
    rows_a = [{k: v for k, v in r.items() if k not in timing} for r in read_log(tmp_path / "whole")]
    rows_b = [{k: v for k, v in r.items() if k not in timing} for r in read_log(tmp_path / "part")]
    assert rows_a == rows_b and len(rows_a) == 2
    last_a, last_b = read_checkpoint(tmp_path / "whole" / "last.pt"), read_checkpoint(tmp_path / "part" / "last.pt")
    for key, value in last_a["optimizer"]["state"].items():
        assert torch.equal(value["momentum_buffer"], last_b["optimizer"]["state"][key]["momentum_buffer"])
    assert last_a["scheduler"] == last_b["scheduler"]


class PoisonedClips(RandomClips):
    """Clips turn to NaN after ``healthy`` reads."""

    def __init__(self, healthy: int) -> None:
        super().__init__(12)
        self.healthy = healthy
        self.reads = 0

    def __getitem__(self, i: int) -> dict:
        sample = super().__getitem__(i)
        self.reads += 1
        if self.reads > self.healthy:
            sample["clip"] = torch.full_like(sample["clip"], float("nan"))
        return sample


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path / "run", checkpoint_every=1)
    with pytest.raises(NonFiniteLossError, match=r"step 3 \(epoch 1, batch 3\).*last good checkpoint"):
        fit(tiny_student(), PoisonedClips(healthy=8), None, cfg, classes=RandomClips.classes)
    ckpt = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())


def test_the_cli_exits_non_zero_on_a_nan_loss(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    import distilled_shufflenet.engine as engine
    from distilled_shufflenet.cli import main

    def diverge(config):
        raise NonFiniteLossError("the training loss became nan at step 7 (epoch 2, batch 1)")

    monkeypatch.setattr(engine, "train", diverge)
    assert main(["train", "--data-root", str(tmp_path), "--output", str(tmp_path / "run")]) == 3
    assert "step 7 (epoch 2, batch 1)" in capsys.readouterr().err


def test_a_linear_probe_trains_only_the_classifier(tmp_path: Path) -> None:
    model = tiny_student()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = tiny_config(tmp_path / "probe", cls=FinetuneConfig, epochs=1, freeze_backbone=True, lr=0.1)
    result = fit(model, RandomClips(8), None, cfg, classes=RandomClips.classes)
    after = result.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == {"fc.weight", "fc.bias"}  # BatchNorm statistics of the backbone included


def test_finetune_takes_the_model_from_a_distilled_checkpoint(tmp_path: Path) -> None:
    student = tiny_student(num_classes=7)
    state = {k: v for k, v in student.state_dict().items() if not k.startswith("fc.")}
    path = tmp_path / "distilled.pt"
    torch.save({"model_name": "shufflenet2plus1d", "model_kwargs": dict(student.model_kwargs), "state_dict": state}, path)
    spec = student_spec(with_checkpoint_defaults(FinetuneConfig(checkpoint=str(path), model_kwargs={"head_pool": "mean"})))
    assert spec.name == "shufflenet2plus1d" and spec.weights == str(path) and spec.drop_classifier
    assert spec.kwargs == {**TINY, "head_pool": "mean"}  # num_classes comes from the dataset


@pytest.mark.slow
def test_dsn_train_and_finetune_on_tiny_synth(tiny_synth: Path, tmp_path: Path) -> None:
    from distilled_shufflenet.cli import main

    common = ["--data-root", str(tiny_synth), "--epochs", "1", "--batch-size", "4", "--clip-len", "8",
              "--crop-size", "32", "--resize", "36", "--num-workers", "0", "--no-progress", "--device", "cpu"]
    model = ["--model", "shufflenet2plus1d"] + [f"--model-arg={k}={list(v) if isinstance(v, tuple) else v}"
                                                 for k, v in TINY.items()]
    run = tmp_path / "baseline"
    assert main(["train", *model, *common, "--output", str(run)]) == 0
    for name in ("last.pt", "best.pt", "log.csv", "config.yaml", "curves.png"):
        assert (run / name).is_file(), name
    rows = read_log(run)
    assert len(rows) == 1 and rows[0]["val_top1"] != "" and float(rows[0]["clips_per_s"]) > 0
    model_, ckpt = load_checkpoint(run / "best.pt")
    assert ckpt["classes"] == ["JumpingJacks", "SquatDown", "StandUp", "WaveFast"]
    assert model_.fc.out_features == 4 and model_.preprocess.crop_size == 32

    # a distilled student: backbone + adapters, no classifier
    distilled = tmp_path / "distilled.pt"
    state = {k: v for k, v in ckpt["state_dict"].items() if not k.startswith("fc.")}
    torch.save({"model_name": ckpt["model_name"], "model_kwargs": ckpt["model_kwargs"], "state_dict": state}, distilled)
    probe = tmp_path / "probe"
    assert main(["finetune", "--checkpoint", str(distilled), "--linear-probe", *common, "--output", str(probe)]) == 0
    tuned, tuned_ckpt = load_checkpoint(probe / "last.pt")
    assert tuned_ckpt["config"]["freeze_backbone"] is True  # the run says it was a linear probe
    after = tuned.state_dict()
    assert all(torch.equal(after[k], v) for k, v in state.items())  # the frozen backbone and adapters
    assert not torch.equal(after["fc.weight"], ckpt["state_dict"]["fc.weight"])  # a new head


@pytest.mark.slow
def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tiny_synth: Path, tmp_path: Path,
                                                                kill_and_resume) -> None:
    """A real ``kill -9`` after a checkpoint: the resumed run ends exactly where an uninterrupted one does."""
    args = ["--data-root", str(tiny_synth), "--epochs", "6", "--batch-size", "4", "--clip-len", "8",
            "--crop-size", "32", "--resize", "36", "--num-workers", "0", "--no-progress", "--device", "cpu",
            "--no-validation", "--no-plots", "--no-tensorboard", "--deterministic", "--seed", "3",
            "--checkpoint-every", "2", "--model", "shufflenet2plus1d"]
    args += [f"--model-arg={k}={list(v) if isinstance(v, tuple) else v}" for k, v in TINY.items()]
    # dropout draws from the global generator: a random state not restored on resume changes the weights
    args += ["--model-arg=dropout=0.5"]
    a, stopped_at, b = kill_and_resume("train", args, tmp_path, resume_args=("--no-progress",), timeout=300)
    total = a["step"]
    assert 0 < stopped_at < total
    assert b["step"] == total
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key


def test_val_fraction_validates_on_held_out_training_groups_not_the_test_split(tiny_synth: Path) -> None:
    from distilled_shufflenet.data.groups import group_of
    from distilled_shufflenet.engine.train import build_datasets
    from distilled_shufflenet.models import Preprocess

    cfg = TrainConfig(data_root=str(tiny_synth), val_fraction=0.2)
    train, val = build_datasets(cfg, Preprocess(8, 32, 36, (0.45,) * 3, (0.225,) * 3))
    assert len(train) == 16 and len(val) == 8  # the 24 training videos; the 8 test videos (g01) unused
    assert {group_of(p) for p in val.paths}.isdisjoint(group_of(p) for p in train.paths)
    assert "g01" not in {group_of(p) for p in val.paths}
    assert val.options.sampling == "center" and train.options.sampling == "random"
    assert val[0]["label"] in range(4) and val.classes == train.classes
    with pytest.raises(ValueError, match="val_fraction"):
        TrainConfig(data_root=str(tiny_synth), val_fraction=0.6).validate()


@pytest.mark.slow
def test_validation_names_an_unreadable_test_video_and_counts_it_as_wrong(tiny_synth: Path, tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    from distilled_shufflenet.engine import train

    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    broken = root / (root / "testlist01.txt").read_text().split()[2]
    broken.write_text("this is not a video\n" * 20)
    cfg = tiny_config(tmp_path / "run", cls=TrainConfig, epochs=1, data_root=str(root), clip_len=8, crop_size=32,
                      resize=36, model="shufflenet2plus1d", model_kwargs=dict(TINY))
    result = train(cfg)
    printed = capsys.readouterr().out
    assert f"validation: 1 of 8 videos could not be read and count as wrong:\n  {broken}: " in printed
    metrics = read_checkpoint(result.last_checkpoint)["metrics"]
    assert metrics["val_unscored"] == 1
    # top-1 over all 8 test videos, as dsn evaluate counts it: a multiple of 12.5 %, at most 7 of 8
    assert (metrics["val_top1"] / 12.5).is_integer() and metrics["val_top1"] <= 87.5
    from distilled_shufflenet.engine.evaluate import evaluate_checkpoint

    report = evaluate_checkpoint(result.last_checkpoint, dataset="ucf101", data_root=str(root), clips=1, crops=1,
                                 workers=0, device="cpu", progress=False)
    assert report.video.unscored == 1 and 100 * report.video.accuracy(1) == pytest.approx(metrics["val_top1"])


# --------------------------------------------------------------------------- labelled share, linear probe flags
PRE = dict(clip_len=8, crop_size=32, resize=36, mean=(0.45,) * 3, std=(0.225,) * 3)


def test_label_fraction_takes_whole_groups_of_what_validation_left_never_a_validation_video(tiny_synth: Path) -> None:
    from distilled_shufflenet.data.groups import group_of
    from distilled_shufflenet.engine.train import build_datasets
    from distilled_shufflenet.models import Preprocess

    # 24 training videos (g02-g04, 2 clips x 4 classes each); validation holds one group out, 2 are left
    def datasets(**kwargs):
        cfg = TrainConfig(data_root=str(tiny_synth), val_fraction=0.2, **kwargs)
        return build_datasets(cfg, Preprocess(**PRE))

    full, val = datasets()
    drawn = {}
    for seed in range(6):
        train, val_again = datasets(label_fraction=0.5, label_seed=seed)
        assert val_again.paths == val.paths  # the validation split does not depend on the labelled share
        assert len(train) == 8 and sorted(train.labels) == [0, 0, 1, 1, 2, 2, 3, 3]  # half of each class
        groups = {group_of(p) for p in train.paths}
        assert len(groups) == 1 and groups <= {group_of(p) for p in full.paths}  # one whole group, never g01
        assert set(train.paths).isdisjoint(val.paths) and groups.isdisjoint(group_of(p) for p in val.paths)
        assert datasets(label_fraction=0.5, label_seed=seed)[0].paths == train.paths  # seeded
        drawn[seed] = groups
    assert len({frozenset(g) for g in drawn.values()}) == 2  # other seeds draw the other group
    assert datasets(label_fraction=1.0)[0].paths == full.paths


def test_a_label_fraction_that_leaves_a_class_without_a_video_names_the_flag(tiny_synth: Path) -> None:
    from distilled_shufflenet.engine.train import build_datasets
    from distilled_shufflenet.models import Preprocess

    cfg = TrainConfig(data_root=str(tiny_synth), label_fraction=0.1)  # 6 videos of each class, 2 per group
    with pytest.raises(ValueError, match=r"label_fraction: 0.1 leaves class 'JumpingJacks' without a labelled "
                                         r"video .*at least 0.167 labels it \(--label-fraction 0.1, --label-seed 0"):
        build_datasets(cfg, Preprocess(**PRE))


@pytest.mark.parametrize("flags, message", [
    (["--label-fraction", "0"], r"label_fraction: expected a share of the training videos in \(0, 1\] "
                                r"\(--label-fraction\), got 0.0"),
    (["--label-fraction", "1.5"], r"label_fraction: .* got 1.5"),
    (["--label-seed", "-1"], r"label_seed: expected a seed >= 0 \(--label-seed\), got -1"),
])
@pytest.mark.parametrize("command", ["train", "finetune"])
def test_bad_label_fraction_flags_are_refused_by_name(command: str, flags: list[str], message: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import re

    from distilled_shufflenet.cli import main

    checkpoint = tmp_path / "distilled.pt"
    student = tiny_student()
    torch.save({"model_name": "shufflenet2plus1d", "model_kwargs": dict(student.model_kwargs),
                "state_dict": student.state_dict()}, checkpoint)
    extra = ["--checkpoint", str(checkpoint)] if command == "finetune" else []
    assert main([command, *extra, "--data-root", str(tmp_path), *flags, "--output", str(tmp_path / "run")]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_distill_takes_no_label_fraction() -> None:
    from distilled_shufflenet.engine.distill import DistillConfig

    with pytest.raises(ValueError, match="label_fraction: distillation reads no labels"):
        DistillConfig(data_root=".", label_fraction=0.5).validate()


def test_linear_probe_flag_and_its_earlier_name_set_the_frozen_backbone() -> None:
    from distilled_shufflenet.cli import build_parser
    from distilled_shufflenet.engine.config import run_config_from_args

    for flag, frozen in (("--linear-probe", True), ("--freeze-backbone", True), ("--no-linear-probe", False)):
        args = build_parser().parse_args(["finetune", "--checkpoint", "x.pt", flag])
        assert run_config_from_args(FinetuneConfig, args).freeze_backbone is frozen, flag
    with pytest.raises(SystemExit):  # dsn train has no backbone to freeze
        build_parser().parse_args(["train", "--linear-probe"])


def test_a_run_on_a_labelled_share_records_it_in_its_config_and_checkpoints(tiny_synth: Path, tmp_path: Path,
                                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from distilled_shufflenet.cli import main

    run = tmp_path / "run"
    model = ["--model", "shufflenet2plus1d"] + [f"--model-arg={k}={list(v) if isinstance(v, tuple) else v}"
                                                 for k, v in TINY.items()]
    assert main(["train", *model, "--data-root", str(tiny_synth), "--label-fraction", "0.4", "--label-seed", "3",
                 "--no-validation", "--epochs", "1", "--max-steps", "1", "--batch-size", "4", "--clip-len", "8",
                 "--crop-size", "32", "--resize", "36", "--num-workers", "0", "--no-progress", "--no-plots",
                 "--no-tensorboard", "--device", "cpu", "--output", str(run)]) == 0
    assert "labelled share: 8 of 24 training videos, from 1 actor group (--label-fraction 0.4, --label-seed 3)" \
        in capsys.readouterr().out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert (saved["label_fraction"], saved["label_seed"]) == (0.4, 3)
    ckpt = read_checkpoint(run / "last.pt")
    assert (ckpt["config"]["label_fraction"], ckpt["config"]["label_seed"]) == (0.4, 3)
    taken = ckpt["labelled_subset"]
    assert taken["videos"] == 8 and taken["of_videos"] == 24 and len(taken["groups"]) == 1
    assert taken["per_class"] == {"JumpingJacks": 2, "SquatDown": 2, "StandUp": 2, "WaveFast": 2}
