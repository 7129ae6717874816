"""A teacher cache's folder on disk: ``cache.json`` (what the cache holds) and the shards with their
records, each checked before it is used; see :mod:`~distilled_shufflenet.distill.cache` for the layout."""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from distilled_shufflenet.distill.fingerprint import TeacherCacheError

__all__ = ["CACHE_FORMAT", "META", "SHARD_KEYS", "num_shards", "read_meta", "scan_shards", "sha256_file"]

CACHE_FORMAT = "distilled_shufflenet.teacher_cache/3"
META = "cache.json"
_SHARD = re.compile(r"^shard-(\d{5})\.rank(\d+)\.json$")
SHARD_KEYS = ("start", "stop", "views", "ok", "parts", "scales", "failures")


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in blocks of 1 MiB."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _meta_problem(meta: Mapping[str, Any]) -> str | None:
    """What is wrong with the structure of a ``cache.json``, or None."""
    def count(key: str) -> Any:
        value = meta.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None

    fp = meta.get("fingerprint")
    if not isinstance(fp, dict) or not all(isinstance(fp.get(k), dict) for k in ("teachers", "targets", "views", "videos")):
        return "its fingerprint is missing or incomplete"
    if not isinstance(fp["targets"].get("parts"), list):
        return "its fingerprint has no target parts"
    if count("shard_size") is None:
        return f"shard_size is {meta.get('shard_size')!r}, expected a positive integer"
    if count("num_videos") is None or meta["num_videos"] != fp["videos"].get("count"):
        return f"num_videos is {meta.get('num_videos')!r}, its fingerprint counts {fp['videos'].get('count')!r} videos"
    stats = meta.get("video_stats")
    if not isinstance(stats, list) or len(stats) != meta["num_videos"]:
        return "video_stats does not hold one entry per video"
    return None


def _unreadable(shard: Path, videos: Sequence[int]) -> str | None:
    """Why a shard cannot serve (it does not open, or is not the shard of ``videos``), or None."""
    try:
        data = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # noqa: BLE001 - any failure to open means the same: recompute it
        return f"cannot be read ({type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''})"
    if not isinstance(data, dict) or any(k not in data for k in SHARD_KEYS):
        return "cannot be read (not a shard of a teacher cache)"
    if [data["start"], data["stop"]] != list(videos):
        return f"holds the videos [{data['start']}, {data['stop']}), its record says {list(videos)}"
    return None


def num_shards(meta: Mapping[str, Any]) -> int:
    """How many shards the cache of ``meta`` (its ``cache.json``) has."""
    return math.ceil(int(meta["num_videos"]) / int(meta["shard_size"]))


def read_meta(root: Path) -> dict[str, Any] | None:
    """The checked ``cache.json`` of the cache in ``root``, or None where there is none."""
    path = root / META
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise TeacherCacheError(f"teacher cache {path}: unreadable ({e}); delete the folder to rebuild") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise TeacherCacheError(f"teacher cache {path}: not a teacher cache of this version (format "
                                f"{meta.get('format') if isinstance(meta, dict) else None!r}, expected "
                                f"{CACHE_FORMAT!r}); use another folder or delete it")
    problem = _meta_problem(meta)
    if problem:
        raise TeacherCacheError(f"teacher cache {path} is damaged or was edited ({problem}), so which shard "
                                f"holds which videos cannot be trusted; delete the folder {root} to rebuild "
                                "the cache, or use another folder")
    return meta


def scan_shards(root: Path, meta: Mapping[str, Any], *, verify: bool) -> tuple[dict[int, Path], list[str]]:
    """The valid shard of each index, and what was wrong with the others.  A record whose videos are not
    those ``cache.json`` gives its shard is a :class:`TeacherCacheError` (one of them was edited)."""
    files: dict[int, Path] = {}
    problems: list[str] = []
    num_videos, shard_size = int(meta["num_videos"]), int(meta["shard_size"])
    for record in sorted(root.glob("shard-*.json")):
        m = _SHARD.match(record.name)
        if not m:
            continue
        index = int(m.group(1))
        shard = record.with_suffix(".pt")
        try:
            info = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            problems.append(f"{record.name}: unreadable record")
            continue
        if not isinstance(info, dict):
            problems.append(f"{record.name}: unreadable record")
            continue
        expected = [index * shard_size, min((index + 1) * shard_size, num_videos)]
        if info.get("videos") != expected:
            raise TeacherCacheError(
                f"teacher cache {root}: {META} (shard_size {shard_size}, {num_videos} videos) gives shard "
                f"{index} the videos {expected}, but its record {record.name} says {info.get('videos')}: one "
                f"of them was edited or damaged; delete the folder {root} to rebuild the cache")
        if not shard.is_file():
            problems.append(f"{shard.name}: missing")
            continue
        size = shard.stat().st_size
        if size != info.get("size"):
            problems.append(f"{shard.name}: {size} bytes, {info.get('size')} recorded (cut short?)")
            continue
        if verify and sha256_file(shard) != info.get("sha256"):
            problems.append(f"{shard.name}: checksum differs from the record")
            continue
        unreadable = _unreadable(shard, expected)
        if unreadable:
            problems.append(f"{shard.name}: {unreadable}")
            continue
        files.setdefault(index, shard)
    return files, problems
