"""The video data layer: decode, sample, transform, datasets, and tools to check and benchmark data.

>>> from distilled_shufflenet.data import UCF101, collate_clips
>>> train = UCF101("UCF-101", "ucfTrainTestlist", split=1, subset="train")   # random 16-frame clips
>>> train[0]["clip"].shape, train[0]["label"]                                 # (3, 16, 224, 224), 0
>>> loader = DataLoader(train, batch_size=8, num_workers=2, collate_fn=collate_clips)

Pieces, each usable alone: :func:`read_frames` / :func:`probe_video` (PyAV decoding), samplers
(:func:`random_window`, :func:`center_window`, :func:`uniform_windows`), clip transforms and their presets
(:func:`train_transform`, :func:`eval_transform`), split parsers returning :class:`VideoRecord` lists,
datasets (:class:`UCF101`, :class:`HMDB51`, :class:`VideoList`, :class:`VideoFolder`, :func:`unlabelled`),
:func:`build_dataset` and :func:`unlabelled_videos` (the videos distillation may use).
"""

from distilled_shufflenet.data.clips import (
    ClipOptions,
    FailureLog,
    LabelledVideoClips,
    MissingVideosError,
    VideoClips,
    collate_clips,
    unlabelled,
)
from distilled_shufflenet.data.datasets import HMDB51, UCF101, VideoFolder, VideoList
from distilled_shufflenet.data.factory import DATASET_KINDS, build_dataset
from distilled_shufflenet.data.splits import (
    VideoRecord,
    find_videos,
    hmdb51_classes,
    hmdb51_splits_dir,
    read_class_index,
    read_class_list,
    read_hmdb51_split,
    read_ucf101_split,
    read_video_list,
    ucf101_splits_dir,
)
from distilled_shufflenet.data.sampling import center_window, random_window, spread_indices, uniform_windows
from distilled_shufflenet.data.transforms import (
    EvalTransform,
    TrainTransform,
    eval_transform,
    train_transform,
)
from distilled_shufflenet.data.collection import unlabelled_videos
from distilled_shufflenet.data.video import (
    VIDEO_EXTENSIONS,
    VideoDecodeError,
    VideoInfo,
    VideoReader,
    probe_video,
    read_frames,
)

__all__ = [
    "DATASET_KINDS",
    "HMDB51",
    "UCF101",
    "VIDEO_EXTENSIONS",
    "ClipOptions",
    "EvalTransform",
    "FailureLog",
    "LabelledVideoClips",
    "MissingVideosError",
    "TrainTransform",
    "VideoClips",
    "VideoDecodeError",
    "VideoFolder",
    "VideoInfo",
    "VideoList",
    "VideoReader",
    "VideoRecord",
    "build_dataset",
    "center_window",
    "collate_clips",
    "eval_transform",
    "find_videos",
    "hmdb51_classes",
    "hmdb51_splits_dir",
    "probe_video",
    "random_window",
    "read_class_index",
    "read_class_list",
    "read_frames",
    "read_hmdb51_split",
    "read_ucf101_split",
    "read_video_list",
    "spread_indices",
    "train_transform",
    "ucf101_splits_dir",
    "uniform_windows",
    "unlabelled",
    "unlabelled_videos",
]
