"""Decoding video files with PyAV: RGB frames by index, cheap probing, clear errors.

A frame's index is its position among the frames the decoder presents, counted from the start of the
file (not ``time * fps``), so variable-frame-rate files and files with odd timestamps index the same way
as a full decode::

    path, indices ──> open ──> seek to the keyframe before min(indices) ──> decode forward to
    max(indices) ──> RGB only for the frames kept ──> (T, H, W, 3) uint8, in the order asked

Seeking is exact: a per-file index of packet timestamps, built once (by demuxing, without decoding) and
cached, maps the timestamp of each frame decoded after a seek to its index, and every frame is checked
against that mapping; where the codec or the file does not allow it (no timestamps, duplicates, frames
that are coded but never shown, labels that disagree with the decoder's order) the reader decodes from
the start instead and counts.

Grey, 10-bit and other pixel formats are converted to 8-bit RGB; rotation metadata (display matrix, or
the older ``rotate`` tag) is applied; audio streams are ignored. Every failure is a
:class:`VideoDecodeError` naming the file and what went wrong.
"""

from __future__ import annotations

import itertools
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from distilled_shufflenet._text import first_line

__all__ = ["VIDEO_EXTENSIONS", "VideoDecodeError", "VideoInfo", "VideoReader", "probe_video", "read_frames"]

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mkv", ".webm", ".mov", ".m4v", ".mpg", ".mpeg")

# Codecs where every packet in the container is exactly one presented frame, so packet timestamps rank
# frames.  Others (VP8 with hidden alt-ref frames, ...) are decoded from the start, which is always exact.
_ONE_FRAME_PER_PACKET = frozenset(
    {"mpeg4", "h264", "hevc", "mpeg1video", "mpeg2video", "mjpeg", "ffv1", "rawvideo", "vp9", "av1"}
)
# Seeking pays for building the packet index only when it skips at least this many frames.
_MIN_SEEK_GAP = 16
# Packets that fail to decode are skipped (as FFmpeg does); this many failures in a row end the read.
_MAX_DECODE_ERRORS = 50
_INDEX_CACHE_SIZE = 256
_COUNT_CACHE_SIZE = 8192


class VideoDecodeError(ValueError):
    """A video cannot be read: ``path`` names the file and ``reason`` says what went wrong."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"video {self.path}: {reason}")

    def __reduce__(self):  # picklable across DataLoader worker processes
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` reports about a video stream.

    ``width`` x ``height`` is the frame size as :func:`read_frames` returns it, i.e. after ``rotation``
    (degrees counter-clockwise, one of 0/90/180/270) has been applied.  ``counted`` is True when
    ``num_frames`` was counted by decoding: when asked to, or because the container's count was missing,
    implausible, or found wrong by an earlier read of the same file in this process.
    """

    num_frames: int
    fps: float
    duration: float
    width: int
    height: int
    codec: str
    rotation: int
    counted: bool = False


@dataclass(frozen=True)
class _PacketIndex:
    """Timestamps of one file's video packets: pts -> frame index, and the keyframes to seek to."""

    rank: dict[int, int]
    keyframes: tuple[tuple[int, int], ...]  # (frame index, seek timestamp), increasing


class _LostTrack(Exception):
    """Frames decoded after a seek cannot be matched to indices with certainty."""


class _LRU(OrderedDict):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def put(self, key, value) -> None:
        self[key] = value
        self.move_to_end(key)
        while len(self) > self.size:
            self.popitem(last=False)


_INDEX_CACHE = _LRU(_INDEX_CACHE_SIZE)
_COUNT_CACHE = _LRU(_COUNT_CACHE_SIZE)


def _file_key(path: Path) -> tuple[str, int, int]:
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns)


def av_error_reason(e: BaseException) -> str:
    """The message of an error, without PyAV's "[Errno N]" prefix and repeated file name."""
    text = getattr(e, "strerror", None) if isinstance(e, av.FFmpegError) else None
    return first_line(text) if text and text.strip() else first_line(e)


