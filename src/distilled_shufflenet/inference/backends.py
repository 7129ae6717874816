"""Ways to run a model on the CPU, behind one call: ``backend(clips) -> logits``.

==============  ==================================================================================
torch-fp32      PyTorch eager, BatchNorm folded into the convolutions (``fuse_for_inference``)
torch-bf16      the same with bf16 weights and activations, channels-last-3d (CPUs with native bf16)
torch-compile   ``torch.compile`` of the fp32 (or, where native, bf16) model with BatchNorm frozen in;
                compiled once per backend, and inductor's on-disk cache makes later runs start fast
torch-int8      PyTorch's x86 int8 path: torchao's PT2E quantisation (:func:`~.quantize.quantize_pt2e`)
                compiled by inductor, whose oneDNN kernels run the convolutions in int8
ort-fp32        ONNX Runtime on the clean exported graph (:func:`~.export.onnx_bytes`)
ort-int8        ONNX Runtime on its QDQ int8 quantisation (:func:`~.quantize.quantize_onnx`)
==============  ==================================================================================

Every backend runs on exactly ``threads`` threads: PyTorch's intra-op pool is set to it (a process-wide
setting), ONNX Runtime's session gets it as ``intra_op_num_threads`` with one inter-op thread.
:func:`auto_backend` times the candidates on this machine and keeps the fastest that agrees with fp32.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.util
import math
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from distilled_shufflenet.bench import bf16_support
from distilled_shufflenet.inference.source import ModelInfo
from distilled_shufflenet.models import fuse_for_inference

BACKENDS = ("torch-fp32", "torch-bf16", "torch-compile", "torch-int8", "ort-fp32", "ort-int8")
# what ``--backend auto`` tries unless told otherwise: torch-compile and torch-int8 compile, which takes a
# minute or more for a large model
AUTO_CANDIDATES = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-int8")
# auto keeps a candidate whose class probabilities differ from fp32 by at most this much, same top-1
DEFAULT_TOLERANCE = 0.02


def set_threads(threads: int | None) -> int:
    """Set PyTorch's intra-op thread count (``None`` keeps it); returns the count in force."""
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class Backend:
    """``backend(clips)``: ``(N, 3, T, H, W)`` float32 normalised clips -> ``(N, classes)`` float32 logits."""

    name: str = "?"
    threads: int = 1

    def __call__(self, clips: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.threads} thread{'s' if self.threads != 1 else ''})"


class TorchBackend(Backend):
    """A PyTorch module, BatchNorm folded, in fp32 or bf16, eager or compiled."""

    def __init__(self, model: nn.Module, *, precision: str = "fp32", compiled: bool = False,
                 threads: int | None = None, fuse: bool = True) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected fp32 or bf16, got {precision!r}")
        self.threads = set_threads(threads)
        self.precision, self.compiled = precision, compiled
        self.name = "torch-compile" if compiled else f"torch-{precision}"
        m = fuse_for_inference(model) if fuse else copy.deepcopy(model).eval()
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        m = m.to(self.dtype)
        self.channels_last = precision == "bf16" and not compiled
        if self.channels_last:
            m = m.to(memory_format=torch.channels_last_3d)
        self.module: Callable[[Tensor], Tensor] = torch.compile(m, dynamic=False) if compiled else m

    def __call__(self, clips: Tensor) -> Tensor:
        torch.set_num_threads(self.threads)  # another backend may have changed the process-wide count
        x = clips.to(self.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        with torch.inference_mode(), _compile_context(self.compiled):
            return self.module(x).float()


class TorchInt8Backend(Backend):
    """PyTorch's x86 int8 path: the model, BatchNorm folded, quantised by :func:`~.quantize.quantize_pt2e`
    (calibrated on ``calibration`` clips) and compiled by inductor on its first call."""

    name = "torch-int8"

    def __init__(self, model: nn.Module, calibration: Tensor, *, threads: int | None = None) -> None:
        from distilled_shufflenet.inference.quantize import quantize_pt2e

        self.threads = set_threads(threads)
        self.module = torch.compile(quantize_pt2e(fuse_for_inference(model), calibration), dynamic=False)

    def __call__(self, clips: Tensor) -> Tensor:
        torch.set_num_threads(self.threads)
        # no_grad, not inference_mode: inductor's freezing of the quantised weights needs the former
        with torch.no_grad(), _compile_context(True), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="To copy construct from a tensor")  # inside inductor
            return self.module(clips.float()).float()


