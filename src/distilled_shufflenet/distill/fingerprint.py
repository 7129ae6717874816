"""What a teacher cache's contents depend on (its fingerprint), and how a cache on disk differs from what a
run asks for: other teachers, target layout, views and preprocessing, or videos (their list, or their
content under the same names)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from distilled_shufflenet.distill.targets import SlotLayout, TargetBuilder
from distilled_shufflenet.distill.views import ViewSpec

__all__ = ["TeacherCacheError", "cache_fingerprint", "changed_videos", "check_fingerprint", "layout_record",
           "state_dict_digest", "video_stats", "videos_digest"]

BLOCK = 16384  # bytes read at each end of a video for the fingerprint


class TeacherCacheError(ValueError):
    """A teacher cache that cannot be used: stale, foreign, incomplete, damaged, or without room."""


def state_dict_digest(module: torch.nn.Module) -> str:
    """SHA-256 of a module's state dict (names, dtypes, shapes and bytes, in key order)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def videos_digest(paths: Sequence[Path]) -> str:
    """SHA-256 of the video list, relative to its common folder (moving the dataset keeps the cache)."""
    strs = [os.path.abspath(p) for p in paths]
    root = os.path.commonpath(strs) if len(strs) > 1 else os.path.dirname(strs[0]) if strs else ""
    h = hashlib.sha256()
    for p in strs:
        h.update(os.path.relpath(p, root).encode() + b"\n")
    return h.hexdigest()


def video_stats(paths: Sequence[Path]) -> list[list[Any]]:
    """``[size, digest of the first and last blocks]`` of each video: a different video copied over a cached
    name changes them, while moving or copying the dataset (new modification times) does not.  Two small
    reads per video, not a hash of the whole file: the dataset may be hundreds of gigabytes."""
    out: list[list[Any]] = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                h = hashlib.sha256(f.read(BLOCK))
                if size > BLOCK:
                    f.seek(max(BLOCK, size - BLOCK))
                    h.update(f.read(BLOCK))
        except OSError as e:
            raise TeacherCacheError(f"teacher cache: cannot read {p}: {e.strerror or e}") from None
        out.append([int(size), h.hexdigest()[:16]])
    return out


def _stats_digest(stats: Sequence[Sequence[Any]]) -> str:
    return hashlib.sha256(json.dumps([list(s) for s in stats]).encode()).hexdigest()


def layout_record(layout: SlotLayout) -> list[dict[str, Any]]:
    return [{"key": p.key, "teacher": p.teacher, "stored_shape": list(p.stored_shape)} for p in layout.parts]


def cache_fingerprint(builder: TargetBuilder, spec: ViewSpec, videos: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """What a cache's contents depend on: each teacher (name, arguments, weights' digest, mean/std), the
    taps and the stored shape of each teacher's map there at the spec's clip size (not how the slots are
    split: that is applied when reading), the 3D teacher's frame stride, the views and the student's
    preprocessing (:class:`ViewSpec`), the list of videos and each one's size and first and last 16 KiB."""
    layout = builder.plan((spec.clip_len, spec.crop_size, spec.crop_size))
    teachers = {}
    for kind in builder.kinds:
        model = builder.teacher(kind)
        teachers[kind] = {"name": model.model_name, "kwargs": dict(model.model_kwargs),
                          "weights": state_dict_digest(model), "mean": list(model.preprocess.mean),
                          "std": list(model.preprocess.std)}
    paths = [Path(p) for p in videos]
    targets: dict[str, Any] = {"taps": list(builder.taps), "parts": layout_record(layout)}
    if "3d" in builder.kinds:
        targets["stride3d"] = int(getattr(builder, "stride3d", 1))
    return {
        "teachers": teachers,
        "targets": targets,
        "views": spec.to_dict(),
        "videos": {"count": len(paths), "digest": videos_digest(paths),
                   "content": _stats_digest(video_stats(paths))},
    }


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, Mapping):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


_WHAT = {"teachers": "teacher", "targets": "target layout", "views": "views / preprocessing", "videos": "videos"}


def _restrict(fingerprint: Mapping[str, Any], kinds: Sequence[str]) -> dict[str, Any]:
    """A cache's fingerprint as seen by a run that uses only the teachers ``kinds``."""
    out = json.loads(json.dumps(fingerprint, default=str))
    out["teachers"] = {k: v for k, v in out.get("teachers", {}).items() if k in kinds}
    targets = out.get("targets", {})
    targets["parts"] = [p for p in targets.get("parts", []) if p.get("teacher") in kinds]
    if "3d" not in kinds:
        targets.pop("stride3d", None)
    return out


def _differences(cached: Mapping[str, Any], wanted: Mapping[str, Any], limit: int = 8) -> list[str]:
    a, b = _flatten(cached), _flatten(wanted)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            what = _WHAT.get(key.split(".")[0], key.split(".")[0])
            show = (lambda v: (v[:12] + "...") if isinstance(v, str) and len(v) > 40 else v)
            out.append(f"{what}: {key} is {show(a.get(key, '<absent>'))!r} in the cache, "
                       f"{show(b.get(key, '<absent>'))!r} now")
    return out[:limit] + ([f"... and {len(out) - limit} more"] if len(out) > limit else [])


def changed_videos(meta: Mapping[str, Any], videos: Sequence[str | os.PathLike]) -> list[Path]:
    """The videos whose size or first and last blocks differ from those recorded when the cache was built
    (none when the list itself differs: the fingerprint says that)."""
    paths = [Path(p) for p in videos]
    held = meta.get("video_stats") or []
    if len(held) != len(paths) or meta["fingerprint"]["videos"].get("digest") != videos_digest(paths):
        return []
    return [p for p, old, new in zip(paths, held, video_stats(paths)) if list(old) != new]


def check_fingerprint(root: Path, meta: Mapping[str, Any], fingerprint: Mapping[str, Any],
                      videos: Sequence[str | os.PathLike] | None = None) -> None:
    """Refuse (:class:`TeacherCacheError`) a cache whose fingerprint (``meta``'s) is not ``fingerprint``, naming
    what differs; a cache of more teachers than asked for serves."""
    # through JSON, so tuples and lists compare equal
    wanted = json.loads(json.dumps(fingerprint, default=str))
    held = sorted(meta["fingerprint"].get("teachers", {}))
    missing = sorted(set(wanted.get("teachers", {})) - set(held))
    if missing:
        raise TeacherCacheError(
            f"teacher cache {root} holds the targets of the {' and '.join(k.upper() for k in held) or 'no'} "
            f"teacher(s), not of the {' and '.join(k.upper() for k in missing)} one(s) this run needs; use "
            "another folder, or build the cache with every teacher the runs on it use")
    diffs = _differences(_restrict(meta["fingerprint"], list(wanted.get("teachers", {}))), wanted)
    changed = changed_videos(meta, videos) if videos is not None else []
    if changed:  # the same names: say which videos changed rather than that a digest differs
        diffs = [d for d in diffs if not d.startswith("videos: videos.content ")]
        shown = ", ".join(str(p) for p in changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        diffs.append(f"videos: {len(changed)} video(s) changed since the cache was built (another size or "
                     f"content): {shown}")
    if diffs:
        raise TeacherCacheError(
            f"teacher cache {root} was built for something else and cannot be used: " + "; ".join(diffs)
            + ". Use another folder (or delete this one) to build a cache for the current settings")
