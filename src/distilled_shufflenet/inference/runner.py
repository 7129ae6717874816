"""``dsn predict`` as a library call: one config, one function.

>>> result = run_predict(PredictConfig("run/best.pt", ("clip.avi",), backend="auto", threads=2))
>>> print(format_predictions(result.videos))
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from distilled_shufflenet.data import VideoDecodeError, VideoReader, spread_indices, uniform_windows
from distilled_shufflenet.inference.backends import AUTO_CANDIDATES, BACKENDS, DEFAULT_TOLERANCE, AutoChoice, Backend, \
    auto_backend, auto_file_backend, create_backend, file_backend
from distilled_shufflenet.inference.export import example_clip
from distilled_shufflenet.inference.predict import VideoPrediction, check_outputs, clip_transform, expand_inputs, \
    is_live_source, predict_files
from distilled_shufflenet.inference.source import ModelInfo, load_model_source
from distilled_shufflenet.inference.stream import STREAMING, StreamConfig, StreamReport, Window, stream_predict
from distilled_shufflenet.options import option


def parse_backends(value: str | list[str]) -> tuple[str, ...]:
    """``--candidates``: comma-separated backend names (or a YAML list of them), each one of BACKENDS."""
    names = tuple(n.strip() for n in (value.split(",") if isinstance(value, str) else value) if n.strip())
    unknown = [n for n in names if n not in BACKENDS]
    if unknown or not names:
        raise ValueError(f"candidates: unknown backend {', '.join(unknown) or repr(value)}; known: {', '.join(BACKENDS)}")
    return names


@dataclass
class PredictConfig:
    """What ``dsn predict`` does; defaults: five clips per video, top 5, the backend chosen by timing."""

    model: str  # a checkpoint (.pt or run folder) or an exported file (.onnx, .ts): MODEL on the command line
    inputs: tuple[str, ...]  # INPUT ... on the command line
    backend: str = option(
        "auto", "how to run the model (default: auto: time the candidates here, keep the fastest that "
        "agrees with fp32). An exported file runs only in the backends made for it (an fp32 .onnx in ort-fp32, "
        "ov-fp32, ov-bf16; an int8 one in ort-int8, ov-int8; an .xml in the ov-* of its precision; a .ts in "
        "TorchScript); another is refused. Which to use on which CPU: ov-int8 was the fastest measured on "
        "AVX-512 with VNNI and on AVX2 (see docs/inference.md)", choices=("auto",) + BACKENDS)
    # what auto times
    auto_candidates: tuple[str, ...] = option(
        AUTO_CANDIDATES, f"comma-separated backends --backend auto times for a checkpoint (default: "
        f"{','.join(AUTO_CANDIDATES)}; torch-compile, torch-compile-bf16 and torch-int8 compile first, a minute "
        "or more for the paper preset, so they are timed only when named here; bf16 ones only run on CPUs with "
        "native bf16)", flag="--candidates", metavar="LIST", parse=parse_backends)
    # largest class-probability difference to fp32 auto accepts
    auto_tolerance: float = option(
        DEFAULT_TOLERANCE, "largest class-probability difference to fp32 that --backend auto accepts, with the "
        f"same top-1 on every probe clip (default: {DEFAULT_TOLERANCE}; int8 backends moved a trained demo "
        "student's class probabilities by up to 0.08)", flag="--tolerance")
    threads: int | None = option(None, "threads for the model (default: torch's default)")
    clips: int = option(5, "clips per video without --stream")
    topk: int = option(5, "classes shown")
    json: str | None = option(None, "also write all results to this JSON file", metavar="PATH")
    # streaming
    stream: bool = option(False, "label a sliding window as the video decodes", group=STREAMING)
    stream_config: StreamConfig = field(default_factory=StreamConfig)
    # JSON lines (.jsonl) or CSV (.csv) of the windows, written as they come
    output: str | None = option(None, "write the windows to this .jsonl or .csv file as they come", metavar="PATH",
                                group=STREAMING)
    annotate: str | None = option(None, "write the video with the label, score and a timeline of the top classes "
                                  "drawn on it", flag="--out", metavar="VIDEO.mp4", group=STREAMING)

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not self.inputs:
            raise ValueError("inputs: no video given")
        if self.backend != "auto" and self.backend not in BACKENDS:
            raise ValueError(f"backend: unknown {self.backend!r}; expected auto or one of {', '.join(BACKENDS)}")
        self.auto_candidates = tuple(self.auto_candidates)
        unknown = [b for b in self.auto_candidates if b not in BACKENDS]
        if unknown or not self.auto_candidates:
            raise ValueError(f"candidates: unknown {', '.join(map(repr, unknown)) or 'none given'}; expected some of "
                             f"{', '.join(BACKENDS)}")
        if not 0 < self.auto_tolerance <= 1:
            raise ValueError(f"tolerance: expected a class-probability difference in (0, 1], got {self.auto_tolerance!r}")
        for name in ("clips", "topk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name}: expected an integer >= 1, got {getattr(self, name)!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads: expected an integer >= 1, got {self.threads!r}")
        if self.output is not None and Path(self.output).suffix.lower() not in (".jsonl", ".csv"):
            raise ValueError(f"output {self.output}: expected a .jsonl or .csv file")
        if self.annotate is not None and Path(self.annotate).suffix.lower() != ".mp4":
            raise ValueError(f"out {self.annotate}: expected an .mp4 file")
        if (self.output or self.annotate or self.stream_config.realtime) and not self.stream:
            raise ValueError("--output, --out and --realtime go with --stream")
        if self.annotate and len(self.inputs) > 1:
            raise ValueError("--out writes one annotated video: give one input")


@dataclass
class PredictResult:
    backend: Backend
    info: ModelInfo
    auto: AutoChoice | None = None
    videos: list[VideoPrediction] = field(default_factory=list)
    streams: list[StreamReport] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _real_clips(info: ModelInfo, sources: list[str], limit: int) -> torch.Tensor | None:
    """Up to ``limit`` clips from the file inputs (for auto's check and int8 calibration), drawn from
    inputs spread over the list, windows spread over each video: inputs are often listed class by class,
    and calibrating on the first few videos alone would see one class."""
    files = [s for s in sources if not is_live_source(s)]
    picks = [files[i] for i in spread_indices(len(files), limit)]
    per_video = math.ceil(limit / len(picks)) if picks else 0
    transform, clips = clip_transform(info), []
    clip_len, stride = info.preprocess.clip_len, info.frame_stride
    for source in picks:
        try:
            with VideoReader(source) as reader:
                for w in uniform_windows(reader.info.num_frames, clip_len, stride, per_video):
                    clips.append(transform(torch.from_numpy(reader.read(w))))
        except VideoDecodeError:
            continue  # reported when the video itself is predicted
    return torch.stack(clips[:limit]) if clips else None


def build_backend(config: PredictConfig, sources: list[str], log: Callable[[str], None]) -> PredictResult:
    """The model and the backend of ``config`` (timing the candidates for ``auto``)."""
    model, info = load_model_source(config.model)
    if model is None:  # an exported file runs in the backends that can run it; any other is refused
        if config.backend == "auto":
            choice, info = auto_file_backend(config.model, _real_clips(info, sources, 8), threads=config.threads,
                                             tolerance=config.auto_tolerance)
            log(choice.summary())
            return PredictResult(choice.backend, info, auto=choice)
        backend, info = file_backend(config.model, backend=config.backend, threads=config.threads)
        return PredictResult(backend, info)
    int8 = [b for b in ((config.backend,) if config.backend != "auto" else config.auto_candidates) if "int8" in b]
    # real clips serve auto's check and int8's calibration only: no decoding for a backend that needs neither
    clips = _real_clips(info, sources, 8) if config.backend == "auto" or int8 else None
    if clips is None and int8:
        log(f"warning: {', '.join(int8)}: no clip could be read from the inputs (live sources only), so int8 is "
            "calibrated on random clips and may classify poorly; for a camera, export an int8 model calibrated "
            "on your data first (dsn export CKPT --quantize int8 --data-root DIR) and predict with it")
    if config.backend == "auto":
        probe = clips if clips is not None else example_clip(info, batch=2)
        choice = auto_backend(model, info, probe, threads=config.threads, candidates=config.auto_candidates,
                              tolerance=config.auto_tolerance, calibration=clips)
        log(choice.summary())
        return PredictResult(choice.backend, info, auto=choice)
    backend = create_backend(config.backend, model, info, threads=config.threads, calibration=clips)
    return PredictResult(backend, info)


class _WindowWriter:
    """Windows as JSON lines or CSV rows, flushed one by one; the file is created at the first window."""

    def __init__(self, path: str | None) -> None:
        self.path, self.file, self.csv = path, None, None

    def write(self, source: str, window: Window) -> None:
        if self.path is None:
            return
        row = {"source": source, **window.to_dict()}
        if self.file is None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "w", encoding="utf-8", newline="")
            if self.path.lower().endswith(".csv"):
                self.csv = csv.writer(self.file)
                self.csv.writerow(["source", "window", "first_frame", "last_frame", "start_s", "end_s", "label",
                                   "score", "top", "latency_s"])
        if self.csv is not None:
            top = ";".join(f"{t['class']}:{t['score']:.4f}" for t in row["top"])
            self.csv.writerow([source, row["window"], row["first_frame"], row["last_frame"], row["start_s"],
                               row["end_s"], row["label"], row["score"], top, row.get("latency_s", "")])
        else:
            self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _stream_one(result: PredictResult, config: PredictConfig, source: str, writer: _WindowWriter,
                log: Callable[[str], None]) -> StreamReport:
    from distilled_shufflenet.inference.annotate import Annotator

    annotator: Annotator | None = None
    fps_holder: dict[str, Any] = {}

    def on_frame(i: int, rgb: Any) -> None:
        nonlocal annotator
        if annotator is None:
            annotator = Annotator(config.annotate, result.info.classes, fps_holder.get("fps", 0.0))
        annotator.add_frame(i, rgb)

    def on_window(w: Window) -> None:
        writer.write(source, w)
        if annotator is not None:
            annotator.add_window(w)
        log(f"{source} [{w.start_s:7.2f} s - {w.end_s:7.2f} s] {w.smoothed[0][0]} {w.smoothed[0][1]:.3f}")

    if config.annotate:
        try:
            with VideoReader(source) as reader:
                fps_holder["fps"] = reader.info.fps
        except VideoDecodeError:
            if not is_live_source(source):
                raise
    stream_cfg = config.stream_config
    if config.annotate:
        stream_cfg = StreamConfig(**{**stream_cfg.__dict__, "keep_frames": True})
    try:
        report = stream_predict(result.backend, result.info, source, stream_cfg, on_window=on_window,
                                on_frame=on_frame if config.annotate else None)
    except BaseException:
        if annotator is not None:
            annotator.abort()
        raise
    if annotator is not None:
        annotator.close()
        report.note = (report.note + "; " if report.note else "") + (
            f"wrote {config.annotate} ({annotator.written} frames)")
    return report


def run_predict(config: PredictConfig, log: Callable[[str], None] = print) -> PredictResult:
    """Predict every input of ``config``; ``log`` receives progress lines (windows as they come)."""
    sources = expand_inputs(config.inputs)
    live = [s for s in sources if is_live_source(s)]
    if live and not config.stream:
        raise ValueError(f"input {live[0]}: a live source is predicted with --stream")
    check_outputs(config.model, sources, {"--json": config.json, "--output": config.output, "--out": config.annotate})
    result = build_backend(config, sources, log)
    log(f"backend: {result.backend.describe()}")
    if not config.stream:
        result.videos = predict_files(result.backend, result.info, sources, clips=config.clips, topk=config.topk)
        result.errors = [v.error for v in result.videos if v.error]
        if config.json:
            from distilled_shufflenet.inference.predict import write_predictions_json

            write_predictions_json(result.videos, config.json, {"model": config.model,
                                                                 "backend": result.backend.name})
        return result
    writer = _WindowWriter(config.output)
    try:
        for source in sources:
            try:
                result.streams.append(_stream_one(result, config, source, writer, log))
            except VideoDecodeError as e:
                result.errors.append(str(e))
    finally:
        writer.close()
    if config.json:
        from distilled_shufflenet.io import atomic_write_text

        doc = {"model": config.model, "backend": result.backend.name,
               "streams": [{**s.to_dict(), "windows": [w.to_dict() for w in s.windows]} for s in result.streams],
               "errors": result.errors}
        atomic_write_text(json.dumps(doc, indent=2) + "\n", config.json)
    return result
