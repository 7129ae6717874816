"""Exporting a model to ONNX and TorchScript, with its class names and preprocessing inside the file.

ONNX (opset 17 or newer) is exported from :func:`~distilled_shufflenet.inference.graph.static_graph` of
the model with BatchNorm folded, so the graph holds the convolutions, ReLUs, the channel shuffles as
constant Reshape/Transpose pairs, and little else; the batch dimension stays dynamic. TorchScript is the
scripted model with BatchNorm folded, any input size. Both files carry :class:`ModelInfo` as metadata
(ONNX ``metadata_props``, TorchScript extra files), so ``dsn predict`` runs them without the checkpoint.

>>> data = onnx_bytes(model, info)                    # bytes of the ONNX model
>>> report = export_model(model, info, "student.onnx", "onnx", check_clips=clips)
>>> report.max_abs_diff                               # ONNX Runtime vs PyTorch on the same clips
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distilled_shufflenet._text import first_line
from distilled_shufflenet.inference.graph import static_graph
from distilled_shufflenet.inference.source import META_KEYS, ModelFileError, ModelInfo
from distilled_shufflenet.io import atomic_write_bytes
from distilled_shufflenet.models import fuse_for_inference

MIN_OPSET = 17
DEFAULT_OPSET = 18
FORMATS = ("onnx", "torchscript")
# fp32 exports must match PyTorch within this absolute difference on the logits
FP32_TOLERANCE = 1e-4


def example_clip(info: ModelInfo, batch: int = 1, seed: int = 0) -> Tensor:
    """A random normalised clip ``(batch, 3, T, crop, crop)`` of the size the model expects."""
    p = info.preprocess
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, p.clip_len, p.crop_size, p.crop_size, generator=g)


def onnx_bytes(model: nn.Module, info: ModelInfo, *, opset: int = DEFAULT_OPSET, example: Tensor | None = None,
               convs: str = "conv3d") -> bytes:
    """The ONNX model (BatchNorm folded, shapes fixed for ``info``'s clip size, batch dynamic) with
    ``info`` in its metadata, checked by ``onnx.checker``."""
    import onnx

    if opset < MIN_OPSET:
        raise ValueError(f"opset: expected {MIN_OPSET} or newer, got {opset}")
    x = example_clip(info) if example is None else example
    graph = static_graph(fuse_for_inference(model), x, convs=convs)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(graph, (x,), buffer, dynamo=False, opset_version=opset, input_names=["clip"],
                          output_names=["logits"], dynamic_axes={"clip": {0: "batch"}, "logits": {0: "batch"}})
    proto = onnx.load_from_string(buffer.getvalue())
    _drop_identities(proto.graph)
    info = dataclasses.replace(info, input_shape=tuple(x.shape[1:]))
    _set_metadata(proto, info.metadata())
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def _drop_identities(graph: Any) -> None:
    """Remove the Identity nodes left by folded BatchNorms, rewiring their consumers."""
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    keep = []
    for node in graph.node:
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = rename.get(node.input[0], node.input[0])
            continue
        keep.append(node)
    for node in keep:
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
    del graph.node[:]
    graph.node.extend(keep)


def _set_metadata(proto: Any, meta: dict[str, str]) -> None:
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    proto.doc_string = f"{meta['dsn.model_name']}: exported by distilled-shufflenet"


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


def torchscript_module(model: nn.Module) -> torch.jit.ScriptModule:
    """The scripted model with BatchNorm folded (any input size)."""
    return torch.jit.script(fuse_for_inference(model))


def read_torchscript(path: str | os.PathLike) -> tuple[torch.jit.ScriptModule, ModelInfo]:
    """A TorchScript file written by :func:`export_model` and its :class:`ModelInfo`."""
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


@dataclass
class ExportReport:
    """What :func:`export_model` wrote and how closely the file reproduces PyTorch."""

    path: str
    format: str
    opset: int | None
    size_bytes: int
    # largest |exported - PyTorch| on the logits, per set of check clips ("random", "real")
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    top1_agreement: dict[str, float] = field(default_factory=dict)
    nodes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lines = [f"wrote {self.path} ({self.format}{f', opset {self.opset}' if self.opset else ''}, "
                 f"{self.size_bytes / 1e6:.2f} MB)"]
        if self.nodes:
            top = sorted(self.nodes.items(), key=lambda kv: -kv[1])[:8]
            lines.append("graph: " + ", ".join(f"{n} {k}" for k, n in top) + f" ({sum(self.nodes.values())} nodes)")
        for name, diff in self.max_abs_diff.items():
            lines.append(f"check on {name} clips: largest absolute difference to PyTorch {diff:.3g} "
                         f"(top-1 agreement {100 * self.top1_agreement[name]:.1f} %)")
        return "\n".join(lines)


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy(), dtype=np.float32)


def export_model(model: nn.Module, info: ModelInfo, path: str | os.PathLike, fmt: str = "onnx", *,
                 opset: int = DEFAULT_OPSET, check_clips: dict[str, Tensor] | None = None,
                 threads: int | None = None) -> ExportReport:
    """Export ``model`` to ``path`` in ``fmt`` (``"onnx"`` or ``"torchscript"``), then run the written
    file on ``check_clips`` (name -> ``(N, 3, T, H, W)``; default: two random clips) beside PyTorch.

    An fp32 export that differs from PyTorch by more than :data:`FP32_TOLERANCE` is not written.
    """
    from distilled_shufflenet.inference.backends import OrtBackend

    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    model = model.eval()
    clips = check_clips or {"random": example_clip(info, batch=2)}
    with torch.inference_mode():
        expected = {name: model(x) for name, x in clips.items()}
    if fmt == "onnx":
        data = onnx_bytes(model, info, opset=opset)
        runner = OrtBackend(data, threads=threads)
        run = runner
        nodes = runner.node_counts()
    else:
        module = torchscript_module(model)
        buffer = io.BytesIO()
        meta = dataclasses.replace(info, input_shape=None).metadata()
        torch.jit.save(module, buffer, _extra_files=meta)
        data = buffer.getvalue()
        run = module
        nodes = {}
    report = ExportReport(str(path), fmt, opset if fmt == "onnx" else None, len(data), nodes=nodes)
    with torch.inference_mode():
        for name, x in clips.items():
            got = torch.as_tensor(run(x)).float()
            report.max_abs_diff[name] = float((got - expected[name]).abs().max())
            report.top1_agreement[name] = float((got.argmax(1) == expected[name].argmax(1)).float().mean())
    worst = max(report.max_abs_diff.values())
    if worst > FP32_TOLERANCE:
        raise RuntimeError(
            f"export {path}: the {fmt} model differs from PyTorch by up to {worst:.3g} on the logits (tolerance "
            f"{FP32_TOLERANCE:g}); nothing was written"
        )
    atomic_write_bytes(data, path)
    return report


# ---------------------------------------------------------------------------------------------- dsn export
@dataclass
class ExportConfig:
    """What ``dsn export`` does. ``data_root`` (a dataset of ``dataset`` kind) gives real check clips
    (test subset), int8 calibration clips (train subset) and the test set for the int8 agreement."""

    checkpoint: str
    format: str = "onnx"
    output: str | None = None
    opset: int = DEFAULT_OPSET
    quantize: str | None = None
    data_root: str | None = None
    dataset: str = "ucf101"
    split: int = 1
    calibration_clips: int = 32
    test_clips: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize: expected int8, got {self.quantize!r}")
        if self.quantize and self.format != "onnx":
            raise ValueError("quantize: int8 models are ONNX files; use --format onnx")
        if self.quantize and not self.data_root:
            raise ValueError("quantize: int8 calibration needs clips of a dataset; pass --data-root (and --dataset)")
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset: expected {MIN_OPSET} or newer, got {self.opset}")
        if self.calibration_clips < 1:
            raise ValueError(f"calibration_clips: expected an integer >= 1, got {self.calibration_clips}")

    def default_output(self, checkpoint: Path, int8: bool = False) -> Path:
        """``--output`` (default: the checkpoint's name with ``.onnx`` / ``.ts``); the int8 model goes
        beside the fp32 one as ``<name>.int8.onnx``."""
        base = Path(self.output) if self.output else checkpoint.with_suffix(".onnx" if self.format == "onnx" else ".ts")
        return base.with_name(base.name.removesuffix(".onnx") + ".int8.onnx") if int8 else base


@dataclass
class QuantizeReport:
    """What ``--quantize int8`` wrote and how it agrees with fp32 PyTorch on the test set."""

    path: str
    size_bytes: int
    calibration_clips: int
    test_clips: int
    top1_agreement: float
    accuracy_fp32: float | None
    accuracy_int8: float | None
    max_abs_diff: float
    nodes: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        acc = ""
        if self.accuracy_fp32 is not None:
            acc = f"; top-1 accuracy fp32 {100 * self.accuracy_fp32:.1f} %, int8 {100 * self.accuracy_int8:.1f} %"
        ops = ", ".join(f"{n} {k}" for k, n in sorted(self.nodes.items(), key=lambda kv: -kv[1])[:6])
        return (f"wrote {self.path} (int8 QDQ, per-channel weights, {self.size_bytes / 1e6:.2f} MB; calibrated on "
                f"{self.calibration_clips} clips; graph: {ops})\n"
                f"int8 vs fp32 on {self.test_clips} test clips: top-1 agreement {100 * self.top1_agreement:.1f} %, "
                f"largest logit difference {self.max_abs_diff:.3g}{acc}")


def dataset_clips(config: ExportConfig, info: ModelInfo, subset: str, limit: int | None) -> tuple[Tensor, Tensor | None]:
    """Centre clips ``(N, 3, T, crop, crop)`` of ``subset`` of the config's dataset, and their labels."""
    from distilled_shufflenet.data import build_dataset, eval_transform, spread_indices

    p = info.preprocess
    dataset = build_dataset(config.dataset, config.data_root, split=config.split, subset=subset, clip_len=p.clip_len,
                            frame_stride=info.frame_stride, sampling="center",
                            transform=eval_transform(p.crop_size, p.resize, p.mean, p.std), on_error="report")
    # spread the clips over the dataset (its videos are grouped by class)
    picks = spread_indices(len(dataset), len(dataset) if limit is None else limit)
    samples = [dataset[i] for i in picks]
    samples = [s for s in samples if "clip" in s]
    if not samples:
        raise ValueError(f"data_root {config.data_root}: no readable {subset} clip")
    labels = torch.tensor([s["label"] for s in samples]) if "label" in samples[0] else None
    return torch.stack([s["clip"] for s in samples]), labels


def run_export(config: ExportConfig) -> list[ExportReport | QuantizeReport]:
    """Export the checkpoint as ``config`` says (and quantise it); the reports of the files written."""
    from distilled_shufflenet.engine.checkpointing import resolve_checkpoint_path
    from distilled_shufflenet.inference.backends import OrtBackend, set_threads
    from distilled_shufflenet.inference.quantize import quantize_onnx, top1_agreement
    from distilled_shufflenet.inference.source import load_model_source

    set_threads(config.threads)
    model, info = load_model_source(config.checkpoint)
    if model is None:
        raise ValueError(f"checkpoint {config.checkpoint}: an exported file; export from the training checkpoint")
    where = resolve_checkpoint_path(config.checkpoint)
    check = {"random": example_clip(info, batch=2)}
    test = labels = None
    if config.data_root:
        test, labels = dataset_clips(config, info, "test", config.test_clips)
        check["real"] = test[:8]
    reports: list[ExportReport | QuantizeReport] = [
        export_model(model, info, config.default_output(where), config.format, opset=config.opset,
                     check_clips=check, threads=config.threads)]
    if not config.quantize:
        return reports
    calibration, _ = dataset_clips(config, info, "train", config.calibration_clips)
    data = quantize_onnx(onnx_bytes(model, info, opset=config.opset), calibration)
    runner = OrtBackend(data, threads=config.threads, name="ort-int8")
    with torch.inference_mode():
        fp32 = torch.cat([model(test[i:i + 8]) for i in range(0, len(test), 8)])
    int8 = torch.cat([runner(test[i:i + 8]) for i in range(0, len(test), 8)])
    out = config.default_output(where, int8=True)
    atomic_write_bytes(data, out)
    reports.append(QuantizeReport(
        str(out), len(data), len(calibration), len(test), top1_agreement(int8, fp32),
        None if labels is None else top1_agreement(fp32, torch.nn.functional.one_hot(labels, fp32.shape[1])),
        None if labels is None else top1_agreement(int8, torch.nn.functional.one_hot(labels, fp32.shape[1])),
        float((int8 - fp32).abs().max()), runner.node_counts()))
    return reports
