"""Every command reads ``--config FILE.yaml`` and its flags override the file (the library call is replaced
by a stand-in that keeps the config it was given)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from distilled_shufflenet.cli import main


class Kept(Exception):
    """Raised by the stand-in, carrying the config, so the command stops before any work."""

    def __init__(self, config: Any) -> None:
        super().__init__("kept")
        self.config = config


def keep(config: Any, *args: Any, **kwargs: Any) -> Any:
    raise Kept(config)


def config_of(argv: list[str]) -> Any:
    with pytest.raises(Kept) as kept:
        main(argv)
    return kept.value.config


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return str(path)


def test_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilled_shufflenet.cli import bench

    monkeypatch.setattr(bench, "run_benchmark", keep)
    path = write(tmp_path, "models: [r3d_18, 'shufflenet2plus1d:clip_len=8']\nframes: 8\npaths: fp32,ort-fp32\n"
                           "repeats: 2\n")
    cfg = config_of(["bench", "--config", path, "--repeats", "5", "--no-progress"])
    assert [m.name for m in cfg.models] == ["r3d_18", "shufflenet2plus1d"] and cfg.models[1].kwargs == {"clip_len": 8}
    assert cfg.frames == 8 and cfg.paths == ("fp32", "ort-fp32") and cfg.repeats == 5 and cfg.progress is False
    assert config_of(["bench", "--config", path, "--models", "x3d_s", "--paths", "fp32"]).models[0].name == "x3d_s"


def test_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilled_shufflenet.cli import export

    monkeypatch.setattr(export, "run_export", keep)
    path = write(tmp_path, f"format: torchscript\nopset: 19\nlist_file: {tmp_path / 'l.txt'}\n")
    cfg = config_of(["export", "run/last.pt", "--config", path, "--opset", "20", "-o", str(tmp_path / "m.ts")])
    assert (cfg.checkpoint, cfg.format, cfg.opset, cfg.output) == ("run/last.pt", "torchscript", 20, str(tmp_path / "m.ts"))
    assert cfg.dataset == "list"  # a list file without --dataset: a list, as before


def test_evaluate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilled_shufflenet.inference import evaluate

    monkeypatch.setattr(evaluate, "evaluate_file", lambda checkpoint, config, out: keep(config))
    path = write(tmp_path, f"data_root: {tmp_path}\nclips: 2\ncrops: 1\nmean: [0.5, 0.5, 0.5]\n")
    cfg = config_of(["evaluate", "run/last.pt", "--config", path, "--clips", "4", "--clip-len", "8"])
    assert (cfg.clips, cfg.crops, cfg.clip_len, cfg.mean, cfg.data_root) == (4, 1, 8, (0.5, 0.5, 0.5), str(tmp_path))


def test_data_check_and_bench(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilled_shufflenet.cli import data

    monkeypatch.setattr(data, "check_dataset", keep)
    path = write(tmp_path, f"dataset: ucf101\nsplit: 2\nmin_frames: 8\nsplits_dir: {tmp_path}\n")
    cfg = config_of(["data", "check", "videos", "--config", path, "--min-frames", "4", "--full"])
    assert (cfg.dataset, cfg.root, cfg.split, cfg.min_frames, cfg.full) == ("ucf101", "videos", 2, 4, True)
    assert cfg.splits_dir == str(tmp_path) and cfg.subset == "all"
    monkeypatch.setattr(data, "run_data_bench", keep)
    path = write(tmp_path, "workers: [0, 3]\nbatches: 2\nroot: videos\n")
    cfg = config_of(["data", "bench", "--config", path, "--batches", "5"])
    assert (cfg.workers, cfg.batches, cfg.root, cfg.subset) == ((0, 3), 5, "videos", "train")


def test_data_synth_and_prepare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from distilled_shufflenet.cli import data_synth

    monkeypatch.setattr(data_synth, "generate_synth_actions", lambda out, config, workers: keep(config))
    path = write(tmp_path, "classes: [Kick, Bow]\nsize: 64x48\ngroups: 4\n")
    cfg = config_of(["data", "synth", str(tmp_path / "s"), "--config", path, "--groups", "6"])
    assert (cfg.classes, cfg.size, cfg.groups) == (("Kick", "Bow"), (64, 48), 6)
    assert config_of(["data", "synth", "s", "--config", path, "--classes", "3"]).classes[:1] == ("JumpingJacks",)
    monkeypatch.setattr(data_synth, "prepare_videos", lambda src, dst, config, workers: keep(config))
    path = write(tmp_path, "short_side: 96\nquality: 5\n")
    cfg = config_of(["data", "prepare", "a", "b", "--config", path, "--short-side", "64"])
    assert (cfg.short_side, cfg.quality) == (64, 5)


def test_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distilled_shufflenet.demo as demo

    monkeypatch.setattr(demo, "run_demo", keep)
    path = write(tmp_path, "seed: 3\nfinetune_steps: 7\noutput: runs/x\n")  # a recipe field too, without a flag
    cfg = config_of(["demo", "--quick", "--config", path, "--seed", "4"])
    assert (cfg.seed, cfg.finetune_steps, cfg.output, cfg.workers) == (4, 7, "runs/x", 0)  # --quick's workers
    assert config_of(["demo", "--quick"]).output == "runs/demo_quick"


def test_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from distilled_shufflenet.cli import predict

    monkeypatch.setattr(predict, "run_predict", lambda config, log: keep(config))
    path = write(tmp_path, "backend: ort-fp32\ncandidates_unknown: 1\n")
    assert main(["predict", "m.pt", "v.avi", "--config", path]) == 2
    assert f"dsn predict: error: {path}: unknown key(s) candidates_unknown; known keys: " in capsys.readouterr().err
    path = write(tmp_path, "backend: ort-fp32\nclips: 2\nauto_candidates: [torch-fp32, ort-fp32]\n"
                           "stream: true\nstream_config: {smooth: 2, hop: 4}\n")
    cfg = config_of(["predict", "m.pt", "a.avi", "b.avi", "--config", path, "--clips", "3", "--smooth", "5"])
    assert (cfg.model, cfg.inputs, cfg.backend, cfg.clips, cfg.auto_candidates) == (
        "m.pt", ("a.avi", "b.avi"), "ort-fp32", 3, ("torch-fp32", "ort-fp32"))
    assert cfg.stream and (cfg.stream_config.hop, cfg.stream_config.smooth, cfg.stream_config.topk) == (4, 5, 3)


def test_a_wrong_value_in_the_file_names_the_file_and_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "repeats: many\n")
    assert main(["bench", "--config", path]) == 2
    assert capsys.readouterr().err == f"dsn bench: error: {path}: repeats: expected an integer, got 'many'\n"


def test_every_command_takes_a_config_file() -> None:
    from distilled_shufflenet.cli import build_parser

    def commands(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            return [(words, parser)]
        return [c for name, p in subs[0].choices.items() for c in commands(p, (*words, name))]

    lacking = [" ".join(words) for words, parser in commands(build_parser())
               if "--config" not in parser._option_string_actions and words != ("models",)]
    assert not lacking, lacking
