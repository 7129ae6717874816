"""Classification metrics: top-k hits, per-video score averaging, confusion matrix, per-class accuracy,
and bootstrap intervals of an accuracy and of the paired margin between two models.

Clip level scores each clip on its own; video level averages the scores of all the views (clips x crops)
of a video before taking the top k:

    views (N, C) + video ids (N,) --VideoScoreMeter--> per video mean (M, C) --topk_correct--> {1: .., 5: ..}

The intervals resample the test videos (the unit that was drawn; clips and crops of one video are not
independent), with replacement, and take the percentiles of the resampled figure::

    hits (M,) of 0 / 1 per video                 --accuracy_interval-->       top-1 and its 95 % interval
    hits_a (M,), hits_b (M,) on the SAME videos  --paired_margin_interval-->  top-1 A - top-1 B and its interval

Everything here works on CPU tensors, NumPy arrays and plain Python numbers, so it runs the same inside a
training loop, in ``dsn evaluate`` and across ``torch.distributed`` ranks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor


def _check_scores(scores: Tensor, labels: Tensor) -> None:
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores: expected a (N, num_classes) tensor, got {shape}")
    if not isinstance(labels, Tensor) or labels.shape != scores.shape[:1]:
        shape = tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__
        raise ValueError(
            f"labels: expected a ({scores.shape[0]},) tensor to match scores {tuple(scores.shape)}, got {shape}"
        )
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= scores.shape[1]):
        raise ValueError(
            f"labels: expected class indices in [0, {scores.shape[1] - 1}], got values from "
            f"{int(labels.min())} to {int(labels.max())}"
        )


def topk_correct(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, int]:
    """How many rows of ``scores`` have their label among their ``k`` highest scores, for each ``k``.

    ``scores``: ``(N, C)`` logits, probabilities or any score where higher is better; ``labels``: ``(N,)``
    class indices.  A ``k`` above ``C`` counts as ``C`` (every row is then a hit); the result is keyed by
    the ``k`` asked for.  Returns counts, not rates, so that batches and ranks can simply be summed.
    """
    return {k: int(hit.sum()) for k, hit in topk_hits(scores, labels, ks).items()}


def topk_hits(scores: Tensor, labels: Tensor, ks: Sequence[int] = (1, 5)) -> dict[int, Tensor]:
    """Which rows of ``scores`` have their label among their ``k`` highest scores: ``(N,)`` bool per ``k``,
    counted as :func:`topk_correct` counts them (its counts are these summed)."""
    _check_scores(scores, labels)
    if not ks or any(int(k) < 1 for k in ks):
        raise ValueError(f"ks: expected positive integers, got {tuple(ks)}")
    num_classes = scores.shape[1]
    kmax = min(max(int(k) for k in ks), num_classes)
    top = scores.detach().topk(kmax, dim=1).indices  # (N, kmax), best first
    hits = top.eq(labels.to(top.device)[:, None])  # (N, kmax), at most one True per row
    within = hits.cumsum(dim=1).clamp_(max=1).bool()  # (N, kmax): hit within the first j+1
    return {int(k): within[:, min(int(k), num_classes) - 1] for k in ks}


# --------------------------------------------------------------------------- bootstrap intervals
@dataclass(frozen=True)
class Interval:
    """A figure measured on a sample of videos and its percentile-bootstrap interval: ``estimate`` on
    the videos themselves, ``low`` / ``high`` the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of
    the figure over ``resamples`` resamplings of the videos drawn with ``seed``."""

    estimate: float
    low: float
    high: float
    level: float
    resamples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "level": self.level,
                "resamples": self.resamples, "seed": self.seed, "method": "percentile bootstrap over videos"}


def _per_video(values: Any, name: str, allowed: tuple[float, ...]) -> np.ndarray:
    array = np.asarray(values.cpu() if isinstance(values, Tensor) else values, dtype=np.float64).reshape(-1)
    if array.size == 0:
        raise ValueError(f"{name}: no video; an interval needs at least one")
    if not np.isin(array, allowed).all():
        raise ValueError(f"{name}: expected one of {', '.join(f'{v:g}' for v in allowed)} per video, got "
                         f"{sorted(set(array[~np.isin(array, allowed)].tolist()))[:5]}")
    return array


def bootstrap_interval(values: Any, *, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Interval:
    """The mean of per-video ``values`` (M,) with its percentile-bootstrap interval: ``resamples`` times,
    draw M videos with replacement (NumPy's ``default_rng(seed)``) and take the mean; the interval is the
    quantiles of those means.  The same values and seed give the same interval."""
    array = np.asarray(values.cpu() if isinstance(values, Tensor) else values, dtype=np.float64).reshape(-1)
    if array.size == 0 or not np.isfinite(array).all():
        raise ValueError(f"values: expected at least one finite value per video, got {array.size} value(s)")
    if not 0 < level < 1:
        raise ValueError(f"level: expected a confidence level in (0, 1), got {level}")
    if resamples < 1:
        raise ValueError(f"resamples: expected a positive integer, got {resamples}")
    rng = np.random.default_rng(seed)
    n = array.size
    means = np.empty(resamples)
    chunk = max(1, 4_000_000 // n)  # resamples drawn at once: a few tens of MB of indices at most
    for start in range(0, resamples, chunk):
        stop = min(resamples, start + chunk)
        means[start:stop] = array[rng.integers(0, n, size=(stop - start, n))].mean(axis=1)  # (chunk,)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(array.mean()), float(low), float(high), level, resamples, seed)


def accuracy_interval(hits: Any, *, level: float = 0.95, resamples: int = 10_000, seed: int = 0) -> Interval:
    """An accuracy and its bootstrap interval over the videos: ``hits`` (M,) holds 1 for each video the
    model got right and 0 for each it got wrong (an unscored video counts as 0)."""
    return bootstrap_interval(_per_video(hits, "hits", (0.0, 1.0)), level=level, resamples=resamples, seed=seed)


def paired_margin_interval(hits_a: Any, hits_b: Any, *, level: float = 0.95, resamples: int = 10_000,
                           seed: int = 0) -> Interval:
    """Accuracy of model A minus that of model B on the SAME videos, with its bootstrap interval: each
    resampling draws videos and keeps both models' results on them, so what the two share (easy and hard
    videos) cancels and the interval is that of the difference, narrower than two separate intervals
    suggest.  ``hits_a`` / ``hits_b`` (M,) are 0 / 1 per video, in the same video order."""
    a, b = _per_video(hits_a, "hits_a", (0.0, 1.0)), _per_video(hits_b, "hits_b", (0.0, 1.0))
    if a.shape != b.shape:
        raise ValueError(f"hits_a, hits_b: expected the results of both models on the same videos, got {a.size} "
                         f"and {b.size} videos")
    return bootstrap_interval(a - b, level=level, resamples=resamples, seed=seed)


def confusion_matrix(pred: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, num_classes)`` int64 counts: row = true class, column = predicted class."""
    pred, labels = torch.as_tensor(pred).reshape(-1), torch.as_tensor(labels).reshape(-1)
    if pred.shape != labels.shape:
        raise ValueError(f"pred and labels: expected the same length, got {pred.numel()} and {labels.numel()}")
    for name, values in (("pred", pred), ("labels", labels)):
        if values.numel() and (int(values.min()) < 0 or int(values.max()) >= num_classes):
            raise ValueError(
                f"{name}: expected class indices in [0, {num_classes - 1}], got values from "
                f"{int(values.min())} to {int(values.max())}"
            )
    flat = labels.long().cpu() * num_classes + pred.long().cpu()  # (N,)
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: Tensor, totals: Tensor | None = None) -> Tensor:
    """Top-1 accuracy of each class from a confusion matrix: ``(C,)`` float64, NaN for a class with no video.

    The denominator is the row sum (the videos that were scored), or ``totals`` (``(C,)``) when given,
    e.g. all test videos of each class, so that the unscored ones count as wrong.
    """
    if matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix: expected a square (C, C) confusion matrix, got {tuple(matrix.shape)}")
    correct = matrix.diagonal().double()  # (C,)
    denom = matrix.sum(dim=1).double() if totals is None else torch.as_tensor(totals).double()
    if denom.shape != correct.shape:
        raise ValueError(f"totals: expected shape {tuple(correct.shape)}, got {tuple(denom.shape)}")
    if bool((denom < correct).any()):
        raise ValueError("totals: fewer videos than correct predictions for some class")
    return torch.where(denom > 0, correct / denom.clamp(min=1), torch.full_like(correct, float("nan")))


