"""Exporting a model to ONNX, OpenVINO IR and TorchScript, with its class names and preprocessing inside the file.

ONNX (opset 17 or newer) is exported from :func:`~distilled_shufflenet.inference.graph.static_graph` of
the model with BatchNorm folded, so the graph holds the convolutions, ReLUs, the channel shuffles as
constant Reshape/Transpose pairs, and little else; the batch dimension stays dynamic. The OpenVINO IR
(``.xml`` + ``.bin``) is that ONNX graph as OpenVINO reads it. TorchScript is the scripted model with
BatchNorm folded, any input size. Every file carries :class:`ModelInfo` as metadata (ONNX
``metadata_props``, the IR's ``rt_info``, TorchScript extra files), so ``dsn predict`` runs it without the
checkpoint.

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

from distilled_shufflenet.data.factory import DATASET_KINDS
from distilled_shufflenet.inference.graph import static_graph
from distilled_shufflenet.inference.runtime import OrtBackend, set_threads
from distilled_shufflenet.inference.source import EXPORT_FORMATS, ModelInfo
from distilled_shufflenet.io import atomic_write_bytes
from distilled_shufflenet.models import fuse_for_inference
from distilled_shufflenet.options import option

MIN_OPSET = 17
DEFAULT_OPSET = 18
FORMATS = ("onnx", "torchscript", "openvino")
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


def torchscript_module(model: nn.Module) -> torch.jit.ScriptModule:
    """The scripted model with BatchNorm folded (any input size)."""
    return torch.jit.script(fuse_for_inference(model))


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
    """Export ``model`` to ``path`` in ``fmt`` (``"onnx"``, ``"openvino"`` or ``"torchscript"``), then run
    the exported model on ``check_clips`` (name -> ``(N, 3, T, H, W)``; default: two random clips) beside
    PyTorch: ONNX in ONNX Runtime, the IR in OpenVINO (f32).

    An fp32 export that differs from PyTorch by more than :data:`FP32_TOLERANCE` is not written.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {fmt!r}")
    model = model.eval()
    clips = check_clips or {"random": example_clip(info, batch=2)}
    with torch.inference_mode():
        expected = {name: model(x) for name, x in clips.items()}
    nodes: dict[str, int] = {}
    if fmt == "onnx":
        data = onnx_bytes(model, info, opset=opset)
        runner = OrtBackend(data, threads=threads)
        run = runner
        nodes = runner.node_counts()
    elif fmt == "openvino":
        from distilled_shufflenet.inference.openvino import OvBackend

        data = onnx_bytes(model, info, opset=opset)
        run = OvBackend(data, precision="fp32", threads=threads, cache=False)
    else:
        module = torchscript_module(model)
        buffer = io.BytesIO()
        meta = dataclasses.replace(info, input_shape=None).metadata()
        torch.jit.save(module, buffer, _extra_files=meta)
        data = buffer.getvalue()
        run = module
    report = ExportReport(str(path), fmt, opset if fmt != "torchscript" else None, len(data), nodes=nodes)
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
    if fmt == "openvino":
        report.size_bytes = _write_ir(data, info, path)
    else:
        atomic_write_bytes(data, path)
    return report


def _write_ir(data: bytes, info: ModelInfo, path: str | os.PathLike) -> int:
    """Write the ONNX ``data`` as the OpenVINO IR ``path`` (+ ``.bin``) with ``info``; bytes written."""
    from distilled_shufflenet.inference.openvino import write_ir

    import onnx

    meta = {p.key: p.value for p in onnx.load_from_string(data).metadata_props}  # input shape, precision
    info = dataclasses.replace(info, input_shape=ModelInfo.from_metadata(meta, str(path)).input_shape,
                               precision=meta.get("dsn.precision", info.precision))
    xml, weights = write_ir(data, info, path)
    return xml.stat().st_size + weights.stat().st_size


