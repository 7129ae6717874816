"""Metrics on hand-made predictions: every figure below is worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from distilled_shufflenet.engine.metrics import (
    VideoScoreMeter,
    confusion_matrix,
    per_class_accuracy,
    topk_correct,
)

# 5 rows, 6 classes; the rank of the true label in each row is written beside it
SCORES = torch.tensor(
    [
        [0.9, 0.1, 0.0, 0.0, 0.0, 0.0],  # label 0: rank 1
        [0.5, 0.4, 0.3, 0.2, 0.1, 0.0],  # label 1: rank 2
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # label 4: rank 5
        [0.6, 0.5, 0.4, 0.3, 0.2, 0.1],  # label 5: rank 6
        [0.0, 0.1, 0.2, 0.3, 0.4, 0.9],  # label 5: rank 1
    ]
)
LABELS = torch.tensor([0, 1, 4, 5, 5])


def test_topk_correct_counts_hits_within_k() -> None:
    assert topk_correct(SCORES, LABELS) == {1: 2, 5: 4}
    assert topk_correct(SCORES, LABELS, ks=(1, 2, 3, 6)) == {1: 2, 2: 3, 3: 3, 6: 5}


def test_topk_correct_clamps_k_to_the_class_count() -> None:
    scores = torch.tensor([[0.2, 0.8, 0.0], [0.1, 0.2, 0.7]])  # 3 classes
    labels = torch.tensor([0, 0])  # ranks 2 and 3
    assert topk_correct(scores, labels, ks=(1, 5)) == {1: 0, 5: 2}


def test_topk_correct_on_an_empty_batch() -> None:
    assert topk_correct(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)) == {1: 0, 5: 0}


@pytest.mark.parametrize(
    "scores, labels, ks, message",
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), (1,), "scores"),
        (torch.zeros(4, 3), torch.zeros(3, dtype=torch.long), (1,), "labels"),
        (torch.zeros(2, 3), torch.tensor([0, 3]), (1,), r"\[0, 2\]"),
        (torch.zeros(2, 3), torch.tensor([0, 1]), (0,), "ks"),
    ],
)
def test_topk_correct_rejects_bad_input(scores, labels, ks, message) -> None:
    with pytest.raises(ValueError, match=message):
        topk_correct(scores, labels, ks)


def test_confusion_matrix_rows_are_true_classes() -> None:
    pred = torch.tensor([0, 0, 1, 2, 2, 2, 1])
    labels = torch.tensor([0, 1, 1, 2, 2, 0, 1])
    expected = torch.tensor(
        [
            [1, 0, 1],  # class 0: once right, once called 2
            [1, 2, 0],  # class 1: twice right, once called 0
            [0, 0, 2],
        ]
    )
    assert torch.equal(confusion_matrix(pred, labels, 3), expected)
    with pytest.raises(ValueError, match="pred"):
        confusion_matrix(torch.tensor([3]), torch.tensor([0]), 3)


def test_per_class_accuracy_over_scored_and_over_all_videos() -> None:
    matrix = torch.tensor([[1, 0, 1], [1, 2, 0], [0, 0, 0]])
    acc = per_class_accuracy(matrix)
    assert acc[0].item() == 0.5 and acc[1].item() == pytest.approx(2 / 3)
    assert math.isnan(acc[2].item())  # no video of class 2
    # class 0 has 2 more test videos that could not be scored: they count as wrong
    acc_all = per_class_accuracy(matrix, totals=torch.tensor([4, 3, 1]))
    assert acc_all.tolist() == [0.25, pytest.approx(2 / 3), 0.0]


def test_video_meter_averages_views_split_across_batches_in_any_order() -> None:
    meter = VideoScoreMeter(num_classes=3)
    # video 7 (label 2) has 3 views, video 3 (label 0) has 2, spread over two batches in mixed order
    meter.update(
        torch.tensor([[0.0, 0.9, 0.1], [0.8, 0.2, 0.0], [0.1, 0.0, 0.9]]),
        torch.tensor([7, 3, 7]),
        torch.tensor([2, 0, 2]),
    )
    meter.update(torch.tensor([[0.2, 0.0, 0.8], [0.0, 1.0, 0.0]]), torch.tensor([7, 3]), torch.tensor([2, 0]))
    res = meter.result()
    assert res.ids.tolist() == [3, 7]
    assert res.views.tolist() == [2, 3]
    assert res.labels.tolist() == [0, 2]
    assert torch.allclose(res.scores, torch.tensor([[0.4, 0.6, 0.0], [0.1, 0.3, 0.6]], dtype=torch.float64))
    # video 3: class 0 wins single views 1 of 2 times, but its average picks class 1: wrong
    assert topk_correct(res.scores, res.labels, ks=(1, 2)) == {1: 1, 2: 2}


def test_video_meter_records_unscored_videos_and_rejects_mixed_labels() -> None:
    meter = VideoScoreMeter(num_classes=2)
    meter.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([0]))
    meter.add_failures([{"index": 4, "path": "a/b.avi", "reason": "cannot decode"}])
    assert len(meter) == 1
    assert meter.failures == [{"index": 4, "path": "a/b.avi", "reason": "cannot decode"}]
    with pytest.raises(ValueError, match="video 0"):
        meter.update(torch.tensor([[1.0, 0.0]]), torch.tensor([0]), torch.tensor([1]))


def test_video_meter_merge_equals_one_meter_over_all_views() -> None:
    scores = torch.rand(12, 5, generator=torch.Generator().manual_seed(0))
    ids = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3])
    labels = ids % 5
    whole = VideoScoreMeter(5)
    whole.update(scores, ids, labels)
    left, right = VideoScoreMeter(5), VideoScoreMeter(5)
    left.update(scores[::2], ids[::2], labels[::2])  # as if two ranks each saw half of the views
    right.update(scores[1::2], ids[1::2], labels[1::2])
    right.add_failure(9, "x.avi", "missing")
    merged = left.merge(right).result()
    assert torch.allclose(merged.scores, whole.result().scores)
    assert merged.views.tolist() == [3, 3, 3, 3]
    assert [f["index"] for f in left.failures] == [9]


def test_video_meter_all_gather_is_a_no_op_without_a_process_group() -> None:
    meter = VideoScoreMeter(2)
    meter.update(torch.tensor([[0.3, 0.7]]), torch.tensor([5]), torch.tensor([1]))
    assert meter.all_gather() is meter and len(meter) == 1


def _gather_worker(rank: int, world: int, init_file: str, queue) -> None:  # pragma: no cover - subprocess
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    meter = VideoScoreMeter(3)
    # rank 0 holds the first view of videos 0 and 1, rank 1 the second view, plus a failed video 2
    meter.update(torch.eye(3)[rank : rank + 2], torch.tensor([0, 1]), torch.tensor([0, 1]))
    if rank == 1:
        meter.add_failure(2, "c.avi", "cannot decode")
    meter.all_gather()
    res = meter.result()
    queue.put((rank, res.ids.tolist(), res.views.tolist(), res.scores.tolist(), meter.failures))
    dist.destroy_process_group()


@pytest.mark.slow
def test_video_meter_all_gather_across_two_gloo_ranks(tmp_path) -> None:
    import torch.multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_gather_worker, args=(r, 2, str(tmp_path / "pg"), queue)) for r in range(2)]
    for p in procs:
        p.start()
    try:
        results = sorted(queue.get(timeout=120) for _ in procs)
        for p in procs:
            p.join(timeout=60)
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
    assert all(p.exitcode == 0 for p in procs)
    expected_scores = [[0.5, 0.5, 0.0], [0.0, 0.5, 0.5]]  # (eye[0] + eye[1]) / 2, (eye[1] + eye[2]) / 2
    for _, ids, views, scores, failures in results:
        assert ids == [0, 1] and views == [2, 2]
        assert scores == expected_scores
        assert failures == [{"index": 2, "path": "c.avi", "reason": "cannot decode"}]
