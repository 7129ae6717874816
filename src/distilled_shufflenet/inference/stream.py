"""Streaming prediction: a sliding window over a video as it decodes, one label per window.

A feeder thread decodes frames into a bounded queue while the model runs on the windows already
complete, so decoding overlaps the model. The frames a window needs are preprocessed in one batch in the
model's thread just before it runs: batched, the crop + resize + normalise costs a fraction of what it
costs frame by frame in a second thread competing with the model for the cores::

    feeder thread:  PyAV decode ──> RGB
                         │  (realtime: released at the video's own frame rate, as a camera would)
                         v
                    bounded queue ──> main thread: every frame_stride-th frame waits ──every hop frames──>
                    crop + resize + normalise of the waiting frames (one batch) ──> ring of the last clip_len
                    frames ──> backend ──> probabilities, smoothed over the last `smooth` windows ──> on_window

Windows end every ``hop`` frames (a multiple of the frame stride); a last window ends on the last frame,
so the windows cover the whole video. A source shorter than one window gives one window padded with its
last frame. A source that ends, fails mid-way or stalls (no frame for ``stall_timeout`` seconds) ends
the stream cleanly: the windows so far are kept, and ``report.stopped`` says why.
"""

from __future__ import annotations

import collections
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import av
import numpy as np
import torch
from av.video.reformatter import VideoReformatter

from distilled_shufflenet.data import VideoDecodeError
from distilled_shufflenet.data.sampling import window_span
from distilled_shufflenet.data.video import av_error_reason
from distilled_shufflenet.inference.backends import Backend
from distilled_shufflenet.inference.predict import clip_transform, is_live_source, top_k
from distilled_shufflenet.inference.source import ModelInfo
from distilled_shufflenet.options import need_ints, option


STREAMING = "streaming"  # the heading of the streaming flags in dsn predict --help


@dataclass
class StreamConfig:
    """How ``dsn predict --stream`` slides its window."""

    # frames between the ends of two windows; None: half a window
    hop: int | None = option(None, "frames between windows, a multiple of the model's frame stride (default: half "
                             "a window)", group=STREAMING)
    smooth: int = option(4, "windows averaged into the label", group=STREAMING)
    topk: int = 3
    realtime: bool = option(False, "pace a file at its own frame rate, as a camera would, and report label latency",
                            group=STREAMING)
    stall_timeout: float = option(10.0, "seconds without a frame before a stream counts as stalled and ends",
                                  group=STREAMING)
    # decoded frames the feeder may run ahead of the model (each a whole RGB frame in memory)
    queue_size: int = 32
    # also hand every decoded RGB frame to on_frame (for the annotated video)
    keep_frames: bool = False
    # model calls on a still clip before the stream starts, off its clock: warm-up (first-run plans and
    # allocations of the backend, which a live stream pays once at start-up), then the timed ones that give
    # the model-alone rate the stream's own rate is compared with
    warmup_calls: int = 2
    timed_calls: int = 3

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        need_ints(self, {"smooth": 1, "topk": 1, "queue_size": 1, "warmup_calls": 1, "timed_calls": 0})
        if self.hop is not None and (not isinstance(self.hop, int) or self.hop < 1):
            raise ValueError(f"hop: expected an integer >= 1, got {self.hop!r}")
        if not self.stall_timeout > 0:
            raise ValueError(f"stall_timeout: expected seconds > 0, got {self.stall_timeout!r}")


@dataclass
class Window:
    """The prediction of one window: its frames, time span, raw and smoothed top classes."""

    index: int
    first_frame: int
    last_frame: int
    start_s: float
    end_s: float
    top: list[tuple[str, float]]
    smoothed: list[tuple[str, float]]
    padded: bool = False
    # seconds from the release of the window's last frame to its label (realtime only)
    latency_s: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "window": self.index, "first_frame": self.first_frame, "last_frame": self.last_frame,
            "start_s": round(self.start_s, 4), "end_s": round(self.end_s, 4),
            "label": self.smoothed[0][0], "score": round(self.smoothed[0][1], 6),
            "top": [{"class": c, "score": round(s, 6)} for c, s in self.top],
            "smoothed": [{"class": c, "score": round(s, 6)} for c, s in self.smoothed],
            "padded": self.padded,
            **({"latency_s": round(self.latency_s, 4)} if self.latency_s is not None else {}),
        }


