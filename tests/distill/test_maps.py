"""The target / student heatmap figure."""

from __future__ import annotations

import numpy as np
import torch
from matplotlib.image import imread

from distilled_shufflenet.distill import TargetBuilder
from distilled_shufflenet.distill.plots import plot_distillation


def test_heatmaps_are_written_atomically_and_leave_the_student_as_it_was(tmp_path, student, teacher2d,
                                                                        teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    clip = torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    path = plot_distillation(student, builder, clip, tmp_path / "maps" / "epoch_001.png", frame_index=3, title="e1")
    assert path == tmp_path / "maps" / "epoch_001.png"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 200
    assert np.std(image[..., :3]) > 0.05  # not a blank canvas
    assert [p.name for p in path.parent.iterdir()] == ["epoch_001.png"]  # no temporary left behind
    assert student.training
    for k, v in student.state_dict().items():
        assert torch.equal(v, before[k]), f"{k} changed: BatchNorm statistics must not move while plotting"
