"""Decoding by index with PyAV: exact frames after seeks, codecs, pixel formats, rotation, errors."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from distilled_shufflenet.data import video as video_mod
from distilled_shufflenet.data.video import VideoDecodeError, VideoReader, probe_video, read_frames

# frame counts, sizes and rates as listed in shared/data/README.md (counted with ffprobe -count_frames)
REAL = {
    "demo.mp4": (280, 28.0, 340, 256, "h264"),
    "test.mp4": (300, 30.0, 340, 256, "h264"),
    "test.avi": (164, 25.0, 320, 240, "mpeg4"),
    "v_BabyCrawling_g01_c01.avi": (165, 25.0, 320, 240, "mpeg4"),
    "v_Punch_g01_c01.avi": (121, 25.0, 320, 240, "mpeg4"),
    "v_PushUps_g01_c01.avi": (56, 25.0, 320, 240, "mpeg4"),
}


class FrameCounter:
    """Counts frames decoded and frames converted to RGB by every VideoReader while installed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.decoded = self.converted = 0
        frames, to_rgb = VideoReader._frames, VideoReader._to_rgb

        def counting_frames(reader):
            for f in frames(reader):
                self.decoded += 1
                yield f

        def counting_to_rgb(reader, frame):
            self.converted += 1
            return to_rgb(reader, frame)

        monkeypatch.setattr(VideoReader, "_frames", counting_frames)
        monkeypatch.setattr(VideoReader, "_to_rgb", counting_to_rgb)


# ---------------------------------------------------------------------- real videos
@pytest.mark.parametrize("name", sorted(REAL))
def test_probe_real_video_matches_its_readme(real_videos, name):
    info = probe_video(real_videos[name])
    n, fps, w, h, codec = REAL[name]
    assert (info.num_frames, info.fps, info.width, info.height, info.codec) == (n, fps, w, h, codec)
    assert info.rotation == 0 and not info.counted
    assert info.duration == pytest.approx(n / fps, abs=0.05)


@pytest.mark.parametrize("name", sorted(REAL))
def test_read_from_the_middle_equals_decode_all(real_videos, decode_all, name):
    path = real_videos[name]
    full = decode_all(path)  # (T, H, W, 3)
    assert len(full) == REAL[name][0]
    middle = np.arange(50, min(66, len(full)))
    assert np.array_equal(read_frames(path, middle), full[middle])
    tail = np.arange(len(full) - 16, len(full))  # past the last keyframes of the H.264 files
    assert np.array_equal(read_frames(path, tail), full[tail])
    mixed = [len(full) - 1, 7, 7, 0, 52, 3]  # unsorted, repeated
    assert np.array_equal(read_frames(path, mixed), full[mixed])


def test_seeks_to_the_keyframe_before_the_window_and_converts_only_kept_frames(real_videos, monkeypatch):
    path = real_videos["v_Punch_g01_c01.avi"]  # XVID with a keyframe every 12 frames
    video_mod._INDEX_CACHE.clear()
    counter = FrameCounter(monkeypatch)
    frames = read_frames(path, range(100, 116))
    assert frames.shape == (16, 240, 320, 3) and frames.dtype == np.uint8
    # the keyframe before 100 is 96: about 20 frames decoded, not 116; 16 converted
    assert counter.decoded <= 24
    assert counter.converted == 16


def test_frames_that_do_not_match_the_index_after_a_seek_make_it_decode_from_the_start(
    synth_videos, decode_all, monkeypatch
):
    path = synth_videos["avi_mpeg4"]  # 40 frames, a keyframe every 8
    build = VideoReader._packet_index

    def wrong_index(reader):
        index = build(reader)
        rank = dict(index.rank)
        rank[next(t for t, k in rank.items() if k == 26)] = 999  # one frame after keyframe 24 mislabelled
        return video_mod._PacketIndex(rank, index.keyframes)

    monkeypatch.setattr(VideoReader, "_packet_index", wrong_index)
    counter = FrameCounter(monkeypatch)
    frames = read_frames(path, range(27, 31))
    assert np.array_equal(frames, decode_all(path)[27:31])
    assert counter.decoded >= 31  # the seek was abandoned for a decode from frame 0


