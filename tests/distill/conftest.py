"""Small students and teachers for the distillation tests: paper-shaped, at a few thousand parameters."""

from __future__ import annotations

import pytest
import torch

from distilled_shufflenet.models import create_model, freeze

# the small student of the CPU-scale recipe: taps 64 / 128 channels, adapters of the same widths
SMALL_STUDENT = dict(widths=(16, 32, 64), units=(1, 1, 1), adapter_channels=(64, 128), clip_len=16, num_classes=4)


def small_student(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("shufflenet2plus1d", **{**SMALL_STUDENT, **overrides})


def narrow_teacher(name: str, seed: int = 1, **kwargs) -> torch.nn.Module:
    """A frozen narrow teacher whose taps have 64 / 128 channels: resnet18 at 1/4 width, r3d_18 at 1/4,
    r3d_50 at 1/16."""
    widen = {"resnet18": 0.25, "r3d_18": 0.25, "r3d_50": 0.0625}[name]
    torch.manual_seed(seed)
    model = create_model(name, num_classes=5, widen_factor=widen, **kwargs)
    # non-trivial BatchNorm statistics, so that a teacher left in training mode would show
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return freeze(model)


@pytest.fixture
def make_student():
    """``make_student(**overrides)``: the small student (seeded)."""
    return small_student


@pytest.fixture
def make_teacher():
    """``make_teacher(name, seed=1, **kwargs)``: a frozen narrow teacher."""
    return narrow_teacher


@pytest.fixture
def student() -> torch.nn.Module:
    return small_student()


@pytest.fixture
def teacher2d() -> torch.nn.Module:
    return narrow_teacher("resnet18")


@pytest.fixture
def teacher3d() -> torch.nn.Module:
    return narrow_teacher("r3d_18", seed=2)