# ---------------------------------------------------------------------------------------------- dsn export
@dataclass
class ExportConfig:
    """What ``dsn export`` does.

    Data (``data_root``, or ``list_file`` for a ``list``) gives real check clips, the int8 calibration
    clips and the clips of the int8 agreement; calibration needs no labels. ``ucf101`` / ``hmdb51``
    calibrate on the train subset of ``split`` and check on its test subset; a ``list`` of ``path,label``
    lines or a ``folder`` of unlabelled videos calibrates on videos spread over it and checks on the
    others (with labels, a list also gives the accuracy of fp32 and int8).

    ``output`` carries a suffix of its format (see :data:`~.source.EXPORT_FORMATS`); ``force`` lets it
    replace an existing file that is not a model written by ``dsn export``; the checkpoint being exported
    is never replaced."""

    checkpoint: str  # a run checkpoint (.pt) or run folder: CHECKPOINT on the command line
    format: str = option("onnx", "file format", choices=FORMATS)
    output: str | None = option(None, "file to write, named with its format's suffix (" + "; ".join(
        f"{fmt} {' or '.join(EXPORT_FORMATS[fmt])}" for fmt in FORMATS) + "; default: beside the checkpoint, with "
        "the int8 model as NAME.int8.onnx or NAME.int8.xml)", flag=("--output", "-o"))
    opset: int = option(DEFAULT_OPSET, "ONNX opset, 17 or newer")
    quantize: str | None = option(None, "static int8 quantisation (QDQ), for ONNX Runtime (--format onnx) or "
                                  "OpenVINO (--format openvino)", choices=("int8",))
    data_root: str | None = option(None, "videos for the real check clips, the int8 calibration and the int8 "
                                   "agreement: a dataset (train subset calibrates, test subset checks), or any "
                                   "folder of videos with --dataset folder")
    # None: list with a list file, else ucf101
    dataset: str | None = option(None, "kind of --data-root: ucf101, hmdb51 (official splits), folder (every "
                                 "video under it, no labels) or list (--list-file) (default: list with "
                                 "--list-file, else ucf101)", choices=DATASET_KINDS)
    split: int = option(1, "official split")
    calibration_clips: int = option(32, "clips to calibrate on")
    test_clips: int | None = option(None, "test clips for the agreement (default: all)")
    threads: int | None = option(None, "threads for the checks (default: torch's default)")
    list_file: str | None = option(None, "CSV or text file of 'path,label' lines (paths relative to --data-root, "
                                   "default the list's folder); calibrates on videos spread over it, checks on "
                                   "the others")
    force: bool = option(False, "replace an existing --output file even if it is not an earlier export")

    def __post_init__(self) -> None:
        if self.dataset is None:
            self.dataset = "list" if self.list_file else "ucf101"
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if self.format not in FORMATS:
            raise ValueError(f"format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize: expected int8, got {self.quantize!r}")
        if self.quantize and self.format == "torchscript":
            raise ValueError("quantize: int8 models are ONNX files or OpenVINO IRs; use --format onnx or openvino")
        if self.dataset not in DATASET_KINDS:
            raise ValueError(f"dataset: expected one of {', '.join(DATASET_KINDS)}, got {self.dataset!r}")
        if self.dataset == "list" and not self.list_file:
            raise ValueError("list_file: required with dataset 'list' (a CSV or text file of 'path,label' lines); "
                             "pass --list-file FILE")
        if self.dataset != "list" and self.list_file:
            raise ValueError(f"list_file: only used with dataset 'list', got dataset {self.dataset!r}")
        if self.quantize and not self.has_data:
            raise ValueError("quantize: int8 calibration needs clips of your videos; pass --data-root DIR (a "
                             "dataset, or any folder of videos with --dataset folder) or --list-file FILE")
        if self.opset < MIN_OPSET:
            raise ValueError(f"opset: expected {MIN_OPSET} or newer, got {self.opset}")
        if self.calibration_clips < 1:
            raise ValueError(f"calibration_clips: expected an integer >= 1, got {self.calibration_clips}")
        if self.test_clips is not None and self.test_clips < 1:
            raise ValueError(f"test_clips: expected an integer >= 1, got {self.test_clips}")
        if self.output is not None:
            check_suffix(self.output, self.format)

    @property
    def has_data(self) -> bool:
        """Whether real clips were given (a dataset folder or a list file)."""
        return bool(self.data_root or self.list_file)

    def default_output(self, checkpoint: Path, int8: bool = False) -> Path:
        """``--output`` (default: the checkpoint's name with its format's suffix, ``.onnx`` / ``.xml`` /
        ``.ts``); the int8 model goes beside the fp32 one as ``<name>.int8.onnx`` (``<name>.int8.xml``)."""
        suffix = EXPORT_FORMATS[self.format][0]
        base = Path(self.output) if self.output else checkpoint.with_suffix(suffix)
        return base.with_name(base.name.removesuffix(suffix) + ".int8" + suffix) if int8 else base