def test_decodes_only_up_to_the_last_frame_wanted(real_videos, monkeypatch):
    counter = FrameCounter(monkeypatch)
    read_frames(real_videos["v_BabyCrawling_g01_c01.avi"], [3, 1, 1])
    assert counter.decoded <= 8  # of 165 (a few frames of decoder delay at most)
    assert counter.converted == 2  # unique frames


def test_reader_continues_forward_without_decoding_again(real_videos, decode_all, monkeypatch):
    path = real_videos["v_BabyCrawling_g01_c01.avi"]  # a single keyframe: no seek possible
    full = decode_all(path)
    counter = FrameCounter(monkeypatch)
    with VideoReader(path) as reader:
        a = reader.read(range(10, 20))
        b = reader.read(range(20, 30))
        c = reader.read([5])  # backwards: decodes from the start again
    assert np.array_equal(a, full[10:20]) and np.array_equal(b, full[20:30]) and np.array_equal(c, full[[5]])
    assert counter.decoded <= 30 + 6 + 8


# ---------------------------------------------------------------------- containers and codecs
@pytest.mark.parametrize(
    "name", ["avi_mpeg4", "mp4_h264_bframes", "mkv_h264", "webm_vp9", "webm_vp8", "avi_audio", "mp4_audio"]
)
def test_codecs_read_exact_frames_anywhere(synth_videos, decode_all, frame_ids, name):
    path = synth_videos[name]
    full = decode_all(path)
    info = probe_video(path)
    assert info.num_frames == len(full) and (info.width, info.height) == (64, 48)
    assert info.counted == (path.suffix in (".mkv", ".webm"))  # Matroska states no frame count
    n = len(full)
    for window in ([0, 1, 2, 3], list(range(12, 20)), list(range(n - 8, n)), [n - 7, 2, n - 7, 21]):
        frames = read_frames(path, window)
        assert np.array_equal(frames, full[window]), window
        assert frame_ids(frames) == window


@pytest.mark.parametrize("name", ["mp4_vfr", "mkv_vfr"])
def test_variable_frame_rate_indexes_by_position_not_time(synth_videos, frame_ids, name):
    path = synth_videos[name]  # gaps of 10 to 200 ms between frames
    assert probe_video(path).num_frames == 30
    wanted = [0, 3, 4, 5, 17, 29, 10]
    assert frame_ids(read_frames(path, wanted)) == wanted


def test_grey_and_10_bit_sources_become_8_bit_rgb(odd_videos, frame_ids):
    grey = read_frames(odd_videos["gray"], [0, 5])
    assert grey.shape == (2, 48, 64, 3) and grey.dtype == np.uint8
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    assert frame_ids(grey) == [0, 5]
    deep = read_frames(odd_videos["10bit"], [11, 4])
    assert deep.shape == (2, 48, 64, 3) and deep.dtype == np.uint8
    assert frame_ids(deep) == [11, 4]


def test_odd_width_and_height(odd_videos, frame_ids):
    info = probe_video(odd_videos["odd_size"])
    assert (info.width, info.height) == (63, 45)
    frames = read_frames(odd_videos["odd_size"], [2, 9])
    assert frames.shape == (2, 45, 63, 3) and frame_ids(frames) == [2, 9]


def test_rotation_metadata_is_applied(odd_videos, decode_all):
    path = odd_videos["rotated"]  # 64x48 coded, display matrix: 90 degrees counter-clockwise
    info = probe_video(path)
    assert info.rotation == 90 and (info.width, info.height) == (48, 64)
    frames = read_frames(path, [0, 3])
    assert frames.shape == (2, 64, 48, 3)
    assert np.array_equal(frames, np.rot90(decode_all(path)[[0, 3]], 1, axes=(1, 2)))
    # the white block of the top-left corner is at the bottom-left once turned counter-clockwise
    assert frames[0, -6:, :6].mean() > 240 and frames[0, :6, :6].mean() < 200


