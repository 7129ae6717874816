"""Ways to run a model on the CPU, behind one call: ``backend(clips) -> logits``.

===================  ===========================================================================================
torch-fp32           PyTorch eager, BatchNorm folded into the convolutions (``fuse_for_inference``)
torch-bf16           the same with bf16 weights and activations, channels-last-3d (CPUs with native bf16)
torch-compile        ``torch.compile`` of the fp32 model with BatchNorm frozen in; compiled once per backend,
                     and inductor's on-disk cache makes later runs start fast
torch-compile-bf16   the same in bf16 (CPUs with native bf16)
torch-int8           PyTorch's x86 int8 path: torchao's PT2E quantisation (:func:`~.quantize.quantize_pt2e`)
                     compiled by inductor, whose oneDNN kernels run the convolutions in int8
ort-fp32             ONNX Runtime on the clean exported graph (:func:`~.export.onnx_bytes`)
ort-int8             ONNX Runtime on its QDQ int8 quantisation (:func:`~.quantize.quantize_onnx`)
ov-fp32              OpenVINO on the same graph, f32 arithmetic (:mod:`.openvino`)
ov-bf16              OpenVINO in bf16 (CPUs with native bf16)
ov-int8              OpenVINO on the QDQ int8 quantisation
===================  ===========================================================================================

Every backend runs on exactly ``threads`` threads: PyTorch's intra-op pool is set to it (a process-wide
setting), ONNX Runtime's session gets it as ``intra_op_num_threads`` with one inter-op thread, OpenVINO's
compiled model as ``INFERENCE_NUM_THREADS`` with one stream. The same objects serve ``dsn predict`` and
``dsn bench`` (whose rows are named after them), timed by the one interleaved timer :func:`time_calls`.
:func:`auto_backend` times the candidates on this machine and keeps the fastest that agrees with fp32.
An exported file runs only in the backends that can run it (:func:`file_backends`); any other is refused.
"""

from __future__ import annotations

import contextlib
import copy
import gc
import hashlib
import importlib.util
import math
import statistics
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from distilled_shufflenet.inference.runtime import Backend, OrtBackend, set_threads
from distilled_shufflenet.inference.source import ModelInfo, file_format, read_onnx, read_torchscript
from distilled_shufflenet.io import atomic_write_bytes
from distilled_shufflenet.machine import bf16_support
from distilled_shufflenet.models import fuse_for_inference


@dataclass(frozen=True)
class BackendSpec:
    """What a backend name means: the engine, the precision of its arithmetic, whether it compiles."""

    name: str
    engine: str  # "torch", "ort" (ONNX Runtime) or "ov" (OpenVINO)
    precision: str  # "fp32", "bf16" or "int8"
    compiled: bool = False