def check_suffix(path: str | os.PathLike, fmt: str) -> None:
    """Refuse an output name that does not end in a suffix of format ``fmt``: ``dsn predict`` and
    ``dsn evaluate`` know an exported file's format by its suffix alone."""
    suffixes = EXPORT_FORMATS[fmt]
    if Path(path).suffix.lower() not in suffixes:
        names = " or ".join(f"NAME{s}" for s in suffixes)
        raise ValueError(f"output {path}: a {fmt} model is written as {names}, the name dsn predict knows it by; "
                         f"choose such a name (or another --format)")


def check_output(path: Path, checkpoint: Path, *, force: bool = False) -> None:
    """Refuse to write ``path`` where that would lose a file: the ``checkpoint`` being exported (always),
    a folder, or an existing file that is not a model written by ``dsn export`` (unless ``force``)."""
    from distilled_shufflenet.inference.source import file_format, load_model_source

    if file_format(path) == "openvino":  # the IR's weights go beside it, under the same rules
        weights = path.with_suffix(".bin")
        if weights.exists() and (weights.is_dir() or os.path.samefile(weights, checkpoint)):
            raise ValueError(f"output {weights}: the IR's weights would replace it; choose another name")
        if weights.exists() and not path.exists() and not force:
            raise ValueError(f"output {weights}: exists beside no {path.name}, so it is not an earlier export; "
                             f"choose another name, or pass --force to replace it")
    if not path.exists():
        return
    if path.is_dir():
        raise ValueError(f"output {path}: is a folder; expected a file name")
    if os.path.samefile(path, checkpoint):
        raise ValueError(f"output {path}: is the checkpoint being exported; choose another name")
    if force:
        return
    try:
        load_model_source(path)  # an earlier export reads back (by its suffix) with its metadata
    except (ValueError, OSError):
        raise ValueError(f"output {path}: exists and is not a model written by dsn export; choose another name, "
                         f"or pass --force to replace it") from None


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
    test_source: str = "the test videos"  # where the test clips come from

    def summary(self) -> str:
        acc = ""
        if self.accuracy_fp32 is not None:
            acc = f"; top-1 accuracy fp32 {100 * self.accuracy_fp32:.1f} %, int8 {100 * self.accuracy_int8:.1f} %"
        ops = ", ".join(f"{n} {k}" for k, n in sorted(self.nodes.items(), key=lambda kv: -kv[1])[:6])
        graph = f"; graph: {ops}" if ops else ""
        return (f"wrote {self.path} (int8 QDQ, per-channel weights, {self.size_bytes / 1e6:.2f} MB; calibrated on "
                f"{self.calibration_clips} clips{graph})\n"
                f"int8 vs fp32 on {self.test_clips} test clips ({self.test_source}): top-1 agreement {100 * self.top1_agreement:.1f} %, "
                f"largest logit difference {self.max_abs_diff:.3g}{acc}")


def _export_dataset(config: ExportConfig, info: ModelInfo, subset: str, labels: bool) -> Any:
    """``subset`` of the config's dataset as centre clips of the model's preprocessing (a list or a
    folder has one set of videos only)."""
    from distilled_shufflenet.data import build_dataset, eval_transform

    p = info.preprocess
    return build_dataset(config.dataset, config.data_root, list_file=config.list_file, split=config.split,
                         subset=subset, classes=list(info.classes) if config.dataset == "list" else None,
                         labels=labels and config.dataset != "folder", clip_len=p.clip_len,
                         frame_stride=info.frame_stride, sampling="center",
                         transform=eval_transform(p.crop_size, p.resize, p.mean, p.std), on_error="report")


def _clips(dataset: Any, picks: list[int], what: str) -> tuple[Tensor, Tensor | None]:
    """The clips ``(N, 3, T, crop, crop)`` of ``dataset``'s items ``picks`` that can be read, and their
    labels where the dataset has them."""
    samples = [s for s in (dataset[i] for i in picks) if "clip" in s]
    if not samples:
        raise ValueError(f"{getattr(dataset, 'source', 'the dataset')}: no readable {what} clip")
    labels = torch.tensor([s["label"] for s in samples]) if "label" in samples[0] else None
    return torch.stack([s["clip"] for s in samples]), labels


