"""How many training clips per second the data pipeline delivers, with 0, 1 and 2 DataLoader workers.

Each clip is what training reads: a random 16-frame window decoded with PyAV, one random 224 crop of the
clip resized to short side 256, a random flip, normalised; batches of 8 through :func:`collate_clips`.
Without a dataset, a few UCF101-like videos (SynthActions clips, 320x240 MPEG-4 in AVI, 150 frames, 25 fps)
are written to a temporary folder first.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, RandomSampler

from distilled_shufflenet.data.check import VideoSource
from distilled_shufflenet.data.clips import VideoClips, collate_clips
from distilled_shufflenet.data.factory import build_dataset
from distilled_shufflenet.data.synth import SYNTH_CLASSES, SynthConfig, write_synth_video
from distilled_shufflenet.data.transforms import train_transform
from distilled_shufflenet.options import option

__all__ = ["DataBenchConfig", "BenchResult", "format_results", "make_bench_videos", "run_data_bench", "time_loader"]


@dataclass(frozen=True)
class DataBenchConfig(VideoSource):
    """What ``dsn data bench`` measures; ``root=None`` (and no list file) generates ``videos`` videos to read."""

    subset: str = option("train", "split subset", choices=("train", "test"))
    workers: tuple[int, ...] = option((0, 1, 2), "worker counts")
    batch_size: int = option(8, "clips per batch")
    batches: int = option(10, "timed batches per setting")
    clip_len: int = option(16, "frames per clip")
    crop_size: int = option(224, "square crop in pixels")
    videos: int = option(6, "videos to generate without ROOT")
    frames: int = option(150, "frames per generated video")
    seed: int = 0

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.dataset != "folder" and self.root is None and self.list_file is None:
            raise ValueError(f"dataset: --dataset {self.dataset} needs ROOT (or --list-file)")
        for name in ("clip_len", "crop_size", "batch_size", "batches", "videos", "frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.workers or min(self.workers) < 0:
            raise ValueError(f"workers must be worker counts >= 0, got {self.workers}")


@dataclass(frozen=True)
class BenchResult:
    """Throughput of one DataLoader setting, measured after one warm-up batch."""

    workers: int
    clips: int
    seconds: float
    failures: int

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else float("inf")


def make_bench_videos(
    folder: str | os.PathLike, num_videos: int = 6, num_frames: int = 150, size: tuple[int, int] = (320, 240)
) -> list[Path]:
    """Write ``num_videos`` UCF101-like videos (MPEG-4 in AVI, ``size`` = (width, height), 25 fps): SynthActions
    clips, one class after another, so that the decoder sees moving figures on textured scenes."""
    config = SynthConfig(frames=num_frames, size=size, fps=25, format="avi")
    n = len(SYNTH_CLASSES)
    return [write_synth_video(Path(folder) / f"v_Bench_g01_c{i + 1:02d}.avi", SYNTH_CLASSES[i % n], 1, i // n + 1,
                              config)
            for i in range(num_videos)]


def time_loader(dataset: VideoClips, workers: int, batch_size: int, batches: int, seed: int = 0) -> BenchResult:
    """Clips per second from a DataLoader over ``dataset`` (random order, with replacement)."""
    sampler = RandomSampler(
        dataset, replacement=True, num_samples=(batches + 1) * batch_size, generator=torch.Generator().manual_seed(seed)
    )
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers, collate_fn=collate_clips)
    clips = failures = 0
    start = 0.0
    for i, batch in enumerate(loader):
        if i == 0:  # warm-up: worker start-up and first-touch costs
            start = time.perf_counter()
            continue
        clips += len(batch.get("index", ()))
        failures += len(batch["failures"])
    return BenchResult(workers, clips, time.perf_counter() - start, failures)


def run_data_bench(cfg: DataBenchConfig) -> list[BenchResult]:
    """Build the dataset of ``cfg`` (or generate videos) and time it with each worker count."""
    with tempfile.TemporaryDirectory(prefix="dsn-data-bench-") as tmp:
        root, kind = cfg.root, cfg.dataset
        if root is None and cfg.list_file is None:
            make_bench_videos(tmp, cfg.videos, cfg.frames)
            root, kind = tmp, "folder"
        dataset = build_dataset(
            kind,
            root,
            splits_dir=cfg.splits_dir,
            split=cfg.split,
            subset=cfg.subset,
            list_file=cfg.list_file,
            labels=False,
            clip_len=cfg.clip_len,
            sampling="random",
            transform=train_transform(cfg.crop_size),
            seed=cfg.seed,
        )
        return [time_loader(dataset, w, cfg.batch_size, cfg.batches, cfg.seed) for w in cfg.workers]


def format_results(results: list[BenchResult], cfg: DataBenchConfig) -> str:
    """A table of clips/s per worker count."""
    head = (
        f"training clips ({cfg.clip_len} frames, {cfg.crop_size}x{cfg.crop_size}, train preset), "
        f"batch {cfg.batch_size}, {cfg.batches} timed batches after 1 warm-up"
    )
    rows = [f"{'workers':>7s}  {'clips':>5s}  {'seconds':>7s}  {'clips/s':>7s}  {'frames/s':>8s}  failures"]
    for r in results:
        rows.append(
            f"{r.workers:7d}  {r.clips:5d}  {r.seconds:7.2f}  {r.clips_per_s:7.1f}  "
            f"{r.clips_per_s * cfg.clip_len:8.0f}  {r.failures:8d}"
        )
    if all(r.workers for r in results):
        return "\n".join([head, *rows])
    note = (
        f"workers=0 runs in the main process with torch's {torch.get_num_threads()} intra-op thread(s); each "
        "worker process uses 1 (on a busy machine, multi-threaded per-clip ops can wait for a free core)"
    )
    return "\n".join([head, *rows, note])
