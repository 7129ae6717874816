"""Whole-video and streaming prediction, the annotated video, and bad input through dsn predict."""

from __future__ import annotations

import json
import time

import av
import pytest
import torch

from distilled_shufflenet.cli import main
from distilled_shufflenet.data import VideoDecodeError
from distilled_shufflenet.inference.backends import TorchBackend
from distilled_shufflenet.inference.predict import predict_video
from distilled_shufflenet.inference.runner import PredictConfig
from distilled_shufflenet.inference.stream import StreamConfig, stream_predict


def _frames_and_size(path) -> tuple[int, int, int]:
    with av.open(str(path)) as c:
        frames = list(c.decode(video=0))
    return len(frames), frames[0].width, frames[0].height


class _Recording:
    """A backend that passes clips to another one and keeps the logits of every clip."""

    name = "recording"

    def __init__(self, backend) -> None:
        self.backend, self.logits = backend, []

    def __call__(self, clips: torch.Tensor) -> torch.Tensor:
        out = self.backend(clips)
        self.logits += list(out)
        return out


def test_predict_video_averages_clips(student, info, make_video) -> None:
    backend = _Recording(TorchBackend(student, threads=1))
    result = predict_video(backend, info, str(make_video("a.avi", 30)), clips=3, topk=2)
    assert result.clips == 3 and result.num_frames == 30 and not result.padded
    assert len(backend.logits) == 3  # three different windows, each run once
    assert not torch.equal(backend.logits[0], backend.logits[1])
    mean = torch.softmax(torch.stack(backend.logits), 1).mean(0)  # the probabilities of the three clips
    expected = mean.topk(2)
    assert [c for c, _ in result.top] == [info.classes[int(i)] for i in expected.indices]
    assert [s for _, s in result.top] == pytest.approx(expected.values.tolist(), abs=1e-6)


def test_video_scores_are_probabilities_averaged_over_every_clip(student, info, make_video) -> None:
    """Clips with logits [0, 20], [5, 0], [5, 0]: class 0 by the mean probability, 0.662; averaging the
    logits, or taking the first clip, would give class 1."""
    from dataclasses import replace

    per_clip = iter(torch.tensor([[0.0, 20.0], [5.0, 0.0], [5.0, 0.0]]))

    def backend(clips: torch.Tensor) -> torch.Tensor:
        return torch.stack([next(per_clip) for _ in clips])

    two = replace(info, classes=("first", "second"))
    result = predict_video(backend, two, str(make_video("a.avi", 30)), clips=3, topk=2)
    expected = (2 * torch.softmax(torch.tensor([5.0, 0.0]), 0)[0] + torch.softmax(torch.tensor([0.0, 20.0]), 0)[0]) / 3
    assert result.top[0][0] == "first" and result.top[0][1] == pytest.approx(float(expected), abs=1e-6)
    assert result.top[0][1] == pytest.approx(0.662, abs=1e-3)


def test_short_video_is_padded_and_says_so(student, info, make_video) -> None:
    result = predict_video(TorchBackend(student, threads=1), info, str(make_video("short.avi", 5)))
    assert result.padded and "padded" in result.note


@pytest.mark.parametrize("frames,stride,hop", [(37, 1, 4), (41, 2, 6)])
def test_stream_windows_cover_the_video(student, make_info, make_video, frames, stride, hop) -> None:
    info = make_info(student, frame_stride=stride)
    span = (info.preprocess.clip_len - 1) * stride + 1
    report = stream_predict(TorchBackend(student, threads=1), info, str(make_video(f"s{frames}.avi", frames)),
                            StreamConfig(hop=hop, smooth=2))
    w = report.windows
    assert report.frames == frames and report.stopped == "end of stream"
    assert w[0].first_frame == 0 and w[0].last_frame == span - 1 and w[-1].last_frame == frames - 1
    covered = set()
    for a in w:
        assert a.last_frame - a.first_frame + 1 == span
        assert a.start_s == pytest.approx(a.first_frame / 25) and a.end_s == pytest.approx((a.last_frame + 1) / 25)
        covered |= set(range(a.first_frame, a.last_frame + 1))
    assert covered == set(range(frames))
    assert all(b.last_frame - a.last_frame == hop for a, b in zip(w[:-2], w[1:-1]))
    assert report.decode_s > 0 and report.model_s > 0 and report.wall_s >= report.model_s


