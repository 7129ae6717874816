"""The annotated video of a stream: every input frame, with the current label and score drawn on it and
a timeline of the top class of the recent windows along the bottom edge.

Frames wait in :class:`Annotator` until the window that ends on or after them is labelled, so each
frame carries the label of the window it belongs to; the file is written beside its final name and
renamed when complete, so a failed run leaves none.
"""

from __future__ import annotations

import colorsys
import os
from fractions import Fraction
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from distilled_shufflenet.data.encode import VideoWriter
from distilled_shufflenet.inference.stream import Window

TIMELINE_WINDOWS = 32


def class_colours(n: int) -> list[tuple[int, int, int]]:
    """``n`` well separated RGB colours, one per class."""
    return [tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.75, 0.95)) for i in range(n)]


class Annotator:
    """Writes ``path`` (MP4: H.264) from frames and the windows labelling them, through
    :class:`~distilled_shufflenet.data.encode.VideoWriter` (atomic; odd sizes padded to even).

    ``add_frame(i, rgb)`` queues frame ``i``; ``add_window(w)`` draws and writes every queued frame up to
    ``w.last_frame``; ``close()`` writes the rest with the last label and moves the file into place;
    ``abort()`` drops it.
    """

    def __init__(self, path: str | os.PathLike, classes: Sequence[str], fps: float) -> None:
        self.classes = list(classes)
        self.colours = class_colours(len(self.classes))
        self.index = {c: k for k, c in enumerate(self.classes)}
        self.pending: list[tuple[int, np.ndarray]] = []
        self.timeline: list[int] = []  # top class of the recent windows
        self.label: tuple[str, float] | None = None
        self.written = 0
        rate = Fraction(fps).limit_denominator(1001) if fps > 0 else Fraction(25)
        self.writer = VideoWriter(path, fps=rate, quality=23)
        self._font = ImageFont.load_default()

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
        self.writer.write(self._draw(rgb))
        self.written += 1

    def close(self) -> None:
        """Write the frames still queued, finish the file and move it into place."""
        for _, rgb in self.pending:
            self._write(rgb)
        self.pending = []
        self.writer.close()

    def abort(self) -> None:
        """Drop the partial file (nothing appears under the target name)."""
        self.writer.abort()
