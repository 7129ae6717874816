"""Metrics on hand-made predictions: every figure below is worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distilled_shufflenet.engine.metrics import (
    VideoScoreMeter,
    accuracy_interval,
    bootstrap_interval,
    confusion_matrix,
    paired_margin_interval,
    per_class_accuracy,
    topk_correct,
    topk_hits,
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


# --------------------------------------------------------------------------- bootstrap intervals
def binomial_quantile(n: int, p: float, q: float) -> float:
    """The q-quantile of Binomial(n, p) / n: the distribution of a bootstrap mean of n videos of which a
    share p are right (resampling n videos with replacement draws each right with probability p)."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k / n
    return 1.0


def test_topk_hits_are_the_rows_topk_correct_counts() -> None:
    hits = topk_hits(SCORES, LABELS, ks=(1, 2, 5))
    assert hits[1].tolist() == [True, False, False, False, True]
    assert hits[2].tolist() == [True, True, False, False, True]
    assert {k: int(h.sum()) for k, h in hits.items()} == topk_correct(SCORES, LABELS, ks=(1, 2, 5))


def test_an_accuracy_interval_of_all_right_or_all_wrong_is_a_point() -> None:
    right = accuracy_interval([1] * 80)
    assert (right.estimate, right.low, right.high) == (1.0, 1.0, 1.0)
    wrong = accuracy_interval(torch.zeros(80))
    assert (wrong.estimate, wrong.low, wrong.high) == (0.0, 0.0, 0.0)


def test_an_accuracy_interval_is_the_percentiles_of_resampled_videos() -> None:
    hits = np.array([1, 1, 0, 1, 0, 1, 1, 1, 0, 1], dtype=float)
    got = accuracy_interval(hits, resamples=2000, seed=5)
    rng = np.random.default_rng(5)  # the same computation written out
    means = hits[rng.integers(0, hits.size, size=(2000, hits.size))].mean(axis=1)
    assert (got.low, got.high) == tuple(np.quantile(means, [0.025, 0.975]))
    assert got.estimate == 0.7 and got.level == 0.95
    assert accuracy_interval(hits, resamples=2000, seed=5) == got  # seeded
    assert accuracy_interval(hits, resamples=2000, seed=6) != got


def test_an_accuracy_interval_matches_the_binomial_it_resamples() -> None:
    n, right = 200, 150  # 75 % of 200 videos
    got = accuracy_interval([1] * right + [0] * (n - right), resamples=20_000)
    # within one video of the exact quantiles of the bootstrap distribution
    assert abs(got.low - binomial_quantile(n, 0.75, 0.025)) <= 1 / n
    assert abs(got.high - binomial_quantile(n, 0.75, 0.975)) <= 1 / n
    assert got.low < 0.75 < got.high and 0.1 < got.high - got.low < 0.14  # about 2 x 1.96 x sqrt(.75 x .25 / 200)


def test_a_paired_margin_interval_resamples_both_models_on_the_same_videos() -> None:
    # 80 videos: on half, A is right exactly where B is wrong; on the other half both are right
    a = [1] * 40 + [1] * 40
    b = [0] * 40 + [1] * 40
    got = paired_margin_interval(a, b, resamples=20_000)
    assert got.estimate == 0.5
    # the per-video differences are 1 on 40 videos, 0 on 40: the bootstrap margin is Binomial(80, 0.5) / 80
    assert abs(got.low - binomial_quantile(80, 0.5, 0.025)) <= 1 / 80
    assert abs(got.high - binomial_quantile(80, 0.5, 0.975)) <= 1 / 80
    # A right exactly where B is wrong on every video: the margin is 2 x top-1(A) - 1
    flip = paired_margin_interval([1, 0] * 40, [0, 1] * 40)
    assert flip.estimate == 0.0 and flip.low < 0 < flip.high
    # pairing: two models right on the same videos differ by exactly 0, though each one's own accuracy is uncertain
    same = [1, 0, 1, 1] * 20
    assert (paired_margin_interval(same, same).low, paired_margin_interval(same, same).high) == (0.0, 0.0)
    assert accuracy_interval(same).high - accuracy_interval(same).low > 0.15


@pytest.mark.parametrize("call, message", [
    (lambda: accuracy_interval([]), "hits: no video"),
    (lambda: accuracy_interval([1, 0.5]), "hits: expected one of 0, 1 per video, got \\[0.5\\]"),
    (lambda: paired_margin_interval([1, 0], [1]), "hits_a, hits_b: expected the results of both models on the same"),
    (lambda: accuracy_interval([1, 0], level=95), "level: expected a confidence level in \\(0, 1\\)"),
    (lambda: bootstrap_interval([1.0, float("nan")]), "values: expected at least one finite value"),
])
def test_bootstrap_intervals_refuse_bad_input(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