class VideoReader:
    """One open video file; reads frames by index and probes it, sharing one decoder.

    Use as a context manager.  Reads continue forward from where the last one stopped, so asking for
    increasing windows of one file decodes it once; :meth:`read` seeks when a keyframe lets it skip
    enough frames.

    Args:
        path: the video file.
        count: count the frames by decoding even where the container states a count.
        threads: decoder threads; 1 (the default) suits DataLoader worker processes, 0 lets FFmpeg choose.
    """

    def __init__(self, path: str | os.PathLike, *, count: bool = False, threads: int = 1) -> None:
        self.path = Path(path)
        self._count = count
        self._threads = threads
        # One single-threaded RGB converter per reader: PyAV's default creates a converter, with a pool of
        # slice threads, for every frame, which costs more than the conversion and can hang forked workers.
        self._rgb = VideoReformatter()
        self._container: av.container.InputContainer | None = None
        self._cursor: Iterator[tuple[int, av.VideoFrame]] = iter(())
        self._pos = 0  # index of the next frame the cursor yields
        self._end: int | None = None  # number of presented frames, once known
        self._errors = 0
        self._first_error = ""
        self._info: VideoInfo | None = None
        self._open()

    # ------------------------------------------------------------------ opening
    def _fail(self, reason: str) -> VideoDecodeError:
        return VideoDecodeError(self.path, reason)

    def _open(self) -> None:
        self.close()
        if not self.path.exists():
            raise self._fail("cannot open: no such file")
        if self.path.is_dir():
            raise self._fail("cannot open: is a directory")
        if self.path.stat().st_size == 0:
            raise self._fail("cannot open: empty file (0 bytes)")
        try:
            container = av.open(str(self.path), metadata_errors="ignore")
        except (av.FFmpegError, OSError, UnicodeDecodeError) as e:
            raise self._fail(f"cannot open: {av_error_reason(e)}") from None
        if not container.streams.video:
            kinds = sorted({s.type for s in container.streams}) or ["none"]
            container.close()
            raise self._fail(f"no video stream (streams: {', '.join(kinds)})")
        self._container = container
        self._stream = container.streams.video[0]
        self._stated = int(self._stream.frames or 0)
        self._stream.codec_context.thread_count = self._threads
        if self._threads != 1:
            self._stream.codec_context.thread_type = "AUTO"
        for s in container.streams:
            if s is not self._stream:
                s.discard = av.stream.Discard.all  # audio and other streams are skipped by the demuxer
        self._cursor = self._sequential()
        self._pos = 0

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ decoding
    def _frames(self) -> Iterator[av.VideoFrame]:
        """Frames from the container's current position, skipping packets that fail to decode."""
        errors_in_row = 0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.FFmpegError as e:
                    self._errors += 1
                    self._first_error = self._first_error or av_error_reason(e)
                    errors_in_row += 1
                    if errors_in_row > _MAX_DECODE_ERRORS:
                        return
                    continue
                errors_in_row = 0
                yield from frames
        except (av.FFmpegError, OSError) as e:  # the container itself is truncated or corrupt
            self._errors += 1
            self._first_error = self._first_error or av_error_reason(e)

    def _sequential(self) -> Iterator[tuple[int, av.VideoFrame]]:
        """(index, frame) from the start of the file, counting: exact by definition."""
        i = -1
        for i, frame in enumerate(self._frames()):
            yield i, frame
        self._set_end(i + 1)

    def _after_seek(self, ts: int, first: int, index: _PacketIndex) -> Iterator[tuple[int, av.VideoFrame]]:
        """(index, frame) after seeking to ``ts``; each frame's pts must map to the next index."""
        try:
            self._container.seek(ts, stream=self._stream, backward=True, any_frame=False)
        except av.FFmpegError:
            raise _LostTrack() from None
        pos = None
        for frame in self._frames():
            k = index.rank.get(frame.pts) if frame.pts is not None else None
            if pos is None:
                if k is None or k > first:
                    raise _LostTrack()
                pos = k
            else:
                pos += 1
                if k != pos:
                    raise _LostTrack()
            yield pos, frame
        if pos is None:
            raise _LostTrack()
        self._set_end(pos + 1)

    def _set_end(self, n: int) -> None:
        self._end = n
        if n > 0:
            _COUNT_CACHE.put(_file_key(self.path), n)

    def _packet_index(self) -> _PacketIndex | None:
        """The cached packet index of this file, or None where packets do not rank frames."""
        if self._stream.codec_context.name not in _ONE_FRAME_PER_PACKET:
            return None
        key = _file_key(self.path)
        if key in _INDEX_CACHE:
            return _INDEX_CACHE[key]
        pts: list[int] = []
        keys: list[tuple[int, int]] = []  # (pts, seek timestamp)
        try:
            with av.open(str(self.path), metadata_errors="ignore") as c:
                s = c.streams.video[0]
                for p in c.demux(s):
                    if p.size == 0:
                        continue
                    if p.pts is None:
                        pts = []
                        break
                    pts.append(p.pts)
                    if p.is_keyframe:
                        keys.append((p.pts, p.dts if p.dts is not None else p.pts))
        except (av.FFmpegError, OSError):
            pts = []
        index = None
        if pts and len(set(pts)) == len(pts):
            rank = {t: i for i, t in enumerate(sorted(pts))}
            index = _PacketIndex(rank, tuple(sorted((rank[t], ts) for t, ts in keys)))
        _INDEX_CACHE.put(key, index)
        return index

    def _seek_point(self, first: int) -> tuple[int, int, _PacketIndex] | None:
        """(keyframe index, seek timestamp, index) to start from for frame ``first``, if worth a seek."""
        if first - self._pos < _MIN_SEEK_GAP and self._pos <= first:
            return None  # continuing forward is cheap enough
        entries = self._stream.index_entries
        if len(entries) and sum(1 for _ in itertools.islice((e for e in entries if e.is_keyframe), 2)) < 2:
            return None  # a single keyframe: nothing to seek to but the start
        index = self._packet_index()
        if index is None:
            return None
        best = None
        for k, ts in index.keyframes:
            if k > first:
                break
            best = (k, ts)
        if best is None or best[0] == 0 or (self._pos <= first and best[0] - self._pos < _MIN_SEEK_GAP):
            return None
        return best[0], best[1], index

    def _restart(self) -> None:
        """Reopen and decode from the first frame."""
        self._open()

    def _collect(self, wanted: np.ndarray, allow_seek: bool) -> dict[int, np.ndarray]:
        first, last = int(wanted[0]), int(wanted[-1])
        point = self._seek_point(first) if allow_seek else None
        if point is not None:
            k, ts, index = point
            self._cursor = self._after_seek(ts, first, index)
            self._pos = k  # at least; the mapping decides
        elif self._pos > first:
            self._restart()
        kept: dict[int, np.ndarray] = {}
        todo = set(wanted.tolist())
        for i, frame in self._cursor:
            self._pos = i + 1
            if i in todo:
                try:
                    kept[i] = self._to_rgb(frame)
                except (av.FFmpegError, ValueError) as e:
                    reason = f"cannot convert frame {i} ({frame.format.name}) to RGB: {av_error_reason(e)}"
                    raise self._fail(reason) from None
            if i >= last:
                break
        return kept

    def _to_rgb(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = self._rgb.reformat(frame, format="rgb24", threads=1).to_ndarray()  # (H, W, 3)
        quarter_turns = round(frame.rotation / 90) % 4
        if not quarter_turns:
            return rgb
        return np.rot90(rgb, quarter_turns)  # counter-clockwise, as the display matrix says

    # ------------------------------------------------------------------ public
    @property
    def info(self) -> VideoInfo:
        """Stream metadata, checked by decoding the first frame (frame count counted where needed)."""
        if self._info is None:
            self._info = self._probe()
        return self._info

    @property
    def stated_frames(self) -> int:
        """The frame count the container states (0 where it states none)."""
        return self._stated

    @property
    def decode_errors(self) -> int:
        """Packets that failed to decode so far (skipped), and the first error's message."""
        return self._errors

    @property
    def first_error(self) -> str:
        return self._first_error

    @property
    def num_frames(self) -> int:
        """Presented frames: the container's count until a read runs past the real end."""
        return self._end if self._end is not None else self.info.num_frames

    def _probe(self) -> VideoInfo:
        s = self._stream
        try:
            first = next(self._cursor)
        except StopIteration:
            self._end = 0
            detail = f" ({self._first_error})" if self._first_error else ""
            raise self._fail(f"no frames decoded{detail}") from None
        self._cursor = itertools.chain([first], self._cursor)
        frame = first[1]
        rotation = round(frame.rotation / 90) % 4 * 90
        if not rotation and "rotate" in s.metadata:  # older files: clockwise degrees in a tag
            try:
                rotation = round(-float(s.metadata["rotate"]) / 90) % 4 * 90
            except ValueError:
                rotation = 0
        width, height = (frame.width, frame.height) if rotation in (0, 180) else (frame.height, frame.width)
        rate = s.average_rate or s.guessed_rate or s.base_rate
        fps = float(rate) if rate else 0.0
        if s.duration is not None and s.time_base is not None:
            duration = float(s.duration * s.time_base)
        elif self._container.duration is not None:
            duration = self._container.duration / av.time_base
        else:
            duration = 0.0
        num_frames, counted = self._frame_count(self._stated, fps, duration)
        if not duration and fps:
            duration = num_frames / fps
        if not fps and duration:
            fps = num_frames / duration
        return VideoInfo(num_frames, fps, duration, width, height, s.codec_context.name, rotation, counted)

    def _frame_count(self, stated: int, fps: float, duration: float) -> tuple[int, bool]:
        cached = _COUNT_CACHE.get(_file_key(self.path))
        if cached is not None and cached != stated and not self._count:
            return cached, True  # an earlier read found the container's count wrong
        if stated > 0 and not self._count:
            expected = duration * fps
            if not expected or abs(stated - expected) <= max(2.0, 0.1 * expected):
                return stated, False
        # missing or implausible: count presented frames without converting any
        for i, _ in self._cursor:
            self._pos = i + 1
        n = self._end or 0
        self._restart()
        self._end = n
        if n == 0:
            raise self._fail("no frames decoded")
        return n, True

    def read(self, indices: Sequence[int] | np.ndarray) -> np.ndarray:
        """RGB frames at ``indices`` (any order, repeats allowed) as ``(T, H, W, 3)`` uint8."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"{self.path}: indices must be a non-empty 1-D sequence of ints, got {indices!r}")
        idx = idx.astype(np.int64)
        wanted = np.unique(idx)
        if wanted[0] < 0:
            raise self._fail(f"frame index {int(wanted[0])} out of range (indices must be >= 0)")
        self.info  # noqa: B018 - fails early on a file with no decodable frame
        if self._end is not None and wanted[-1] >= self._end:
            raise self._out_of_range(int(wanted[-1]))
        try:
            kept = self._collect(wanted, allow_seek=True)
        except _LostTrack:
            self._restart()
            kept = self._collect(wanted, allow_seek=False)
        if len(kept) < len(wanted):
            missing = next(int(i) for i in wanted if int(i) not in kept)
            raise self._out_of_range(missing)
        sizes = {a.shape for a in kept.values()}
        if len(sizes) > 1:
            raise self._fail(f"the frame size changes within the video ({', '.join(map(str, sorted(sizes)))})")
        return np.stack([kept[int(i)] for i in idx])  # (T, H, W, 3)

    def _out_of_range(self, index: int) -> VideoDecodeError:
        n = self._end if self._end is not None else self.info.num_frames
        detail = f"; decoding stopped at: {self._first_error}" if self._first_error else ""
        return self._fail(f"frame index {index} out of range: the video has {n} decodable frames{detail}")


def probe_video(path: str | os.PathLike, *, count: bool = False) -> VideoInfo:
    """Frame count, fps, duration, size, codec and rotation of a video, mostly from its metadata.

    The first frame is decoded to check that the file decodes and to read its rotation.  The frame count
    is the container's, unless it is missing, implausible for the stated duration and rate, or ``count``
    is set: then frames are counted by decoding them (without converting any), and the count is cached.
    """
    with VideoReader(path, count=count) as reader:
        return reader.info


def read_frames(path: str | os.PathLike, indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """The frames of ``path`` at ``indices`` as RGB ``(len(indices), H, W, 3)`` uint8.

    Indices may repeat and need not be sorted; they count presented frames from the first.  Raises
    :class:`VideoDecodeError` if the file cannot be opened, has no video stream, has no decodable frame,
    or has no frame at some index.
    """
    with VideoReader(path) as reader:
        return reader.read(indices)