def test_stream_times_the_model_alone_before_its_clock_starts(student, info, make_video) -> None:
    """The warm-up and timed calls run on a still clip before the stream; the model-alone rate is a window
    every hop frames at their median time, and the stream's model time counts only the windows."""
    backend = _Recording(TorchBackend(student, threads=1))
    report = stream_predict(backend, info, str(make_video("alone.avi", 24)),
                            StreamConfig(hop=4, warmup_calls=2, timed_calls=3))
    before = len(backend.logits) - len(report.windows)
    assert before == 5 and all(not torch.equal(x, backend.logits[before]) for x in backend.logits[:1])
    assert report.hop == 4 and report.model_alone_s > 0
    assert report.model_alone_fps == pytest.approx(4 / report.model_alone_s)
    assert report.to_dict()["model_alone_fps"] == report.model_alone_fps
    assert "model alone" in report.summary()
    untimed = stream_predict(TorchBackend(student, threads=1), info, str(make_video("alone.avi", 24)),
                             StreamConfig(hop=4, timed_calls=0))
    assert untimed.model_alone_s == 0.0 and untimed.model_alone_fps == 0.0 and "model alone" not in untimed.summary()
    with pytest.raises(ValueError, match="warmup_calls"):
        StreamConfig(warmup_calls=0)


def test_stream_windows_are_the_evaluation_transform_of_their_frames(student, make_info, make_video) -> None:
    """Frames preprocessed in batches before each window give each window exactly the clip that the
    evaluation transform makes of its frames (every stride-th one, the tail window's last frame too)."""
    from distilled_shufflenet.inference.predict import clip_transform

    info = make_info(student, frame_stride=2)
    video = make_video("exact.avi", 40)
    with av.open(str(video)) as c:
        rgb = torch.stack([torch.from_numpy(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)])
    clips: list[torch.Tensor] = []

    def backend(clip: torch.Tensor) -> torch.Tensor:
        clips.append(clip)
        return student(clip)

    report = stream_predict(backend, info, str(video), StreamConfig(hop=6, timed_calls=0, warmup_calls=1))
    windows = clips[1:]
    assert len(windows) == len(report.windows) >= 3
    transform = clip_transform(info)
    for w, clip in zip(report.windows, windows):
        picked = [i for i in range(w.first_frame, w.last_frame + 1) if i % 2 == 0]  # the sampled frames
        if w.last_frame % 2:  # the tail window ends on a frame the stride skips, and keeps clip_len frames
            picked = (picked + [w.last_frame])[-info.preprocess.clip_len:]
        assert torch.equal(clip[0], transform(rgb[picked])), w.index


def test_stream_of_a_short_video_pads(student, info, make_video) -> None:
    report = stream_predict(TorchBackend(student, threads=1), info, str(make_video("short.avi", 5)))
    assert len(report.windows) == 1 and report.windows[0].padded and "padded" in report.note


