"""What a deployable model needs besides its weights: class names and preprocessing, from a checkpoint
or from the metadata of an exported file.

>>> model, info = load_model_source("run/best.pt")        # a checkpoint: the PyTorch model and its info
>>> _, info = load_model_source("student.onnx")           # an exported file: the info from its metadata
>>> info.preprocess.clip_len, info.frame_stride, info.classes[:2]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distilled_shufflenet._text import first_line
from distilled_shufflenet.models import Preprocess

# metadata keys written into exported files (ONNX metadata_props, TorchScript extra files)
META_KEYS = ("dsn.model_name", "dsn.model_kwargs", "dsn.classes", "dsn.preprocess", "dsn.frame_stride",
             "dsn.input_shape", "dsn.precision")
# the file names of each export format: dsn predict and dsn evaluate know a file's format by its suffix,
# and dsn export writes the first one by default and refuses a name without one of them
EXPORT_FORMATS = {"onnx": (".onnx",), "torchscript": (".ts", ".torchscript"), "openvino": (".xml",)}
# where an OpenVINO IR keeps the metadata (OpenVINO puts an ONNX file's metadata_props there when it reads one)
IR_METADATA_ROOT = "framework"
EXPORT_SUFFIXES = {suffix: fmt for fmt, suffixes in EXPORT_FORMATS.items() for suffix in suffixes}


class ModelFileError(ValueError):
    """An exported model file is missing, corrupt, or lacks the metadata needed to run it."""


@dataclass(frozen=True)
class ModelInfo:
    """Everything but the weights: ``classes``, ``preprocess``, the ``frame_stride`` the model was trained
    with, and where it came from. ``input_shape`` is ``(C, T, H, W)`` for files exported at one clip size."""

    model_name: str
    model_kwargs: dict[str, Any]
    classes: tuple[str, ...]
    preprocess: Preprocess
    frame_stride: int = 1
    source: str = ""
    input_shape: tuple[int, int, int, int] | None = None
    precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    def metadata(self) -> dict[str, str]:
        """The info as string metadata (JSON values), as written into exported files."""
        return {
            "dsn.model_name": self.model_name,
            "dsn.model_kwargs": json.dumps(self.model_kwargs),
            "dsn.classes": json.dumps(list(self.classes)),
            "dsn.preprocess": json.dumps(self.preprocess.to_dict()),
            "dsn.frame_stride": str(self.frame_stride),
            "dsn.input_shape": json.dumps(list(self.input_shape) if self.input_shape else None),
            "dsn.precision": self.precision,
        }

    @classmethod
    def from_metadata(cls, meta: dict[str, str], source: str) -> "ModelInfo":
        """Parse :meth:`metadata`; a :class:`ModelFileError` naming ``source`` and the missing or bad key."""
        missing = [k for k in ("dsn.classes", "dsn.preprocess") if k not in meta]
        if missing:
            raise ModelFileError(
                f"{source}: its metadata lacks {', '.join(missing)} (class names and preprocessing); export "
                f"it with `dsn export`, which writes them"
            )
        try:
            classes = json.loads(meta["dsn.classes"])
            p = json.loads(meta["dsn.preprocess"])
            preprocess = Preprocess(int(p["clip_len"]), int(p["crop_size"]), int(p["resize"]),
                                    tuple(float(v) for v in p["mean"]), tuple(float(v) for v in p["std"]))
            shape = json.loads(meta.get("dsn.input_shape", "null"))
            return cls(
                model_name=meta.get("dsn.model_name", "?"),
                model_kwargs=json.loads(meta.get("dsn.model_kwargs", "{}")),
                classes=tuple(str(c) for c in classes),
                preprocess=preprocess,
                frame_stride=int(meta.get("dsn.frame_stride", 1)),
                source=source,
                input_shape=tuple(shape) if shape else None,
                precision=meta.get("dsn.precision", "fp32"),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ModelFileError(f"{source}: unreadable dsn metadata ({type(e).__name__}: {e})") from None


def checkpoint_info(checkpoint: dict[str, Any], model: nn.Module, source: str) -> ModelInfo:
    """The :class:`ModelInfo` of a run checkpoint loaded by ``load_checkpoint`` (classes, the
    preprocessing and frame stride used in training)."""
    num_classes = getattr(model, model.classifier_name).out_features
    classes = tuple(checkpoint.get("classes") or (f"class{i}" for i in range(num_classes)))
    if len(classes) != num_classes:
        raise ValueError(f"checkpoint {source}: {len(classes)} class names for a model with {num_classes} outputs")
    config = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    return ModelInfo(
        model_name=checkpoint["model_name"],
        model_kwargs=dict(checkpoint.get("model_kwargs") or {}),
        classes=classes,
        preprocess=model.preprocess,
        frame_stride=int(config.get("frame_stride") or 1),
        source=source,
    )


def file_format(path: str | os.PathLike) -> str | None:
    """``"onnx"`` / ``"torchscript"`` / ``"openvino"`` for exported files (by suffix), ``None`` for checkpoints."""
    return EXPORT_SUFFIXES.get(Path(path).suffix.lower())


def load_model_source(path: str | os.PathLike) -> tuple[nn.Module | None, ModelInfo]:
    """A checkpoint (``.pt``, or a run folder) gives ``(model, info)``; an exported file (``.onnx``,
    ``.ts``, OpenVINO ``.xml``) gives ``(None, info)`` read from its metadata, after checking the file."""
    from distilled_shufflenet.engine.checkpointing import load_checkpoint, resolve_checkpoint_path

    kind = file_format(path)
    if kind == "onnx":
        return None, read_onnx(path)[1]
    if kind == "torchscript":
        return None, read_torchscript(path)[1]
    if kind == "openvino":
        return None, read_ir(path)[1]
    model, checkpoint = load_checkpoint(path)
    return model, checkpoint_info(checkpoint, model, str(resolve_checkpoint_path(path)))


def read_ir(path: str | os.PathLike) -> tuple[Any, ModelInfo]:
    """An OpenVINO IR written by :func:`~.openvino.write_ir` (``.xml`` + ``.bin``) and its :class:`ModelInfo`; a
    :class:`ModelFileError` naming the file when it is missing, damaged or lacks the project's metadata."""
    path = Path(path)
    source = f"OpenVINO model {path}"
    if not path.is_file():
        raise ModelFileError(f"{source}: no such file")
    if not path.with_suffix(".bin").is_file():
        raise ModelFileError(f"{source}: its weights {path.with_suffix('.bin')} are missing (keep the .bin beside the .xml)")
    try:
        import openvino
    except ImportError:
        raise ModelFileError(f"{source}: reading it needs OpenVINO, which is not installed (pip install openvino)") from None
    try:
        ov_model = openvino.Core().read_model(str(path))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises its own exception types on damaged files
        raise ModelFileError(f"{source}: not an OpenVINO IR, or damaged ({first_line(e)})") from None
    meta = {k: ov_model.get_rt_info([IR_METADATA_ROOT, k]).astype(str) for k in META_KEYS
            if ov_model.has_rt_info([IR_METADATA_ROOT, k])}
    return ov_model, ModelInfo.from_metadata(meta, source)


