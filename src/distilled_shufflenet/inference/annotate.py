"""The annotated video of a stream: every input frame, with the current label and score drawn on it and
a timeline of the top class of the recent windows along the bottom edge.

Frames wait in :class:`Annotator` until the window that ends on or after them is labelled, so each
frame carries the label of the window it belongs to; the file is written beside its final name and
renamed when complete (:func:`~distilled_shufflenet.io.atomic_write`), so a failed run leaves none.
"""

from __future__ import annotations

import colorsys
import contextlib
import os
from fractions import Fraction
from typing import Sequence

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from distilled_shufflenet.inference.stream import Window
from distilled_shufflenet.io import atomic_write

TIMELINE_WINDOWS = 32


def class_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` well separated RGB colours, one per class."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.75, 0.95)) for i in range(n)]


class Annotator:
    """Writes ``path`` (MP4, H.264 where available) from frames and the windows labelling them.

    ``add_frame(i, rgb)`` queues frame ``i``; ``add_window(w)`` draws and writes every queued frame up to
    ``w.last_frame``; ``close()`` writes the rest with the last label and renames the file into place.
    """

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], fps: float) -> None:
        self.path, self.classes = path, list(classes)
        self.rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.colours = class_colours(len(self.classes))
        self.index = {c: k for k, c in enumerate(self.classes)}
        self.pending: list[tuple[int, np.ndarray]] = []
        self.timeline: list[int] = []  # top class of the recent windows
        self.label: tuple[str, float] | None = None
        self.written = 0
        self._stack = contextlib.ExitStack()
        self._file = self._stack.enter_context(atomic_write(path, "wb"))
        self._container = None
        self._stream = None
        self._font = ImageFont.load_default()

    def _open(self, height: int, width: int) -> None:
        self._container = av.open(self._file, "w", format="mp4")
        codec = "libx264" if "libx264" in av.codecs_available and height % 2 == 0 and width % 2 == 0 else "mpeg4"
        self._stream = self._container.add_stream(codec, rate=self.rate)
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, "yuv420p"
        if codec == "mpeg4":
            self._stream.bit_rate = 2_000_000

    def add_frame(self, index: int, rgb: np.ndarray) -> None:
        self.pending.append((index, rgb))

    def add_window(self, window: Window) -> None:
        self.label = window.smoothed[0]
        self.timeline = (self.timeline + [self.index.get(self.label[0], 0)])[-TIMELINE_WINDOWS:]
        ready = [p for p in self.pending if p[0] <= window.last_frame]
        self.pending = [p for p in self.pending if p[0] > window.last_frame]
        for _, rgb in ready:
            self._write(rgb)

    def _draw(self, rgb: np.ndarray) -> np.ndarray:
        image = Image.fromarray(rgb)
        draw = ImageDraw.Draw(image)
        h, w = rgb.shape[:2]
        if self.label is not None:
            text = f"{self.label[0]} {self.label[1]:.2f}"
            box = draw.textbbox((4, 4), text, font=self._font)
            draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
            draw.text((4, 4), text, fill=(255, 255, 255), font=self._font)
        bar = max(3, h // 30)
        cell = w / TIMELINE_WINDOWS
        for k, cls in enumerate(self.timeline):  # newest at the right edge
            x0 = w - (len(self.timeline) - k) * cell
            draw.rectangle((x0, h - bar, x0 + cell - 1, h - 1), fill=self.colours[cls])
        return np.asarray(image)

    def _write(self, rgb: np.ndarray) -> None:
        if self._container is None:
            self._open(*rgb.shape[:2])
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(self._draw(rgb)), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.written += 1

    def close(self) -> None:
        """Write the frames still queued, finish the file and move it into place."""
        for _, rgb in self.pending:
            self._write(rgb)
        self.pending = []
        if self._container is None:
            raise ValueError(f"annotated video {self.path}: no frame to write")
        for packet in self._stream.encode():
            self._container.mux(packet)
        self._container.close()
        self._stack.close()

    def abort(self) -> None:
        """Drop the partial file (nothing appears under ``path``)."""
        with contextlib.suppress(Exception):
            if self._container is not None:
                self._container.close()
        self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)
