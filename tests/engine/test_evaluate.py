"""Evaluation: exact figures on hand-made predictions, then end to end on a tiny student and dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distilled_shufflenet.cli import main
from distilled_shufflenet.engine.checkpointing import save_checkpoint
from distilled_shufflenet.engine.eval_report import write_report
from distilled_shufflenet.engine.evaluate import EvalConfig, evaluate, evaluate_checkpoint
from distilled_shufflenet.models import IMAGENET_MEAN, IMAGENET_STD, create_model

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --------------------------------------------------------------------------- hand-made predictions
class Readout(nn.Module):
    """A "model" whose logits are written in its input: ``x[:, 0, 0, 0, :]`` of a (N, 3, 1, 1, C) clip."""

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0, 0, 0, :]  # (N, C)


def _view(*logits: float) -> Tensor:
    clip = torch.zeros(3, 1, 1, len(logits))  # (3, T, H, W)
    clip[0, 0, 0] = torch.tensor(logits)
    return clip


class HandMade(Dataset):
    """5 videos of 3 classes, 2 views each (or one in the clip-level variant); video 3 cannot be read.

    v0 (a): [6, 0, 0] + [0, 7, 6.5]  mean prob -> a (right), mean logit -> b (wrong)
    v1 (b): [0, 3, 1] + [1, 2, 0]    -> b (right)
    v2 (c): [2, 1, 0] + [3, 0, 1]    -> a (wrong; c is ranked last)
    v3 (a): unreadable
    v4 (c): [0, 0, 1] + [0, 0, 2]    -> c (right)
    """

    classes = ["a", "b", "c"]
    labels = [0, 1, 2, 0, 2]
    views = {
        0: [(6, 0, 0), (0, 7, 6.5)],
        1: [(0, 3, 1), (1, 2, 0)],
        2: [(2, 1, 0), (3, 0, 1)],
        4: [(0, 0, 1), (0, 0, 2)],
    }

    def __init__(self, clip_level: bool = False) -> None:
        self.clip_level = clip_level

    def __len__(self) -> int:
        return 5

    def __getitem__(self, i: int) -> dict[str, Any]:
        if i == 3:
            return {"index": 3, "failures": [{"index": 3, "path": "a/v3.avi", "reason": "cannot decode"}]}
        views = [_view(*v) for v in self.views[i]]
        clip = views[1] if self.clip_level else torch.stack(views)  # (3, 1, 1, 3) or (2, 3, 1, 1, 3)
        return {"clip": clip, "index": i, "label": self.labels[i]}


def _hand_made(average: str = "prob"):
    # 3 videos per batch, 3 clips per forward pass: video 1's two views land in two different passes
    return evaluate(Readout(), HandMade(), clip_dataset=HandMade(clip_level=True), batch_size=3, device="cpu",
                    average=average, progress=False)


def test_evaluate_figures_on_hand_made_predictions() -> None:
    report = _hand_made()
    video, clip = report.video, report.clip
    assert (video.videos, video.scored, video.unscored, video.views_per_video) == (5, 4, 1, 2)
    assert video.correct == {1: 3, 5: 4}  # top-5 of 3 classes: every scored video
    assert video.accuracy(1) == 3 / 5 and video.accuracy_scored(1) == 3 / 4
    assert video.accuracy(5) == 4 / 5 and video.accuracy_scored(5) == 1.0
    assert clip is not None and clip.views_per_video == 1
    assert clip.correct == {1: 2, 5: 4}  # the second views alone: v1 and v4 right
    assert clip.accuracy(1) == 2 / 5 and clip.accuracy_scored(1) == 2 / 4
    assert report.confusion == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]
    rows = {r["class"]: (r["videos"], r["scored"], r["correct"], r["accuracy"], r["accuracy_scored"])
            for r in report.per_class}
    assert rows == {"a": (2, 1, 1, 0.5, 1.0), "b": (1, 1, 1, 1.0, 1.0), "c": (2, 2, 1, 0.5, 0.5)}
    assert report.unscored == [{"index": 3, "path": "a/v3.avi", "reason": "cannot decode", "levels": ["clip", "video"]}]


def test_evaluate_can_average_logits_instead() -> None:
    report = _hand_made("logit")
    assert report.video.correct[1] == 2  # v0 flips to b
    assert report.confusion == [[0, 1, 0], [0, 1, 0], [1, 0, 1]]
    assert "logits" in report.to_dict()["video_scores"]


def test_report_is_json_and_says_which_figure_is_which(tmp_path: Path) -> None:
    report = _hand_made()
    json_path, png_path = write_report(report, tmp_path / "out")
    data = json.loads(json_path.read_text())
    assert data["video_level"]["top1"] == 0.6 and data["video_level"]["top1_scored"] == 0.75
    assert data["clip_level"]["top1"] == 0.4
    assert data["unscored_videos"]["count"] == 1 and data["unscored_videos"]["videos"][0]["path"] == "a/v3.avi"
    assert "softmax probabilities" in data["video_scores"]
    assert "count as wrong" in data["notes"]["top1, top5"]
    assert data["confusion_matrix"] == report.confusion and data["classes"] == ["a", "b", "c"]
    assert png_path.read_bytes()[:8] == PNG_MAGIC
    summary = report.summary()
    assert "a/v3.avi: cannot decode" in summary and "over the 4 scored" in summary


def test_each_level_reports_its_top1_interval_and_which_videos_it_got_right(tmp_path: Path) -> None:
    from distilled_shufflenet.engine.eval_report import paired_top1_margin
    from distilled_shufflenet.engine.metrics import accuracy_interval, paired_margin_interval

    report = _hand_made()
    # video level: v0, v1, v4 right, v2 wrong, v3 unreadable (wrong); clip level (second views): v1, v4 right
    assert report.video.hits == [1, 1, 0, 0, 1] and report.clip.hits == [0, 1, 0, 0, 1]
    data = json.loads(write_report(report, tmp_path / "out")[0].read_text())
    for level, hits in (("video_level", [1, 1, 0, 0, 1]), ("clip_level", [0, 1, 0, 0, 1])):
        expected = accuracy_interval(hits, level=0.95, resamples=10_000, seed=0)
        assert data[level]["top1_by_video"] == hits
        assert data[level]["top1_ci95"] == [expected.low, expected.high]
        assert expected.low < data[level]["top1"] < expected.high
    assert "bootstrap" in data["notes"]["top1_ci95"]
    low, high = (round(100 * x, 2) for x in data["video_level"]["top1_ci95"])
    assert f"top-1  60.00% (95% CI {low:.2f}%-{high:.2f}%)" in report.summary()
    # two "models" (averaging probabilities, averaging logits) on the same videos pair up from their reports
    other = _hand_made("logit").to_dict()  # v0 flips to wrong: [0, 1, 0, 0, 1]
    margin = paired_top1_margin(data, other)
    assert margin == paired_margin_interval([1, 1, 0, 0, 1], [0, 1, 0, 0, 1], level=0.95, resamples=10_000, seed=0)
    assert margin.estimate == pytest.approx(0.2) and margin.low == 0.0 < margin.high
    assert paired_top1_margin(data, other, "clip_level").estimate == 0.0  # one view: nothing to average
    other["dataset"] = {"kind": "ucf101", "split": 2}
    with pytest.raises(ValueError, match=r"reports: scored on other videos \(kind None and 'ucf101'; split None and 2\)"):
        paired_top1_margin(data, other)


def test_evaluate_checks_the_model_output_against_the_classes() -> None:
    class TwoClasses(HandMade):
        classes = ["a", "b"]

    with pytest.raises(ValueError, match=r"expected \(N, 2\) logits"):
        evaluate(Readout(), TwoClasses(), device="cpu", progress=False)


# --------------------------------------------------------------------------- end to end
TINY = dict(num_classes=4, widths=(8, 16, 32), units=(1, 1, 1), adapter_channels=(16, 32), clip_len=8)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory, tiny_synth: Path) -> Path:
    """A randomly initialised tiny student saved as a run checkpoint with the tiny dataset's classes."""
    torch.manual_seed(0)
    model = create_model("shufflenet2plus1d", **TINY)
    classes = [line.split()[1] for line in (tiny_synth / "classInd.txt").read_text().splitlines() if line.strip()]
    path = tmp_path_factory.mktemp("run") / "best.pt"
    save_checkpoint(path, {
        "model_name": "shufflenet2plus1d",
        "model_kwargs": TINY,
        "state_dict": model.state_dict(),
        "classes": classes,
        "preprocess": {"clip_len": 8, "crop_size": 32, "resize": 37, "mean": IMAGENET_MEAN, "std": IMAGENET_STD},
        "epoch": 1,
    })
    return path


