"""Re-encoding a video dataset to a smaller size, keeping its folder layout.

Decoding full-size video is most of the cost of reading a clip; a copy of the dataset whose short side
is already near the training size (UCF101 is 320x240; training crops are 112 or 224) makes every epoch
cheaper. :func:`prepare_videos` walks ``src``:

* every video (``.avi``, ``.mp4``, ``.mkv``, ``.webm``, ``.mov``) is decoded frame by frame with PyAV and
  encoded as it goes (a whole video is never held in memory) to the same relative path under ``dst``,
  with its short side scaled to ``short_side`` (aspect ratio kept, both sides even; videos already that
  small are not enlarged), the same frame rate, no audio, codec chosen by :func:`encode.default_codec`
  unless given;
* every other file (split lists, ``classInd.txt``, READMEs) is copied unchanged; hidden files are left out;
* a video that cannot be decoded is skipped and reported, never stopping the run;
* outputs are written atomically, so files already in ``dst`` are complete and are skipped: an
  interrupted run resumes where it stopped, and first deletes the temporary files a killed run left;
* a source with no video at all is an error (a wrong path, most likely).
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from tqdm import tqdm

from distilled_shufflenet.data.encode import CONTAINERS, VideoWriter, codec_available
from distilled_shufflenet.io import check_writable_folder, remove_stale_temporaries
from distilled_shufflenet.options import option

__all__ = ["VIDEO_EXTENSIONS", "PrepareConfig", "PrepareReport", "prepare_videos", "reencode_video",
           "scaled_size"]

VIDEO_EXTENSIONS: frozenset[str] = frozenset(CONTAINERS)


@dataclass
class PrepareConfig:
    """How to re-encode. ``codec=None`` picks the codec from the file extension (MPEG-4 Part 2 for
    ``.avi``); ``quality`` is on that codec's scale (see :mod:`encode`)."""

    short_side: int = option(128, "target short side in pixels")
    codec: str | None = option(None, "encoder, e.g. mpeg4 or libx264 (default: from the extension, mpeg4 for .avi)")
    quality: int | None = option(None, "constant quality on the codec's scale, lower is better (default: mpeg4 4, "
                                 "x264 CRF 18)")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.short_side < 2:
            raise ValueError(f"short_side: expected >= 2 pixels, got {self.short_side}")
        if self.codec is not None and not codec_available(self.codec):
            raise ValueError(f"codec: {self.codec!r} is not an encoder of this PyAV/FFmpeg build")