def test_truncated_stream_keeps_the_windows_so_far(student, info, make_video, tmp_path) -> None:
    whole = make_video("long.avi", 60).read_bytes()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole[: len(whole) * 2 // 3])
    report = stream_predict(TorchBackend(student, threads=1), info, str(cut), StreamConfig(hop=4))
    assert 8 <= report.frames < 60 and report.windows and report.windows[-1].last_frame == report.frames - 1


def test_realtime_paces_and_reports_latency(student, info, make_video) -> None:
    report = stream_predict(TorchBackend(student, threads=1), info, str(make_video("rt.avi", 20, fps=50)),
                            StreamConfig(hop=4, realtime=True))
    assert report.wall_s >= 19 / 50  # the last frame is released 0.38 s after the first
    assert len(report.latencies()) == len(report.windows) and min(report.latencies()) >= 0
    # paced at the video's rate, the stream's share of the model-alone rate says nothing: it is not printed
    assert "model alone" in report.summary() and "% of it" not in report.summary()


def test_unreadable_source_raises_naming_it(student, info, tmp_path) -> None:
    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video" * 100)
    with pytest.raises(VideoDecodeError, match="bad.avi"):
        stream_predict(TorchBackend(student, threads=1), info, str(bad))


def test_cli_stream_writes_windows_and_annotated_video(checkpoint, make_video, tmp_path, capsys) -> None:
    video = make_video("cli.avi", 33, height=47, width=63)
    out, rows, doc = tmp_path / "a.mp4", tmp_path / "w.jsonl", tmp_path / "r.json"
    code = main(["predict", str(checkpoint), str(video), "--stream", "--backend", "ort-fp32", "--threads", "1",
                 "--hop", "8", "--output", str(rows), "--out", str(out), "--json", str(doc), "--quiet"])
    assert code == 0
    text = capsys.readouterr().out
    assert "decode" in text and "preprocess" in text and "model" in text and "real time" in text
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    assert lines[-1]["last_frame"] == 32 and all(r["label"] in ("Bow", "Clap", "Kick", "Punch") for r in lines)
    frames, width, height = _frames_and_size(out)
    assert frames == 33 and (width, height) == (64, 48)  # odd sizes are padded to even for yuv420p
    assert json.loads(doc.read_text())["streams"][0]["frames"] == 33


def test_cli_unreadable_video_fails_cleanly(checkpoint, tmp_path, capsys) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00" * 500)
    out, rows = tmp_path / "a.mp4", tmp_path / "w.csv"
    code = main(["predict", str(checkpoint), str(bad), "--stream", "--backend", "torch-fp32", "--threads", "1",
                 "--output", str(rows), "--out", str(out)])
    assert code != 0
    assert "broken.mp4" in capsys.readouterr().err
    assert not out.exists() and not rows.exists() and list(tmp_path.iterdir()) == [bad]


def test_cli_rejects_other_checkpoints_and_files(tmp_path, make_video, capsys) -> None:
    from distilled_shufflenet.engine.checkpointing import save_checkpoint
    from distilled_shufflenet.models import create_model

    other = create_model("shufflenet2plus1d", num_classes=4, widths=(8, 16, 32), units=(1, 1, 1),
                         adapter_channels=(16, 32), clip_len=8)
    ckpt = save_checkpoint(tmp_path / "other.pt", {"model_name": "r3d_18", "model_kwargs": {"num_classes": 4},
                                                   "state_dict": other.state_dict()})
    video = str(make_video("x.avi", 12))
    assert main(["predict", str(ckpt), video, "--backend", "torch-fp32"]) == 2
    assert "other.pt" in capsys.readouterr().err
    corrupt = tmp_path / "m.onnx"
    corrupt.write_bytes(b"junk" * 50)
    assert main(["predict", str(corrupt), video]) == 2
    assert "m.onnx" in capsys.readouterr().err


def test_cli_predict_files_json(checkpoint, make_video, tmp_path, capsys) -> None:
    doc = tmp_path / "p.json"
    code = main(["predict", str(checkpoint), str(make_video("p.avi", 20)), "--backend", "torch-fp32", "--threads",
                 "1", "--clips", "2", "--topk", "3", "--json", str(doc)])
    assert code == 0
    video = json.loads(doc.read_text())["videos"][0]
    assert video["clips"] == 2 and len(video["top"]) == 3 and not video["error"]
    assert "p.avi" in capsys.readouterr().out


def test_cli_auto_times_the_named_candidates_within_the_tolerance(checkpoint, make_video, capsys) -> None:
    video = str(make_video("c.avi", 20))
    code = main(["predict", str(checkpoint), video, "--candidates", "ort-fp32", "--tolerance", "0.05",
                 "--threads", "1", "--clips", "1"])
    assert code == 0
    summary = capsys.readouterr().out.split("c.avi")[0]
    assert "backend auto: chose" in summary and "ort-fp32" in summary
    assert "torch-bf16" not in summary and "ort-int8" not in summary  # only fp32 and the named candidate
    assert main(["predict", str(checkpoint), video, "--candidates", "ort-fp32", "--tolerance", "1e-12",
                 "--threads", "1", "--clips", "1"]) == 0
    summary = capsys.readouterr().out.split("c.avi")[0]
    assert "chose torch-fp32" in summary and "outside the tolerance of fp32 (probabilities within 1e-12" in summary
    with pytest.raises(SystemExit) as exit_:
        main(["predict", str(checkpoint), video, "--candidates", "torch-fp32,onnx-gpu"])
    assert exit_.value.code == 2 and "onnx-gpu" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tolerance"):
        PredictConfig(str(checkpoint), (video,), auto_tolerance=0.0)


def test_exported_file_predicts_like_the_checkpoint(checkpoint, make_video, tmp_path) -> None:
    onnx_path = tmp_path / "tiny.onnx"
    assert main(["export", str(checkpoint), "--output", str(onnx_path), "--threads", "1"]) == 0
    video = str(make_video("p.avi", 20))
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    assert main(["predict", str(checkpoint), video, "--backend", "torch-fp32", "--json", str(a), "--threads", "1"]) == 0
    assert main(["predict", str(onnx_path), video, "--backend", "ort-fp32", "--json", str(b), "--threads", "1"]) == 0
    top_a, top_b = (json.loads(p.read_text())["videos"][0]["top"] for p in (a, b))
    assert [t["class"] for t in top_a] == [t["class"] for t in top_b]
    assert [t["score"] for t in top_a] == pytest.approx([t["score"] for t in top_b], abs=1e-5)
    # auto may choose a bf16 backend for the file: the same top class, scores within its tolerance
    assert main(["predict", str(onnx_path), video, "--json", str(b), "--threads", "1"]) == 0
    top_c = json.loads(b.read_text())["videos"][0]["top"]
    assert top_c[0]["class"] == top_a[0]["class"]
    assert [t["score"] for t in top_a[:1]] == pytest.approx([t["score"] for t in top_c[:1]], abs=2e-2)


def test_stalled_stream_ends_cleanly_with_the_windows_so_far(student, info, make_video, monkeypatch) -> None:
    from distilled_shufflenet.inference import stream as stream_mod

    real = stream_mod._decoded

    def stalls_after_20(container):
        for i, frame in enumerate(real(container)):
            if i == 20:
                time.sleep(3.0)  # the camera stops delivering
            yield frame

    monkeypatch.setattr(stream_mod, "_decoded", stalls_after_20)
    report = stream_predict(TorchBackend(student, threads=1), info, str(make_video("stall.avi", 30)),
                            StreamConfig(hop=4, stall_timeout=0.5))
    assert report.stopped.startswith("stalled") and report.frames == 20
    assert report.windows and report.windows[-1].last_frame == 19


def test_int8_without_readable_clips_warns_of_random_calibration(checkpoint, make_video) -> None:
    """A live source gives no clip to calibrate on before the stream starts: say so; a file input does."""
    from distilled_shufflenet.inference.runner import PredictConfig, build_backend

    said: list[str] = []
    build_backend(PredictConfig(str(checkpoint), ("rtsp://camera/stream",), backend="ort-int8", threads=1),
                  ["rtsp://camera/stream"], said.append)
    assert any("ort-int8" in s and "random clips" in s for s in said)
    said.clear()
    video = str(make_video("calibrate.mp4", 24))
    build_backend(PredictConfig(str(checkpoint), (video,), backend="ort-int8", threads=1), [video], said.append)
    assert not any("random clips" in s for s in said)


def test_calibration_clips_spread_over_the_inputs(info, make_video) -> None:
    """Inputs are often listed class by class: the clips for int8 calibration come from videos across the
    list (live sources skipped), and from windows across the video when there are few."""
    from distilled_shufflenet.inference.runner import _real_clips

    videos = [str(make_video(f"spread{n}.mp4", n)) for n in (20, 22, 24, 26, 28)]
    clips = _real_clips(info, ["rtsp://camera/stream", *videos], 2)
    first, last = (_real_clips(info, [v], 1) for v in (videos[0], videos[-1]))
    torch.testing.assert_close(clips, torch.cat((first, last)))
    one = _real_clips(info, videos[:1], 3)
    assert len(one) == 3 and not torch.equal(one[0], one[2])  # three windows of the one video
    assert _real_clips(info, ["rtsp://camera/stream"], 2) is None


def test_cli_outputs_never_replace_an_input_or_the_model(checkpoint, make_video, tmp_path, capsys) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    same = videos / "same.mp4"
    same.write_bytes(make_video("same.mp4", 12).read_bytes())
    model = tmp_path / "model.pt"
    model.write_bytes(checkpoint.read_bytes())
    before = same.read_bytes(), model.read_bytes()
    for inputs, extra, words in [([same], ["--out", str(same)], f"--out {same}: is one of the input videos"),
                                 ([videos], ["--out", str(same)], f"--out {same}: is one of the input videos"),
                                 ([same], ["--json", str(model)], f"--json {model}: is the model"),
                                 ([same], ["--output", str(tmp_path / "w.jsonl"), "--json", str(tmp_path / "w.jsonl")],
                                  "is also the file of")]:
        assert main(["predict", str(model), *map(str, inputs), "--stream", "--backend", "torch-fp32", *extra]) == 2
        err = capsys.readouterr().err
        assert words in err, err
    assert (same.read_bytes(), model.read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "videos"]


def test_cli_json_into_a_folder_that_cannot_be_written_fails_before_any_work(checkpoint, make_video, capsys) -> None:
    code = main(["predict", str(checkpoint), str(make_video("j.avi", 12)), "--backend", "torch-fp32",
                 "--json", "/proc/nope/r.json"])
    assert code == 2
    captured = capsys.readouterr()
    assert "--json: cannot write into /proc/nope" in captured.err and ".tmp" not in captured.err
    assert "backend:" not in captured.out  # refused before the model was built or any video read


def test_cli_stream_flags_without_stream_are_refused_by_name(checkpoint, make_video, capsys) -> None:
    video = str(make_video("f.avi", 12))
    for extra, words in [(["--hop", "8", "--smooth", "2"], "--hop, --smooth: go with --stream"),
                         (["--stall-timeout", "3"], "--stall-timeout: goes with --stream"),
                         (["--quiet"], "--quiet: goes with --stream")]:
        assert main(["predict", str(checkpoint), video, "--backend", "torch-fp32", *extra]) == 2
        assert words in capsys.readouterr().err


def test_cli_empty_file_streamed_is_named_as_empty(checkpoint, tmp_path, capsys) -> None:
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert main(["predict", str(checkpoint), str(empty), "--stream", "--backend", "torch-fp32"]) == 1
    err = capsys.readouterr().err
    assert f"video {empty}: cannot open: empty file (0 bytes)" in err and "Errno" not in err