def export_clips(config: ExportConfig, info: ModelInfo) -> tuple[Tensor | None, Tensor | None, Tensor | None, str]:
    """``(calibration, test, test labels, where the test clips come from)`` of the config's data: centre
    clips spread over the videos (which are often grouped by class); calibration clips only with
    ``quantize``. A list or folder checks on the videos it did not calibrate on, unless it has no others."""
    from distilled_shufflenet.data import spread_indices

    test_set = _export_dataset(config, info, "test", labels=True)
    one_set = config.dataset in ("list", "folder")
    calibration_set = test_set if one_set else _export_dataset(config, info, "train", labels=False)
    calibration = None
    picked: list[int] = []
    if config.quantize:
        picked = spread_indices(len(calibration_set), config.calibration_clips)
        calibration, _ = _clips(calibration_set, picked, "calibration")
    pool, source = list(range(len(test_set))), "the test videos"
    if one_set and picked:
        rest = sorted(set(pool) - set(picked))
        pool, source = (rest, "the videos not calibrated on") if rest else (pool, "the calibration videos: no others")
    limit = len(pool) if config.test_clips is None else config.test_clips
    test, labels = _clips(test_set, [pool[i] for i in spread_indices(len(pool), limit)], "test")
    return calibration, test, labels, source


def run_export(config: ExportConfig) -> list[ExportReport | QuantizeReport]:
    """Export the checkpoint as ``config`` says (and quantise it); the reports of the files written."""
    from distilled_shufflenet.engine.checkpointing import resolve_checkpoint_path
    from distilled_shufflenet.inference.quantize import quantize_onnx, top1_agreement
    from distilled_shufflenet.inference.source import load_model_source

    set_threads(config.threads)
    where = resolve_checkpoint_path(config.checkpoint)
    outputs = [config.default_output(where)] + ([config.default_output(where, int8=True)] if config.quantize else [])
    for out in outputs:  # before any work, and before a file that would be lost is touched
        check_output(out, where, force=config.force)
    model, info = load_model_source(config.checkpoint)
    if model is None:
        raise ValueError(f"checkpoint {config.checkpoint}: an exported file; export from the training checkpoint")
    check = {"random": example_clip(info, batch=2)}
    calibration = test = labels = None
    source = ""
    if config.has_data:
        calibration, test, labels, source = export_clips(config, info)
        check["real"] = test[:8]
    reports: list[ExportReport | QuantizeReport] = [
        export_model(model, info, outputs[0], config.format, opset=config.opset, check_clips=check,
                     threads=config.threads)]
    if not config.quantize:
        return reports
    if config.format == "openvino":
        from distilled_shufflenet.inference.openvino import OvBackend, quantize_for_openvino

        data = quantize_for_openvino(onnx_bytes(model, info, opset=config.opset), calibration)
        runner = OvBackend(data, precision="int8", threads=config.threads, name="ov-int8", cache=False)
    else:
        data = quantize_onnx(onnx_bytes(model, info, opset=config.opset), calibration)
        runner = OrtBackend(data, threads=config.threads, name="ort-int8")
    with torch.inference_mode():
        fp32 = torch.cat([model(test[i:i + 8]) for i in range(0, len(test), 8)])
    int8 = torch.cat([runner(test[i:i + 8]) for i in range(0, len(test), 8)])
    if config.format == "openvino":
        size, nodes = _write_ir(data, info, outputs[1]), {}
    else:
        atomic_write_bytes(data, outputs[1])
        size, nodes = len(data), runner.node_counts()
    reports.append(QuantizeReport(
        str(outputs[1]), size, len(calibration), len(test), top1_agreement(int8, fp32),
        None if labels is None else top1_agreement(fp32, torch.nn.functional.one_hot(labels, fp32.shape[1])),
        None if labels is None else top1_agreement(int8, torch.nn.functional.one_hot(labels, fp32.shape[1])),
        float((int8 - fp32).abs().max()), nodes, test_source=source))
    return reports