@dataclass
class PrepareReport:
    """What :func:`prepare_videos` did. ``failed`` lists ``(relative path, error)`` of skipped videos."""

    src: Path
    dst: Path
    converted: int = 0  # videos re-encoded by this run
    existing: int = 0  # videos already in dst (an earlier run)
    copied: int = 0  # other files copied
    failed: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    removed: int = 0  # temporary files of an interrupted earlier run, deleted

    @property
    def videos(self) -> int:
        return self.converted + self.existing + len(self.failed)

    @property
    def ok(self) -> bool:
        """True when every video of the source has its output."""
        return not self.failed

    def __str__(self) -> str:
        lines = [f"prepared {self.src} -> {self.dst}: {self.videos} videos ({self.converted} converted, "
                 f"{self.existing} already there, {len(self.failed)} unreadable), {self.copied} other files "
                 f"copied; {self.seconds:.1f} s"]
        if self.removed:
            lines.append(f"  deleted {self.removed} temporary file(s) an interrupted run had left in {self.dst}")
        lines += [f"  unreadable: {name}: {err}" for name, err in self.failed]
        return "\n".join(lines)


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """``(width, height)`` with the short side scaled to ``short_side`` (never enlarged), aspect ratio
    kept, both rounded to even numbers (4:2:0 video needs them)."""
    scale = min(1.0, short_side / min(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def reencode_video(src: str | os.PathLike[str], dst: str | os.PathLike[str],
                   config: PrepareConfig | None = None) -> Path:
    """Re-encode one video to ``dst`` (atomically) with its short side scaled to ``config.short_side``.

    Frames are decoded, resized and encoded one at a time.

    Raises:
        ValueError: ``src`` has no video stream or no decodable frame.
        av.FFmpegError: ``src`` is not a readable video.
    """
    cfg = config or PrepareConfig()
    with av.open(str(src)) as container:
        if not container.streams.video:
            raise ValueError(f"{src}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        writer = VideoWriter(dst, fps=rate, codec=cfg.codec, quality=cfg.quality)
        try:
            size = None
            for frame in container.decode(stream):
                if size is None:
                    size = scaled_size(frame.width, frame.height, cfg.short_side)
                rgb = frame.reformat(width=size[0], height=size[1], format="rgb24", interpolation="AREA")
                writer.write(rgb.to_ndarray())  # (H', W', 3) uint8
            if writer.frames_written == 0:
                raise ValueError(f"{src}: no decodable video frame")
        except BaseException:
            writer.abort()  # no partial output under the target name
            raise
    return writer.close()


def _convert(src: str, dst: str, cfg: PrepareConfig) -> str | None:
    """Worker: re-encode one video; returns None on success, else the error as one line."""
    try:
        reencode_video(src, dst, cfg)
    except Exception as e:  # noqa: BLE001 - any unreadable video is reported, never fatal
        return f"{type(e).__name__}: {e}".splitlines()[0]
    return None


def _copy(src: Path, dst: Path) -> bool:
    """Copy one non-video file atomically unless an identical-size copy is there. True if copied."""
    if dst.is_file() and dst.stat().st_size == src.stat().st_size:
        return False
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.part")  # see io.remove_stale_temporaries
    shutil.copy2(src, tmp)
    os.replace(tmp, dst)
    return True


def prepare_videos(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    config: PrepareConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> PrepareReport:
    """Re-encode every video under ``src`` into ``dst`` (same layout), copying the other files.

    Args:
        src: dataset root to read.
        dst: output root (created; must not be ``src`` or inside it).
        config: target short side, codec and quality (default :class:`PrepareConfig()`).
        workers: processes re-encoding in parallel (default ``min(2, cpu count)``; 1 works in this process).
        progress: show a tqdm progress bar.

    Returns:
        A :class:`PrepareReport`; unreadable videos are in ``failed`` and have no output.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: ``src`` is a file, or holds no video file; ``dst`` is ``src`` or inside it, or cannot
            be written.
    """
    start = time.perf_counter()
    cfg = config or PrepareConfig()
    src_root, dst_root = Path(src).resolve(), Path(dst).resolve()
    if not src_root.exists():
        raise FileNotFoundError(f"{src}: no such folder; expected the dataset folder to re-encode")
    if not src_root.is_dir():
        raise ValueError(f"{src}: is a file; expected the dataset folder to re-encode (its videos keep their "
                         "paths under the output folder)")
    if dst_root == src_root or src_root in dst_root.parents:
        raise ValueError(f"{dst}: the output folder must not be the source folder or inside it ({src})")
    report = PrepareReport(src=src_root, dst=dst_root)
    files = [p.relative_to(src_root) for p in sorted(src_root.rglob("*")) if p.is_file()]
    files = [rel for rel in files if not any(part.startswith(".") for part in rel.parts)]
    videos = [rel for rel in files if rel.suffix.lower() in VIDEO_EXTENSIONS]
    if not videos:  # nothing is written for a wrong path
        raise ValueError(f"{src}: no video file found (extensions: {' '.join(sorted(VIDEO_EXTENSIONS))}); "
                         "check the path")
    check_writable_folder(dst_root, "dst")
    report.removed = len(remove_stale_temporaries(dst_root))
    for rel in files:
        if rel.suffix.lower() not in VIDEO_EXTENSIONS:
            report.copied += _copy(src_root / rel, dst_root / rel)
    todo: list[Path] = []
    for rel in videos:
        if (dst_root / rel).is_file():  # written atomically, so complete
            report.existing += 1
        else:
            todo.append(rel)

    def done(rel: Path, error: str | None) -> None:
        if error is None:
            report.converted += 1
        else:
            report.failed.append((rel.as_posix(), error))

    workers = workers or min(2, os.cpu_count() or 1)
    bar = tqdm(total=len(todo), desc="prepare", unit="video", disable=not progress)
    if workers <= 1 or len(todo) <= 1:
        for rel in todo:
            done(rel, _convert(str(src_root / rel), str(dst_root / rel), cfg))
            bar.update()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(_convert, str(src_root / rel), str(dst_root / rel), cfg): rel for rel in todo}
            for fut in as_completed(futures):
                done(futures[fut], fut.result())
                bar.update()
    bar.close()
    report.failed.sort()
    report.seconds = time.perf_counter() - start
    return report
