"""Writing RGB frames to a video file with PyAV, atomically.

The container comes from the file extension and each container has a default codec:

=========  ==========  ==================  ======================================
extension  container   default codec       ``quality`` scale (lower = better)
=========  ==========  ==================  ======================================
``.avi``   AVI         ``mpeg4`` (XVID)    quantiser 1..31, default 4
``.mp4``   MP4         ``libx264``         CRF 0..51, default 18
``.mkv``   Matroska    ``libx264``         CRF 0..51, default 18
``.webm``  WebM        ``libvpx-vp9``      CRF 0..63, default 24
``.mov``   QuickTime   ``libx264``         CRF 0..51, default 18
``.m4v``   MP4         ``libx264``         CRF 0..51, default 18
``.mpg``   MPEG-PS     ``mpeg2video``      quantiser 1..31, default 4 (also ``.mpeg``)
=========  ==========  ==================  ======================================

``mpeg4`` in an AVI tagged ``XVID`` is what UCF101 and HMDB51 ship. Passing ``bitrate`` instead of
``quality`` switches to average-bitrate coding.

Odd sizes: 4:2:0 chroma subsampling (``yuv420p``, the only format every player and the MPEG-4 Part 2
encoder accept) needs an even width and height, so a frame with an odd dimension is padded to the next
even size by repeating its last row / column. The written video can therefore be one pixel taller or
wider than the frames given; the pixels given are kept as they are.

Files are written atomically: the video goes to a hidden temporary file in the target folder, which is
renamed over the target only once the container is closed, so a reader never sees a half-written video and
an interrupted run leaves no file under the target name.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import av
import numpy as np

__all__ = ["CONTAINERS", "VideoWriter", "codec_available", "default_codec", "write_video"]

# extension -> (FFmpeg muxer name, default codec)
CONTAINERS: dict[str, tuple[str, str]] = {
    ".avi": ("avi", "mpeg4"),
    ".mp4": ("mp4", "libx264"),
    ".mkv": ("matroska", "libx264"),
    ".webm": ("webm", "libvpx-vp9"),
    ".mov": ("mov", "libx264"),
    ".m4v": ("mp4", "libx264"),
    ".mpg": ("mpeg", "mpeg2video"),
    ".mpeg": ("mpeg", "mpeg2video"),
}

# codec -> default value of `quality` on that codec's own constant-quality scale
_DEFAULT_QUALITY: dict[str, int] = {
    "mpeg4": 4, "mpeg2video": 4, "mpeg1video": 4, "libx264": 18, "libx265": 22, "libvpx-vp9": 24, "libvpx": 10,
}  # fmt: skip
# encoders whose constant quality is a fixed quantiser rather than a "crf" option
_QUANTISER_CODECS = frozenset({"mpeg4", "mpeg2video", "mpeg1video", "mjpeg"})

_PIX_FMT = "yuv420p"


def _container_for(path: Path) -> tuple[str, str]:
    ext = path.suffix.lower()
    if ext not in CONTAINERS:
        raise ValueError(
            f"{path}: unsupported video extension {ext!r}; expected one of {', '.join(sorted(CONTAINERS))}"
        )
    return CONTAINERS[ext]


def codec_available(codec: str) -> bool:
    """True if this build of PyAV/FFmpeg has an encoder named ``codec``."""
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # noqa: BLE001 - PyAV raises several types for unknown codecs
        return False
    return True


def default_codec(path: str | os.PathLike[str]) -> str:
    """The codec :func:`write_video` uses for ``path`` when none is given (from its extension)."""
    return _container_for(Path(path))[1]


def _even(n: int) -> int:
    return n + (n % 2)


class VideoWriter:
    """Streams RGB frames into a video file; the file appears under its name only on :meth:`close`.

    Use as a context manager: leaving the block normally commits the file, leaving it by an exception
    deletes the temporary file and leaves any existing target untouched::

        with VideoWriter("clip.avi", fps=25) as w:
            for frame in frames:  # each (H, W, 3) uint8 RGB
                w.write(frame)

    The frame size is fixed by the first frame written (padded to even, see the module docstring).

    Args:
        path: target file; its extension picks the container (``.avi``, ``.mp4``, ``.mkv``, ``.webm``,
            ``.mov``, ``.m4v``, ``.mpg``, ``.mpeg``).
        fps: frame rate (an int, a float or a ``Fraction`` such as ``30000/1001``).
        codec: encoder name (``"mpeg4"``, ``"libx264"``, ``"libvpx-vp9"``...); default from the extension.
        quality: constant quality on the codec's own scale (lower is better; see the module table).
            Ignored when ``bitrate`` is given.
        bitrate: average bitrate in bits per second, instead of constant quality.
        threads: encoder threads. 1 (the default) keeps the output reproducible and suits process pools.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        fps: float | Fraction = 25,
        codec: str | None = None,
        quality: int | None = None,
        bitrate: int | None = None,
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        self._format, default = _container_for(self.path)
        self.codec = codec or default
        if not codec_available(self.codec):
            raise ValueError(f"{self.path}: codec {self.codec!r} is not available in this PyAV/FFmpeg build")
        if fps <= 0:
            raise ValueError(f"{self.path}: fps must be > 0, got {fps}")
        self.fps = Fraction(fps).limit_denominator(1001 * 1000)
        self.quality = quality
        self.bitrate = bitrate
        self.threads = threads
        self.frames_written = 0
        self._container: av.container.OutputContainer | None = None
        self._stream: av.video.stream.VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (H, W) of the frames given
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # hidden, unique and in the same folder, so that the final rename is atomic
        self._tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
        self._closed = False

    # -- encoding ------------------------------------------------------------------------------------

    def _open_stream(self, height: int, width: int) -> None:
        container = av.open(str(self._tmp), mode="w", format=self._format)
        stream = container.add_stream(self.codec, rate=self.fps)
        stream.width, stream.height = _even(width), _even(height)
        stream.pix_fmt = _PIX_FMT
        ctx = stream.codec_context
        ctx.thread_count = self.threads
        options: dict[str, str] = {}
        if self.bitrate is not None:
            ctx.bit_rate = int(self.bitrate)
        else:
            q = self.quality if self.quality is not None else _DEFAULT_QUALITY.get(self.codec)
            if q is not None:
                if self.codec in _QUANTISER_CODECS:
                    ctx.qmin = ctx.qmax = int(q)  # a fixed quantiser: constant quality
                else:
                    options["crf"] = str(int(q))
                    if self.codec.startswith("libvpx"):
                        options["b"] = "0"  # pure constant-quality mode for VP8/VP9
        if self.codec == "mpeg4" and self._format == "avi":
            ctx.codec_tag = "XVID"  # the fourcc UCF101 and HMDB51 files carry
        if self.codec == "libx264":
            options.setdefault("preset", "medium")
        stream.options = options
        self._container, self._stream = container, stream
        self._size = (height, width)

    def write(self, frame: np.ndarray) -> None:
        """Encode one ``(H, W, 3)`` uint8 RGB frame."""
        if self._closed:
            raise ValueError(f"{self.path}: writer already closed")
        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(
                f"{self.path}: expected a frame of shape (H, W, 3) and dtype uint8, "
                f"got shape {tuple(frame.shape)} and dtype {frame.dtype}"
            )
        h, w = frame.shape[:2]
        if self._container is None:
            if h < 2 or w < 2:
                raise ValueError(f"{self.path}: frames must be at least 2x2 pixels, got {w}x{h}")
            self._open_stream(h, w)
        elif (h, w) != self._size:
            raise ValueError(f"{self.path}: frame {self.frames_written} is {w}x{h}, earlier frames were "
                             f"{self._size[1]}x{self._size[0]}")
        if h % 2 or w % 2:
            frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")  # (H', W', 3), even
        vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")
        vf.pts = self.frames_written
        vf.time_base = 1 / self.fps
        assert self._container is not None and self._stream is not None
        self._container.mux(self._stream.encode(vf))
        self.frames_written += 1

    def write_all(self, frames: Iterable[np.ndarray]) -> None:
        """Encode every frame of ``frames`` (a ``(T, H, W, 3)`` array or an iterable of frames)."""
        for frame in frames:
            self.write(frame)

    # -- committing ----------------------------------------------------------------------------------

    def close(self) -> Path:
        """Flush the encoder, close the container and move the file to its name. Returns the path."""
        if self._closed:
            return self.path
        if self._container is None:
            self.abort()
            raise ValueError(f"{self.path}: no frames were written")
        try:
            assert self._stream is not None
            self._container.mux(self._stream.encode(None))
            self._container.close()
            os.replace(self._tmp, self.path)
        except BaseException:
            self.abort()
            raise
        self._closed = True
        return self.path

    def abort(self) -> None:
        """Drop the partial file; the target (if it existed before) is left untouched."""
        self._closed = True
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_video(
    path: str | os.PathLike[str],
    frames: np.ndarray | Iterable[np.ndarray],
    *,
    fps: float | Fraction = 25,
    codec: str | None = None,
    quality: int | None = None,
    bitrate: int | None = None,
    threads: int = 1,
) -> Path:
    """Write RGB frames to a video file atomically and return its path.

    Args:
        path: target file; the extension picks the container (see the module docstring).
        frames: ``(T, H, W, 3)`` uint8 RGB array, or an iterable of ``(H, W, 3)`` uint8 frames.
        fps, codec, quality, bitrate, threads: as for :class:`VideoWriter`.

    Returns:
        ``Path(path)``. The video has T frames of size ``H x W`` rounded up to even numbers.

    Raises:
        ValueError: unknown extension or codec, bad frame shape / dtype, or no frames.
    """
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3):
        raise ValueError(f"{path}: expected frames of shape (T, H, W, 3), got {tuple(frames.shape)}")
    with VideoWriter(path, fps=fps, codec=codec, quality=quality, bitrate=bitrate, threads=threads) as w:
        w.write_all(frames)
    return w.path
