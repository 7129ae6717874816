"""OpenVINO: the fastest engine for x86 CPUs, fed the project's own ONNX graphs.

The fp32 model is the clean exported graph (:func:`~.export.onnx_bytes`), the int8 model its QDQ
quantisation (:func:`~.quantize.quantize_onnx`), which OpenVINO turns into int8 kernels::

    checkpoint ──onnx_bytes──> fp32 ONNX ──read_model──> ov.Model ──compile_model(CPU, precision, threads)──>
                                   └──quantize_onnx (calibration clips)──> QDQ ONNX ──┘

``ov-fp32`` asks for f32 arithmetic (OpenVINO's own default is bf16 where the CPU has it), ``ov-bf16``
for bf16 (CPUs with native bf16 only), ``ov-int8`` runs the QDQ model, its remaining float layers in f32.
An IR written by ``dsn export --format openvino`` (``.xml`` + ``.bin``) carries the model's class names
and preprocessing in its ``rt_info``, as the ONNX file does in its metadata.

Start-up: OpenVINO compiles a model in well under a second; what costs is the ONNX export and, for
int8, the calibration. :func:`~.backends.prepared_onnx` keeps the ONNX it builds in :func:`cache_dir`,
keyed by a hash of the weights, the input shape, the precision and the calibration clips, so a second
start of the same model skips both; compiled blobs go to OpenVINO's own ``CACHE_DIR`` beside it.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distilled_shufflenet._text import first_line
from distilled_shufflenet.inference.runtime import Backend
from distilled_shufflenet.inference.source import IR_METADATA_ROOT, ModelInfo
from distilled_shufflenet.machine import bf16_support, vnni_support

PRECISIONS = ("fp32", "bf16", "int8")
# OpenVINO's INFERENCE_PRECISION_HINT per backend precision; int8 models keep their float layers in f32
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def openvino_support() -> str | None:
    """Why OpenVINO cannot run here, or ``None`` when it can."""
    if importlib.util.find_spec("openvino") is None:
        return "openvino is not installed (pip install openvino)"
    return None


def _core() -> Any:
    why = openvino_support()
    if why:
        raise ValueError(f"OpenVINO: {why}")
    import openvino as ov

    return ov.Core()


def int8_weight_bits() -> int:
    """Bits of the int8 model's weights here: 7 where the CPU has no VNNI, whose int8 kernels sum pairs of
    u8 x s8 products in 16 bits (saturating with 8-bit weights), else 8."""
    return 8 if vnni_support() else 7


def quantize_for_openvino(model: bytes, calibration: Tensor) -> bytes:
    """The QDQ int8 model OpenVINO runs for the fp32 ONNX ``model``, calibrated on ``calibration`` clips
    ``(N, 3, T, H, W)``, with :func:`int8_weight_bits` bits of weight."""
    from distilled_shufflenet.inference.quantize import quantize_onnx

    return quantize_onnx(model, calibration, reduce_range=int8_weight_bits() == 7)


def cache_dir() -> Path:
    """Where prepared models and OpenVINO's compiled blobs are kept: ``$DSN_CACHE_DIR/openvino``, or
    ``$XDG_CACHE_HOME/distilled_shufflenet/openvino`` (``~/.cache/...``)."""
    root = os.environ.get("DSN_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") \
        / "distilled_shufflenet"
    return Path(root) / "openvino"


class OvBackend(Backend):
    """An OpenVINO model compiled for the CPU on ``threads`` threads, one stream, latency mode.

    ``model`` is ONNX bytes, an ``openvino.Model``, or the path of an ``.onnx`` / ``.xml`` file;
    ``precision`` says which arithmetic runs its float layers (``fp32``, ``bf16``) or that it is an int8
    (QDQ) model. ``backend(clips)`` takes ``(N, 3, T, H, W)`` float32 clips and gives ``(N, classes)`` logits.
    """

    def __init__(self, model: bytes | str | os.PathLike | Any, *, precision: str = "fp32", threads: int | None = None,
                 name: str | None = None, cache: bool = True) -> None:
        if precision not in PRECISIONS:
            raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
        if precision == "bf16":
            native, why = bf16_support()
            if not native:
                raise ValueError(f"backend ov-bf16: not available here: {why}")
        self.threads = threads if threads is not None else torch.get_num_threads()
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        self.name = name or f"ov-{precision}"
        self.precision = precision
        core = _core()
        if cache:
            core.set_property({"CACHE_DIR": str(cache_dir() / "compiled")})
        where = str(model) if isinstance(model, (str, os.PathLike)) else "the model"
        try:
            ov_model = core.read_model(str(model) if isinstance(model, (str, os.PathLike)) else model) \
                if isinstance(model, (bytes, str, os.PathLike)) else model
            self.compiled = core.compile_model(ov_model, "CPU", {
                "INFERENCE_NUM_THREADS": self.threads,
                "INFERENCE_PRECISION_HINT": _HINTS[precision],
                "PERFORMANCE_HINT": "LATENCY",
                "NUM_STREAMS": 1,
            })
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses of its own
            raise ValueError(f"{where}: OpenVINO cannot compile it ({first_line(e)})") from None
        self.request = self.compiled.create_infer_request()
        self._output = self.compiled.output(0)

    def compiled_threads(self) -> int:
        """The thread count the compiled model runs on, read back from OpenVINO."""
        return int(self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def compiled_precision(self) -> str:
        """OpenVINO's inference precision of the compiled model's float layers (``f32`` / ``bf16``)."""
        hint = self.compiled.get_property("INFERENCE_PRECISION_HINT")
        return hint.to_string() if hasattr(hint, "to_string") else str(hint)

    def __call__(self, clips: Tensor) -> Tensor:
        x = np.ascontiguousarray(torch.as_tensor(clips).float().numpy())
        return torch.from_numpy(np.array(self.request.infer({0: x})[self._output], copy=True))


def profile(model: bytes, x: Tensor, *, precision: str = "fp32", threads: int = 1, calls: int = 3) -> list[dict]:
    """Per-layer time of ``model`` (ONNX bytes) on ``x`` in OpenVINO: ``[{layer, type, kernel, ms}]``,
    the median over ``calls`` calls, slowest first (OpenVINO's ``PERF_COUNT``)."""
    core = _core()
    compiled = core.compile_model(core.read_model(model), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "PERF_COUNT": True})
    request = compiled.create_infer_request()
    data = np.ascontiguousarray(x.float().numpy())
    request.infer({0: data})
    runs: dict[str, list[float]] = {}
    kinds: dict[str, tuple[str, str]] = {}
    for _ in range(calls):
        request.infer({0: data})
        for p in request.get_profiling_info():
            runs.setdefault(p.node_name, []).append(p.real_time.total_seconds() * 1e3)
            kinds[p.node_name] = (p.node_type, p.exec_type)
    rows = [{"layer": n, "type": kinds[n][0], "kernel": kinds[n][1], "ms": float(np.median(t))} for n, t in runs.items()]
    return sorted(rows, key=lambda r: -r["ms"])


# ---------------------------------------------------------------------------------------------- IR files
def write_ir(model: bytes, info: ModelInfo, path: str | os.PathLike) -> tuple[Path, Path]:
    """Write the ONNX ``model`` as an OpenVINO IR: ``path`` (``.xml``) and its ``.bin`` beside it, with
    ``info`` in the IR's ``rt_info``. Both are written to temporary names first, then renamed."""
    import openvino as ov

    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ValueError(f"output {path}: an OpenVINO IR is an .xml file (with its .bin beside it)")
    ov_model = _core().read_model(model)
    for key, value in info.metadata().items():
        ov_model.set_rt_info(value, [IR_METADATA_ROOT, key])
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".dsn-ir-", dir=path.parent) as tmp:
        tmp_xml = Path(tmp) / path.name
        ov.save_model(ov_model, str(tmp_xml), compress_to_fp16=False)
        bin_path = path.with_suffix(".bin")
        os.replace(tmp_xml.with_suffix(".bin"), bin_path)  # weights first: the .xml names a complete .bin
        os.replace(tmp_xml, path)
    return path, bin_path
