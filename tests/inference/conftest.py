"""Tiny students, their checkpoints and short videos for the inference tests."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from distilled_shufflenet.data.encode import write_video
from distilled_shufflenet.engine.checkpointing import save_checkpoint
from distilled_shufflenet.inference.source import ModelInfo
from distilled_shufflenet.models import create_model

TINY_KWARGS = {"num_classes": 4, "widths": (8, 16, 32), "units": (1, 1, 1), "adapter_channels": (16, 32),
               "clip_len": 8}
CLASSES = ("Bow", "Clap", "Kick", "Punch")


def tiny_student(seed: int = 0) -> torch.nn.Module:
    """A 4-class student taking 8 x 32 x 32 clips, with BatchNorm statistics that are not the identity."""
    torch.manual_seed(seed)
    model = create_model("shufflenet2plus1d", **TINY_KWARGS)
    model.preprocess = model.preprocess.override(crop_size=32)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    return model.eval()


def tiny_info(model: torch.nn.Module, frame_stride: int = 1) -> ModelInfo:
    return ModelInfo("shufflenet2plus1d", dict(TINY_KWARGS), CLASSES, model.preprocess, frame_stride)


@pytest.fixture
def student() -> torch.nn.Module:
    return tiny_student()


@pytest.fixture
def info(student: torch.nn.Module) -> ModelInfo:
    return tiny_info(student)


def write_checkpoint(path: Path, model: torch.nn.Module, frame_stride: int = 1) -> Path:
    """A run checkpoint of ``model`` as ``dsn train`` writes it (the fields inference reads)."""
    return save_checkpoint(path, {
        "command": "train", "model_name": "shufflenet2plus1d", "model_kwargs": dict(TINY_KWARGS),
        "state_dict": model.state_dict(), "classes": list(CLASSES), "preprocess": model.preprocess.to_dict(),
        "config": {"frame_stride": frame_stride},
    })


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", tiny_student())


@pytest.fixture(scope="session")
def make_video(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``make_video(name, frames, height=48, width=64, fps=25)``: a video of moving noise, written once."""
    root = tmp_path_factory.mktemp("videos")

    def make(name: str, frames: int, height: int = 48, width: int = 64, fps: int = 25) -> Path:
        path = root / name
        if not path.exists():
            rng = np.random.default_rng(frames)
            base = rng.integers(0, 256, (height, width + frames, 3), dtype=np.uint8)
            write_video(path, np.stack([base[:, i:i + width] for i in range(frames)]), fps=fps)
        return path

    return make


@pytest.fixture
def make_info() -> Callable[..., ModelInfo]:
    """``make_info(model, frame_stride=1)``: the :class:`ModelInfo` of a tiny student."""
    return tiny_info
