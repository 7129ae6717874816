"""`dsn demo --quick` end to end: every artefact, finite figures, and a rerun that reuses every stage."""

from __future__ import annotations

import json
import math
import os

from pathlib import Path

import pytest
from torch import save as torch_save
import yaml

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.cli import main
from distilled_shufflenet.demo import DemoConfig, ROWS, stage_state

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _finite_share(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and 0.0 <= x <= 100.0


@pytest.mark.slow
def test_demo_quick_end_to_end(tmp_path, capsys):
    run = tmp_path / "demo"
    teachers = tmp_path / "teachers"
    assert main(["demo", "--quick", "--no-progress", "--output", str(run), "--train-teachers", str(teachers)]) == 0
    first = capsys.readouterr().out
    assert "stages run: 0" not in first

    for name in ("results.md", "results.json", "accuracy_fps.png", "demo_config.json"):
        assert (run / name).is_file(), name
    assert (run / "accuracy_fps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    stages = ["teacher3d", "teacher2d", "distill_both", "finetune_both", "probe_both", "scratch_equal"]
    for stage in stages:
        assert (run / "stages" / stage / "last.pt").is_file(), stage
        assert (run / "stages" / stage / "log.csv").is_file(), stage
    assert [p.name for p in (run / "cache").iterdir()] == ["teachers"]
    meta = json.loads((run / "cache" / "teachers" / "cache.json").read_text())
    assert sorted(meta["fingerprint"]["teachers"]) == ["2d", "3d"]

    results = json.loads((run / "results.json").read_text())
    names = [r["name"] for r in results["rows"]]
    trained = ["teacher3d", "teacher2d", "distilled_both", "probe_both", "scratch_equal"]
    assert names == trained + ["x3d_s"]  # in the order of ROWS; the X3D peer: speed only
    assert [key for key, _, _ in ROWS if key in trained] == trained
    # every accuracy carries its bootstrap interval, every student its margin over equal-compute scratch
    for row in results["rows"][:-1]:
        low, high = row["video_top1_ci95"]
        assert 0.0 <= low <= row["video_top1"] <= high <= 100.0, row
    margins = {m["name"]: m for m in results["margins"]}
    assert set(margins) == {"distilled_both", "probe_both"}
    for m in margins.values():
        assert m["ci95"][0] <= m["points"] <= m["ci95"][1] and m["over"] == "scratch_equal"
    # the test split is the test actors (g01 on), and no stage trains on them
    test_list = (run / "data" / "target_splits" / "testlist01.txt").read_text().split()
    train_list = (run / "data" / "target_splits" / "trainlist01.txt").read_text()
    assert len(test_list) == results["test_videos"] == DemoConfig.quick().target_test_groups * 4
    assert all("_g01_" in v for v in test_list) and "_g01_" not in train_list
    for row in results["rows"]:
        assert isinstance(row["params"], int) and row["params"] > 0
        assert math.isfinite(row["gmacs_demo"]) and row["gmacs_demo"] > 0
        assert math.isfinite(row["fps_demo"]) and row["fps_demo"] > 0
        if row["name"] == "x3d_s":
            assert row["video_top1"] is None
            continue
        assert _finite_share(row["clip_top1"]) and _finite_share(row["video_top1"]), row
        report = json.loads((run / "evaluate" / row["name"] / "report.json").read_text())
        assert report["video_level"]["videos"] == results["test_videos"] > 0
    # the students share one architecture; the teachers differ from it
    student = {r["params"] for r in results["rows"] if r["name"] not in ("teacher3d", "teacher2d", "x3d_s")}
    assert len(student) == 1
    table = (run / "results.md").read_text()
    assert table.count("\n| ") == len(trained) + 2  # header + one line per model + X3D-S
    assert "nan" not in table.lower()
    # the distilled student streamed over a test video, labels drawn in
    video = run / "annotated_test_video.mp4"
    assert video.is_file() and video.stat().st_size > 0
    labels = json.loads(video.with_suffix(".json").read_text())["window_labels"]
    assert labels and set(labels) <= set(DemoConfig.quick().classes)
    assert "annotated_test_video.mp4" in table

    # a rerun reuses every finished stage and evaluation
    assert main(["demo", "--quick", "--no-progress", "--output", str(run)]) == 0
    second = capsys.readouterr().out
    assert "stages run: 0," in second
    assert second.count(": reused") == len(stages)

    # a stage folder is reused only for its own settings: other ones are refused, not overwritten
    from distilled_shufflenet.engine import TrainConfig
    from distilled_shufflenet.engine.checkpointing import read_run_config
    from distilled_shufflenet.options import build_config

    # distillation runs at its own learning rate, every supervised run at the other
    quick = DemoConfig.quick()
    assert read_run_config(run / "stages" / "distill_both")["lr"] == quick.distill_lr != quick.lr
    assert read_run_config(run / "stages" / "finetune_both")["lr"] == quick.lr
    # the teachers' weights apply to the two-teacher run; one teacher alone has nothing to weigh
    assert read_run_config(run / "stages" / "distill_both")["teacher_weights"] == list(quick.distill_teacher_weights)
    # the fine-tuned and probed students get exactly the step budget, however many full batches their videos
    # make; scratch gets as many steps as distillation and fine-tuning together (equal compute)
    for stage in ("finetune_both", "probe_both"):
        assert read_checkpoint(run / "stages" / stage / "last.pt")["step"] == quick.finetune_steps, stage
    distill_steps = read_checkpoint(run / "stages" / "distill_both" / "last.pt")["step"]
    assert read_checkpoint(run / "stages" / "scratch_equal" / "last.pt")["step"] == distill_steps + quick.finetune_steps
    # the baseline starts from scratch, not from a distilled (or any) checkpoint, and sees the same labels
    assert read_run_config(run / "stages" / "scratch_equal")["init"] is None
    subsets = [read_checkpoint(run / "stages" / s / "last.pt")["labelled_subset"]
               for s in ("finetune_both", "probe_both", "scratch_equal")]
    assert subsets[0] == subsets[1] == subsets[2] and subsets[0]["label_fraction"] == quick.label_fraction
    assert read_run_config(run / "stages" / "probe_both")["freeze_backbone"] is True
    # the stages' paths into the demo folder are saved relative to their own run folders
    saved_distill = read_run_config(run / "stages" / "distill_both")
    assert saved_distill["cache_teachers"] == "../../cache/teachers" and saved_distill["data_root"] == "../../data/target"
    assert saved_distill["teacher3d"] == "r3d_18:../teacher3d/last.pt" and saved_distill["paths_root"] == "../.."
    assert read_run_config(run / "stages" / "finetune_both")["checkpoint"] == "../distill_both/last.pt"

    from distilled_shufflenet.engine.config import paths_in_place

    folder = run / "stages" / "scratch_equal"
    saved = build_config(TrainConfig, paths_in_place(TrainConfig, read_run_config(folder), folder))
    assert stage_state(folder, saved) == "done"
    assert stage_state(folder, build_config(TrainConfig, {"max_steps": saved.max_steps + 5, "epochs": saved.epochs + 1}, base=saved)) == "partial"
    with pytest.raises(ValueError, match="lr"):
        stage_state(folder, build_config(TrainConfig, {"lr": 0.5}, base=saved))
    assert stage_state(tmp_path / "empty", saved) == "new"
    # a run saved before a setting existed did what its default does: reused at the default, not at another value
    original, stat = (folder / "last.pt").read_bytes(), (folder / "last.pt").stat()
    ckpt = read_checkpoint(folder / "last.pt")
    assert saved.label_smoothing == 0.0 and ckpt["config"].pop("label_smoothing") == 0.0
    torch_save(ckpt, folder / "last.pt")
    assert stage_state(folder, saved) == "done"
    with pytest.raises(ValueError, match="label_smoothing"):
        stage_state(folder, build_config(TrainConfig, {"label_smoothing": 0.1}, base=saved))
    (folder / "last.pt").write_bytes(original)
    os.utime(folder / "last.pt", ns=(stat.st_atime_ns, stat.st_mtime_ns))
    # a run its validation stopped early is done: resuming it would train on past its stop
    longer = build_config(TrainConfig, {"max_steps": 0, "epochs": saved.epochs + 5, "early_stop_patience": 2}, base=saved)
    assert stage_state(folder, longer) == "partial"
    original, stat = (folder / "last.pt").read_bytes(), (folder / "last.pt").stat()
    ckpt = read_checkpoint(folder / "last.pt")
    ckpt.setdefault("progress", {})["bad_epochs"] = 2
    torch_save(ckpt, folder / "last.pt")
    assert stage_state(folder, longer) == "done"
    (folder / "last.pt").write_bytes(original)
    os.utime(folder / "last.pt", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # as it was: its report stays current

    # the demo folder copied elsewhere (the original out of the way) is the same run: every stage is reused
    import shutil

    copy = tmp_path / "copied demo"
    shutil.copytree(run, copy)
    run.rename(tmp_path / "away")
    try:
        assert main(["demo", "--quick", "--no-progress", "--output", str(copy)]) == 0
        out = capsys.readouterr().out
        assert "stages run: 0," in out and out.count(": reused") == len(stages)

        # a larger step budget resumes the supervised runs where they stopped (in the moved folder); the rest
        # is reused
        from distilled_shufflenet.demo import run_demo

        longer = run_demo(DemoConfig.quick(output=str(copy), finetune_steps=4, progress=False))
        assert set(longer.ran) >= {"finetune_both", "scratch_equal"}
        assert not {"teacher3d", "distill_both"} & set(longer.ran)
        assert torch_step(copy / "stages" / "scratch_equal" / "last.pt") == distill_steps + 4
        assert read_run_config(copy / "stages" / "finetune_both")["checkpoint"] == "../distill_both/last.pt"
    finally:
        (tmp_path / "away").rename(run)
    capsys.readouterr()

    # the exported teachers: fp16 weights, how they were made, and a run that starts from them trains none
    import torch

    for name in ("teacher3d.pt", "teacher2d.pt"):
        ckpt = torch.load(teachers / name, weights_only=True)
        assert "optimizer" not in ckpt and ckpt["demo_teacher"]["made_by"] == "dsn demo --train-teachers"
        assert ckpt["demo_teacher"]["train_seconds"] > 0
        assert all(v.dtype == torch.float16 for v in ckpt["state_dict"].values() if v.is_floating_point())
    other = tmp_path / "from_files"
    # with the single-teacher ablations too: the two-teacher run's cache of both teachers serves them
    recipe = tmp_path / "ablations.yaml"
    recipe.write_text("distill_modes: [both, 3d, 2d]\n")
    assert main(["demo", "--quick", "--no-progress", "--output", str(other), "--teachers-from", str(teachers),
                 "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "teacher3d:" not in out and not (other / "stages" / "teacher3d").exists()
    assert not (other / "data" / "source").exists()  # the source data only trains teachers
    assert [p.name for p in (other / "cache").iterdir()] == ["teachers"]
    assert out.count("shards done, 0 B to write") == 2, out
    assert read_run_config(other / "stages" / "distill_3d")["teacher_weights"] == [1.0, 1.0]
    rows = json.loads((other / "results.json").read_text())["rows"]
    assert [r["name"] for r in rows] == [key for key, _, _ in ROWS] + ["x3d_s"]
    assert all(_finite_share(r["video_top1"]) for r in rows[:-1])


@pytest.mark.slow
def test_demo_study_quick(tmp_path, capsys):
    """The label-efficiency study on tiny data: one distillation per teacher setting serves every fraction,
    scratch gets equal compute at each, the reference is stopped on validation actors no stage trains or
    tests on, and the curve, table and JSON carry intervals."""
    from distilled_shufflenet.engine.checkpointing import read_run_config

    run = tmp_path / "study"
    recipe = tmp_path / "study.yaml"
    recipe.write_text("target_val_groups: 1\nstudy_distill_epochs: 2\n")
    assert main(["demo", "--quick", "--study", "--no-progress", "--output", str(run), "--config", str(recipe)]) == 0
    out = capsys.readouterr().out
    assert "Label-efficiency study" in out
    assert (run / "study.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = json.loads((run / "study.json").read_text())
    assert results["seeds"] == [0] and results["fractions"] == [0.5, 1.0]
    points = {(p["setting"], p["fraction"]): p for p in results["curve"]}
    assert set(points) == {(s, f) for s in ("distilled_both", "distilled_3d", "scratch_equal") for f in (0.5, 1.0)}
    for p in [*points.values(), results["reference"]]:
        assert p["ci95"][0] <= p["top1_mean"] <= p["ci95"][1], p
    # nested label fractions: the larger share holds more labelled videos
    assert points[("distilled_both", 0.5)]["labelled_videos"][0] < points[("distilled_both", 1.0)]["labelled_videos"][0]
    stages = run / "stages" / "seed0"
    assert sorted(p.name for p in stages.glob("distill_*")) == ["distill_3d", "distill_both"]
    distill_steps = read_checkpoint(stages / "distill_both" / "last.pt")["step"]
    # the study distils its own number of epochs (2 here), not the single run's distill_epochs (1)
    assert read_run_config(stages / "distill_both")["epochs"] == read_run_config(stages / "distill_3d")["epochs"] == 2
    assert results["config"]["distill_epochs"] == 2 and "distils 2 epochs" in (run / "study.md").read_text()
    for tag in ("f050", "f100"):
        assert read_run_config(stages / f"finetune_3d_{tag}")["checkpoint"] == "../distill_3d/last.pt"
        assert read_checkpoint(stages / f"scratch_equal_{tag}" / "last.pt")["step"] == distill_steps + 2
    # the reference validates on the validation actors (g05 here: after the test actor g01 and the training
    # actors g02-g04) and only there
    val = run / "data" / "target_val_splits"
    val_videos = (val / "testlist01.txt").read_text().split()
    assert val_videos and all("_g05_" in v for v in val_videos)
    assert read_run_config(stages / "reference")["splits_dir"].endswith("target_val_splits")
    for name in ("trainlist01.txt",):
        assert "_g05_" not in (run / "data" / "target_splits" / name).read_text()
        assert "_g05_" not in (val / name).read_text()
    assert "_g05_" not in (run / "data" / "target_splits" / "testlist01.txt").read_text()
    # no stage makes a choice on the test split: only the reference validates, and on the validation actors
    for folder in stages.iterdir():
        saved = read_run_config(folder)
        if saved.get("validation"):
            assert folder.name == "reference" and saved["splits_dir"].endswith("target_val_splits"), folder.name
        else:
            assert saved.get("early_stop_patience", 0) == 0 and saved.get("scheduler") != "plateau", folder.name
    table = (run / "study.md").read_text()
    assert table.count("\n| ") == 1 + 3 and "Upper reference" in table  # header + one line per setting
    # the paired margins the study is for: two teachers minus one, minus equal-compute scratch and minus the
    # reference, per fraction, grouped by what is compared
    margins = {(m["a"], m["b"]): m for m in results["margins"]}
    assert [(m["a"], m["b"]) for m in results["margins"]] == [
        (f"distilled_both_{t}", other.format(t)) for other in ("distilled_3d_{}", "scratch_equal_{}", "reference")
        for t in ("f050", "f100")]
    for (a, b), m in margins.items():
        first, second = (points[(s, 1.0 if a.endswith("f100") else 0.5)] if s != "reference" else results["reference"]
                         for s in (a.rsplit("_", 1)[0], b if b == "reference" else b.rsplit("_", 1)[0]))
        assert m["points"] == pytest.approx(first["top1_mean"] - second["top1_mean"])
        assert m["ci95"][0] <= m["points"] <= m["ci95"][1] and len(m["per_seed"]) == 1
    assert table.count("- two teachers minus") == 6


@pytest.mark.parametrize("field, value", [("label_fraction", 0.0), ("distill_loss", "l7"),
                                          ("distill_modes", ("4d",)), ("target_seed", 1),
                                          ("distill_lr", 0.0), ("distill_teacher_weights", (0.0, 0.0)),
                                          ("distill_teacher_weights", (-1.0, 1.0)), ("student_stem", "4d"),
                                          ("target_val_groups", -1), ("study_fractions", (0.0,)),
                                          ("study_seeds", (-1,)), ("study_distill_epochs", 0), ("source_cue_strength", 1.5),
                                          ("target_cue_strength", -0.1)])
def test_demo_config_names_bad_field(field, value):
    with pytest.raises(ValueError, match=field.split("_seed")[0]):
        DemoConfig(**{field: value}).validate()


@pytest.mark.parametrize("dataset", ["ucf101", "hmdb51"])
def test_paper_recipes_load(dataset):
    from distilled_shufflenet.engine import FinetuneConfig, resolve_config
    from distilled_shufflenet.engine.distill import DistillConfig
    from distilled_shufflenet.engine.evaluate import EvalConfig

    folder = CONFIGS / f"{dataset}_paper"
    distill = resolve_config(DistillConfig, yaml_path=folder / "distill.yaml")
    assert (distill.dataset, distill.clip_len, distill.crop_size) == (dataset, 16, 224)
    assert (distill.teacher2d, distill.teacher3d, distill.teachers) == ("resnet101", "r3d_50", "both")
    assert distill.include_test is False  # the train+test variant is an option, not the default
    finetune = resolve_config(FinetuneConfig, yaml_path=folder / "finetune.yaml")
    assert finetune.dataset == dataset and finetune.val_fraction > 0  # selection never on the test split
    evaluate = EvalConfig(data_root="videos", **yaml.safe_load((folder / "evaluate.yaml").read_text()))
    assert (evaluate.dataset, evaluate.clips, evaluate.crops) == (dataset, 10, 3)


def test_default_and_quick_configs_validate():
    DemoConfig().validate()
    quick = DemoConfig.quick()
    quick.validate()
    assert quick.crop_size <= min(quick.video_size) and quick.clip_len <= quick.frames
    with pytest.raises(FileNotFoundError, match="teachers_from"):
        DemoConfig(teachers_from="no/such/folder").validate()


def torch_step(path) -> int:
    import torch

    return int(torch.load(path, weights_only=True)["step"])


def test_the_shipped_teachers_are_the_default_config_s_and_small():
    from distilled_shufflenet.demo import SHIPPED_TEACHERS

    DemoConfig(teachers_from=str(SHIPPED_TEACHERS)).validate()
    files = sorted(SHIPPED_TEACHERS.glob("*.pt"))
    assert [f.name for f in files] == ["teacher2d.pt", "teacher3d.pt"]
    assert sum(f.stat().st_size for f in files) <= 10 * 2**20
    with pytest.raises(ValueError, match="teacher_width"):
        DemoConfig(teachers_from=str(SHIPPED_TEACHERS), teacher_width=0.5).validate()
    with pytest.raises(ValueError, match="teacher3d"):
        DemoConfig(teachers_from=str(SHIPPED_TEACHERS), teacher3d="r2plus1d_18").validate()
    # the shipped teachers saw a source without props: a demo asking for cued teachers must train its own
    with pytest.raises(ValueError, match="source_cue_strength"):
        DemoConfig(teachers_from=str(SHIPPED_TEACHERS), source_cue_strength=0.5).validate()


def test_dsn_demo_defaults_to_the_shipped_teachers(monkeypatch, capsys):
    import distilled_shufflenet.demo as demo

    seen = []

    def fake_run(cfg):
        seen.append(cfg)
        return demo.DemoResult(Path("x"), {})

    monkeypatch.setattr(demo, "run_demo", fake_run)
    assert main(["demo", "--output", "somewhere"]) == 0
    assert main(["demo", "--quick", "--output", "somewhere"]) == 0
    assert main(["demo", "--train-teachers", "t", "--output", "somewhere"]) == 0
    assert [c.teachers_from for c in seen] == [str(demo.SHIPPED_TEACHERS), None, None]
    assert "shipped demo teachers" in capsys.readouterr().out


def _fake_run(folder: Path, seed: int, distilled: float, scratch: float, **config) -> Path:
    rows = [{"name": "teacher3d", "video_top1": 80.0, "clip_top1": 78.0, "fps_demo": 200.0},
            {"name": "distilled_3d", "video_top1": distilled, "clip_top1": distilled - 1, "fps_demo": 900.0 + seed},
            {"name": "scratch_equal", "video_top1": scratch, "clip_top1": scratch, "fps_demo": 900.0 + seed},
            {"name": "x3d_s", "video_top1": None, "clip_top1": None}]
    folder.mkdir(parents=True)
    margins = [{"name": "distilled_3d", "points": distilled - scratch, "ci95": [distilled - scratch - 9, distilled - scratch + 9]}]
    results = {"config": {"seed": seed, "output": str(folder), "crop_size": 64, **config}, "rows": rows,
               "margins": margins, "test_videos": 200, "wall_seconds": 600.0 + seed * 60}
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_seed_summary_gives_mean_min_max_and_paired_margins(tmp_path, capsys):
    runs = [_fake_run(tmp_path / f"s{s}", s, d, sc) for s, d, sc in ((0, 40.0, 10.0), (1, 30.0, 35.0), (2, 50.0, 20.0))]
    assert main(["demo", "--summary", *map(str, runs), "--output", str(tmp_path / "sum")]) == 0
    summary = json.loads((tmp_path / "sum" / "summary.json").read_text())
    rows = {r["name"]: r for r in summary["rows"]}
    assert set(rows) == {"teacher3d", "distilled_3d", "scratch_equal"}  # speed-only rows have no accuracy
    assert rows["distilled_3d"]["video_top1"] == {"mean": 40.0, "min": 30.0, "max": 50.0}
    # margins are paired within each run (30, -5, 30), not the difference of the means' extremes
    assert summary["margin_over_scratch_equal_compute"]["distilled_3d"] == {"mean": 55.0 / 3, "min": -5.0, "max": 30.0}
    # and each run's own paired interval, as the run measured it
    assert summary["margin_ci95_per_run"]["distilled_3d"][1] == {"points": -5.0, "ci95": [-14.0, 4.0]}
    assert summary["seeds"] == [0, 1, 2] and summary["differing_settings"] == []
    assert rows["distilled_3d"]["fps_demo"] == 901.0  # the median over the runs
    assert (tmp_path / "sum" / "summary.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (tmp_path / "sum" / "summary.md").read_text()
    assert "40.0 (30.0 to 50.0)" in text and "18.3 (-5.0 to 30.0)" in text  # a negative bound reads as one
    assert "+30.0 [+21.0, +39.0]; -5.0 [-14.0, +4.0]; +30.0 [+21.0, +39.0]" in text
    assert "Warning" not in text and text in capsys.readouterr().out


def test_seed_summary_warns_of_other_settings_and_names_a_missing_run(tmp_path, capsys):
    runs = [_fake_run(tmp_path / "a", 0, 40.0, 10.0), _fake_run(tmp_path / "b", 1, 30.0, 20.0, crop_size=96)]
    assert main(["demo", "--summary", *map(str, runs)]) == 0
    assert "differ in more than the seed: crop_size" in capsys.readouterr().out
    # the same teacher files in two copies of the project are the same teachers; other files are not
    first, second, third = (tmp_path / n for n in ("t1", "t2", "t3"))
    for folder, content in ((first, b"a"), (second, b"a"), (third, b"b")):
        folder.mkdir()
        for name in ("teacher3d.pt", "teacher2d.pt"):
            (folder / name).write_bytes(content)
    same = [_fake_run(tmp_path / f"c{i}", i, 40.0, 10.0, teachers_from=str(f)) for i, f in enumerate((first, second))]
    assert main(["demo", "--summary", *map(str, same)]) == 0
    assert "Warning" not in capsys.readouterr().out
    other = _fake_run(tmp_path / "c2", 2, 40.0, 10.0, teachers_from=str(third))
    assert main(["demo", "--summary", str(same[0]), str(other)]) == 0
    assert "differ in more than the seed: teachers_from" in capsys.readouterr().out
    assert main(["demo", "--summary", str(tmp_path / "a"), str(tmp_path / "nothing")]) == 2
    assert "nothing/results.json: no such file" in capsys.readouterr().err


@pytest.mark.parametrize("steps, videos, batch", [(300, 60, 8), (300, 240, 8), (2, 3, 4), (7, 15, 2), (1, 100, 8)])
def test_supervised_epochs_hold_the_step_budget_with_full_batches_only(steps, videos, batch):
    from distilled_shufflenet.demo import epochs_for_steps

    epochs = epochs_for_steps(steps, videos, batch)
    per_epoch = max(1, videos // batch)  # the last incomplete batch is dropped
    assert epochs * per_epoch >= steps and (epochs - 1) * per_epoch < steps


@pytest.mark.parametrize("how", ["signal in a stage", "KeyboardInterrupt"])
def test_ctrl_c_in_dsn_demo_exits_130_and_advises_the_same_command(monkeypatch, capsys, tmp_path, how):
    import signal

    import distilled_shufflenet.demo as demo
    from distilled_shufflenet.engine.checkpointing import TrainState
    from distilled_shufflenet.engine.distill import DistillConfig
    from distilled_shufflenet.engine.loop import _interrupted

    run = tmp_path / "my demo"
    stage = DistillConfig(output=str(run / "stages" / "distill_both"))

    def interrupted(cfg):
        if how == "KeyboardInterrupt":
            raise KeyboardInterrupt
        raise _interrupted(signal.SIGINT, TrainState(epoch=0, epoch_step=2, step=2), stage)  # what the loop raises

    monkeypatch.setattr(demo, "run_demo", interrupted)
    monkeypatch.setattr(demo, "run_study", interrupted)
    code = main(["demo", "--quick", "--no-progress", "--seed", "3", "--output", str(run)])
    err = capsys.readouterr().err
    assert code == 130 and "Traceback" not in err
    assert f"dsn demo --quick --no-progress --seed 3 --output '{run}'\n" in err  # quoted: the path has a space
    assert "--resume" not in err and "dsn distill" not in err
    # a study keeps every flag it was started with, and a default output folder is spelt out
    monkeypatch.chdir(tmp_path)
    code = main(["demo", "--study", "--study-seeds", "1", "--study-fractions=0.05,0.5", "--label-fraction", "0.3"])
    err = capsys.readouterr().err
    assert code == 130
    assert "dsn demo --study --study-seeds 1 --study-fractions=0.05,0.5 --label-fraction 0.3 --output runs/study\n" in err


def test_dsn_demo_refuses_an_output_folder_that_is_not_a_demo_run(tiny_synth, tmp_path, capsys):
    import shutil

    dataset = tmp_path / "my_dataset"
    shutil.copytree(tiny_synth, dataset)
    before = sorted(p.relative_to(dataset) for p in dataset.rglob("*"))
    assert main(["demo", "--quick", "--no-progress", "--output", str(dataset)]) == 2
    err = capsys.readouterr().err
    assert f"output: {dataset} holds other files (" in err and "no demo run" in err and "dsn demo --output" in err
    assert sorted(p.relative_to(dataset) for p in dataset.rglob("*")) == before  # nothing written into it
    # an empty folder, or one with only hidden files, is a new run's folder
    from distilled_shufflenet.demo import check_run_folder

    (tmp_path / "empty" / ".hidden").mkdir(parents=True)
    check_run_folder(tmp_path / "empty")


def test_progress_counts_a_stage_name_once_per_occurrence(capsys):
    # the study runs each seed's stages under the same names: the run's ETA must count every one of them
    from distilled_shufflenet.demo.stages import Progress

    progress = Progress([("distill", 2.0), ("evaluate", 1.0), ("distill", 2.0), ("evaluate", 1.0)])
    assert progress.left == 6.0
    for name in ("distill", "evaluate", "distill"):
        progress.begin(name, "running")
        progress.end(name, ran=True)
    progress.begin("evaluate", "running")
    last = capsys.readouterr().out.strip().splitlines()[-1]
    eta = float(last.split("run ETA ")[1].split(" s")[0])
    assert progress.left == 1.0 and eta >= 0


def test_demo_study_runs_only_the_settings_asked_for(tmp_path, capsys):
    # without the equal-compute scratch nor the 3D teacher: one distillation, its fine-tuning, the reference
    run = tmp_path / "study"
    assert main(["demo", "--quick", "--study", "--no-progress", "--output", str(run), "--study-fractions", "1",
                 "--study-settings", "distilled_both"]) == 0
    out = capsys.readouterr().out
    assert "from scratch, same labels" not in out and "distilled from both teachers" in out
    assert sorted(p.name for p in (run / "stages" / "seed0").iterdir()) == ["distill_both", "finetune_both_f100",
                                                                            "reference"]
    results = json.loads((run / "study.json").read_text())
    assert [p["setting"] for p in results["curve"]] == ["distilled_both"]
    assert [(m["a"], m["b"]) for m in results["margins"]] == [("distilled_both_f100", "reference")]
    assert (run / "study.png").is_file()
    with pytest.raises(ValueError, match="study_settings: expected some of distilled_both"):
        DemoConfig(study_settings=("distilled_2d",)).validate()