def _png_ok(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 5_000


@pytest.mark.slow
def test_cli_evaluate_end_to_end_three_crops_two_clips(tiny_checkpoint: Path, tiny_synth: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    rc = main(["evaluate", str(tiny_checkpoint), "--dataset", "ucf101", "--data-root", str(tiny_synth),
               "--clips", "2", "--crops", "3", "--batch-size", "4", "--workers", "0", "--device", "cpu",
               "--out", str(out), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "clip level" in printed and "video level (6 views/video)" in printed and "unscored videos: 0" in printed
    assert printed.count("(95% CI ") == 2  # the interval of each level's top-1
    data = json.loads((out / "report.json").read_text())
    assert data["dataset"]["videos"] == 8 and data["dataset"]["split"] == 1 and data["dataset"]["subset"] == "test"
    assert data["checkpoint"] == str(tiny_checkpoint.resolve())
    assert data["views"] == {"clips": 2, "crops": 3, "per_video": 6}
    assert data["preprocess"]["clip_len"] == 8 and data["preprocess"]["crop_size"] == 32
    for level, views in (("clip_level", 1), ("video_level", 6)):
        fig = data[level]
        assert fig["views_per_video"] == views and fig["videos"] == 8 and fig["scored"] == 8
        assert fig["top1"] == fig["correct_top1"] / 8 and fig["top1"] == fig["top1_scored"]
        assert fig["top5"] == 1.0  # 4 classes: top-5 clamps to top-4
        assert len(fig["top1_by_video"]) == 8 and sum(fig["top1_by_video"]) == fig["correct_top1"]
        assert fig["top1_ci95"][0] <= fig["top1"] <= fig["top1_ci95"][1]
    assert data["unscored_videos"] == {"count": 0, "videos": []}
    matrix = torch.tensor(data["confusion_matrix"])
    assert matrix.shape == (4, 4) and int(matrix.sum()) == 8 and matrix.sum(1).tolist() == [2, 2, 2, 2]
    assert int(matrix.trace()) == data["video_level"]["correct_top1"]
    assert [r["videos"] for r in data["per_class"]] == [2, 2, 2, 2]
    _png_ok(out / "confusion.png")


def test_unreadable_and_missing_videos_are_counted_as_wrong(tiny_checkpoint: Path, tiny_synth: Path,
                                                             tmp_path: Path) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    tests = [line.strip() for line in (root / "testlist01.txt").read_text().splitlines() if line.strip()]
    broken, gone = root / tests[0], root / tests[3]
    broken.write_bytes(b"not a video at all" * 10)
    gone.unlink()
    options = dict(dataset="ucf101", data_root=str(root), clips=1, crops=1, batch_size=4, workers=0, device="cpu",
                   progress=False)
    with pytest.raises(FileNotFoundError, match=gone.name):
        evaluate_checkpoint(tiny_checkpoint, **options)

    report = evaluate_checkpoint(tiny_checkpoint, EvalConfig(**options), skip_missing=True, out=str(tmp_path / "o"))
    assert report.clip is report.video  # one centre view: the clip level is the video level
    video = report.video
    assert (video.videos, video.scored, video.unscored) == (8, 6, 2)
    assert video.accuracy(1) == video.correct[1] / 8 and video.accuracy_scored(1) == video.correct[1] / 6
    # the unreadable (first) and the missing (listed last) videos are wrong in the per-video record too
    assert len(video.hits) == 8 and video.hits[0] == 0 and video.hits[-1] == 0 and sum(video.hits) == video.correct[1]
    paths = {Path(u["path"]).name: u["reason"] for u in report.unscored}
    assert set(paths) == {broken.name, gone.name} and paths[gone.name] == "file not found"
    assert sum(r["videos"] for r in report.per_class) == 8  # the missing one still counts in its class
    data = json.loads((tmp_path / "o" / "report.json").read_text())
    assert data["unscored_videos"]["count"] == 2 and data["dataset"]["missing_files"] == 1
    _png_ok(tmp_path / "o" / "confusion.png")


def test_cli_missing_checkpoint_exits_2_with_a_clear_message(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    rc = main(["evaluate", str(missing), "--data-root", str(tmp_path), "--device", "cpu", "--no-progress"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "dsn evaluate: error:" in err and str(missing) in err and "no such file" in err
    assert "Traceback" not in err


def test_checkpoint_with_other_classes_is_refused(tiny_checkpoint: Path, tiny_synth: Path, tmp_path: Path) -> None:
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["classes"] = list(reversed(ckpt["classes"]))
    other = tmp_path / "other.pt"
    save_checkpoint(other, ckpt)
    with pytest.raises(ValueError, match="classes differ"):
        evaluate_checkpoint(other, dataset="ucf101", data_root=str(tiny_synth), clips=1, crops=1, workers=0,
                            device="cpu", progress=False)


def test_preprocessing_flags_override_the_checkpoint(tiny_checkpoint: Path, tiny_synth: Path) -> None:
    report = evaluate_checkpoint(tiny_checkpoint, dataset="ucf101", data_root=str(tiny_synth), clips=1, crops=1,
                                 crop_size=40, resize=44, mean=(0.5, 0.5, 0.5), workers=0, device="cpu",
                                 progress=False)
    pre = report.info["preprocess"]
    assert (pre["clip_len"], pre["crop_size"], pre["resize"]) == (8, 40, 44)  # clip length from the checkpoint
    assert pre["mean"] == (0.5, 0.5, 0.5) and pre["std"] == IMAGENET_STD
    assert report.video.scored == 8


def test_frame_stride_and_crop_follow_the_training_run(tiny_checkpoint: Path, tiny_synth: Path, tmp_path: Path) -> None:
    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["config"] = {"frame_stride": 2}
    trained = tmp_path / "strided.pt"
    save_checkpoint(trained, ckpt)
    options = dict(dataset="ucf101", data_root=str(tiny_synth), clips=1, crops=1, workers=0, device="cpu",
                   progress=False)
    assert evaluate_checkpoint(trained, **options).info["preprocess"]["frame_stride"] == 2
    pre = evaluate_checkpoint(trained, frame_stride=3, crop_size=64, **options).info["preprocess"]
    assert pre["frame_stride"] == 3
    assert pre["resize"] == round(64 * 37 / 32)  # a new crop keeps the checkpoint's resize-to-crop ratio
    assert evaluate_checkpoint(tiny_checkpoint, **options).info["preprocess"]["frame_stride"] == 1


def test_eval_config_names_the_bad_field() -> None:
    with pytest.raises(ValueError, match="crops: expected 1 or 3"):
        EvalConfig(data_root="x", crops=2)
    with pytest.raises(ValueError, match="data_root"):
        EvalConfig()


# --------------------------------------------------------------------------- the command line, as for dsn train
def test_cli_evaluates_a_list_dataset_from_a_config_file(tiny_checkpoint: Path, tiny_synth: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    # a test list holding two of the four classes: the labels are named by the checkpoint's classes
    tests = [line.strip() for line in (tiny_synth / "testlist01.txt").read_text().splitlines() if line.strip()]
    listed = [t for t in tests if t.split("/")[0] in ("SquatDown", "WaveFast")]
    list_file = tmp_path / "test.csv"
    list_file.write_text("".join(f"{tiny_synth / t},{t.split('/')[0]}\n" for t in listed))
    config = tmp_path / "eval.yaml"
    config.write_text(f"dataset: list\nlist_file: {list_file}\nclips: 1\ncrops: 1\nworkers: 0\ndevice: cpu\n"
                      "batch_size: 2\n")
    out = tmp_path / "eval"
    rc = main(["evaluate", str(tiny_checkpoint), "--config", str(config), "--batch-size", "4", "--out", str(out),
               "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "report.json").read_text())
    assert data["dataset"]["kind"] == "list" and data["dataset"]["list_file"] == str(list_file.resolve())
    assert data["video_level"]["videos"] == len(listed) == 4 and data["video_level"]["scored"] == 4
    assert data["config"]["batch_size"] == 4  # the flag overrides the file
    assert data["classes"] == [line.split()[1] for line in (tiny_synth / "classInd.txt").read_text().splitlines()]


def test_cli_evaluate_help_shows_the_dataset_choices(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--dataset {ucf101,hmdb51,list}" in text and "--list-file" in text and "--config FILE.yaml" in text


@pytest.mark.parametrize("case", ["empty_folder", "unwritable_out", "text_file", "list_without_file", "bad_yaml_key"])
def test_cli_evaluate_errors_name_the_file_and_what_to_do(case: str, tiny_checkpoint: Path, tiny_synth: Path,
                                                          tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", str(tiny_checkpoint), "--data-root", str(tiny_synth), "--device", "cpu", "--workers", "0",
            "--clips", "1", "--crops", "1", "--no-progress"]
    if case == "empty_folder":
        (tmp_path / "run").mkdir()
        args[1] = str(tmp_path / "run")
        expected = ["a folder without last.pt", "pass a checkpoint file"]
    elif case == "unwritable_out":
        args += ["--out", "/proc/nope"]
        expected = ["out: cannot write into /proc/nope", "choose a folder you can write to"]
    elif case == "text_file":
        args[1] = str(tmp_path / "notes.pt")
        (tmp_path / "notes.pt").write_text("hello, this is not a checkpoint\n")
        expected = ["notes.pt: not a PyTorch checkpoint", "starts with b'hello, t'"]
    elif case == "list_without_file":
        args += ["--dataset", "list"]
        expected = ["list_file: required with dataset 'list'", "--list-file FILE"]
    else:
        (tmp_path / "c.yaml").write_text("clipz: 2\n")
        args += ["--config", str(tmp_path / "c.yaml")]
        expected = ["c.yaml: unknown key(s) clipz"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("dsn evaluate: error: ") and "Traceback" not in err and "Errno" not in err
    for text in expected:
        assert text in err, err
    assert "resume" not in err and "(101)" not in err


def test_missing_videos_advise_the_option_in_the_words_of_the_caller(tiny_checkpoint: Path, tiny_synth: Path,
                                                                     tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    shutil.copytree(tiny_synth, root)
    gone = root / (root / "testlist01.txt").read_text().split()[0]
    gone.unlink()
    options = dict(dataset="ucf101", data_root=str(root), clips=1, crops=1, workers=0, device="cpu", progress=False)
    with pytest.raises(FileNotFoundError) as info:
        evaluate_checkpoint(tiny_checkpoint, **options)
    assert str(info.value).endswith("(pass skip_missing=True to count them as unscored videos)")
    assert "--skip-missing" not in str(info.value)
    rc = main(["evaluate", str(tiny_checkpoint), "--data-root", str(root), "--device", "cpu", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and gone.name in err
    assert err.rstrip().endswith("(pass --skip-missing to count them as unscored videos)") and "skip_missing" not in err


@pytest.mark.slow
def test_exported_files_are_evaluated_through_their_runtime(tiny_checkpoint: Path, tiny_synth: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    """ONNX and TorchScript files score as their checkpoint does; an int8 file gets its own accuracy."""
    views = ["--data-root", str(tiny_synth), "--clips", "2", "--crops", "1", "--workers", "0", "--no-progress"]
    reference = evaluate_checkpoint(tiny_checkpoint, dataset="ucf101", data_root=str(tiny_synth), clips=2, crops=1,
                                    workers=0, device="cpu", progress=False)
    onnx_file, script = tmp_path / "m.onnx", tmp_path / "m.ts"
    assert main(["export", str(tiny_checkpoint), "-o", str(onnx_file), "--threads", "1", "--quantize", "int8",
                 "--data-root", str(tiny_synth), "--calibration-clips", "4"]) == 0
    assert main(["export", str(tiny_checkpoint), "--format", "torchscript", "-o", str(script)]) == 0
    for path, kind, precision in ((onnx_file, "onnx", "fp32"), (script, "torchscript", "fp32"),
                                  (tmp_path / "m.int8.onnx", "onnx", "int8")):
        out = tmp_path / f"eval-{path.name}"
        assert main(["evaluate", str(path), *views, "--out", str(out)]) == 0, capsys.readouterr().err
        data = json.loads((out / "report.json").read_text())
        assert data["exported"]["format"] == kind and data["exported"]["precision"] == precision
        assert data["video_level"]["scored"] == 8 and data["checkpoint"] == str(path.resolve())
        if precision == "fp32":  # the same model: the same predictions
            assert data["confusion_matrix"] == reference.confusion
    capsys.readouterr()
    # the ONNX graph's clip size is fixed: another one is refused by flag, before any video is read
    assert main(["evaluate", str(onnx_file), *views, "--crop-size", "48"]) == 2
    err = capsys.readouterr().err
    assert "m.onnx takes clips of 8 frames of 32 x 32 pixels only" in err and "--crop-size" in err
    assert "weights_only" not in err