_SPECS = (
    BackendSpec("torch-fp32", "torch", "fp32"),
    BackendSpec("torch-bf16", "torch", "bf16"),
    BackendSpec("torch-compile", "torch", "fp32", compiled=True),
    BackendSpec("torch-compile-bf16", "torch", "bf16", compiled=True),
    BackendSpec("torch-int8", "torch", "int8", compiled=True),
    BackendSpec("ort-fp32", "ort", "fp32"),
    BackendSpec("ort-int8", "ort", "int8"),
    BackendSpec("ov-fp32", "ov", "fp32"),
    BackendSpec("ov-bf16", "ov", "bf16"),
    BackendSpec("ov-int8", "ov", "int8"),
)
SPECS: dict[str, BackendSpec] = {s.name: s for s in _SPECS}
BACKENDS = tuple(SPECS)
# what ``--backend auto`` tries unless told otherwise: torch-compile* and torch-int8 compile, which takes a
# minute or more for a large model; a candidate this CPU cannot run well (bf16 without native bf16) is left out
AUTO_CANDIDATES = ("torch-fp32", "torch-bf16", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8")
# auto keeps a candidate whose class probabilities differ from fp32 by at most this much, same top-1
DEFAULT_TOLERANCE = 0.1
_PACKAGES = {"ort": "onnxruntime", "ov": "openvino"}


class TorchBackend(Backend):
    """A PyTorch module, BatchNorm folded, in fp32 or bf16, eager or compiled."""

    def __init__(self, model: nn.Module, *, precision: str = "fp32", compiled: bool = False,
                 threads: int | None = None, fuse: bool = True) -> None:
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision: expected fp32 or bf16, got {precision!r}")
        self.threads = set_threads(threads)
        self.precision, self.compiled = precision, compiled
        self.name = (f"torch-compile{'-bf16' if precision == 'bf16' else ''}" if compiled
                     else f"torch-{precision}")
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


# ---------------------------------------------------------------------------------------------- OpenVINO's models
def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()[:24]


def _export_code() -> bytes:
    """A digest of the code that turns a model into the ONNX graph (and its int8 form): a change there
    makes earlier prepared models stale."""
    import sys

    from distilled_shufflenet.inference import export, graph, quantize
    from distilled_shufflenet.models import student

    modules = [export, graph, quantize, student, sys.modules[__name__]]
    return hashlib.sha256(b"".join(Path(m.__file__).read_bytes() for m in modules)).digest()


def _state_bytes(model: nn.Module) -> bytes:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(str(tuple(value.shape)).encode())
        h.update(value.detach().contiguous().cpu().numpy().tobytes())
    return h.digest()


def prepared_onnx(model: nn.Module, info: ModelInfo, precision: str, calibration: Tensor | None = None, *,
                   use_cache: bool = True) -> bytes:
    """The ONNX bytes OpenVINO runs for ``model``: the fp32 graph, or for ``int8`` its QDQ quantisation
    calibrated on ``calibration`` clips ``(N, 3, T, H, W)``. Kept in :func:`cache_dir` by a hash of all it
    depends on, so the next start of the same model and clips reads it instead of exporting again."""
    from distilled_shufflenet.inference.export import example_clip, onnx_bytes
    from distilled_shufflenet.inference.openvino import cache_dir, int8_weight_bits, quantize_for_openvino

    if precision == "int8" and calibration is None:
        raise ValueError("ov-int8: calibration clips are needed to quantise the model")
    shape = str((info.preprocess.clip_len, info.preprocess.crop_size)).encode()
    fp32_key = _digest(_state_bytes(model), type(model).__name__.encode(), shape,
                       info.metadata()["dsn.classes"].encode(), _export_code())
    int8_key = "" if precision != "int8" else "-int8-" + _digest(
        str(tuple(calibration.shape)).encode(), calibration.float().contiguous().numpy().tobytes(),
        f"{int8_weight_bits()}-bit weights".encode())
    path = cache_dir() / "models" / (fp32_key + int8_key + ".onnx")
    if use_cache and path.is_file():
        return path.read_bytes()
    data = onnx_bytes(model, info, example=example_clip(info))
    if precision == "int8":
        data = quantize_for_openvino(data, calibration)
    if use_cache:
        try:
            atomic_write_bytes(data, path)
        except OSError:
            pass  # a read-only or full cache only costs the next start its export
    return data


# ---------------------------------------------------------------------------------------------- building
def backend_support(name: str) -> str | None:
    """Why backend ``name`` cannot run here, or ``None`` when it can."""
    if name not in SPECS:
        raise ValueError(f"backend: unknown {name!r}; expected one of {', '.join(BACKENDS)} or auto")
    spec = SPECS[name]
    package = _PACKAGES.get(spec.engine)
    if package and importlib.util.find_spec(package) is None:
        return f"{package} is not installed (pip install {package})"
    if spec.precision == "bf16":
        native, why = bf16_support()
        return None if native else why
    if name == "torch-int8" and importlib.util.find_spec("torchao") is None:
        return "torchao is not installed (pip install torchao)"
    return None


def _check_available(name: str) -> None:
    why = backend_support(name)
    if why:
        raise ValueError(f"backend {name}: not available here: {why}")


def create_backend(name: str, model: nn.Module, info: ModelInfo, *, threads: int | None = None,
                   calibration: Tensor | None = None) -> Backend:
    """Backend ``name`` for a PyTorch ``model``. ``ort-*`` and ``ov-*`` export it first; the ``*-int8``
    backends quantise, calibrated on ``calibration`` clips (``(N, 3, T, H, W)``; random clips when
    ``None``, which suits timing but not accuracy)."""
    from distilled_shufflenet.inference.export import example_clip, onnx_bytes

    _check_available(name)
    spec = SPECS[name]
    if spec.precision == "int8" and calibration is None:
        calibration = example_clip(info, batch=4, seed=1)
    if name == "torch-int8":
        return TorchInt8Backend(model, calibration, threads=threads)
    if spec.engine == "torch":
        return TorchBackend(model, precision=spec.precision, compiled=spec.compiled, threads=threads)
    if spec.engine == "ov":
        from distilled_shufflenet.inference.openvino import OvBackend

        data = prepared_onnx(model, info, spec.precision, calibration)
        return OvBackend(data, precision=spec.precision, threads=threads, name=name)
    data = onnx_bytes(model, info)
    if name == "ort-int8":
        from distilled_shufflenet.inference.quantize import quantize_onnx

        data = quantize_onnx(data, calibration)
    return OrtBackend(data, threads=threads, name=name)


def file_backends(path: str, info: ModelInfo) -> tuple[str, ...]:
    """The backends that can run the exported file ``path`` (whose metadata is ``info``): an fp32 ONNX
    file in ONNX Runtime or OpenVINO (f32 or bf16), an int8 one in their int8 kernels, an OpenVINO IR in
    OpenVINO, a TorchScript file in TorchScript."""
    fmt = file_format(path)
    int8 = info.precision == "int8"
    if fmt == "onnx":
        return ("ort-int8", "ov-int8") if int8 else ("ort-fp32", "ov-fp32", "ov-bf16")
    if fmt == "openvino":
        return ("ov-int8",) if int8 else ("ov-fp32", "ov-bf16")
    return ("torchscript",)


def file_backend(path: str, *, backend: str | None = None, threads: int | None = None) -> tuple[Backend, ModelInfo]:
    """The backend that runs an exported file: ``backend`` when it can run the file (a ``ValueError``
    naming the file and the backends that can when it cannot), else the first of :func:`file_backends`."""
    from distilled_shufflenet.inference.openvino import OvBackend
    from distilled_shufflenet.inference.source import read_ir

    fmt = file_format(path)
    if fmt == "onnx":
        model, info = read_onnx(path)
    elif fmt == "openvino":
        model, info = read_ir(path)
    else:
        model, info = read_torchscript(path)
    can = file_backends(path, info)
    name = backend or can[0]
    if name not in can:
        kind = {"onnx": "ONNX", "openvino": "OpenVINO IR", "torchscript": "TorchScript"}[fmt]
        runs_in = "TorchScript" if can == ("torchscript",) else ", ".join(can)
        torch_note = "; the PyTorch backends need a checkpoint" if name.startswith("torch-") else ""
        raise ValueError(f"backend {name}: cannot run {path}, an {info.precision} {kind} file; it runs in "
                         f"{runs_in} (or --backend auto){torch_note}")
    if name == "torchscript":
        return ScriptBackend(model, threads=threads), info
    _check_available(name)
    spec = SPECS[name]
    if spec.engine == "ort":
        return OrtBackend(model, threads=threads, name=name), info
    return OvBackend(model, precision=spec.precision, threads=threads, name=name), info


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


def time_calls(calls: Sequence[Callable[[], object]], *, warmup: int = 1, repeats: int = 5,
               on_call: Callable[[str], None] | None = None) -> list[list[float]]:
    """Milliseconds of each call, ``repeats`` times each: every call warmed up ``warmup`` times (at least
    once: the first call compiles, allocates, plans), then timed round-robin, so that drift of the machine
    (other processes, clock changes) hits all alike. The garbage collector is off while timing, as a
    collection would land on whichever call runs then. ``on_call("warm-up" | "timed")`` follows progress."""
    for call in calls:
        for _ in range(max(warmup, 1)):
            call()
            if on_call:
                on_call("warm-up")
    times: list[list[float]] = [[] for _ in calls]
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for k, call in enumerate(calls):
                start = time.perf_counter()
                call()
                times[k].append((time.perf_counter() - start) * 1e3)
                if on_call:
                    on_call("timed")
    finally:
        gc.enable()
    return times


def auto_backend(model: nn.Module, info: ModelInfo, probe: Tensor, *, threads: int | None = None,
                 candidates: Sequence[str] = AUTO_CANDIDATES, tolerance: float = DEFAULT_TOLERANCE,
                 calibration: Tensor | None = None, repeats: int = 5) -> AutoChoice:
    """Build every available backend of ``candidates``, check its output on the ``probe`` clips against
    PyTorch fp32 (same top-1 on every clip, probabilities within ``tolerance``), time those that agree
    on one clip, interleaved, and return the fastest with the reasons for the others."""
    reference = TorchBackend(model, threads=threads)
    with torch.inference_mode():
        expected = torch.softmax(reference(probe), 1)

    def build(name: str) -> Backend:
        if name == "torch-fp32":
            return reference
        return create_backend(name, model, info, threads=threads, calibration=calibration)

    return _choose(("torch-fp32", *candidates), build, backend_support, probe, expected, "fp32", tolerance, repeats)


def auto_file_backend(path: str, probe: Tensor | None = None, *, threads: int | None = None,
                      tolerance: float = DEFAULT_TOLERANCE, repeats: int = 5) -> tuple[AutoChoice, ModelInfo]:
    """The fastest backend that can run the exported file ``path`` (:func:`file_backends`) and agrees with
    the first of them (the file's own precision: ONNX Runtime or OpenVINO f32 for an fp32 file) on the
    ``probe`` clips within ``tolerance``, timed on one clip."""
    from distilled_shufflenet.inference.export import example_clip

    first, info = file_backend(path, threads=threads)
    clips = probe if probe is not None else example_clip(info, batch=2)
    expected = torch.softmax(first(clips), 1)

    def build(name: str) -> Backend:
        return first if name == first.name else file_backend(path, backend=name, threads=threads)[0]

    def support(name: str) -> str | None:
        return None if name == "torchscript" else backend_support(name)

    choice = _choose(file_backends(path, info), build, support, clips, expected, first.name, tolerance, repeats)
    return choice, info


def _choose(names: Sequence[str], build: Callable[[str], Backend], support: Callable[[str], str | None],
            probe: Tensor, expected: Tensor, reference: str, tolerance: float, repeats: int) -> AutoChoice:
    """Build each backend of ``names`` that can run here, keep those whose probabilities on ``probe`` agree
    with ``expected`` (same top-1 on every clip, within ``tolerance``), and choose the fastest."""
    built: list[tuple[Candidate, Backend]] = []
    results: list[Candidate] = []
    for name in dict.fromkeys(names):
        cand = Candidate(name)
        results.append(cand)
        why = support(name)
        if why:
            cand.why_not = why
            continue
        try:
            backend = build(name)
            probs = torch.softmax(backend(probe), 1)
        except Exception as e:  # noqa: BLE001 - a backend that fails here is left out, with the reason
            cand.why_not = f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            continue
        cand.max_prob_diff = float((probs - expected).abs().max())
        cand.top1_agreement = float((probs.argmax(1) == expected.argmax(1)).float().mean())
        if cand.top1_agreement < 1.0 or cand.max_prob_diff > tolerance:
            cand.why_not = f"outside the tolerance of {reference} (probabilities within {tolerance:g}, same top-1)"
            continue
        built.append((cand, backend))
    return _fastest(built, results, probe[:1], repeats)


def _fastest(built: list[tuple[Candidate, Backend]], results: list[Candidate], clip: Tensor,
             repeats: int) -> AutoChoice:
    if not built:
        raise ValueError("backend auto: no candidate could run here: " +
                         "; ".join(f"{c.name}: {c.why_not}" for c in results))
    times = time_calls([lambda b=b: b(clip) for _, b in built], repeats=repeats)
    for (cand, _), t in zip(built, times):
        cand.median_ms = statistics.median(t)
    best_cand, best = min(built, key=lambda cb: cb[0].median_ms)
    for cand, _ in built:
        cand.kept = cand is best_cand
        if not cand.kept:
            cand.why_not = f"slower than {best.name}"
    set_threads(best.threads)
    return AutoChoice(best, results)