def read_onnx(path: str | os.PathLike) -> tuple[bytes, ModelInfo]:
    """The bytes and :class:`ModelInfo` of an ONNX file; a :class:`ModelFileError` naming the file when
    it is missing, not ONNX, damaged, or lacks the project's metadata."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"ONNX model {path}: no such file")
    data = path.read_bytes()
    try:
        proto = onnx.load_from_string(data)
        if not proto.graph.node:
            raise ValueError("the graph is empty")
    except Exception as e:  # protobuf raises several types on damaged input
        raise ModelFileError(f"ONNX model {path}: not an ONNX model, or damaged ({first_line(e)})") from None
    meta = {p.key: p.value for p in proto.metadata_props}
    return data, ModelInfo.from_metadata(meta, f"ONNX model {path}")


def read_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, ModelInfo]:
    """A TorchScript file written by :func:`~.export.export_model` and its :class:`ModelInfo`."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"TorchScript model {path}: no such file")
    extra = dict.fromkeys(META_KEYS, "")
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:  # noqa: BLE001 - torch.jit.load raises RuntimeError, ValueError, ...
        raise ModelFileError(f"TorchScript model {path}: not a TorchScript file, or damaged ({first_line(e)})") from None
    # torch.jit.load hands the extra files back as bytes
    meta = {k: v.decode() if isinstance(v, bytes) else v for k, v in extra.items() if v}
    return module.eval(), ModelInfo.from_metadata(meta, f"TorchScript model {path}")