@dataclass
class StreamReport:
    """Timings and outcome of one stream."""

    source: str
    fps: float = 0.0
    frames: int = 0
    windows: list[Window] = field(default_factory=list)
    decode_s: float = 0.0
    preprocess_s: float = 0.0
    model_s: float = 0.0
    wall_s: float = 0.0
    stopped: str = "end of stream"
    note: str = ""
    # median seconds of one model call on a still clip, timed before the stream (0: not timed)
    model_alone_s: float = 0.0
    hop: int = 0

    @property
    def end_to_end_fps(self) -> float:
        return self.frames / self.wall_s if self.wall_s else 0.0

    @property
    def model_bound_fps(self) -> float:
        """Frames per second if the model were the only cost (frames / model seconds)."""
        return self.frames / self.model_s if self.model_s else 0.0

    @property
    def model_alone_fps(self) -> float:
        """Frames per second the model alone keeps up with: a window every ``hop`` frames, each taking the
        median time of the calls timed before the stream."""
        return self.hop / self.model_alone_s if self.model_alone_s and self.hop else 0.0

    @property
    def realtime_factor(self) -> float:
        """End-to-end frames per second over the video's own frame rate."""
        return self.end_to_end_fps / self.fps if self.fps else 0.0

    def latencies(self) -> list[float]:
        return [w.latency_s for w in self.windows if w.latency_s is not None]

    def to_dict(self) -> dict[str, Any]:
        lat = self.latencies()
        return {
            "source": self.source, "fps": self.fps, "frames": self.frames, "windows": len(self.windows),
            "decode_s": self.decode_s, "preprocess_s": self.preprocess_s, "model_s": self.model_s,
            "wall_s": self.wall_s, "end_to_end_fps": self.end_to_end_fps, "model_bound_fps": self.model_bound_fps,
            "hop": self.hop, "model_alone_s": self.model_alone_s, "model_alone_fps": self.model_alone_fps,
            "realtime_factor": self.realtime_factor, "stopped": self.stopped, "note": self.note,
            **({"latency_s_median": float(np.median(lat)), "latency_s_max": max(lat)} if lat else {}),
        }

    def summary(self) -> str:
        f = self.frames or 1
        lines = [
            f"{self.source}: {self.frames} frames ({self.fps:.2f} fps), {len(self.windows)} windows; "
            f"stopped: {self.stopped}",
            f"  decode      {self.decode_s:8.2f} s  ({1e3 * self.decode_s / f:.2f} ms/frame)",
            f"  preprocess  {self.preprocess_s:8.2f} s  ({1e3 * self.preprocess_s / f:.2f} ms/frame)",
            f"  model       {self.model_s:8.2f} s  ({1e3 * self.model_s / max(len(self.windows), 1):.1f} "
            f"ms/window; {self.model_bound_fps:.1f} frames/s if the model were the only cost)",
            f"  end to end  {self.wall_s:8.2f} s  {self.end_to_end_fps:.1f} frames/s = "
            f"{self.realtime_factor:.2f}x real time; {100 * self.end_to_end_fps / max(self.model_bound_fps, 1e-9):.0f} "
            f"% of the model-bound rate",
        ]
        lat = self.latencies()  # only a stream paced at the video's rate (--realtime) has them
        if self.model_alone_fps:
            # a paced stream runs as fast as the video comes, so its share of the model's rate says nothing
            share = "" if lat else f"; the stream ran at {100 * self.end_to_end_fps / self.model_alone_fps:.0f} % of it"
            lines.append(f"  model alone {1e3 * self.model_alone_s:8.1f} ms/window before the stream: "
                         f"{self.model_alone_fps:.1f} frames/s at hop {self.hop}{share}")
        if lat:
            lines.append(f"  latency from a window's last frame to its label: median {1e3 * np.median(lat):.0f} ms, "
                         f"max {1e3 * max(lat):.0f} ms")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- decoding
