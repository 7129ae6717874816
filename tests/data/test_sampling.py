"""Frame samplers: windows inside the video, padding of short videos, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from distilled_shufflenet.data.sampling import center_window, random_window, spread_indices, uniform_windows, window_span


def test_random_window_is_a_strided_run_inside_the_video():
    rng = np.random.default_rng(0)
    starts = set()
    for _ in range(200):
        idx = random_window(100, 16, 2, rng)
        assert idx.dtype == np.int64 and idx.shape == (16,)
        assert np.all(np.diff(idx) == 2) and idx[0] >= 0 and idx[-1] <= 99
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) == 100 - window_span(16, 2)  # every start is reachable


def test_random_window_is_reproducible_from_the_generator():
    a = random_window(300, 16, 1, np.random.default_rng(7))
    b = random_window(300, 16, 1, np.random.default_rng(7))
    assert np.array_equal(a, b)


@pytest.mark.parametrize("sampler", ["random", "center", "uniform"])
def test_short_video_is_padded_with_its_last_frame(sampler):
    rng = np.random.default_rng(0)
    idx = {
        "random": lambda: random_window(5, 8, 1, rng),
        "center": lambda: center_window(5, 8, 1),
        "uniform": lambda: uniform_windows(5, 8, 1, 3)[1],
    }[sampler]()
    assert idx.tolist() == [0, 1, 2, 3, 4, 4, 4, 4]


def test_stride_padding_and_single_frame_video():
    assert center_window(6, 4, 2).tolist() == [0, 2, 4, 5]
    assert random_window(1, 4, 3, np.random.default_rng(0)).tolist() == [0, 0, 0, 0]


def test_center_window_is_in_the_middle():
    idx = center_window(100, 16, 1)
    assert idx[0] == 42 and idx[-1] == 57  # 42 frames before, 42 after
    assert center_window(16, 16, 1).tolist() == list(range(16))


def test_uniform_windows_cover_the_video_evenly():
    w = uniform_windows(100, 10, 1, 3)
    assert w.shape == (3, 10)
    starts = w[:, 0]
    assert np.all(np.diff(starts) > 0) and starts[0] > 0 and w[-1, -1] < 99
    assert np.diff(starts).max() - np.diff(starts).min() <= 1  # evenly spaced
    assert np.array_equal(uniform_windows(100, 10, 1, 1)[0], center_window(100, 10, 1))


@pytest.mark.parametrize(
    "args, field",
    [((0, 16, 1), "num_frames"), ((10, 0, 1), "clip_len"), ((10, 4, 0), "stride"), ((10, 4, 1.5), "stride")],
)
def test_bad_arguments_name_the_field(args, field):
    with pytest.raises(ValueError, match=field):
        center_window(*args)
    with pytest.raises(ValueError, match="num_clips"):
        uniform_windows(10, 4, 1, 0)


def test_spread_indices_cover_the_range_without_repeats() -> None:
    assert spread_indices(10, 3) == [0, 4, 9]
    assert spread_indices(3, 8) == [0, 1, 2]  # fewer items than asked: each once
    assert spread_indices(5, 1) == [0] and spread_indices(0, 4) == []
