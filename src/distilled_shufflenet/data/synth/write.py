"""Writing a SynthActions dataset to disk (:func:`generate_synth_actions`): the videos in parallel, then
the split files, resuming an interrupted run in the same folder."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from distilled_shufflenet.data.encode import codec_available, write_video
from distilled_shufflenet.data.synth.config import SynthConfig, synth_test_groups, synth_video_name
from distilled_shufflenet.data.synth.cues import place_cue
from distilled_shufflenet.data.synth.motion import render_synth_clip
from distilled_shufflenet.io import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable_folder,
    remove_stale_temporaries,
)

__all__ = ["SynthReport", "generate_synth_actions", "write_synth_video"]

CONFIG_FILE = "synth_config.yaml"
# bumped whenever the generator draws differently, so that a resumed run never mixes two versions
GENERATOR_VERSION = 1


@dataclass
class SynthReport:
    """What :func:`generate_synth_actions` did."""

    root: Path
    classes: tuple[str, ...]
    videos: int  # videos in the dataset
    written: int  # videos written by this run (the others were already there)
    splits: int  # number of (trainlist0k, testlist0k) pairs written
    train_videos: int  # in split 1
    test_videos: int  # in split 1
    seconds: float
    per_class: dict[str, int] = field(default_factory=dict)
    cue_strength: float = 0.0  # probability that a video shows its class's prop
    cued_videos: int = 0  # videos that show it

    def __str__(self) -> str:
        cues = (f", {self.cued_videos} with their class's prop (cue strength {self.cue_strength:g})"
                if self.cue_strength else "")
        return (f"SynthActions in {self.root}: {len(self.classes)} classes, {self.videos} videos "
                f"({self.written} written, {self.videos - self.written} already there){cues}, {self.splits} splits; "
                f"split 1: {self.train_videos} train / {self.test_videos} test; {self.seconds:.1f} s")


def write_synth_video(path: str | os.PathLike[str], class_name: str, group: int, clip: int,
                      config: SynthConfig) -> Path:
    """Render one SynthActions video (:func:`render_synth_clip`) and write it to ``path`` atomically, in
    the config's format and frame rate; returns the path."""
    return write_video(path, render_synth_clip(class_name, group, clip, config), fps=config.fps, codec=config.codec)


def _write_one(root: str, name: str, class_name: str, group: int, clip: int, cfg: SynthConfig) -> bool:
    path = Path(root) / name
    if path.is_file():  # files only appear under their name once complete
        return False
    write_synth_video(path, class_name, group, clip, cfg)
    return True


def _write_text(path: Path, lines: Sequence[str]) -> None:
    atomic_write_bytes("".join(f"{line}\r\n" for line in lines).encode(), path)


def _check_config(root: Path, cfg: SynthConfig) -> None:
    record = {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}
    record["generator_version"] = GENERATOR_VERSION
    path = root / CONFIG_FILE
    if path.is_file():
        old = yaml.safe_load(path.read_text())
        if isinstance(old, dict):  # written before cues existed: its videos are those of cue strength 0
            old.setdefault("cue_strength", 0.0)
        if old != record:
            diff = sorted(k for k in set(old or {}) | set(record) if (old or {}).get(k) != record.get(k))
            raise ValueError(f"{path}: this folder was generated with another config (differs in "
                             f"{', '.join(diff)}); use a new folder or the same settings to resume")
        return
    if root.is_dir() and any(root.iterdir()):
        raise ValueError(f"{root}: folder is not empty and holds no SynthActions dataset ({CONFIG_FILE} "
                         "missing); give an empty or new folder")
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(yaml.safe_dump(record, sort_keys=False), path)


def generate_synth_actions(
    out: str | os.PathLike[str],
    config: SynthConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> SynthReport:
    """Write a SynthActions dataset to ``out`` in the UCF101 layout (see the module docstring).

    Videos already in ``out`` are kept, so an interrupted run resumes where it stopped (the temporary
    files a killed run left are deleted first); the split files are written last. ``out`` must be empty
    or hold a dataset made with the same config, and be writable.

    Args:
        out: dataset root.
        config: what to generate (default :class:`SynthConfig()`).
        workers: processes rendering and encoding in parallel (default ``min(2, cpu count)``;
            1 renders in this process).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`SynthReport`.
    """
    start = time.perf_counter()
    cfg = config or SynthConfig()
    if cfg.format == "mp4" and not codec_available("libx264"):
        raise ValueError("format: 'mp4' needs H.264 (libx264), which this PyAV build does not have; use 'avi'")
    root = check_writable_folder(out, "out")
    remove_stale_temporaries(root)  # what a killed earlier run was writing
    _check_config(root, cfg)
    workers = workers or min(2, os.cpu_count() or 1)
    jobs = [(synth_video_name(c, g, k, cfg.format), c, g, k)
            for c in cfg.classes for g in range(1, cfg.groups + 1) for k in range(1, cfg.clips_per_group + 1)]
    written = 0
    bar = tqdm(total=len(jobs), desc="SynthActions", unit="video", disable=not progress)
    if workers <= 1:
        for job in jobs:
            written += _write_one(str(root), *job, cfg)
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = [pool.submit(_write_one, str(root), *job, cfg) for job in jobs]
            for fut in as_completed(futures):
                written += fut.result()
                bar.update()
    bar.close()

    _write_text(root / "classInd.txt", [f"{i} {c}" for i, c in enumerate(cfg.classes, 1)])
    label = {c: i for i, c in enumerate(cfg.classes, 1)}
    splits, n_train, n_test = 0, 0, 0
    for split in (1, 2, 3):
        test = set(synth_test_groups(cfg.groups, split, cfg.test_groups))
        if not test:
            continue
        train_lines = [f"{name} {label[c]}" for name, c, g, _ in jobs if g not in test]
        test_lines = [name for name, _, g, _ in jobs if g in test]
        _write_text(root / f"trainlist{split:02d}.txt", train_lines)
        _write_text(root / f"testlist{split:02d}.txt", test_lines)
        splits += 1
        if split == 1:
            n_train, n_test = len(train_lines), len(test_lines)
    return SynthReport(
        root=root,
        classes=cfg.classes,
        videos=len(jobs),
        written=written,
        splits=splits,
        train_videos=n_train,
        test_videos=n_test,
        seconds=time.perf_counter() - start,
        per_class={c: cfg.groups * cfg.clips_per_group for c in cfg.classes},
        cue_strength=cfg.cue_strength,
        cued_videos=sum(place_cue(c, g, k, cfg) is not None for _, c, g, k in jobs),
    )
