"""The teacher cache's training clips: the view of each epoch, targets as stored, no label."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from distilled_shufflenet.distill.dataset import CachedViews, collate_distill


class FakeCache:
    """A cache of 3 videos and 2 views whose stored final 3D part is ``big`` for every view."""

    root, failed, spec = "cache", {}, SimpleNamespace(views=2)

    def __init__(self, big: torch.Tensor) -> None:
        self.big = big

    def __len__(self) -> int:
        return 3

    def draw(self, index: int, epoch: int) -> int:
        return (index + epoch) % 2

    def clip(self, index: int, k: int) -> torch.Tensor:
        return torch.full((3, 4, 8, 8), float(k))

    def stored(self, index: int, k: int) -> dict[str, torch.Tensor]:
        return {"final/3d": self.big.clone()}


def test_cached_views_keep_targets_beyond_the_float16_range() -> None:
    """Untrained deep teachers give maps of 1e5: the cache stores them scaled, and the training samples
    must carry them as they are (a float16 copy would be inf, and the loss with it)."""
    big = torch.full((4, 2, 3, 3), 1.5e5)
    views = CachedViews(FakeCache(big), seed=0)
    views.set_epoch(1)
    sample = views[0]
    assert "label" not in sample
    assert torch.isfinite(sample["targets"]["final/3d"]).all()
    assert torch.equal(sample["targets"]["final/3d"].float(), big)


def test_each_epoch_reads_the_view_the_cache_draws_and_batches_stack_the_parts() -> None:
    big = torch.arange(4 * 2 * 3 * 3, dtype=torch.float32).reshape(4, 2, 3, 3)
    views = CachedViews(FakeCache(big), seed=0)
    for epoch in (0, 1):
        views.set_epoch(epoch)
        for i in range(3):
            assert float(views[i]["clip"][0, 0, 0, 0]) == (i + epoch) % 2  # the clip of the drawn view
    batch = collate_distill([views[0], views[1]])
    assert batch["clip"].shape == (2, 3, 4, 8, 8) and batch["index"].tolist() == [0, 1]
    assert batch["targets"]["final/3d"].shape == (2, 4, 2, 3, 3) and torch.equal(batch["targets"]["final/3d"][1], big)
