"""What a distillation step computes: the targets of a batch, on the fly or from the cache."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from distilled_shufflenet.distill import DistillLoss
from distilled_shufflenet.distill.objective import Distillation


def test_without_the_cache_the_2d_teacher_sees_a_seeded_random_frame_of_each_clip() -> None:
    seen = []

    class Targets(torch.nn.Module):  # records the frame each clip shows the 2D teacher
        def forward(self, clips: torch.Tensor, index: torch.Tensor) -> dict:
            seen.append(index.clone())
            return {}

    objective = Distillation(Targets(), DistillLoss(), SimpleNamespace(taps=(), keys=()))
    cpu = torch.device("cpu")
    clips = torch.zeros(64, 3, 16, 1, 1)
    torch.manual_seed(7)
    objective.batch_targets({}, clips, cpu, frame="random")
    torch.manual_seed(7)  # the global generator, which a checkpoint saves and a resumed run restores
    assert torch.equal(seen[0], torch.randint(0, 16, (64,)))
    assert len(set(seen[0].tolist())) >= 12  # spread over the clip, not one fixed frame
    objective.batch_targets({}, clips, cpu, frame="middle")  # validation: the middle frame
    assert seen[1].tolist() == [8] * 64
