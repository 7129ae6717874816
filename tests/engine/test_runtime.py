"""Defaults that follow the machine."""

from __future__ import annotations

import pytest
import torch

from distilled_shufflenet.engine import runtime
from distilled_shufflenet.engine.config import TrainConfig
from distilled_shufflenet.engine.evaluate import EvalConfig
from distilled_shufflenet.engine.loop import make_loader


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (3, 3), (64, 4)])
def test_default_workers_never_exceed_the_cpus(monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    assert runtime.default_workers() == workers
    assert EvalConfig(data_root="x").workers == workers  # evaluated when the config is made


def test_loader_defaults_fit_this_machine() -> None:
    cpus = runtime.available_cpus()
    assert 1 <= TrainConfig().num_workers <= cpus and TrainConfig().num_workers == runtime.default_workers()
    assert 1 <= EvalConfig(data_root="x").workers <= cpus


class _Draws(torch.utils.data.Dataset):
    """Sample i: a random number (drawn under SeededSamples' generator) and the epoch the worker saw."""

    def __init__(self) -> None:
        self.seen = torch.zeros(1, dtype=torch.int64).share_memory_()

    def __len__(self) -> int:
        return 8

    def set_epoch(self, epoch: int) -> None:
        self.seen.fill_(epoch)

    def __getitem__(self, index: int) -> dict:
        return {"x": torch.rand(()), "epoch": int(self.seen.item()), "index": index}


def _epochs(workers: int, epochs: int = 3) -> list[list[tuple[int, float, int]]]:
    """Each epoch's (index, draw, epoch seen) through the run's loader, built once like ``fit`` builds it."""
    data = runtime.SeededSamples(_Draws(), seed=5)
    sampler = runtime.EpochSampler(data, seed=5)
    config = TrainConfig(num_workers=workers, batch_size=2)
    rt = runtime.Runtime(device=torch.device("cpu"))
    loader = make_loader(data, sampler, config, rt, train=True, collate_fn=lambda b: b)
    assert loader.persistent_workers == (workers > 0)
    out = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        data.set_epoch(epoch)
        out.append([(s["index"], float(s["x"]), s["epoch"]) for batch in loader for s in batch])
    return out


def test_persistent_workers_see_every_epoch() -> None:
    """The run's loader keeps its workers between epochs: they must still draw each epoch's samples, the
    same ones a loader without workers draws."""
    alone, workers = _epochs(0), _epochs(2)
    assert workers == alone
    assert [{e for _, _, e in ep} for ep in workers] == [{0}, {1}, {2}]
    assert workers[0] != workers[1]  # new order and new draws