def open_source(source: str) -> av.container.InputContainer:
    """Open a file, URL or capture device with PyAV; a :class:`VideoDecodeError` naming it otherwise."""
    options: dict[str, Any] = {}
    if source.startswith("/dev/video"):
        options["format"] = "v4l2"
    if not is_live_source(source):  # what FFmpeg would only call "invalid data"
        path = Path(source)
        if not path.exists():
            raise VideoDecodeError(source, "cannot open: no such file")
        if path.is_dir():
            raise VideoDecodeError(source, "cannot open: is a directory")
        if path.stat().st_size == 0:
            raise VideoDecodeError(source, "cannot open: empty file (0 bytes)")
    try:
        container = av.open(source, metadata_errors="ignore", timeout=10.0, **options)
    except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
        raise VideoDecodeError(source, f"cannot open: {av_error_reason(e)}") from None
    if not container.streams.video:
        container.close()
        raise VideoDecodeError(source, "no video stream")
    return container


def _decoded(container: av.container.InputContainer) -> Iterator[av.VideoFrame]:
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    for packet in container.demux(stream):
        yield from packet.decode()


class _Feeder(threading.Thread):
    """Decodes frames into ``out``: items ``(index, release time, RGB frame (H, W, 3))``, then ``None``
    at the end; an exception object if decoding fails."""

    def __init__(self, container: av.container.InputContainer, fps: float, config: StreamConfig) -> None:
        super().__init__(daemon=True, name="dsn-stream-feeder")
        self.container, self.fps, self.config = container, fps, config
        self.out: queue.Queue = queue.Queue(maxsize=config.queue_size)
        self.stop = threading.Event()
        self.decode_s = 0.0
        self._rgb = VideoReformatter()

    def run(self) -> None:
        start = time.perf_counter()
        frames = _decoded(self.container)
        i = 0
        try:
            while not self.stop.is_set():
                t0 = time.perf_counter()
                frame = next(frames, None)
                if frame is None:
                    break
                rgb = self._rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()  # (H, W, 3)
                self.decode_s += time.perf_counter() - t0
                if self.config.realtime and self.fps:
                    delay = start + i / self.fps - time.perf_counter()
                    if delay > 0:
                        time.sleep(delay)
                self._put((i, time.perf_counter(), rgb))
                i += 1
            self._put(None)
        except Exception as e:  # noqa: BLE001 - handed to the main thread, which ends the stream cleanly
            self._put(e)

    def _put(self, item: Any) -> None:
        while not self.stop.is_set():
            try:
                self.out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue


