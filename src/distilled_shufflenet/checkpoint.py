"""Reading and writing checkpoint files: safe loads, clear errors, atomic writes.

``load_pretrained(model, path)`` loads weights that users already hold (torchvision checkpoints,
3D-ResNets-PyTorch Kinetics checkpoints, our own) into a model, strictly by default.
"""

from __future__ import annotations

import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from distilled_shufflenet._text import first_line
from distilled_shufflenet.io import atomic_write


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or does not fit the model."""


def read_checkpoint(path: str | os.PathLike) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU, with an error naming the file on any failure.

    A model exported for inference (ONNX, TorchScript) is named as such, with what to give instead; the
    error never passes on PyTorch's advice to load without ``weights_only``, which would run any code the
    file holds."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path}: no such file")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path}: is a directory, expected a .pt/.pth file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        head = f.read(16)
    is_zip = head[:4] == b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
    if is_zip and _is_torchscript(path):
        raise _exported(path, "TorchScript")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types for damaged files; all mean the same here
        if not is_zip and _is_onnx(path):
            raise _exported(path, "ONNX") from None
        if isinstance(e, pickle.UnpicklingError):
            # weights_only refuses anything but tensors and plain containers
            raise CheckpointError(
                f"checkpoint {path}: not a PyTorch checkpoint, or it holds objects other than tensors and "
                f"plain containers ({_load_reason(e)})"
            ) from None
        if is_zip:
            reason = _load_reason(e)
            raise CheckpointError(f"checkpoint {path}: cannot be read, truncated or corrupt ({reason})") from None
        # the legacy reader's own errors (a KeyError of the first byte's code, ...) mean nothing to a user
        raise CheckpointError(
            f"checkpoint {path}: not a PyTorch checkpoint (neither torch.save's zip format nor its legacy "
            f"format; the file starts with {head[:8]!r}); pass a file written by torch.save or by a dsn command"
        ) from None


def _exported(path: Path, kind: str) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path}: an exported {kind} model (written by dsn export), not a checkpoint of a run; give "
        f"the checkpoint it was exported from (.pt or run folder), or give the exported file to dsn predict or "
        f"dsn evaluate"
    )


def _is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: it holds the scripted code and its constants, which ``torch.save``'s
    zip files never do."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _is_onnx(path: Path) -> bool:
    """An ONNX model (checked only once ``torch.load`` has failed on the file)."""
    try:
        import onnx

        return bool(onnx.load(str(path), load_external_data=False).graph.node)
    except Exception:  # noqa: BLE001 - not ONNX, or onnx is not installed
        return False


_UNSAFE_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")


def _load_reason(error: BaseException) -> str:
    """What ``torch.load`` found wrong, without its advice to retry with ``weights_only=False``."""
    found = _UNSAFE_GLOBAL.search(str(error))
    if found:
        return f"it holds a pickled {found[1]} object, which a safe load does not run"
    text = first_line(error)
    # PyTorch's hint starts with the version that changed the default; what follows it is the hint itself
    text = re.split(r"\s*(?:\(\d\)\s*)?In PyTorch 2\.6|\s*This file can still be loaded", text)[0].strip(" .,")
    return text if text and "weights_only" not in text else type(error).__name__


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` through :func:`~distilled_shufflenet.io.atomic_write`: a reader never sees a
    half-written checkpoint, and a crash mid-write leaves the previous file intact."""
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)
    return Path(path)


def extract_state_dict(obj: Any, path: str | os.PathLike = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The state dict inside a loaded checkpoint: bare, or nested under ``state_dict`` / ``model`` /
    ``model_state`` (PySlowFast and PyTorchVideo); a ``module.`` prefix (DataParallel /
    DistributedDataParallel) is removed."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {path}: expected a state dict of tensors (bare, or under 'state_dict', 'model' or "
            f"'model_state'), "
            f"found {type(obj).__name__}"
        )
    state = dict(obj)
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _listing(title: str, keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit]) + (", ..." if len(keys) > limit else "")
    return f"{len(keys)} {title}: {shown}"


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    strict: bool = True,
    drop_classifier: bool = False,
) -> dict[str, list[str]]:
    """Load weights from ``path`` into ``model``.

    ``strict`` (default) fails on any missing, unexpected or wrongly shaped key, listing the first few of
    each and their counts.  ``drop_classifier`` leaves the model's classifier (``model.classifier_name``,
    "fc" by default) as initialised when the checkpoint's has another shape, for fine-tuning a Kinetics
    teacher on UCF101, say.  Returns the keys that were not loaded, by kind.
    """
    state = extract_state_dict(read_checkpoint(path), path)
    own = model.state_dict()
    dropped: list[str] = []
    if drop_classifier:
        head = getattr(model, "classifier_name", "fc") + "."
        for key in [k for k in state if k.startswith(head)]:
            if key not in own or own[key].shape != state[key].shape:
                dropped.append(key)
                del state[key]
        own_head = [k for k in own if k.startswith(head)]
    else:
        own_head = []
    missing = [k for k in own if k not in state and k not in own_head]
    head_missing = [k for k in own_head if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} (checkpoint {tuple(state[k].shape)}, model {tuple(own[k].shape)})"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if strict and (missing or unexpected or shapes):
        parts = [p for p, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                    ("keys with the wrong shape", shapes)) if keys for p in [_listing(p, keys)]]
        name = getattr(model, "model_name", type(model).__name__)
        raise CheckpointError(f"checkpoint {path} does not fit {name}: " + "; ".join(parts))
    loadable = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    model.load_state_dict(loadable, strict=False)
    return {"missing": missing + head_missing, "unexpected": unexpected, "wrong_shape": shapes, "dropped": dropped}
