"""Teacher feature cache: the frozen teachers' targets for K fixed views of every video, computed once.

Teachers never change during distillation, so their targets for a fixed set of augmented views can be
stored and read back instead of recomputed every epoch; each epoch the student draws one of the K views,
re-decodes its clip (:func:`~distilled_shufflenet.distill.views.read_view`) and reads its targets.

A cache keeps each teacher's maps before they are laid on the student's slots (resampled in space only:
the 2D teacher's one frame, the 3D teacher's own time steps), so one cache built with both teachers serves
every distillation of the same videos and views: both teachers at any split of the slots, and each teacher
alone (the ablation).

On disk::

    DIR/cache.json                    what the cache holds: its fingerprint (teachers' weights and
                                      settings, taps and stored shapes, views, preprocessing, video list
                                      and each video's size and first and last blocks)
    DIR/shard-00003.rank1.pt          videos [3S, 4S): views (n, K, 5 + T) int64, ok (n,) bool,
                                      parts {"mid/2d": (n, K, C, 1, H, W) fp16,
                                      "mid/3d": (n, K, C, t, H, W) fp16, ...}, scales
                                      {"mid/2d": (n, K) float32} (a map is stored / its scale, 1 unless it
                                      would overflow float16), failures
    DIR/shard-00003.rank1.json        its size and SHA-256, written after the shard

Shards are written atomically, one per ``shard_size`` videos, by the rank of ``torchrun`` that owns them
(``shard % world_size == rank``; the name says which rank wrote it, and any rank reads any). A build
that is killed resumes: shards whose record is present, whose size (and, with ``verify``, checksum)
matches and which can be opened are kept, others are recomputed.  A ``cache.json`` that is damaged or
disagrees with the shards' records is refused by name: which shard holds which videos cannot be told.
What the cache depends on, and how a stale one is named, is :mod:`~distilled_shufflenet.distill.fingerprint`;
the checks of ``cache.json`` and of each shard are :mod:`~distilled_shufflenet.distill.shards`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import sys
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from distilled_shufflenet.checkpoint import atomic_save
from distilled_shufflenet.data.video import VideoDecodeError, VideoReader
from distilled_shufflenet.distill.fingerprint import (
    TeacherCacheError,
    cache_fingerprint,
    check_fingerprint,
    layout_record,
    state_dict_digest,
    video_stats,
)
from distilled_shufflenet.distill.shards import CACHE_FORMAT, META, num_shards, read_meta, scan_shards, sha256_file
from distilled_shufflenet.distill.targets import SlotLayout, TargetBuilder
from distilled_shufflenet.distill.views import View, ViewSpec, apply_view, make_view, read_view, spec_from_dict
from distilled_shufflenet.io import atomic_write_text

__all__ = ["CACHE_FORMAT", "TeacherCache", "TeacherCacheError", "cache_fingerprint", "state_dict_digest"]

_FP16_PEAK = 32768.0  # largest magnitude stored unscaled (float16 reaches 65504)
# the disk-space check: room for the shards still to write, measured on a written shard (else estimated
# from the stored shapes), times this margin
_ROOM_MARGIN = 1.25
# what the fix of a cache problem says, for the command line and the library alike
_FLAGS = "dsn distill --cache-teachers DIR / --cache-views K, config fields cache_teachers / cache_views"


def _human(n: float) -> str:
    """A size in bytes for a message: ``"49.7 KB"``."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def _check_room(root: Path, need: float, how: str) -> None:
    """Refuse to start (or go on) when the disk holding ``root`` lacks room for ``need`` more bytes, with
    :data:`_ROOM_MARGIN`; ``how`` says where the figure comes from."""
    free = shutil.disk_usage(root).free
    if need * _ROOM_MARGIN > free:
        raise TeacherCacheError(
            f"teacher cache {root}: needs {_human(need)} more ({how}; {_human(need * _ROOM_MARGIN)} with a "
            f"{_ROOM_MARGIN - 1:.0%} margin), the disk holding {root} has {_human(free)} free; use a folder on a "
            f"larger disk or fewer views ({_FLAGS}), or distil without the cache")


def _no_room(root: Path, path: Path, e: OSError) -> TeacherCacheError:
    return TeacherCacheError(
        f"teacher cache {root}: the disk is full ({e.strerror}) while writing {path}; free some space and run the "
        f"same command again (the shards written are kept), or use a folder on a larger disk or fewer views "
        f"({_FLAGS}), or distil without the cache")


def _dist() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


