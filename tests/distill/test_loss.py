"""The distillation loss: its value, its options, and a few optimisation steps that must lower it while the
teachers stay exactly as they were."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from distilled_shufflenet.distill import DistillLoss, TargetBuilder, student_maps


def _parts(shapes: dict, seed: int, grad: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(*s, generator=g).requires_grad_(grad) for k, s in shapes.items()}


SHAPES = {"mid/2d": (2, 8, 2, 3, 3), "mid/3d": (2, 8, 2, 3, 3), "final/2d": (2, 16, 1, 2, 2),
          "final/3d": (2, 16, 1, 2, 2)}


def test_default_is_the_papers_weighted_mse_of_the_joined_maps() -> None:
    s, t = _parts(SHAPES, 0, grad=True), _parts(SHAPES, 1)
    loss, parts = DistillLoss()(s, t)
    mid = F.mse_loss(torch.cat([s["mid/2d"], s["mid/3d"]], 2), torch.cat([t["mid/2d"], t["mid/3d"]], 2))
    final = F.mse_loss(torch.cat([s["final/2d"], s["final/3d"]], 2), torch.cat([t["final/2d"], t["final/3d"]], 2))
    torch.testing.assert_close(loss, 0.1 * mid + 0.9 * final)
    torch.testing.assert_close(parts["mid"], mid.detach())
    torch.testing.assert_close(parts["final/3d"], F.mse_loss(s["final/3d"], t["final/3d"]).detach())
    assert sorted(parts) == sorted(["loss", "mid", "final", "mid/2d", "mid/3d", "final/2d", "final/3d"])
    assert loss.requires_grad and not any(v.requires_grad for v in parts.values())


def test_loss_options() -> None:
    s, t = _parts(SHAPES, 0), _parts(SHAPES, 1)
    w = {"mid": 1.0, "final": 0.0}
    torch.testing.assert_close(DistillLoss(w, "smooth_l1")(s, t)[0],
                               F.smooth_l1_loss(torch.cat([s["mid/2d"], s["mid/3d"]], 2),
                                                torch.cat([t["mid/2d"], t["mid/3d"]], 2)))
    # normalised maps: a teacher's scale no longer matters
    scaled = {k: 10.0 * v for k, v in t.items()}
    a, b = DistillLoss(kind="mse_normalized")(s, t)[0], DistillLoss(kind="mse_normalized")(s, scaled)[0]
    torch.testing.assert_close(a, b)
    assert not torch.allclose(DistillLoss()(s, t)[0], DistillLoss()(s, scaled)[0])
    with pytest.raises(ValueError, match="loss must be one of"):
        DistillLoss(kind="l2")
    with pytest.raises(ValueError, match="tap_weights"):
        DistillLoss({"mid": -1.0, "final": 1.0})
    with pytest.raises(ValueError, match="no weight for tap 'final'"):
        DistillLoss({"mid": 1.0})(s, t)
    with pytest.raises(ValueError, match="part mid/2d"):
        DistillLoss()({**s, "mid/2d": s["mid/2d"][:1]}, t)



def test_teacher_weights_give_a_weighted_mean_within_each_tap() -> None:
    s, t = _parts(SHAPES, 0), _parts(SHAPES, 1)
    each = {k: F.mse_loss(s[k], t[k]) for k in SHAPES}
    # equal weights, whatever their value, are the paper's plain mean
    torch.testing.assert_close(DistillLoss(teacher_weights={"2d": 3.0, "3d": 3.0})(s, t)[0], DistillLoss()(s, t)[0])
    loss, parts = DistillLoss(teacher_weights={"2d": 0.25, "3d": 1.0})(s, t)
    # mid: the two teachers have the same number of elements; final too
    mid = (0.25 * each["mid/2d"] + each["mid/3d"]) / 1.25
    final = (0.25 * each["final/2d"] + each["final/3d"]) / 1.25
    torch.testing.assert_close(loss, 0.1 * mid + 0.9 * final)
    torch.testing.assert_close(parts["final/2d"], each["final/2d"])  # per-teacher parts stay unweighted
    # a weight of 0 drops that teacher's slots; a single-teacher target ignores the other's weight
    torch.testing.assert_close(DistillLoss(teacher_weights={"2d": 0.0, "3d": 1.0})(s, t)[0],
                               0.1 * each["mid/3d"] + 0.9 * each["final/3d"])
    only3d = {k: v for k, v in t.items() if k.endswith("3d")}
    torch.testing.assert_close(DistillLoss(teacher_weights={"2d": 5.0, "3d": 1.0})({k: s[k] for k in only3d}, only3d)[0],
                               0.1 * each["mid/3d"] + 0.9 * each["final/3d"])
    with pytest.raises(ValueError, match="teacher_weights.*'2d'"):
        DistillLoss(teacher_weights={"2d": -1.0, "3d": 1.0})
    with pytest.raises(ValueError, match="teacher_weights"):
        DistillLoss(teacher_weights={"2d": 0.0, "3d": 0.0})


@pytest.mark.slow
def test_a_few_adam_steps_lower_the_loss_and_leave_the_teachers_untouched(student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    layout = builder.plan((16, 32, 32))
    before = {k: v.clone() for k, v in builder.state_dict().items()}
    clip = torch.randn(2, 3, 16, 32, 32, generator=torch.Generator().manual_seed(0))
    index = torch.tensor([5, 10])
    loss_fn = DistillLoss()
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-2)
    builder.train()  # a parent put in training mode must not wake the teachers up
    student.train()
    losses = []
    for _ in range(5):
        loss, _ = loss_fn(student_maps(student, clip, layout), builder(clip, index))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.9 * losses[0], losses
    after = builder.state_dict()
    assert before.keys() == after.keys() and any("running_mean" in k for k in after)
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"teacher state {k} changed"
    for teacher in (teacher2d, teacher3d):
        assert not teacher.training
        assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
