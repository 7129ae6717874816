"""Split parsers on the official files, datasets, unlabelled views, broken videos, collate, factory."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from distilled_shufflenet.data import (
    DATASET_KINDS,
    HMDB51,
    UCF101,
    FailureLog,
    VideoClips,
    VideoFolder,
    VideoList,
    build_dataset,
    collate_clips,
    eval_transform,
    hmdb51_classes,
    read_class_index,
    read_hmdb51_split,
    read_ucf101_split,
    read_video_list,
    train_transform,
    unlabelled,
)

SMALL = {"transform": train_transform(32), "clip_len": 4}  # tiny clips for speed


# ---------------------------------------------------------------------- official split files
def test_ucf101_official_split_files(shared_data):
    splits = shared_data / "ucf101"
    classes = read_class_index(splits / "classInd.txt")  # CRLF, 1-based ids
    assert len(classes) == 101 and classes[0] == "ApplyEyeMakeup" and classes[-1] == "YoYo"
    train = read_ucf101_split(splits, 1, "train", root="/data/UCF-101")
    test = read_ucf101_split(splits, 1, "test", root="/data/UCF-101")
    assert (len(train), len(test)) == (9537, 3783)
    assert {r.label for r in train} == set(range(101)) == {r.label for r in test}
    assert not {r.path for r in train} & {r.path for r in test}
    assert train[0].path == Path("/data/UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi")
    for r in test:  # the test list has no labels: each comes from the class folder
        assert classes[r.label] == r.path.parent.name
    # the official folder HandstandPushups holds v_HandStandPushups_* files
    hs = [r for r in test if r.path.parent.name == "HandstandPushups"]
    assert hs and all(r.label == 36 and r.path.name.startswith("v_HandStandPushups_") for r in hs)
    assert [len(read_ucf101_split(splits, k, "train")) for k in (2, 3)] == [9586, 9624]


def test_hmdb51_official_split_files(shared_data):
    splits = shared_data / "hmdb51" / "testTrainMulti_7030_splits"
    classes = hmdb51_classes(splits)
    assert classes == (shared_data / "hmdb51" / "label_map_mmaction2.txt").read_text().split()
    for k in (1, 2, 3):
        train = read_hmdb51_split(splits, k, "train", root="/data/hmdb51")
        test = read_hmdb51_split(splits, k, "test", root="/data/hmdb51")
        assert (len(train), len(test)) == (3570, 1530)
        assert np.bincount([r.label for r in train]).tolist() == [70] * 51
    r = train[0]
    assert r.path.parent == Path("/data/hmdb51") / classes[r.label]


def test_ucf101_dataset_checks_files_at_construction(shared_data, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"9537 of 9537 videos listed in .*trainlist01\.txt are missing"):
        UCF101(tmp_path, shared_data / "ucf101")
    ds = UCF101(tmp_path, shared_data / "ucf101", subset="test", skip_missing=True)
    assert len(ds) == 0 and len(ds.missing) == 3783 and len(ds.classes) == 101


def _mini_ucf(tmp_path: Path, make_video) -> Path:
    """Two classes in the UCF101 layout, with CRLF split files; one listed video is missing."""
    (tmp_path / "classInd.txt").write_bytes(b"1 Jump\r\n2 Run\r\n")
    for cls in ("Jump", "Run"):
        for group in (1, 2):
            make_video(f"{cls}/v_{cls}_g{group:02d}_c01.avi", 12)
    (tmp_path / "trainlist01.txt").write_bytes(
        b"Jump/v_Jump_g02_c01.avi 1\r\nRun/v_Run_g02_c01.avi 2\r\nRun/v_Run_g03_c01.avi 2\r\n"
    )
    (tmp_path / "testlist01.txt").write_bytes(b"Jump/v_Jump_g01_c01.avi\r\nRun/v_Run_g01_c01.avi\r\n")
    return tmp_path


def test_missing_and_unknown_entries_of_a_split(tmp_path, make_video):
    root = _mini_ucf(tmp_path, make_video)
    with pytest.raises(FileNotFoundError, match=r"1 of 3 videos .* missing: .*v_Run_g03_c01\.avi"):
        UCF101(root)
    ds = UCF101(root, skip_missing=True, **SMALL)
    assert len(ds) == 2 and [p.name for p in ds.missing] == ["v_Run_g03_c01.avi"]
    (root / "testlist01.txt").write_bytes(b"Jump/v_Jump_g01_c01.avi\r\nSwim/v_Swim_g01_c01.avi\r\n")
    with pytest.raises(ValueError, match=r"testlist01\.txt, line 2: unknown class 'Swim'"):
        UCF101(root, subset="test")
    (root / "trainlist01.txt").write_bytes(b"Jump/v_Jump_g02_c01.avi 2\r\n")
    with pytest.raises(ValueError, match=r"trainlist01\.txt, line 1: label '2' does not match class 'Jump'"):
        UCF101(root)


# ---------------------------------------------------------------------- datasets and samples
def test_ucf101_dataset_on_synthactions(tiny_synth):
    ds = UCF101(tiny_synth, split=1, subset="train", **SMALL)  # splits in the root itself
    test = UCF101(tiny_synth, tiny_synth, 1, "test", **SMALL)
    assert (len(ds), len(test)) == (24, 8) and ds.classes == read_class_index(tiny_synth / "classInd.txt")
    sample = ds[5]
    assert set(sample) == {"clip", "index", "label"}
    assert sample["clip"].shape == (3, 4, 32, 32) and sample["clip"].dtype == torch.float32
    assert sample["index"] == 5 and sample["label"] == ds.records[5].label
    assert ds.classes[sample["label"]] == ds.records[5].path.parent.name


def test_sampling_modes_and_views(tiny_synth):
    ev = eval_transform(32)
    kw = {"clip_len": 4, "transform": ev}
    assert UCF101(tiny_synth, sampling="center", **kw)[0]["clip"].shape == (3, 4, 32, 32)
    assert UCF101(tiny_synth, sampling="uniform", num_clips=2, **kw)[0]["clip"].shape == (2, 3, 4, 32, 32)
    three = {"clip_len": 4, "transform": eval_transform(32, crops=3), "crops": 3}
    assert UCF101(tiny_synth, sampling="center", **three)[0]["clip"].shape == (3, 3, 4, 32, 32)
    both = UCF101(tiny_synth, sampling="uniform", num_clips=2, **three)[0]["clip"]
    assert both.shape == (6, 3, 4, 32, 32)  # num_clips * crops views
    default = UCF101(tiny_synth, sampling="center", clip_len=4)[0]["clip"]
    assert default.shape == (3, 4, 224, 224)  # the method's preset
    with pytest.raises(ValueError, match="num_clips=2 needs sampling='uniform'"):
        UCF101(tiny_synth, num_clips=2)
    with pytest.raises(ValueError, match="unknown clip option"):
        UCF101(tiny_synth, clip_length=4)


def test_samples_are_reproducible_and_change_with_the_epoch(tiny_synth):
    a = UCF101(tiny_synth, seed=3, **SMALL)
    b = UCF101(tiny_synth, seed=3, **SMALL)
    assert torch.equal(a[2]["clip"], b[2]["clip"])
    first = a[2]["clip"]
    a.set_epoch(1)
    assert a.epoch == 1 and not torch.equal(first, a[2]["clip"])


def test_hmdb51_dataset(tmp_path, make_video):
    splits = tmp_path / "testTrainMulti_7030_splits"
    splits.mkdir()
    for cls in ("run", "jump"):
        for i in range(3):
            make_video(f"{cls}/{cls}_{i}.avi", 8)
        (splits / f"{cls}_test_split1.txt").write_text(f"{cls}_0.avi 1 \n{cls}_1.avi 2 \n{cls}_2.avi 0 \n")
    train = HMDB51(tmp_path, split=1, subset="train", **SMALL)
    test = HMDB51(tmp_path, splits, 1, "test", **SMALL)
    assert train.classes == ["jump", "run"]
    assert [(r.path.name, r.label) for r in train.records] == [("jump_0.avi", 0), ("run_0.avi", 1)]
    assert [r.path.name for r in test.records] == ["jump_1.avi", "run_1.avi"]
    assert test[1]["label"] == 1


def test_video_list_csv_and_text(tmp_path, make_video):
    odd = make_video("vidéos à trier/mon clip 1.avi", 8)
    make_video("b.avi", 8)
    (tmp_path / "list.csv").write_text('path,label\n"vidéos à trier/mon clip 1.avi",arm wrestling\nb.avi,yoga\n')
    ds = VideoList(tmp_path / "list.csv", **SMALL)
    assert ds.classes == ["arm wrestling", "yoga"] and ds.records[0].path == odd and ds.labels == [0, 1]
    (tmp_path / "classes.txt").write_text("yoga\narm wrestling\n")
    ds = VideoList(tmp_path / "list.csv", classes=tmp_path / "classes.txt", **SMALL)
    assert ds.labels == [1, 0] and ds[0]["label"] == 1
    (tmp_path / "list.txt").write_text("vidéos à trier/mon clip 1.avi 2\nb.avi 0\n")
    records, classes = read_video_list(tmp_path / "list.txt")
    assert classes == ["0", "1", "2"] and [r.label for r in records] == [2, 0] and records[0].path == odd
    (tmp_path / "bad.txt").write_text("b.avi swimming\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 1: unknown class 'swimming'"):
        VideoList(tmp_path / "bad.txt", classes=["yoga"])


def test_folder_and_unlabelled_views_hold_no_labels(tiny_synth, tmp_path):
    folder = VideoFolder(tiny_synth, **SMALL)
    assert len(folder) == 32 and all(p.suffix == ".avi" for p in folder.paths)
    sample = folder[0]
    assert set(sample) == {"clip", "index"}
    labelled = UCF101(tiny_synth, **SMALL)
    view = unlabelled(labelled)
    assert type(view) is VideoClips and view.paths == labelled.paths
    assert not hasattr(view, "records") and not hasattr(view, "classes") and not hasattr(view, "labels")
    assert "label" not in view[3] and torch.equal(view[3]["clip"], labelled[3]["clip"])
    with pytest.raises(ValueError, match="no video files"):
        VideoFolder(tmp_path)


def test_short_and_odd_videos_make_full_clips(odd_videos):
    ds = VideoClips(list(odd_videos.values()), clip_len=8, transform=eval_transform(32), sampling="center")
    for i in range(len(ds)):
        sample = ds[i]
        assert sample["clip"].shape == (3, 8, 32, 32) and "failures" not in sample, ds.paths[i]


# ---------------------------------------------------------------------- broken videos
def test_broken_video_is_resampled_and_reported(broken_videos, synth_videos):
    good = synth_videos["avi_mpeg4"]
    paths = [broken_videos["zero_byte"], good, broken_videos["text"], broken_videos["audio_only"]]
    ds = VideoClips(paths, **SMALL)
    sample = ds[0]
    assert "clip" in sample and sample["index"] == 1  # the only readable video
    reasons = {f["path"]: f["reason"] for f in sample["failures"]}
    assert reasons[str(broken_videos["zero_byte"])] == "cannot open: empty file (0 bytes)"
    assert all(f["index"] != 1 for f in sample["failures"])
    again = VideoClips(paths, **SMALL)[0]  # deterministic: same draws, same failures
    assert again["failures"] == sample["failures"] and torch.equal(again["clip"], sample["clip"])

    report = VideoClips(paths, on_error="report", **SMALL)
    failed = report[3]
    assert set(failed) == {"index", "failures"} and failed["index"] == 3
    assert failed["failures"][0]["reason"] == "no video stream (streams: audio)"


def test_collate_drops_failed_samples_but_keeps_their_failures(broken_videos, synth_videos):
    paths = [synth_videos["avi_mpeg4"], broken_videos["text"], synth_videos["mp4_h264_bframes"]]
    data = VideoClips(paths, on_error="report", **SMALL)
    batch = collate_clips([data[i] for i in range(3)])
    assert batch["clip"].shape == (2, 3, 4, 32, 32) and batch["index"].tolist() == [0, 2]
    assert "label" not in batch and [f["index"] for f in batch["failures"]] == [1]
    empty = collate_clips([data[1]])
    assert set(empty) == {"failures"} and len(empty["failures"]) == 1
    labelled = collate_clips([{"clip": torch.zeros(3), "index": 0, "label": 4}])
    assert labelled["label"].dtype == torch.long and labelled["label"].tolist() == [4]


def test_dataloader_worker_survives_broken_files(broken_videos, synth_videos):
    paths = [synth_videos["avi_mpeg4"], *broken_videos.values(), synth_videos["webm_vp9"]]
    log = FailureLog()
    for mode in ("resample", "report"):
        ds = VideoClips(paths, on_error=mode, **SMALL)
        loader = DataLoader(ds, batch_size=3, num_workers=1, collate_fn=collate_clips)
        clips = 0
        for batch in loader:
            log.add(batch)
            clips += len(batch.get("index", ()))
        assert clips == (len(paths) if mode == "resample" else 2)
    assert len(log) >= 2 * len(broken_videos)
    summary = log.summary()
    assert summary.startswith(f"{len(log)} failed video read(s), {len(broken_videos)} distinct video(s):")
    assert f"{broken_videos['audio_only']}: no video stream (streams: audio)" in summary


def test_failure_log_counts_repeats():
    log = FailureLog()
    assert log.summary() == "no video failed to load"
    log.add([{"index": 2, "path": "a.avi", "reason": "cannot open"}] * 2)
    log.add({"failures": [{"index": 5, "path": "b.avi", "reason": "no frames decoded"}], "clip": None})
    assert len(log) == 3
    assert log.summary().splitlines() == [
        "3 failed video read(s), 2 distinct video(s):",
        "  a.avi: cannot open (2 times)",
        "  b.avi: no frames decoded",
    ]


# ---------------------------------------------------------------------- factory
def test_build_dataset_every_kind(tiny_synth, tmp_path):
    assert DATASET_KINDS == ("ucf101", "hmdb51", "list", "folder")
    ucf = build_dataset("ucf101", tiny_synth, subset="test", **SMALL)
    assert isinstance(ucf, UCF101) and len(ucf) == 8
    plain = build_dataset("ucf101", tiny_synth, labels=False, **SMALL)
    assert type(plain) is VideoClips and "label" not in plain[0]
    folder = build_dataset("folder", tiny_synth, labels=False, **SMALL)
    assert isinstance(folder, VideoFolder) and len(folder) == 32
    rel = [str(r.path.relative_to(tiny_synth)) for r in ucf.records[:2]]
    (tmp_path / "l.txt").write_text(f"{rel[0]} 1\n{rel[1]} 0\n")
    lst = build_dataset("list", tiny_synth, list_file=tmp_path / "l.txt", **SMALL)
    assert lst.labels == [1, 0]
    with pytest.raises(ValueError, match="unknown dataset kind 'kinetics'; expected one of ucf101, hmdb51, list"):
        build_dataset("kinetics", tiny_synth)
    with pytest.raises(ValueError, match="has no labels"):
        build_dataset("folder", tiny_synth)
    with pytest.raises(ValueError, match="needs list_file"):
        build_dataset("list", tiny_synth)


def test_copy_of_dataset_root_with_a_space(tiny_synth, tmp_path):
    root = tmp_path / "my data ü"
    shutil.copytree(tiny_synth, root)
    ds = UCF101(root, subset="test", **SMALL)
    assert len(ds) == 8 and ds[7]["clip"].shape == (3, 4, 32, 32)


def test_a_frame_stride_that_pads_most_clips_is_warned_about(tiny_synth: Path, capsys) -> None:
    from distilled_shufflenet.data import build_dataset

    # 24-frame videos: a clip of 8 frames every 4th spans 29 frames, every clip repeats its last frame
    padded = build_dataset("ucf101", tiny_synth, subset="test", clip_len=8, frame_stride=4)
    assert padded.short_videos() == (8, 8)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "8 of 8 videos" in err and "fewer than 29 frames" in err
    build_dataset("ucf101", tiny_synth, subset="test", clip_len=8, frame_stride=4)
    assert capsys.readouterr().err == ""  # once per dataset and clip span
    fitting = build_dataset("ucf101", tiny_synth, subset="test", clip_len=8, frame_stride=3)  # spans 22
    assert fitting.short_videos() == (0, 8) and fitting.padding_warning() is None
    assert capsys.readouterr().err == ""


def test_ucf101_handstand_pushups_naming_quirk_on_generated_split_files(tmp_path, make_video):
    """The official ``HandstandPushups/`` folder holds ``v_HandStandPushups_*`` files: the class comes from
    the folder the lists name (a twin of the check on the real split files, for a clone without them)."""
    (tmp_path / "classInd.txt").write_bytes(b"1 ApplyEyeMakeup\r\n2 HandstandPushups\r\n3 YoYo\r\n")
    train = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1", "HandstandPushups/v_HandStandPushups_g08_c01.avi 2",
             "YoYo/v_YoYo_g08_c01.avi 3"]
    test = ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi", "HandstandPushups/v_HandStandPushups_g01_c01.avi",
            "HandstandPushups/v_HandStandPushups_g01_c02.avi", "YoYo/v_YoYo_g01_c01.avi"]
    (tmp_path / "trainlist01.txt").write_bytes("".join(f"{line}\r\n" for line in train).encode())
    (tmp_path / "testlist01.txt").write_bytes("".join(f"{line}\r\n" for line in test).encode())
    records = read_ucf101_split(tmp_path, 1, "test", root=tmp_path)
    assert [r.label for r in records] == [0, 1, 1, 2]
    hs = [r for r in records if r.path.parent.name == "HandstandPushups"]
    assert len(hs) == 2 and all(r.path.name.startswith("v_HandStandPushups_") for r in hs)
    assert [r.label for r in read_ucf101_split(tmp_path, 1, "train", root=tmp_path)] == [0, 1, 2]
    for line in train + test:
        make_video(line.split()[0], 8)
    ds = UCF101(tmp_path, tmp_path, split=1, subset="test", **SMALL)
    assert ds.classes[1] == "HandstandPushups" and len(ds) == 4 and not ds.missing
    assert ds[1]["label"] == 1 and ds[1]["clip"].shape == (3, 4, 32, 32)