@dataclass(frozen=True)
class VideoScores:
    """Mean scores per video, sorted by video id: ``ids`` (M,), ``scores`` (M, C) float64, ``labels`` (M,),
    ``views`` (M,) = how many views were averaged."""

    ids: Tensor
    scores: Tensor
    labels: Tensor
    views: Tensor


class VideoScoreMeter:
    """Accumulates per-video scores over views and batches, and records the videos that could not be scored.

    ``update(scores, ids, labels)`` adds each view's ``(C,)`` scores to its video's running sum; the views of a
    video may arrive in any order, across batches and on several ranks.  ``all_gather()`` merges the meters
    of every ``torch.distributed`` rank (when a process group is initialised) so that each rank ends with
    the same complete set; ``merge(other)`` does the same for two meters in one process.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes: expected a positive integer, got {num_classes}")
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget every view and failure."""
        self._sums: dict[int, Tensor] = {}  # video id -> (C,) float64 sum of its views' scores
        self._views: dict[int, int] = {}
        self._labels: dict[int, int] = {}
        self._failures: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        """Number of videos with at least one scored view."""
        return len(self._sums)

    def update(self, scores: Tensor, video_ids: Tensor, labels: Tensor) -> None:
        """Add views: ``scores`` (N, C), ``video_ids`` (N,) and ``labels`` (N,), one row per view."""
        _check_scores(scores, labels)
        if scores.shape[1] != self.num_classes:
            raise ValueError(f"scores: expected {self.num_classes} classes, got shape {tuple(scores.shape)}")
        video_ids = torch.as_tensor(video_ids).reshape(-1).cpu()
        if video_ids.shape != labels.shape:
            raise ValueError(f"video_ids: expected ({labels.numel()},) to match scores, got {tuple(video_ids.shape)}")
        scores = scores.detach().to("cpu", torch.float64)
        labels = labels.cpu().long()
        ids, inverse = torch.unique(video_ids, return_inverse=True)  # (M,), (N,)
        sums = torch.zeros(len(ids), self.num_classes, dtype=torch.float64).index_add_(0, inverse, scores)  # (M, C)
        counts = torch.bincount(inverse, minlength=len(ids))  # (M,)
        first = torch.empty(len(ids), dtype=torch.long).scatter_(0, inverse, labels)  # (M,) one label per video
        if bool((first[inverse] != labels).any()):
            bad = int(video_ids[first[inverse] != labels][0])
            raise ValueError(f"video {bad}: its views carry different labels")
        for vid, total, count, label in zip(ids.tolist(), sums, counts.tolist(), first.tolist()):
            self._add(vid, total, count, label)

    def _add(self, vid: int, total: Tensor, count: int, label: int) -> None:
        known = self._labels.get(vid)
        if known is not None and known != label:
            raise ValueError(f"video {vid}: label {label} differs from the label {known} seen before")
        if vid in self._sums:
            self._sums[vid] += total
            self._views[vid] += count
        else:
            self._sums[vid] = total.clone()
            self._views[vid] = count
            self._labels[vid] = label

    def add_failure(self, video_id: int, path: str = "", reason: str = "") -> None:
        """Record a video that could not be read; it stays unscored unless views of it arrive too."""
        self._failures[int(video_id)] = {"index": int(video_id), "path": str(path), "reason": str(reason)}

    def add_failures(self, failures: Iterable[dict[str, Any]]) -> None:
        """Record ``[{"index", "path", "reason"}, ...]`` as gathered by the data layer's ``collate_clips``."""
        for f in failures:
            self.add_failure(f["index"], f.get("path", ""), f.get("reason", ""))

    @property
    def failures(self) -> list[dict[str, Any]]:
        """The videos that could not be scored, sorted by id: ``{"index", "path", "reason"}``."""
        return [self._failures[i] for i in sorted(self._failures) if i not in self._sums]

    def merge(self, other: "VideoScoreMeter") -> "VideoScoreMeter":
        """Add every view and failure of ``other`` into this meter; returns ``self``."""
        self._merge_state(other.state())
        return self

    def state(self) -> dict[str, Any]:
        """The meter as plain containers (for ``all_gather_object`` or saving)."""
        ids = sorted(self._sums)
        empty = torch.zeros(0, self.num_classes, dtype=torch.float64)
        return {
            "num_classes": self.num_classes,
            "ids": ids,
            "sums": torch.stack([self._sums[i] for i in ids]) if ids else empty,  # (M, C)
            "views": [self._views[i] for i in ids],
            "labels": [self._labels[i] for i in ids],
            "failures": list(self._failures.values()),
        }

    def _merge_state(self, state: dict[str, Any]) -> None:
        if state["num_classes"] != self.num_classes:
            raise ValueError(f"cannot merge a meter of {state['num_classes']} classes into one of {self.num_classes}")
        for vid, total, count, label in zip(state["ids"], state["sums"], state["views"], state["labels"]):
            self._add(int(vid), total.to(torch.float64), int(count), int(label))
        self.add_failures(state["failures"])

    def all_gather(self) -> "VideoScoreMeter":
        """Merge the meters of all ranks into each rank's meter when ``torch.distributed`` is initialised
        (a no-op otherwise); every rank must call it.  Returns ``self``."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, self.state())
        self.reset()  # rebuild from all ranks in rank order, so that every rank sums in the same order
        for state in gathered:
            self._merge_state(state)
        return self

    def result(self) -> VideoScores:
        """The mean score of every scored video over its views, sorted by video id."""
        state = self.state()
        views = torch.tensor(state["views"], dtype=torch.long)  # (M,)
        return VideoScores(
            ids=torch.tensor(state["ids"], dtype=torch.long),
            scores=state["sums"] / views.clamp(min=1)[:, None].double(),  # (M, C)
            labels=torch.tensor(state["labels"], dtype=torch.long),
            views=views,
        )