def _compile_context(compiled: bool) -> contextlib.AbstractContextManager:
    # freezing lets inductor fold constants (BatchNorm, weight layouts) into the compiled graph
    return torch._inductor.config.patch(freezing=True) if compiled else contextlib.nullcontext()


class ScriptBackend(Backend):
    """A TorchScript file exported by ``dsn export --format torchscript``."""

    name = "torchscript"

    def __init__(self, module: torch.jit.ScriptModule, *, threads: int | None = None) -> None:
        self.threads = set_threads(threads)
        self.module = module

    def __call__(self, clips: Tensor) -> Tensor:
        torch.set_num_threads(self.threads)
        with torch.inference_mode():
            return self.module(clips.float()).float()


class OrtBackend(Backend):
    """An ONNX Runtime session on ``threads`` intra-op threads (one inter-op thread), all graph
    optimisations on; ``model`` is the bytes or the path of an ONNX file."""

    def __init__(self, model: bytes | str, *, threads: int | None = None, name: str = "ort-fp32") -> None:
        import onnxruntime as ort

        self.threads = threads if threads is not None else torch.get_num_threads()
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.name = name
        self._model = model
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            where = model if isinstance(model, str) else "the ONNX model"
            raise ValueError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def session_threads(self) -> int:
        """The intra-op thread count the session was created with, read back from it."""
        return int(self.session.get_session_options().intra_op_num_threads)

    def node_counts(self) -> dict[str, int]:
        """Operator types of the model's graph and how many nodes of each."""
        import onnx

        proto = onnx.load_from_string(self._model) if isinstance(self._model, bytes) else onnx.load(self._model)
        return dict(Counter(n.op_type for n in proto.graph.node))

    def __call__(self, clips: Tensor) -> Tensor:
        x = np.ascontiguousarray(torch.as_tensor(clips).float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])