def test_short_videos(odd_videos, frame_ids):
    assert probe_video(odd_videos["one_frame"]).num_frames == 1
    assert frame_ids(read_frames(odd_videos["one_frame"], [0, 0, 0])) == [0, 0, 0]
    assert probe_video(odd_videos["short"]).num_frames == 5


def test_path_with_spaces_and_non_ascii(make_video, frame_ids):
    path = make_video("dossier vidéo/clip d'été 日本.avi", 10)
    assert probe_video(path).num_frames == 10
    assert frame_ids(read_frames(path, [9, 1])) == [9, 1]


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "name, reason",
    [
        ("zero_byte", "empty file (0 bytes)"),
        ("text", "cannot open"),
        ("header_only", "cannot open"),
        ("truncated", "cannot open"),
        ("audio_only", "no video stream (streams: audio)"),
    ],
)
def test_unreadable_files_raise_a_decode_error_naming_file_and_reason(broken_videos, name, reason):
    path = broken_videos[name]
    for call in (lambda: probe_video(path), lambda: read_frames(path, [0])):
        with pytest.raises(VideoDecodeError) as err:
            call()
        assert err.value.path == str(path) and reason in err.value.reason
        assert str(path) in str(err.value) and isinstance(err.value, ValueError)


def test_missing_file(tmp_path):
    with pytest.raises(VideoDecodeError, match="no such file"):
        read_frames(tmp_path / "nope.avi", [0])


def test_index_out_of_range(synth_videos):
    path = synth_videos["avi_mpeg4"]  # 40 frames
    with pytest.raises(VideoDecodeError, match="frame index 40 out of range: the video has 40 decodable frames"):
        read_frames(path, [3, 40])
    with pytest.raises(VideoDecodeError, match="out of range"):
        read_frames(path, [-1])
    with pytest.raises(ValueError, match="non-empty 1-D"):
        read_frames(path, [])


def test_frame_count_that_lies_is_corrected_by_counting(make_video, frame_ids):
    # an MP4 with its index first, cut short: it states 40 frames but fewer can be decoded
    path = make_video("cut.mp4", 40, codec="libx264", container_options={"movflags": "faststart"})
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * 0.8)])
    assert probe_video(path).num_frames == 40  # what the container says
    with VideoReader(path) as reader:
        with pytest.raises(VideoDecodeError, match="frame index 39 out of range") as err:
            reader.read([39])
        real = reader.num_frames
    assert 0 < real < 40 and f"the video has {real} decodable frames" in str(err.value)
    assert probe_video(path).num_frames == real  # later probes in this process know better
    info = probe_video(path, count=True)
    assert info.num_frames == real and info.counted
    assert frame_ids(read_frames(path, [real - 1, 0])) == [real - 1, 0]


def test_decode_error_pickles_across_processes(tmp_path):
    err = VideoDecodeError(tmp_path / "a.avi", "no video stream")
    back = pickle.loads(pickle.dumps(err))
    assert isinstance(back, VideoDecodeError) and back.path == err.path and back.reason == err.reason


# twins of the two decode-efficiency tests above on generated videos, for a clone without ../shared/data
def test_seeks_to_the_keyframe_before_the_window_on_a_generated_video(make_long_video, decode_all, monkeypatch):
    path = make_long_video("gop12.avi", 130, gop=12)
    full = decode_all(path)
    video_mod._INDEX_CACHE.clear()
    counter = FrameCounter(monkeypatch)
    frames = read_frames(path, range(100, 116))
    assert np.array_equal(frames, full[100:116])
    # the keyframe before 100 is 96: about 20 frames decoded, not 116; 16 converted
    assert counter.decoded <= 24
    assert counter.converted == 16


def test_decodes_only_up_to_the_last_frame_wanted_on_a_generated_video(make_long_video, monkeypatch):
    path = make_long_video("one_keyframe.avi", 165, gop=1000)  # a single keyframe: no seek can help
    counter = FrameCounter(monkeypatch)
    read_frames(path, [3, 1, 1])
    assert counter.decoded <= 8  # of 165 (a few frames of decoder delay at most)
    assert counter.converted == 2  # unique frames