# ---------------------------------------------------------------------- the cache
class TeacherCache:
    """A built teacher cache, opened for reading. Build or resume one with :meth:`build`, open a finished
    one with :meth:`open`.

    ``stored(i, k)`` -> the target parts of view ``k`` of video ``i`` as stored
    (:attr:`~distilled_shufflenet.distill.PartLayout.stored_shape`: ``{"mid/2d": (C, 1, H, W), ...}``; a
    batch of them goes on the student's slots with :meth:`~distilled_shufflenet.distill.SlotLayout.expand`);
    ``view(i, k)`` -> :class:`~distilled_shufflenet.distill.views.View`; ``clip(i, k)`` -> the student's clip
    ``(3, T, crop, crop)``; ``draw(i, epoch)`` -> the view of an epoch; ``failed`` -> ``{video index: (path,
    reason)}`` for videos that could not be read.  :class:`~distilled_shufflenet.distill.dataset.CachedViews`
    reads training samples this way.  Shards are memory-mapped, so a DataLoader worker reads only the
    targets it returns.
    """

    def __init__(self, root: Path, meta: dict[str, Any], files: dict[int, Path], videos: Sequence[Path] | None,
                 layout: SlotLayout | None = None) -> None:
        self.root = root
        self.meta = meta
        self.spec = spec_from_dict(meta["fingerprint"]["views"])
        self.num_videos = int(meta["num_videos"])
        self.shard_size = int(meta["shard_size"])
        self.parts = meta["fingerprint"]["targets"]["parts"]
        self.layout = layout
        if layout is not None:
            held = {p["key"]: tuple(p["stored_shape"]) for p in self.parts}
            wrong = [f"{q.key} {q.stored_shape} (cache: {held.get(q.key, 'absent')})" for q in layout.parts
                     if held.get(q.key) != tuple(q.stored_shape)]
            if wrong:
                raise TeacherCacheError(f"teacher cache {root} does not hold the parts of this target layout: "
                                        + "; ".join(wrong))
        self.videos = [Path(p) for p in videos] if videos is not None else None
        self._files = files
        self._open: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._failed: dict[int, tuple[str, str]] | None = None

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(cls, root: str | os.PathLike, fingerprint: Mapping[str, Any] | None = None, *,
             videos: Sequence[str | os.PathLike] | None = None, verify: bool = False,
             layout: SlotLayout | None = None) -> "TeacherCache":
        """Open a finished cache. With ``fingerprint`` (:func:`cache_fingerprint`), a cache built for other
        teachers, views, preprocessing or videos is refused with a message listing what differs; a cache
        that holds more teachers than the fingerprint asks for serves it (both teachers' cache, one
        teacher's run). Every shard must be present with its recorded size (``verify=True`` also checks
        the SHA-256). ``videos`` (the dataset's paths) lets :meth:`clip` decode views; ``layout`` (the
        builder's :meth:`~distilled_shufflenet.distill.TargetBuilder.plan`) says which parts :meth:`stored`
        reads, and is checked against the stored shapes."""
        root = Path(root)
        meta = read_meta(root)
        if meta is None:
            raise TeacherCacheError(f"teacher cache {root}: no {META} here; build the cache first")
        if fingerprint is not None:
            check_fingerprint(root, meta, fingerprint, videos)
        files, problems = scan_shards(root, meta, verify=verify)
        missing = [i for i in range(num_shards(meta)) if i not in files]
        if missing:
            why = "; ".join(problems[:3])
            raise TeacherCacheError(
                f"teacher cache {root} is incomplete: {len(missing)} of {num_shards(meta)} shards missing or "
                f"damaged (first: {missing[:5]}){' - ' + why if why else ''}; run the build again (the same "
                "dsn distill command), it recomputes them")
        return cls(root, meta, files, videos, layout)

    # ------------------------------------------------------------------ building
    @classmethod
    def build(cls, root: str | os.PathLike, videos: Sequence[str | os.PathLike] | Any, builder: TargetBuilder,
              spec: ViewSpec, *, shard_size: int = 16, batch_size: int = 8,
              device: str | torch.device | None = None, progress: bool = True, verify: bool = False,
              log: Callable[[str], None] | None = None) -> "TeacherCache":
        """Compute (or finish) the cache of ``videos`` (paths, or a dataset with ``.paths``) in ``root``
        and open it.

        Prints the cache's size first and refuses (:class:`TeacherCacheError`) when the disk lacks room
        or when ``root`` holds a cache built for something else. Shards already complete are kept (a
        shard cut short is recomputed). In a distributed run (``torch.distributed`` initialised) each
        rank computes its own shards, then all ranks wait for each other and open the whole cache.
        Unreadable videos are skipped, counted and reported by name (:attr:`failed`). Teachers run on
        ``device`` (default: where they are), in batches of ``batch_size`` clips.
        """
        say = log if log is not None else (lambda msg: print(msg, flush=True))
        paths = _video_paths(videos)
        cls.build_shards(root, paths, builder, spec, shard_size=shard_size, batch_size=batch_size, device=device,
                         progress=progress, verify=verify, log=say)
        rank, world_size = _dist()
        if world_size > 1:
            torch.distributed.barrier()
        cache = cls.open(root, cache_fingerprint(builder, spec, paths), videos=paths,
                         layout=builder.plan((spec.clip_len, spec.crop_size, spec.crop_size)))
        if cache.failed and rank == 0:
            shown = ", ".join(f"{p} ({r})" for p, r in list(cache.failed.values())[:5])
            say(f"teacher cache: {len(cache.failed)} unreadable video(s) skipped: {shown}")
        return cache

    @classmethod
    def build_shards(cls, root: str | os.PathLike, videos: Sequence[str | os.PathLike] | Any,
                     builder: TargetBuilder, spec: ViewSpec, *, shard_size: int = 16, batch_size: int = 8,
                     device: str | torch.device | None = None, progress: bool = True, verify: bool = False,
                     rank: int | None = None, world_size: int | None = None,
                     log: Callable[[str], None] | None = None) -> list[int]:
        """The writing half of :meth:`build`: compute the missing shards that belong to ``rank`` (default:
        this process's rank in ``torch.distributed``, else 0 of 1) and return their indices. Does not wait
        for other ranks."""
        paths = _video_paths(videos)
        if not paths:
            raise TeacherCacheError(f"teacher cache {root}: no videos to cache")
        if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
            raise ValueError(f"shard_size must be an integer >= 1, got {shard_size!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        auto_rank, auto_world = _dist()
        rank = auto_rank if rank is None else rank
        world_size = auto_world if world_size is None else world_size
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world_size {world_size}")
        say = log if log is not None else (lambda msg: print(msg, flush=True))
        root = Path(root)
        root.mkdir(parents=True, exist_ok=True)

        fingerprint = cache_fingerprint(builder, spec, paths)
        layout = builder.plan((spec.clip_len, spec.crop_size, spec.crop_size))
        meta = {"format": CACHE_FORMAT, "fingerprint": fingerprint, "num_videos": len(paths),
                "shard_size": shard_size, "video_stats": video_stats(paths)}
        existing = read_meta(root)
        if existing is not None:
            check_fingerprint(root, existing, fingerprint, paths)
            meta = existing  # it may hold more teachers than this builder uses
            shard_size = int(existing["shard_size"])  # the shards already written decide
        else:
            leftovers = [p.name for p in root.iterdir() if not p.name.startswith(".")]
            if leftovers:
                raise TeacherCacheError(f"teacher cache {root}: the folder holds other files ({leftovers[:3]}) "
                                        "and no cache; use an empty or new folder")
            atomic_write_text(json.dumps(meta, indent=1, default=str), root / META)  # identical from every rank

        shard_count = math.ceil(len(paths) / shard_size)
        done, problems = scan_shards(root, meta, verify=verify)
        mine = [i for i in range(shard_count) if i % world_size == rank and i not in done]
        extra = sorted(set(meta["fingerprint"]["teachers"]) - set(builder.kinds))
        if extra and len(done) < shard_count:
            raise TeacherCacheError(
                f"teacher cache {root} is unfinished and also holds the {' and '.join(k.upper() for k in extra)} "
                f"teacher's targets, which this run (--teachers {builder.mode}) cannot compute; finish it with a "
                "run of every teacher it holds, or use another folder")
        per_view = sum(int(np.prod(p["stored_shape"])) for p in layout_record(layout)) * 2  # fp16 bytes
        total = len(paths) * spec.views * per_view
        videos_of = {i: min(shard_size, len(paths) - i * shard_size) for i in range(shard_count)}
        todo = [i for i in range(shard_count) if i not in done]
        # a shard's bytes: per video, measured on the shards written (the largest share), else the arrays'
        # own size (maps, view records, scales); plus the file format's records of its tensors
        per_shard = 1024 + 384 * (2 + 2 * len(layout.parts))
        measured = max((done[i].stat().st_size / videos_of[i] for i in done), default=None)
        per_video = measured or spec.views * (per_view + (5 + spec.clip_len) * 8 + 4 * len(layout.parts)) + 1
        need = sum(videos_of[i] for i in todo) * per_video + len(todo) * per_shard
        if rank == 0:
            say(f"teacher cache {root}: {len(paths)} videos x {spec.views} views x {_human(per_view)} = "
                f"{_human(total)} (fp16, {shard_count} shards); {len(done)} shards done, {_human(need)} to write")
            for p in problems:
                say(f"teacher cache: recomputing {p}")
        how = f"measured on the {len(done)} shard(s) written" if measured else "estimated from the maps' sizes"
        _check_room(root, need, how)

        if device is not None:
            builder = builder.to(device)
        started = time.monotonic()
        for n, shard in enumerate(mine):
            written = cls._build_shard(root, shard, paths, shard_size, builder, layout, spec, batch_size, rank)
            if n == 0 and not measured and len(mine) > 1:  # the estimate checked against a real shard
                left = sum(videos_of[i] for i in mine[1:]) * written.stat().st_size / videos_of[shard]
                _check_room(root, left + (len(mine) - 1) * per_shard, f"measured on {written.name}")
            if progress:
                rate = (n + 1) / max(time.monotonic() - started, 1e-9)
                print(f"\rteacher cache [rank {rank}]: shard {n + 1}/{len(mine)} "
                      f"({rate * 60:.1f} shards/min)", end="" if n + 1 < len(mine) else "\n",
                      file=sys.stderr, flush=True)
        return mine

    @staticmethod
    def _build_shard(root: Path, shard: int, paths: Sequence[Path], shard_size: int, builder: TargetBuilder,
                     layout: SlotLayout, spec: ViewSpec, batch_size: int, rank: int) -> Path:
        start, stop = shard * shard_size, min((shard + 1) * shard_size, len(paths))
        n, k_views = stop - start, spec.views
        views = torch.zeros(n, k_views, 5 + spec.clip_len, dtype=torch.int64)
        ok = torch.zeros(n, dtype=torch.bool)
        parts = {p.key: torch.zeros(n, k_views, *p.stored_shape, dtype=torch.float16) for p in layout.parts}
        scales = {p.key: torch.ones(n, k_views, dtype=torch.float32) for p in layout.parts}
        failures: list[dict[str, Any]] = []
        pending: list[tuple[int, int, Tensor, View]] = []
        run_on = next(iter(builder.buffers()), torch.empty(0)).device

        def flush() -> None:
            if not pending:
                return
            clips = torch.stack([c for _, _, c, _ in pending]).to(run_on)  # (B, 3, T, c, c)
            index = torch.tensor([v.frame2d for _, _, _, v in pending])
            out = builder(clips, index, compact=True)
            for b, (j, k, _, _) in enumerate(pending):
                for key, value in out.items():
                    x = value[b].to("cpu", torch.float32)
                    if not torch.isfinite(x).all():
                        raise TeacherCacheError(f"the {key} target of view {k} of {paths[start + j]} is not finite; "
                                                "check the teacher's weights")
                    # maps beyond float16's range (untrained deep teachers reach 1e5) are stored scaled down
                    peak = float(x.abs().max()) if x.numel() else 0.0
                    scale = peak / _FP16_PEAK if peak > _FP16_PEAK else 1.0
                    scales[key][j, k] = scale
                    parts[key][j, k] = (x / scale).to(torch.float16)
            pending.clear()

        for j, i in enumerate(range(start, stop)):
            try:
                clips = _read_views(paths[i], i, spec)
            except VideoDecodeError as e:
                failures.append({"index": i, "path": str(paths[i]), "reason": e.reason})
                continue
            ok[j] = True
            for k, (clip, view) in enumerate(clips):
                views[j, k] = view.to_tensor()
                pending.append((j, k, clip, view))
                if len(pending) >= batch_size:
                    flush()
        flush()
        name = f"shard-{shard:05d}.rank{rank}"
        for old in root.glob(f"shard-{shard:05d}.rank*.json"):
            old.unlink(missing_ok=True)  # an invalid record of an earlier try, perhaps by another rank
        written = root / f"{name}.pt"
        try:
            atomic_save({"start": start, "stop": stop, "views": views, "ok": ok, "parts": parts, "scales": scales,
                         "failures": failures}, written)
            record = {"size": written.stat().st_size, "sha256": sha256_file(written), "videos": [start, stop],
                      "failed": len(failures)}
            atomic_write_text(json.dumps(record), root / f"{name}.json")  # last: the shard is complete
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise _no_room(root, written, e) from None
            raise
        return written

    # ------------------------------------------------------------------ reading
    def _shard(self, index: int) -> dict[str, Any]:
        if index in self._open:
            self._open.move_to_end(index)
            return self._open[index]
        path = self._files[index]
        try:
            data = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except Exception as e:  # noqa: BLE001 - damaged since the cache was opened
            raise TeacherCacheError(
                f"teacher cache {self.root}: the shard {path} cannot be read ({type(e).__name__}); run the same "
                "command again: building the cache recomputes shards that cannot be read") from None
        self._open[index] = data
        while len(self._open) > 8:
            self._open.popitem(last=False)
        return data

    def _locate(self, video_index: int, k: int) -> tuple[dict[str, Any], int]:
        if not 0 <= int(video_index) < self.num_videos:
            raise IndexError(f"video index {video_index} out of range for a cache of {self.num_videos} videos")
        if not 0 <= int(k) < self.spec.views:
            raise IndexError(f"view {k} out of range: the cache holds {self.spec.views} views per video")
        data = self._shard(int(video_index) // self.shard_size)
        j = int(video_index) - data["start"]
        if not bool(data["ok"][j]):
            path, reason = self.failed.get(int(video_index), ("?", "unreadable"))
            raise VideoDecodeError(path, f"could not be read when the teacher cache was built: {reason}")
        return data, j

    def stored(self, video_index: int, k: int) -> dict[str, Tensor]:
        """The parts of view ``k`` of video ``video_index`` as stored, in float32 (maps may exceed float16):
        ``{"mid/2d": (C, 1, H, W), "mid/3d": (C, t, H, W), ...}``; only the parts of the layout the cache
        was opened with, if any."""
        data, j = self._locate(video_index, k)
        keys = self.layout.keys if self.layout is not None else [p["key"] for p in self.parts]
        return {key: data["parts"][key][j, k].float() * data["scales"][key][j, k] for key in keys}  # copies

    def view(self, video_index: int, k: int) -> View:
        data, j = self._locate(video_index, k)
        return View.from_tensor(data["views"][j, k])

    def clip(self, video_index: int, k: int) -> Tensor:
        """The student's clip of view ``k`` of video ``video_index``, decoded again: ``(3, T, crop, crop)``."""
        if self.videos is None:
            raise ValueError("this cache was opened without the video list (videos=...); cannot decode clips")
        return read_view(self.videos[int(video_index)], self.view(video_index, k), self.spec)

    def draw(self, video_index: int, epoch: int) -> int:
        """The view of video ``video_index`` used in ``epoch``: uniform over the K views, a pure function of
        (the views' seed, epoch, video index), so every rank and DataLoader worker agrees."""
        rng = np.random.default_rng((int(self.spec.seed), int(epoch), int(video_index)))
        return int(rng.integers(self.spec.views))

    @property
    def failed(self) -> dict[int, tuple[str, str]]:
        """``{video index: (path, reason)}`` of the videos that could not be read when building."""
        if self._failed is None:
            self._failed = {}
            for index in sorted(self._files):
                for f in self._shard(index)["failures"]:
                    self._failed[int(f["index"])] = (f["path"], f["reason"])
        return self._failed

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self._files.values())

    def __len__(self) -> int:
        return self.num_videos

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers get a copy: they map the shards themselves rather than receive their bytes
        state = dict(self.__dict__)
        state["_open"] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return (f"TeacherCache({self.root}, {self.num_videos} videos x {self.spec.views} views, "
                f"{_human(self.size_bytes)})")


def _video_paths(videos: Sequence[str | os.PathLike] | Any) -> list[Path]:
    return [Path(p) for p in (videos.paths if hasattr(videos, "paths") else videos)]


def _read_views(path: Path, index: int, spec: ViewSpec) -> list[tuple[Tensor, View]]:
    """The K views of one video: decoded once (all frames the views need), then cropped per view."""
    try:
        with VideoReader(path) as reader:
            info = reader.info
            views = [make_view(spec, index, k, reader.num_frames, info.height, info.width) for k in range(spec.views)]
            wanted = np.unique(np.concatenate([np.asarray(v.frames) for v in views]))
            try:
                frames = reader.read(wanted)
            except VideoDecodeError:
                if reader.num_frames >= info.num_frames:
                    raise
                # the container's count was too high: draw the views within the real count
                views = [make_view(spec, index, k, reader.num_frames, info.height, info.width)
                         for k in range(spec.views)]
                wanted = np.unique(np.concatenate([np.asarray(v.frames) for v in views]))
                frames = reader.read(wanted)
    except OSError as e:
        raise VideoDecodeError(path, f"cannot read: {e.strerror or e}") from None
    where = {int(f): n for n, f in enumerate(wanted)}
    out = []
    for v in views:
        clip = torch.from_numpy(frames[[where[f] for f in v.frames]])  # (T, H, W, 3) uint8
        out.append((apply_view(clip, v, spec), v))
    return out