# ---------------------------------------------------------------------------------------------- building
def backend_support(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or ``None`` when it can."""
    if name not in BACKENDS:
        raise ValueError(f"backend: unknown {name!r}; expected one of {', '.join(BACKENDS)} or auto")
    if name == "torch-bf16":
        native, why = bf16_support()
        return None if native else why
    if name.startswith("ort-"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "onnxruntime is not installed (pip install onnxruntime)"
    if name == "torch-int8" and importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    return None


def create_backend(name: str, model: nn.Module, info: ModelInfo, *, threads: int | None = None,
                   calibration: Tensor | None = None) -> Backend:
    """Backend ``name`` for a PyTorch ``model``. ``ort-*`` export it first; ``ort-int8`` and ``torch-int8``
    quantise, calibrated on ``calibration`` clips (``(N, 3, T, H, W)``; random clips when ``None``, which
    suits timing but not accuracy)."""
    from distilled_shufflenet.inference.export import example_clip, onnx_bytes

    why = backend_support(name)
    if why:
        raise ValueError(f"backend {name}: not available here: {why}")
    if name.endswith("-int8") and calibration is None:
        calibration = example_clip(info, batch=4, seed=1)
    if name == "torch-int8":
        return TorchInt8Backend(model, calibration, threads=threads)
    if name.startswith("torch-"):
        if name == "torch-compile":
            precision = "bf16" if bf16_support()[0] else "fp32"
            return TorchBackend(model, precision=precision, compiled=True, threads=threads)
        return TorchBackend(model, precision=name.removeprefix("torch-"), threads=threads)
    data = onnx_bytes(model, info)
    if name == "ort-int8":
        from distilled_shufflenet.inference.quantize import quantize_onnx

        data = quantize_onnx(data, calibration)
    return OrtBackend(data, threads=threads, name=name)


def file_backend(path: str, *, threads: int | None = None) -> tuple[Backend, ModelInfo]:
    """The backend that runs an exported file (``.onnx`` in ONNX Runtime, ``.ts`` in TorchScript)."""
    from distilled_shufflenet.inference.export import read_onnx, read_torchscript
    from distilled_shufflenet.inference.source import file_format

    if file_format(path) == "onnx":
        data, info = read_onnx(path)
        return OrtBackend(data, threads=threads, name=f"ort-{info.precision}"), info
    module, info = read_torchscript(path)
    return ScriptBackend(module, threads=threads), info


# ---------------------------------------------------------------------------------------------- auto
@dataclass
class Candidate:
    """One backend timed by :func:`auto_backend`."""

    name: str
    median_ms: float = math.nan
    max_prob_diff: float = math.nan
    top1_agreement: float = math.nan
    kept: bool = False
    why_not: str = ""


@dataclass
class AutoChoice:
    """The backend :func:`auto_backend` chose and the figures behind the choice."""

    backend: Backend
    candidates: list[Candidate] = field(default_factory=list)

    def summary(self) -> str:
        lines = [f"backend auto: chose {self.backend.name}"]
        for c in self.candidates:
            figures = "" if math.isnan(c.median_ms) else (
                f"{c.median_ms:.1f} ms per clip, top-1 agreement {100 * c.top1_agreement:.0f} %, "
                f"largest probability difference {c.max_prob_diff:.3g}")
            state = "kept" if c.kept else f"left out: {c.why_not}"
            lines.append(f"  {c.name:<14} {figures}{'; ' if figures else ''}{state}")
        return "\n".join(lines)


def time_calls(calls: Sequence[Callable[[], object]], *, warmup: int = 1, repeats: int = 5) -> list[list[float]]:
    """Milliseconds of each call, ``repeats`` times each, interleaved round-robin after ``warmup`` calls."""
    for call in calls:
        for _ in range(warmup):
            call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(repeats):
        for k, call in enumerate(calls):
            start = time.perf_counter()
            call()
            times[k].append((time.perf_counter() - start) * 1e3)
    return times


def auto_backend(model: nn.Module, info: ModelInfo, probe: Tensor, *, threads: int | None = None,
                 candidates: Sequence[str] = AUTO_CANDIDATES, tolerance: float = DEFAULT_TOLERANCE,
                 calibration: Tensor | None = None, repeats: int = 5) -> AutoChoice:
    """Build every available backend of ``candidates``, check its output on the ``probe`` clips against
    PyTorch fp32 (same top-1 on every clip, probabilities within ``tolerance``), time those that agree
    on one clip, interleaved, and return the fastest with the reasons for the others."""
    reference = TorchBackend(model, threads=threads)
    expected = torch.softmax(reference(probe), 1)
    built: list[tuple[Candidate, Backend]] = []
    results: list[Candidate] = []
    for name in dict.fromkeys(("torch-fp32", *candidates)):
        cand = Candidate(name)
        results.append(cand)
        why = backend_support(name)
        if why:
            cand.why_not = why
            continue
        try:
            backend = reference if name == "torch-fp32" else create_backend(
                name, model, info, threads=threads, calibration=calibration)
            probs = torch.softmax(backend(probe), 1)
        except Exception as e:  # noqa: BLE001 - a backend that fails here is left out, with the reason
            cand.why_not = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        cand.max_prob_diff = float((probs - expected).abs().max())
        cand.top1_agreement = float((probs.argmax(1) == expected.argmax(1)).float().mean())
        if cand.top1_agreement < 1.0 or cand.max_prob_diff > tolerance:
            cand.why_not = f"outside the tolerance of fp32 (probabilities within {tolerance:g}, same top-1)"
            continue
        built.append((cand, backend))
    one = probe[:1]
    times = time_calls([lambda b=b: b(one) for _, b in built], repeats=repeats)
    for (cand, _), t in zip(built, times):
        cand.median_ms = statistics.median(t)
    best_cand, best = min(built, key=lambda cb: cb[0].median_ms)
    for cand, _ in built:
        cand.kept = cand is best_cand
        if not cand.kept:
            cand.why_not = f"slower than {best.name}"
    set_threads(best.threads)
    return AutoChoice(best, results)
