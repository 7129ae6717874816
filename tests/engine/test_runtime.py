"""Defaults that follow the machine."""

from __future__ import annotations

import pytest

from distilled_shufflenet.engine import runtime
from distilled_shufflenet.engine.config import TrainConfig
from distilled_shufflenet.engine.evaluate import EvalConfig


@pytest.mark.parametrize(("cpus", "workers"), [(1, 1), (2, 2), (3, 3), (64, 4)])
def test_default_workers_never_exceed_the_cpus(monkeypatch: pytest.MonkeyPatch, cpus: int, workers: int) -> None:
    monkeypatch.setattr(runtime, "available_cpus", lambda: cpus)
    assert runtime.default_workers() == workers
    assert EvalConfig(data_root="x").workers == workers  # evaluated when the config is made


def test_loader_defaults_fit_this_machine() -> None:
    cpus = runtime.available_cpus()
    assert 1 <= TrainConfig().num_workers <= cpus and TrainConfig().num_workers == runtime.default_workers()
    assert 1 <= EvalConfig(data_root="x").workers <= cpus