# ---------------------------------------------------------------------------------------------- streaming
def stream_predict(backend: Backend, info: ModelInfo, source: str, config: StreamConfig | None = None, *,
                   on_window: Callable[[Window], None] | None = None,
                   on_frame: Callable[[int, np.ndarray], None] | None = None) -> StreamReport:
    """Slide the model's window over ``source`` as it decodes; ``on_window`` gets each :class:`Window`
    as soon as it is labelled, ``on_frame`` each decoded RGB frame ``(H, W, 3)`` (with ``keep_frames``).

    Opening errors raise :class:`VideoDecodeError`; anything after the first frame ends the stream with
    the windows so far (``report.stopped`` says why)."""
    config = config or StreamConfig()
    clip_len, stride = info.preprocess.clip_len, info.frame_stride
    span = window_span(clip_len, stride)
    hop = config.hop if config.hop is not None else max(stride, (span // 2) // stride * stride)
    if hop % stride:
        raise ValueError(f"hop: {hop} frames is not a multiple of the model's frame stride {stride}")
    container = open_source(source)
    stream = container.streams.video[0]
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    fps = float(rate) if rate else 0.0
    if config.realtime and not fps:
        container.close()
        raise ValueError(f"video {source}: it states no frame rate, so --realtime cannot pace it")
    report = StreamReport(source=source, fps=fps, hop=hop)
    feeder = _Feeder(container, fps, config)
    transform = clip_transform(info)
    sampled: collections.deque = collections.deque(maxlen=clip_len)  # (index, (3, 1, c, c)) of sampled frames
    waiting: list[tuple[int, np.ndarray]] = []  # sampled frames not preprocessed yet: (index, (H, W, 3))
    recent: collections.deque = collections.deque(maxlen=config.smooth)  # probabilities of recent windows
    releases: dict[int, float] = {}
    last_end = -1

    def preprocess_waiting() -> None:
        """The waiting frames into ``sampled``, preprocessed as one clip (the same values frame by frame)."""
        if not waiting:
            return
        t0 = time.perf_counter()
        del waiting[:-clip_len]  # older ones would leave the ring before any window used them
        x = transform(torch.from_numpy(np.stack([rgb for _, rgb in waiting])))  # (3, n, c, c)
        sampled.extend((i, x[:, k : k + 1]) for k, (i, _) in enumerate(waiting))
        report.preprocess_s += time.perf_counter() - t0
        waiting.clear()

    def run_window(end: int, padded: bool) -> None:
        nonlocal last_end
        preprocess_waiting()
        frames = [x for _, x in sampled]
        frames = frames + [frames[-1]] * (clip_len - len(frames))  # a short source: its last frame repeated
        clip = torch.cat(frames, dim=1)[None]  # (1, 3, T, c, c)
        t0 = time.perf_counter()
        probs = torch.softmax(backend(clip), 1)[0]
        t1 = time.perf_counter()
        report.model_s += t1 - t0
        recent.append(probs)
        first = max(end - span + 1, 0)
        window = Window(len(report.windows), first, end, first / fps if fps else 0.0,
                        (end + 1) / fps if fps else 0.0, top_k(probs, info.classes, config.topk),
                        top_k(torch.stack(list(recent)).mean(0), info.classes, config.topk), padded,
                        (t1 - releases[end]) if config.realtime else None)
        report.windows.append(window)
        last_end = end
        if on_window is not None:
            on_window(window)

    crop = info.preprocess.crop_size
    report.model_alone_s = _model_alone(backend, torch.zeros(1, 3, clip_len, crop, crop), config)
    start = time.perf_counter()
    feeder.start()
    last, last_rgb = -1, None
    try:
        while True:
            try:
                item = feeder.out.get(timeout=config.stall_timeout)
            except queue.Empty:
                report.stopped = f"stalled: no frame for {config.stall_timeout:g} s"
                break
            if item is None:
                break
            if isinstance(item, Exception):
                if last < 0:
                    raise VideoDecodeError(source, f"cannot decode: {str(item).splitlines()[0]}")
                report.stopped = f"decoding failed after frame {last}: {str(item).splitlines()[0]}"
                break
            i, released, rgb = item
            last, last_rgb = i, rgb
            releases[i] = released
            releases.pop(i - span, None)
            if config.keep_frames and on_frame is not None:
                on_frame(i, rgb)
            if i % stride:
                continue
            waiting.append((i, rgb))
            del waiting[:-clip_len]  # older ones would leave the ring before any window used them
            # a window ends on a sampled frame, every hop frames once the first one is full
            if i >= span - 1 and (i - (span - 1)) % hop == 0:
                run_window(i, padded=False)
        report.frames = last + 1
        if last >= 0 and last != last_end:
            # the tail after the last full hop, or a source shorter than one window
            short = last < span - 1
            if last % stride:  # the stride skipped the last frame: it ends the final window all the same
                waiting.append((last, last_rgb))
            run_window(last, padded=short)
            if short:
                report.note = (f"the source has {last + 1} frames, fewer than one window ({clip_len} frames at "
                               f"stride {stride} span {span}): padded with its last frame")
        if last < 0 and report.stopped == "end of stream":
            raise VideoDecodeError(source, "no frames decoded")
    finally:
        feeder.stop.set()
        report.wall_s = time.perf_counter() - start
        report.decode_s = feeder.decode_s
        container_close(feeder, container)
    return report


def _model_alone(backend: Backend, clip: torch.Tensor, config: StreamConfig) -> float:
    """Warm ``backend`` up on ``clip`` and return the median seconds of ``config.timed_calls`` more calls
    (0.0 when none are asked for)."""
    for _ in range(config.warmup_calls):
        backend(clip)
    times = []
    for _ in range(config.timed_calls):
        t0 = time.perf_counter()
        backend(clip)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) if times else 0.0


def container_close(feeder: _Feeder, container: av.container.InputContainer) -> None:
    feeder.join(timeout=2.0)
    if not feeder.is_alive():
        container.close()
