"""The teacher feature cache: same targets (and loss) as the teachers on the fly for the same views,
refusal of stale or foreign caches, recomputation of a shard cut short, room on the disk, ranks, views."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from distilled_shufflenet.data.splits import find_videos
from distilled_shufflenet.data.transforms import TrainTransform
from distilled_shufflenet.data.video import VideoDecodeError, probe_video, read_frames
from distilled_shufflenet.distill import DistillLoss, TargetBuilder, student_maps
from distilled_shufflenet.distill.cache import TeacherCache, TeacherCacheError, cache_fingerprint
from distilled_shufflenet.distill.dataset import CachedViews, collate_distill
from distilled_shufflenet.distill.views import View, ViewSpec, apply_view, make_view, read_view, spec_from_dict

CLIP = (16, 32, 32)


@pytest.fixture
def videos(tiny_synth: Path) -> list[Path]:
    return find_videos(tiny_synth)[:5]


def _spec(student, **overrides) -> ViewSpec:
    return ViewSpec.from_preprocess(student.preprocess, **{"views": 2, "crop_size": 32, **overrides})


def _build(root, videos, builder, spec, logs=None, **kwargs) -> TeacherCache:
    return TeacherCache.build(root, videos, builder, spec, shard_size=2, batch_size=3, progress=False,
                              log=(logs.append if logs is not None else lambda _: None), **kwargs)


def _laid_out(cache: TeacherCache, layout, i: int, k: int) -> dict[str, torch.Tensor]:
    """The targets of view ``k`` of video ``i`` as a run reads them: its training sample (CachedViews),
    batched (collate_distill) and laid on the student's slots (SlotLayout.expand): ``{part: (1, C, slots,
    H, W)}``."""
    return layout.expand(collate_distill([CachedViews(cache, seed=0).sample(i, k)])["targets"])


def test_views_are_deterministic_records_and_reproduce_the_training_preset(videos) -> None:
    transform = TrainTransform(32, 37)
    spec = ViewSpec(views=3, seed=7, clip_len=8, frame_stride=2, transform=transform)
    a = make_view(spec, 4, 1, 24, 48, 64)
    assert a == make_view(spec, 4, 1, 24, 48, 64) != make_view(spec, 4, 2, 24, 48, 64)
    assert a != make_view(ViewSpec(views=3, seed=8, clip_len=8, frame_stride=2, transform=transform), 4, 1, 24, 48, 64)
    assert View.from_tensor(a.to_tensor()) == a
    assert len(a.frames) == 8 and all(b - f == 2 for f, b in zip(a.frames, a.frames[1:]))
    assert 0 <= a.frame2d < 8 and 0 <= a.top <= 37 - 32 and 0 <= a.left <= 49 - 32
    with pytest.raises(ValueError, match="view k=3 out of range"):
        make_view(spec, 0, 3, 24, 48, 64)
    # the explicit view gives the clip the training transform gives for the same crop and flip
    frames = torch.from_numpy(read_frames(videos[0], np.asarray(a.frames)))

    class Fixed:  # an rng that replays the view's draws
        def __init__(self, values):
            self.values = list(values)

        def integers(self, lo, hi):
            return self.values.pop(0)

        def random(self):
            return self.values.pop(0)

    ref = TrainTransform(32, 37, spec.mean, spec.std)(frames, Fixed([a.top, a.left, 0.0 if a.flip else 0.9]))
    torch.testing.assert_close(apply_view(frames, a, spec), ref, rtol=0, atol=0)
    torch.testing.assert_close(read_view(videos[0], a, spec), ref, rtol=0, atol=0)


def test_a_middle_frame_view_differs_from_the_papers_only_in_its_2d_frame() -> None:
    paper = ViewSpec(views=3, seed=7, clip_len=8, frame_stride=2, transform=TrainTransform(32, 37))
    middle = dataclasses.replace(paper, frame2d="middle")
    frames = set()
    for i in range(6):
        for k in range(3):
            a, b = make_view(paper, i, k, 24, 48, 64), make_view(middle, i, k, 24, 48, 64)
            assert b == dataclasses.replace(a, frame2d=4)  # crop, flip and window drawn as before
            frames.add(a.frame2d)
    assert len(frames) > 1
    # the paper's spec is written as before the choice existed (its caches stay valid); the other names it
    assert "frame2d" not in paper.to_dict() and spec_from_dict(paper.to_dict()) == paper
    assert middle.to_dict()["frame2d"] == "middle" and spec_from_dict(middle.to_dict()) == middle
    with pytest.raises(ValueError, match="frame2d must be one of random, middle"):
        ViewSpec(frame2d="first")


def test_cache_gives_the_loss_of_the_teachers_on_the_fly(tmp_path, videos, student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    spec = _spec(student)
    logs: list[str] = []
    cache = _build(tmp_path / "cache", videos, builder, spec, logs)
    assert "5 videos x 2 views" in logs[0] and "3 shards" in logs[0]
    assert sorted(p.name for p in (tmp_path / "cache").glob("shard-*.pt")) == [
        f"shard-0000{i}.rank0.pt" for i in range(3)]
    layout = builder.plan(CLIP)
    loss_fn = DistillLoss()
    student.eval()
    for i in range(5):
        info = probe_video(videos[i])
        for k in range(2):
            view = cache.view(i, k)
            assert view == make_view(spec, i, k, info.num_frames, info.height, info.width)
            clip = cache.clip(i, k)[None]  # (1, 3, 16, 32, 32)
            fly = builder(clip, torch.tensor([view.frame2d]))
            cached = _laid_out(cache, layout, i, k)
            assert {key: v.shape for key, v in cached.items()} == {key: v.shape for key, v in fly.items()}
            for key in fly:
                torch.testing.assert_close(cached[key], fly[key], rtol=2e-3, atol=2e-3)
            with torch.no_grad():
                maps = student_maps(student, clip, layout)
                torch.testing.assert_close(loss_fn(maps, cached)[0], loss_fn(maps, fly)[0], rtol=1e-3, atol=1e-4)
    assert cache.failed == {}
    # one of the K views per epoch, the same in every process: another process opening the cache draws
    # the same views (a draw from an unseeded or per-process generator would not)
    draws = {e: [cache.draw(i, e) for i in range(5)] for e in range(6)}
    code = ("import json, sys; from distilled_shufflenet.distill.cache import TeacherCache; "
            "c = TeacherCache.open(sys.argv[1]); print(json.dumps([[c.draw(i, e) for i in range(5)] for e in range(6)]))")
    other = subprocess.run([sys.executable, "-c", code, str(tmp_path / "cache")], capture_output=True, text=True,
                           check=True)
    assert json.loads(other.stdout) == [draws[e] for e in range(6)]
    assert {k for d in draws.values() for k in d} == {0, 1}
    # a training sample of epoch 3 is the view drawn for it: that view's clip and its stored targets
    views = CachedViews(cache, seed=0)
    views.set_epoch(3)
    sample, k = views[4], draws[3][4]
    assert set(sample) == {"clip", "index", "targets"} and sample["index"] == 4
    torch.testing.assert_close(sample["clip"], cache.clip(4, k))
    assert not torch.equal(cache.clip(4, k), cache.clip(4, 1 - k))  # the clip tells which view was read
    assert set(sample["targets"]) == set(layout.keys)
    for key, value in cache.stored(4, k).items():
        torch.testing.assert_close(sample["targets"][key], value, rtol=0, atol=0)
    again = pickle.loads(pickle.dumps(  # as a DataLoader worker started with spawn gets it
        TeacherCache.open(tmp_path / "cache", cache_fingerprint(builder, spec, videos), verify=True, layout=layout)))
    assert not again._open
    torch.testing.assert_close(again.stored(3, 1)["final/3d"], cache.stored(3, 1)["final/3d"])


def test_a_stale_or_foreign_cache_is_refused(tmp_path, videos, student, teacher2d, teacher3d, make_teacher) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    spec = _spec(student)
    _build(tmp_path / "c", videos, builder, spec)
    other = TargetBuilder(student, make_teacher("resnet18", seed=9), teacher3d)
    with pytest.raises(TeacherCacheError, match=r"teacher: teachers\.2d\.weights is '.*' in the cache"):
        TeacherCache.open(tmp_path / "c", cache_fingerprint(other, spec, videos))
    with pytest.raises(TeacherCacheError, match=r"views\.views is 2 in the cache, 3 now"):
        _build(tmp_path / "c", videos, builder, _spec(student, views=3))
    with pytest.raises(TeacherCacheError, match=r"videos\.count is 5 in the cache, 4 now"):
        TeacherCache.open(tmp_path / "c", cache_fingerprint(builder, spec, videos[:4]))
    stride = TargetBuilder(student, teacher2d, teacher3d, stride3d=2)
    with pytest.raises(TeacherCacheError, match=r"targets\.stride3d is 1 in the cache, 2 now"):
        TeacherCache.open(tmp_path / "c", cache_fingerprint(stride, spec, videos))
    with pytest.raises(TeacherCacheError, match=r"views\.frame2d .*in the cache"):  # another 2D frame
        TeacherCache.open(tmp_path / "c", cache_fingerprint(builder, _spec(student, frame2d="middle"), videos))
    (tmp_path / "not_a_cache").mkdir()
    (tmp_path / "not_a_cache" / "notes.txt").write_text("mine")
    with pytest.raises(TeacherCacheError, match="holds other files"):
        _build(tmp_path / "not_a_cache", videos, builder, spec)


def test_one_cache_of_both_teachers_serves_every_split_and_each_teacher_alone(
        tmp_path, videos, student, teacher2d, teacher3d) -> None:
    spec = _spec(student)
    _build(tmp_path / "c", videos, TargetBuilder(student, teacher2d, teacher3d), spec)
    shards = {p: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("shard-*.pt")}
    for builder in (TargetBuilder(student, teacher2d, teacher3d, split={"mid": 1, "final": 1}),
                    TargetBuilder(student, teacher3d=teacher3d, teachers="3d"),
                    TargetBuilder(student, teacher2d=teacher2d, teachers="2d")):
        logs: list[str] = []
        cache = _build(tmp_path / "c", videos, builder, spec, logs)
        assert "3 shards done, 0 B to write" in logs[0]
        layout = builder.plan(CLIP)
        for i, k in ((0, 0), (3, 1)):
            clip = cache.clip(i, k)[None]
            fly = builder(clip, torch.tensor([cache.view(i, k).frame2d]))
            cached = _laid_out(cache, layout, i, k)
            assert set(cached) == set(fly) == set(layout.keys)  # the other teacher's parts are not read
            for key in fly:
                torch.testing.assert_close(cached[key], fly[key], rtol=2e-3, atol=2e-3)
    assert shards == {p: p.stat().st_mtime_ns for p in (tmp_path / "c").glob("shard-*.pt")}  # nothing rewritten
    # a cache of one teacher cannot serve a run that needs the other
    _build(tmp_path / "only3d", videos, TargetBuilder(student, teacher3d=teacher3d, teachers="3d"), spec)
    with pytest.raises(TeacherCacheError, match="holds the targets of the 3D teacher.*not of the 2D"):
        _build(tmp_path / "only3d", videos, TargetBuilder(student, teacher2d, teacher3d), spec)
    # an unfinished cache of both teachers cannot be finished by a run of one
    (tmp_path / "c" / "shard-00001.rank0.json").unlink()
    with pytest.raises(TeacherCacheError, match="unfinished and also holds the 2D"):
        _build(tmp_path / "c", videos, TargetBuilder(student, teacher3d=teacher3d, teachers="3d"), spec)


def test_a_shard_cut_short_is_detected_and_recomputed(tmp_path, videos, student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    spec = _spec(student)
    first = _build(tmp_path / "c", videos, builder, spec)
    expected = first.stored(2, 1)
    shard = tmp_path / "c" / "shard-00001.rank0.pt"
    size = shard.stat().st_size
    data = shard.read_bytes()
    shard.write_bytes(data[: size // 2])  # what a copy or a disk cut short leaves
    fingerprint = cache_fingerprint(builder, spec, videos)
    with pytest.raises(TeacherCacheError, match=r"incomplete.*\[1\].*shard-00001\.rank0\.pt: \d+ bytes.*cut short"):
        TeacherCache.open(tmp_path / "c", fingerprint)
    logs: list[str] = []
    written = TeacherCache.build_shards(tmp_path / "c", videos, builder, spec, progress=False, log=logs.append)
    assert written == [1]  # only the damaged shard
    assert any("recomputing shard-00001.rank0.pt" in line for line in logs)
    again = TeacherCache.open(tmp_path / "c", fingerprint, layout=builder.plan(CLIP))
    assert shard.stat().st_size == size
    for key, value in expected.items():
        torch.testing.assert_close(again.stored(2, 1)[key], value)
    # a corrupted shard of the right size is caught by the checksum
    flipped = bytearray(shard.read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF
    shard.write_bytes(bytes(flipped))
    TeacherCache.open(tmp_path / "c", fingerprint)  # the size check alone passes
    with pytest.raises(TeacherCacheError, match="checksum"):
        TeacherCache.open(tmp_path / "c", fingerprint, verify=True)


def test_a_shard_that_cannot_be_read_is_recomputed_and_named(tmp_path, videos, student, teacher3d) -> None:
    builder = TargetBuilder(student, teacher3d=teacher3d, teachers="3d")
    spec = _spec(student)
    expected = _build(tmp_path / "c", videos, builder, spec).stored(3, 0)
    shard = tmp_path / "c" / "shard-00001.rank0.pt"
    size = shard.stat().st_size
    shard.write_bytes(bytes(size))  # zeroed, the same size: the size check alone passes
    fingerprint = cache_fingerprint(builder, spec, videos)
    with pytest.raises(TeacherCacheError, match=r"shard-00001\.rank0\.pt: cannot be read.*run the build again"):
        TeacherCache.open(tmp_path / "c", fingerprint)
    logs: list[str] = []
    again = _build(tmp_path / "c", videos, builder, spec, logs)
    assert any("recomputing shard-00001.rank0.pt: cannot be read" in line for line in logs)
    for key, value in expected.items():
        torch.testing.assert_close(again.stored(3, 0)[key], value)
    # damaged while a run reads it: the error names the shard and the fix, not the zip reader
    again._open.clear()
    shard.write_bytes(bytes(shard.stat().st_size))
    with pytest.raises(TeacherCacheError, match=rf"the shard {shard} cannot be read.*run the same command again"):
        again.stored(3, 0)


@pytest.mark.parametrize("edit", ["shard_size", "num_videos", "fingerprint"])
def test_a_damaged_cache_json_is_refused_by_name(tmp_path, videos, student, teacher3d, edit) -> None:
    builder = TargetBuilder(student, teacher3d=teacher3d, teachers="3d")
    spec = _spec(student)
    _build(tmp_path / "c", videos, builder, spec)
    meta_path = tmp_path / "c" / "cache.json"
    meta = json.loads(meta_path.read_text())
    if edit == "fingerprint":
        del meta["fingerprint"]["views"]
    else:
        meta[edit] += 1
    meta_path.write_text(json.dumps(meta))
    for attempt in (lambda: TeacherCache.open(tmp_path / "c", cache_fingerprint(builder, spec, videos)),
                    lambda: _build(tmp_path / "c", videos, builder, spec)):
        with pytest.raises(TeacherCacheError, match=r"cache\.json.*(edited|damaged).*delete the folder"):
            attempt()


def test_a_different_video_copied_over_a_cached_name_is_refused(tmp_path, videos, student, teacher3d) -> None:
    own = tmp_path / "videos"
    own.mkdir()
    paths = []
    for video in videos[:3]:
        paths.append(own / video.name)
        paths[-1].write_bytes(video.read_bytes())
    builder = TargetBuilder(student, teacher3d=teacher3d, teachers="3d")
    spec = _spec(student, views=1)
    _build(tmp_path / "c", paths, builder, spec)
    os.utime(paths[0], (1e9, 1e9))  # a copy of the dataset has new modification times: still the same videos
    logs: list[str] = []
    _build(tmp_path / "c", paths, builder, spec, logs)
    assert "2 shards done, 0 B to write" in logs[0]
    paths[1].write_bytes(videos[4].read_bytes())  # another video under the same name
    with pytest.raises(TeacherCacheError, match=rf"1 video\(s\) changed since the cache was built.*{paths[1].name}"):
        _build(tmp_path / "c", paths, builder, spec)
    with pytest.raises(TeacherCacheError, match="changed since the cache was built"):
        TeacherCache.open(tmp_path / "c", cache_fingerprint(builder, spec, paths), videos=paths)


def test_the_size_is_printed_and_a_full_disk_refused(tmp_path, videos, student, teacher2d, teacher3d,
                                                      monkeypatch) -> None:
    import distilled_shufflenet.distill.cache as cache_module

    builder = TargetBuilder(student, teacher2d, teacher3d)
    spec = _spec(student)
    # per view, fp16: mid 2D 64x1x2x2 + mid 3D 64x4x2x2 + final 2D 128x1x1x1 + final 3D 128x2x1x1 (the 3D
    # teacher's own 4 and 2 time steps, not the student's 2 and 1 slots)
    per_view = (64 * 4 + 64 * 16 + 128 + 128 * 2) * 2
    usage = cache_module.shutil.disk_usage(tmp_path)
    # room for the maps alone (33.3 KB) but not for the shards, which hold view records, scales and the
    # file format's records too (46 KB written): refused before anything is computed, naming the folder
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage._replace(free=per_view * 12))
    logs: list[str] = []
    with pytest.raises(TeacherCacheError, match=rf"{tmp_path / 'c'}: needs 49\.7 KB more .*disk holding "
                                                rf"{tmp_path / 'c'} has 39\.9 KB free.*--cache-views"):
        _build(tmp_path / "c", videos, builder, spec, logs)
    assert "= 33.3 KB (fp16, 3 shards)" in logs[0]
    assert not list((tmp_path / "c").glob("shard-*"))
    # with the room the estimate asks for, the shards written fit in it
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage._replace(free=63_000))
    cache = _build(tmp_path / "c", videos, builder, spec)
    assert 0.85 * 49.7e3 < cache.size_bytes <= 49.7e3
    # a shard measured on disk is the estimate of the rest: a resumed build needs room for 2 more such
    (tmp_path / "c" / "shard-00001.rank0.json").unlink()
    largest = max(p.stat().st_size / n for p, n in zip(sorted((tmp_path / "c").glob("shard-*.pt")), (2, 2, 1)))
    monkeypatch.setattr(cache_module.shutil, "disk_usage", lambda _: usage._replace(free=int(2 * largest)))
    with pytest.raises(TeacherCacheError, match="measured on the 2 shard"):
        _build(tmp_path / "c", videos, builder, spec)


def test_a_disk_that_fills_up_while_writing_names_the_shard(tmp_path, videos, student, teacher3d,
                                                            monkeypatch) -> None:
    import distilled_shufflenet.distill.cache as cache_module

    def full(obj, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(cache_module, "atomic_save", full)
    builder = TargetBuilder(student, teacher3d=teacher3d, teachers="3d")
    with pytest.raises(TeacherCacheError, match=rf"disk is full .* while writing {tmp_path / 'c'}/shard-00000\.rank0\.pt"
                                                r".*--cache-teachers"):
        _build(tmp_path / "c", videos[:2], builder, _spec(student, views=1))


def test_ranks_write_their_own_shards_and_read_all(tmp_path, videos, student, teacher2d, teacher3d) -> None:
    builder = TargetBuilder(student, teacher2d, teacher3d)
    spec = _spec(student)
    kwargs = dict(shard_size=2, progress=False, log=lambda _: None)
    assert TeacherCache.build_shards(tmp_path, videos, builder, spec, rank=1, world_size=2, **kwargs) == [1]
    with pytest.raises(TeacherCacheError, match="incomplete"):
        TeacherCache.open(tmp_path, cache_fingerprint(builder, spec, videos))
    assert TeacherCache.build_shards(tmp_path, videos, builder, spec, rank=0, world_size=2, **kwargs) == [0, 2]
    names = sorted(p.name for p in tmp_path.glob("shard-*.pt"))
    assert names == ["shard-00000.rank0.pt", "shard-00001.rank1.pt", "shard-00002.rank0.pt"]
    cache = TeacherCache.open(tmp_path, cache_fingerprint(builder, spec, videos), videos=videos)
    assert cache.view(3, 0) == make_view(spec, 3, 0, *_count_and_size(videos[3]))


def _count_and_size(path: Path) -> tuple[int, int, int]:
    info = probe_video(path)
    return info.num_frames, info.height, info.width


def test_unreadable_videos_are_skipped_and_reported_by_name(tmp_path, videos, student, teacher3d) -> None:
    broken = tmp_path / "broken.avi"
    broken.write_bytes(b"not a video at all" * 10)
    paths = [videos[0], broken, videos[1]]
    builder = TargetBuilder(student, teacher3d=teacher3d, teachers="3d")
    logs: list[str] = []
    cache = _build(tmp_path / "c", paths, builder, _spec(student), logs)
    assert list(cache.failed) == [1] and cache.failed[1][0] == str(broken)
    assert any("1 unreadable video(s) skipped" in line and "broken.avi" in line for line in logs)
    layout = builder.plan(CLIP)
    with pytest.raises(VideoDecodeError, match="broken.avi"):
        _laid_out(cache, layout, 1, 0)
    assert set(_laid_out(cache, layout, 2, 1)) == {"mid/3d", "final/3d"}


def test_maps_beyond_float16_range_are_stored_scaled(tmp_path, videos, student, teacher3d) -> None:
    with torch.no_grad():
        teacher3d.layer4[-1].conv2[1].weight.mul_(1e6)  # final maps of about 1e5-1e6: inf in float16
    builder = TargetBuilder(student, teacher3d=teacher3d, teachers="3d")
    spec = _spec(student, views=1)
    cache = _build(tmp_path / "c", videos[:2], builder, spec)
    clip = cache.clip(1, 0)[None]
    fly = builder(clip)["final/3d"]
    assert float(fly.abs().max()) > 65504
    cached = _laid_out(cache, builder.plan(CLIP), 1, 0)["final/3d"]
    assert torch.isfinite(cached).all()
    torch.testing.assert_close(cached, fly, rtol=2e-3, atol=1e-3 * float(fly.abs().max()))
