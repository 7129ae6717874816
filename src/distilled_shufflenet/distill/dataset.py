"""The training clips of a teacher cache, and the batches they make.

::

    CachedViews(cache, seed)[i] in epoch e
        k = cache.draw(i, e)                       one of the K cached views of video i
        {"clip": cache.clip(i, k), "index": i, "targets": cache.stored(i, k)}    no label
    collate_distill(samples)                       clips stacked, and each stored part stacked

The targets stay as stored (the 2D teacher's one frame, the 3D teacher's own time steps); the objective
lays a whole batch on the student's slots at once (:meth:`~distilled_shufflenet.distill.SlotLayout.expand`).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from distilled_shufflenet.data import collate_clips
from distilled_shufflenet.distill.cache import TeacherCache

__all__ = ["CachedViews", "collate_distill"]


class CachedViews(Dataset):
    """The training clips of a teacher cache: sample ``i`` of epoch ``e`` is one of the K cached views
    of video ``i`` (:meth:`TeacherCache.draw`), decoded again, with its targets read from the cache as
    stored (:meth:`TeacherCache.stored`; the objective lays them on the slots, a whole batch at once):
    ``{"clip": (3, T, crop, crop), "index", "targets": {"mid/2d": (C, 1, H, W), ...}}`` and no label.
    A video that could not be read when the cache was built is replaced by another, and reported."""

    def __init__(self, cache: TeacherCache, seed: int) -> None:
        self.cache = cache
        self.seed = seed
        self._epoch = torch.zeros(1, dtype=torch.int64).share_memory_()  # seen by the DataLoader's workers
        self.readable = [i for i in range(len(cache)) if i not in cache.failed]
        if not self.readable:
            raise ValueError(f"teacher cache {cache.root}: no video of it could be read")

    def __len__(self) -> int:
        return len(self.cache)

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(int(epoch))

    def sample(self, video: int, k: int) -> dict[str, Any]:
        """View ``k`` of video ``video``: its clip decoded again and its targets as stored, in float32 (maps
        may exceed float16)."""
        return {"clip": self.cache.clip(video, k), "index": int(video), "targets": self.cache.stored(video, k)}

    def __getitem__(self, index: int) -> dict[str, Any]:
        epoch = int(self._epoch.item())
        rng = np.random.default_rng((self.seed, epoch, int(index)))
        failures = []
        used = int(index)
        if used in self.cache.failed:
            path, reason = self.cache.failed[used]
            failures.append({"index": used, "path": path, "reason": reason})
            used = self.readable[int(rng.integers(len(self.readable)))]
        sample = self.sample(used, self.cache.draw(used, epoch))
        if failures:
            sample["failures"] = failures
        return sample


def collate_distill(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """:func:`~distilled_shufflenet.data.collate_clips` plus the cached target parts, stacked per part."""
    batch = collate_clips([{k: v for k, v in s.items() if k != "targets"} for s in samples])
    ok = [s for s in samples if "clip" in s]
    if ok and "targets" in ok[0]:
        batch["targets"] = {key: torch.stack([s["targets"][key] for s in ok]) for key in ok[0]["targets"]}
    return batch
