"""Speed and size of models on this CPU: parameters, multiply-accumulates, latency and FPS per path.

Every (model, execution path) pair runs in one process and is timed round-robin, so that drift of the
machine (other processes, clock changes) hits all of them alike::

    warm-up:  for each (model, path): call it `warmup` times        (compiles the torch.compile paths)
    measure:  for r in range(repeats): for each (model, path): time one call

Paths (see :data:`PATHS`): every backend of ``dsn predict --backend`` under its own name (``torch-fp32``,
``torch-bf16``, ``torch-compile``, ``torch-compile-bf16``, ``torch-int8``, ``ort-fp32``, ``ort-int8``,
``ov-fp32``, ``ov-bf16``, ``ov-int8``: :mod:`distilled_shufflenet.inference.backends`), built by the same
``create_backend`` and timed by the same interleaved timer, so a figure here is what that backend gives a
user; plus two paths only the bench needs: ``fp32``, the model eager as built (BatchNorm not folded), the
baseline every speed-up is read against, and ``fp32+cl3d``, the same with channels-last-3d weights and
input. The int8 paths are calibrated on random clips here: right for speed, not for accuracy. A model
given as an exported file (``.onnx``, OpenVINO ``.xml``) runs as it is in each backend that can run it
(its GMACs are not counted).

Cost is counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions
and matrix products only, as FLOPs = 2 x multiply-accumulates. FPS follows the paper: frames per second of
video, ``batch * frames / seconds per call``.

Every model runs at the common input (``frames`` x ``size`` x ``size``) unless its spec names another
(``x3d_s:input=13x160``, ``input=own``); with ``own_input`` each model is also timed at the clip it
expects (its ``preprocess``), so that efficient networks are seen both at equal input and at their own.

>>> report = run_benchmark(BenchConfig(models=parse_models("shufflenet2plus1d,r2plus1d_18")))
>>> print(format_report(report))
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import yaml
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode
from tqdm import tqdm

from distilled_shufflenet import machine
from distilled_shufflenet._text import first_line
from distilled_shufflenet.inference.backends import BACKENDS, SPECS, backend_support, create_backend, file_backend, \
    file_backends, time_calls
from distilled_shufflenet.inference.quantize import seeded_clips
from distilled_shufflenet.inference.source import ModelInfo, file_format
from distilled_shufflenet.io import atomic_write_text
from distilled_shufflenet.models import Preprocess, create_model, list_models
from distilled_shufflenet.options import option

DEFAULT_MODELS = ("shufflenet2plus1d", "r3d_18", "mc3_18", "r2plus1d_18", "r3d_50", "x3d_s", "x3d_m")
DEFAULT_REFERENCE = "r2plus1d_18"
# the project's targets: the student at least this many times faster than the reference in the same path
TARGET_SPEEDUP = 5.0
TARGET_SPEEDUPS = {"r2plus1d_18": TARGET_SPEEDUP, "x3d_m": 1.5}


# ---------------------------------------------------------------------------------------------- paths
# paths only the bench needs: the model eager as built, the baseline of every speed-up, and channels-last-3d
EAGER_PATHS = ("fp32", "fp32+cl3d")
PATHS = EAGER_PATHS + BACKENDS
# what the paths were called before they were named after the backends
RENAMED = {"fp32+fused": "torch-fp32", "bf16": "torch-bf16", "bf16+cl3d": "torch-bf16", "fp32+compile": "torch-compile",
           "bf16+compile": "torch-compile-bf16", "int8+compile": "torch-int8"}
# the default set: quick to build (no compiling)
DEFAULT_PATHS = ("fp32", "torch-fp32", "torch-bf16", "ort-fp32", "ort-int8", "ov-fp32", "ov-bf16", "ov-int8")
COMPILE_PATHS = ("torch-compile", "torch-compile-bf16", "torch-int8")


def path_precision(name: str) -> str:
    """The arithmetic of a path: ``fp32``, ``bf16`` or ``int8``."""
    return "fp32" if name in EAGER_PATHS else SPECS[name].precision


def resolve_paths(names: Sequence[str] | None, *, compile: bool = False,
                  force_bf16: bool = False) -> tuple[list[str], dict[str, str]]:
    """The paths to run and the ones skipped (name -> reason).

    ``names=None`` means :data:`DEFAULT_PATHS`, plus the compiled ones when ``compile``; a path this machine
    cannot run (a missing package; bf16 on a CPU without native bf16, unless ``force_bf16`` for the
    PyTorch ones) is skipped with the reason. Old names (``fp32+fused``, ``int8+compile``, ...) are read as
    the backends they now are (:data:`RENAMED`).
    """
    if names is None:
        names = DEFAULT_PATHS + (COMPILE_PATHS if compile else ())
    names = [RENAMED.get(n, n) for n in names]
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise ValueError(f"paths: unknown path {unknown[0]!r}; valid paths: {', '.join(PATHS)}")
    if not names:
        raise ValueError(f"paths: no path given; valid paths: {', '.join(PATHS)}")
    run: list[str] = []
    skipped: dict[str, str] = {}
    for name in dict.fromkeys(names):  # keeps order, drops repeats
        why = None if name in EAGER_PATHS else backend_support(name)
        forced = force_bf16 and why and SPECS[name].engine == "torch" and SPECS[name].precision == "bf16"
        if why and not forced:
            skipped[name] = why
        else:
            run.append(name)
    if not run:
        reasons = "; ".join(f"{n}: {why}" for n, why in skipped.items())
        raise ValueError(f"paths: every path asked for is skipped ({reasons}); add fp32 or pass --force-bf16")
    return run, skipped


# ---------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelSpec:
    """A registered model name, the keyword arguments of its builder, and the input it is timed at:
    ``(T, H, W)``, ``"own"`` (its own clip length and crop, from its ``preprocess``), or ``None`` (the
    run's common input)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    input: tuple[int, int, int] | str | None = None

    def __str__(self) -> str:
        items = [f"{k}={_format_value(v)}" for k, v in self.kwargs.items()]
        if self.input is not None:
            items.append("input=" + _input_text(self.input))
        return self.name + (":" + ",".join(items) if items else "")


def _format_value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "|".join(_format_value(x) for x in v)
    return str(v)


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside brackets: ``a:x=[1,2],b`` -> ``["a:x=[1,2]", "b"]``."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts]


def parse_input(text: str) -> tuple[int, int, int] | str:
    """``"16x224x224"`` or ``"16x224"`` (T x side) -> ``(16, 224, 224)``; ``"own"`` stays ``"own"``."""
    if text == "own":
        return text
    parts = text.lower().split("x")
    if len(parts) in (2, 3) and all(p.isdigit() and int(p) > 0 for p in parts):
        t, h, w = (int(p) for p in (parts if len(parts) == 3 else parts + parts[1:]))
        return (t, h, w)
    raise ValueError(f"models: input={text!r} is not FRAMESxHEIGHTxWIDTH (16x224x224), FRAMESxSIZE (8x112) "
                     "or 'own'")


def _parse_value(text: str) -> Any:
    """A YAML scalar or flow list; ``8|16|32`` is the list ``(8, 16, 32)``. Lists become tuples."""
    if "|" in text and not text.lstrip().startswith(("[", "'", '"')):
        return tuple(_parse_value(part) for part in text.split("|"))
    value = yaml.safe_load(text)
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


def parse_models(text: str) -> tuple[ModelSpec, ...]:
    """Parse ``--models``: comma-separated names, each optionally followed by ``:key=value,...``.

    ``"shufflenet2plus1d:num_classes=10,widths=8|16|32,r2plus1d_18"`` is two models; a piece with ``=``
    and no ``:`` continues the keyword arguments of the model before it. Values are YAML scalars
    (``10``, ``0.5``, ``true``, ``avg``), lists are written ``8|16|32`` or ``[8,16,32]``. The key
    ``input`` is not a builder argument: ``input=8x112`` times the model at 8 x 112 x 112 instead of
    the run's common input, ``input=own`` at its own clip (see :func:`parse_input`).
    """
    specs: list[tuple[str, dict[str, Any]]] = []
    for piece in _split_top_level(text):
        if not piece:
            raise ValueError(f"models: empty model name in {text!r}")
        colon, eq = piece.find(":"), piece.find("=")
        if colon == -1 and eq != -1:
            if not specs:
                raise ValueError(f"models: {piece!r} is a keyword argument with no model before it in {text!r}")
            assignment = piece
        else:
            name, _, assignment = piece.partition(":")
            if not name.strip():
                raise ValueError(f"models: missing model name before ':' in {piece!r}")
            specs.append((name.strip(), {}))
        if assignment:
            key, sep, value = assignment.partition("=")
            if not sep or not key.strip().isidentifier():
                raise ValueError(
                    f"models: expected key=value after the model name, got {assignment!r} in {text!r}"
                )
            key, value = key.strip(), value.strip()
            specs[-1][1][key] = parse_input(value) if key == "input" else _parse_value(value)
    return tuple(ModelSpec(name, kwargs, kwargs.pop("input", None)) for name, kwargs in specs)


def count_params(model: nn.Module) -> int:
    """Number of parameters (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, x: Tensor) -> int:
    """FLOPs of ``model(x)`` by ``FlopCounterMode`` (convolutions and matrix products; 2 per MAC).

    The count runs on a copy on the meta device (shapes only, no arithmetic); a model that cannot run
    there (an op without a meta kernel, a value read from a tensor) is counted by a real forward.
    """
    try:
        return _flops(copy.deepcopy(model).to("meta"), x.to("meta"))
    except Exception:  # noqa: BLE001 - the real forward below raises what matters, e.g. a shape error
        return _flops(model, x)


def _flops(model: nn.Module, x: Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        model(x)
    return int(counter.get_total_flops())


# ---------------------------------------------------------------------------------------------- config
def _models_value(value: str | Sequence[str]) -> tuple[ModelSpec, ...]:
    """``models`` as a flag gives it (one comma-separated text) or a YAML list of the same pieces."""
    return parse_models(value if isinstance(value, str) else ",".join(map(str, value)))


def _paths_value(value: str | Sequence[str]) -> tuple[str, ...]:
    """``paths`` as a flag gives it (comma-separated) or a YAML list."""
    names = value.split(",") if isinstance(value, str) else [str(v) for v in value]
    return tuple(n.strip() for n in names)


@dataclass
class BenchConfig:
    """What ``dsn bench`` measures. Defaults: the paper's speed setting (batch 1, 16 x 224 x 224)."""

    models: tuple[ModelSpec, ...] = option(
        tuple(ModelSpec(n) for n in DEFAULT_MODELS),
        "comma-separated registered models (see 'dsn models'), each optionally followed by builder arguments: "
        "NAME:KEY=VALUE,KEY=VALUE,NEXT_NAME,... A piece with '=' and no ':' is one more argument of the model "
        "before it. Values are YAML scalars (10, 0.5, true, mean); lists are written 8|16|32 or [8,16,32]. E.g. "
        "'shufflenet2plus1d:num_classes=10,widths=8|16|32,r2plus1d_18' is two models; "
        "'shufflenet2plus1d:clip_len=8' (or head_pool=mean) times the student with --frames 8; 'input=8x112' "
        "times that model at 8x112x112 instead of --frames/--size, 'input=own' at the clip it expects. An "
        "exported .onnx file is run in ONNX Runtime as it is", parse=_models_value)
    frames: int = option(16, "frames per clip")
    size: int = option(224, "height and width in pixels")
    batch: int = option(1, "clips per call")
    # None: every eager path (and the compiled ones with `compile`); see PATHS
    paths: tuple[str, ...] | None = option(
        None, f"comma-separated paths out of {', '.join(PATHS)}: every backend of 'dsn predict --backend' by its "
        "name, plus fp32 (the model eager as built, the baseline) and fp32+cl3d (channels-last-3d). The old names "
        + ", ".join(f"{a}={b}" for a, b in RENAMED.items()) + f" still work. Default: {','.join(DEFAULT_PATHS)}, "
        "plus torch-compile,torch-compile-bf16,torch-int8 with --compile; paths this CPU cannot run are "
        "skipped with the reason", parse=_paths_value)
    compile: bool = option(False, "add the compiling paths (torch-compile, torch-compile-bf16, torch-int8) to the "
                           "default set (a minute or more to start for the paper preset; with --paths, name them "
                           "there)")
    force_bf16: bool = option(False, "time the PyTorch bf16 paths even where this CPU only emulates bf16 (ov-bf16 "
                              "stays skipped there)")
    warmup: int = option(3, "untimed calls per model and path")
    repeats: int = option(10, "timed calls per model and path")
    # torch.set_num_threads for the run (restored afterwards)
    threads: int | None = option(None, "torch.set_num_threads (default: torch's default)")
    # the student (first model) is compared with this one in every path
    reference: str = option(DEFAULT_REFERENCE, "model the first one is compared with, path by path")
    # also time every model at its own input (clip length and crop of its preprocess) where that differs,
    # except those whose spec names an input
    own_input: bool = option(False, "also time every model at the clip it expects (its clip length and crop, e.g. "
                             "13x160x160 for x3d_s) where that differs from its input")
    progress: bool = option(True, "a progress bar on stderr")
    seed: int = 0

    def __post_init__(self) -> None:
        self.models = tuple(ModelSpec(m) if isinstance(m, str) else m for m in self.models)
        if self.paths is not None:
            self.paths = tuple(self.paths)
        self.validate()

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad field."""
        if not self.models:
            raise ValueError("models: no model given")
        for name, low in (("frames", 1), ("size", 1), ("batch", 1), ("warmup", 0), ("repeats", 1)):
            value = getattr(self, name)
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads: expected an integer >= 1, got {self.threads!r}")

    @property
    def input_shape(self) -> tuple[int, int, int, int, int]:
        """``(N, 3, T, H, W)`` of every call."""
        return (self.batch, 3, self.frames, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = [
            {"name": m.name, "kwargs": dict(m.kwargs), **({"input": _input_text(m.input)} if m.input else {})}
            for m in self.models
        ]
        return d


# ---------------------------------------------------------------------------------------------- report
@dataclass
class BenchRow:
    """The figures of one (model, path) pair. ``macs`` / ``flops`` are per call (the whole batch)."""

    model: str
    path: str
    params: int
    macs: int
    flops: int
    times_ms: list[float]
    median_ms: float
    min_ms: float
    max_ms: float
    fps: float
    # frames per second of the fastest call: less sensitive to other processes on a shared machine
    best_fps: float
    # achieved GFLOP/s over the matmul ceiling of the same precision (None when no ceiling was measured)
    peak_share: float | None
    # (T, H, W) of the input this row was timed at
    input: tuple[int, int, int] | None = None

    @property
    def gmacs_per_fps(self) -> float:
        """Multiply-accumulates per call (G) over frames per second: cost and slowness in one figure."""
        return self.macs / 1e9 / self.fps


@dataclass
class BenchReport:
    """Everything ``dsn bench`` prints, and writes with ``--json``."""

    config: BenchConfig
    machine: dict[str, Any]
    # achieved GFLOP/s of a large matrix product, per precision
    ceilings_gflops: dict[str, float]
    skipped_paths: dict[str, str]
    rows: list[BenchRow]

    def row(self, model: str, path: str, input: tuple[int, int, int] | None = None) -> BenchRow:
        """The row of ``model`` in ``path``, at ``input`` (T, H, W) or else the first one timed."""
        for r in self.rows:
            if r.model == model and r.path == path and (input is None or r.input == input):
                return r
        raise KeyError(f"no row for model {model!r} in path {path!r}" + (f" at input {input}" if input else ""))

    def speedups(self, *, best: bool = False) -> dict[str, float]:
        """Per path: FPS of the first model over FPS of ``config.reference`` at the same input, where
        both were run (median FPS, or with ``best`` the FPS of the fastest calls)."""
        first = self.rows[0] if self.rows else None
        ref = self.config.reference
        if first is None or first.model == ref:
            return {}
        fps = (lambda r: r.best_fps) if best else (lambda r: r.fps)
        out = {}
        for r in self.rows:
            if r.model == first.model and r.input == first.input:
                with contextlib.suppress(KeyError):
                    out[r.path] = fps(r) / fps(self.row(ref, r.path, r.input))
        return out

    def best_row(self, model: str, input: tuple[int, int, int] | None = None) -> BenchRow:
        """The fastest path (median FPS) of ``model`` at ``input`` (default: its first input)."""
        rows = [r for r in self.rows if r.model == model]
        if not rows:
            raise KeyError(f"no row for model {model!r}")
        at = input or rows[0].input
        return max((r for r in rows if r.input == at), key=lambda r: r.fps)

    def best_vs_best(self) -> tuple[BenchRow, BenchRow] | None:
        """The first model's fastest path and ``config.reference``'s fastest path at the same input (both
        by median FPS), or ``None`` when the reference was not run there."""
        first = self.rows[0] if self.rows else None
        if first is None or first.model == self.config.reference:
            return None
        try:
            return self.best_row(first.model, first.input), self.best_row(self.config.reference, first.input)
        except (KeyError, ValueError):
            return None

    def over_eager(self, model: str) -> float | None:
        """FPS of ``model``'s fastest path over its ``fp32`` eager path (median FPS), where both ran."""
        try:
            return self.best_row(model).fps / self.row(model, "fp32", self.best_row(model).input).fps
        except KeyError:
            return None

    def to_dict(self) -> dict[str, Any]:
        pair = self.best_vs_best()
        return {
            "config": self.config.to_dict(),
            "machine": self.machine,
            "ceilings_gflops": self.ceilings_gflops,
            "skipped_paths": self.skipped_paths,
            "rows": [{**asdict(r), "gmacs_per_fps": r.gmacs_per_fps} for r in self.rows],
            "speedups_vs_reference": self.speedups(),
            "best_speedups_vs_reference": self.speedups(best=True),
            "best_path_vs_best_path": None if pair is None else {
                "model": pair[0].model, "path": pair[0].path, "fps": pair[0].fps, "reference": pair[1].model,
                "reference_path": pair[1].path, "reference_fps": pair[1].fps, "ratio": pair[0].fps / pair[1].fps},
            "best_path_over_fp32_eager": {m: self.over_eager(m) for m in dict.fromkeys(r.model for r in self.rows)},
        }


def machine_info(config: BenchConfig) -> dict[str, Any]:
    """CPU model, instruction sets, core and thread counts, versions, load average: what a timing depends on."""
    return {**machine.summary(), "threads": torch.get_num_threads(), "load_average": machine.load_average(),
            "input_shape": list(config.input_shape)}


def matmul_problem(dtype: torch.dtype = torch.float32, n: int = 2048) -> tuple[Callable[[], Tensor], int, int]:
    """An ``n x n`` matrix product in ``dtype`` to measure the CPU's ceiling: ``(call, flops, n)``.

    Where the dtype is very slow (emulated bf16) ``n`` shrinks so that one product takes about 2 s.
    """
    probe = torch.randn(256, 256).to(dtype)
    with torch.inference_mode():
        probe @ probe
        start = time.perf_counter()
        probe @ probe
        rate = 2 * 256**3 / max(time.perf_counter() - start, 1e-9)  # FLOP/s, roughly
    n = max(256, min(n, int((rate * 2.0 / 2) ** (1 / 3)) // 64 * 64))
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    return (lambda: a @ b), 2 * n**3, n


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 3) -> float:
    """Achieved GFLOP/s of an ``n x n`` matrix product in ``dtype``, best of ``repeats`` after a warm-up."""
    call, flops, _ = matmul_problem(dtype, n)
    best = math.inf
    with torch.inference_mode():
        call()
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            best = min(best, time.perf_counter() - start)
    return flops / best / 1e9


# ---------------------------------------------------------------------------------------------- running
def _labels(specs: Sequence[ModelSpec]) -> list[str]:
    """Row labels: the model name, numbered when the same name appears more than once."""
    counts: dict[str, int] = {}
    labels = []
    for spec in specs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
        labels.append(spec.name if counts[spec.name] == 1 else f"{spec.name}#{counts[spec.name]}")
    return labels


def _create(spec: ModelSpec) -> nn.Module:
    """The model in eval mode without gradients; a ValueError naming a bad builder argument."""
    try:
        model = create_model(spec.name, **spec.kwargs)
    except (TypeError, ValueError) as e:
        if spec.name not in list_models():
            raise  # the registry's error lists the known models
        raise ValueError(f"models: cannot build {spec}: {e}") from None  # a bad builder argument
    return model.eval().requires_grad_(False)


def _cost(model: nn.Module, spec: ModelSpec, label: str, x: Tensor) -> int:
    """FLOPs of ``model(x)``, or a ValueError naming the model when it cannot take ``x`` (and, for a model
    built for another clip length, how to pass the right one through ``--models``)."""
    check = getattr(model, "check_input", None)
    try:
        if check is not None:
            check(x)
        return count_flops(model, x)
    except (ValueError, RuntimeError) as e:
        first = first_line(e).removeprefix(f"{spec.name}: ")
        shown = label if not spec.kwargs else f"{label} ({spec})"
        frames = x.shape[2]
        built_for = getattr(model, "clip_len", None)
        hint = "" if built_for in (None, frames) or "clip_len" in spec.kwargs else (
            f"; in --models, add clip_len={frames} to its builder arguments for --frames {frames}, "
            f"e.g. '{spec.name}:clip_len={frames}'")
        raise ValueError(f"model {shown} cannot take input {tuple(x.shape)}: {first}{hint}") from None


def _own_input(model: nn.Module) -> tuple[int, int, int] | None:
    """``(T, H, W)`` of the clip a model expects (its ``preprocess``), or None when it does not say."""
    p = getattr(model, "preprocess", None)
    return None if p is None else (p.clip_len, p.crop_size, p.crop_size)


def _jobs(config: BenchConfig, labels: list[str], x: Tensor, generator: torch.Generator) -> list[tuple]:
    """``(label, model, params, flops, clip, (T, H, W))`` for every model at every input it is timed at:
    the common one ``x``, then with ``config.own_input`` its own clip where that differs; or only the
    ``input`` its spec names. Models are built once; clips of the same size are shared. For an exported
    file (``.onnx``, ``.xml``), ``model`` is its path."""
    clips = {tuple(x.shape[2:]): x}
    jobs = []
    for spec, label in zip(config.models, labels):
        if file_format(spec.name) in ("onnx", "openvino"):  # an exported file runs as it is
            jobs.append((label, spec.name, _file_params(spec.name, x), 0, x, tuple(x.shape[2:])))
            continue
        model = _create(spec)
        own = _own_input(model)
        if spec.input == "own" and own is None:
            raise ValueError(f"models: {label} has no preprocess, so input=own does not say what to feed it")
        first = own if spec.input == "own" else (spec.input or tuple(x.shape[2:]))
        # a spec that names its input is timed there only
        extra = config.own_input and spec.input is None and own is not None and own != first
        inputs = [first] + ([own] if extra else [])
        for thw in inputs:
            if thw not in clips:
                clips[thw] = torch.randn((config.batch, 3, *thw), generator=generator)  # (N, 3, T, H, W)
            jobs.append((label, model, count_params(model), _cost(model, spec, label, clips[thw]), clips[thw], thw))
    return jobs


def bench_info(model: nn.Module, x: Tensor) -> ModelInfo:
    """The :class:`ModelInfo` the backends need to export ``model`` for clips shaped like ``x``."""
    t, size = x.shape[2], x.shape[-1]
    p = getattr(model, "preprocess", None) or Preprocess(t, size, size, (0.0,) * 3, (1.0,) * 3)
    p = Preprocess(t, size, max(p.resize, size), p.mean, p.std)
    classes = tuple(f"class{i}" for i in range(int(getattr(model, "num_classes", 0) or 1)))
    return ModelInfo(getattr(model, "model_name", "model"), {}, classes, p)


def _make_call(model: nn.Module, path: str, x: Tensor) -> Callable[[], Tensor]:
    """A no-argument callable running one forward of ``model`` on ``x`` in ``path``: the bench-only eager
    paths here, every other one through the backend of that name (int8 calibrated on random clips)."""
    threads = torch.get_num_threads()
    if path in EAGER_PATHS:
        m = model
        if path == "fp32+cl3d":
            m = copy.deepcopy(model).to(memory_format=torch.channels_last_3d)
            x = x.contiguous(memory_format=torch.channels_last_3d)

        def call() -> Tensor:
            with torch.inference_mode():
                return m(x)

        return call
    spec = SPECS[path]
    if spec.engine == "torch" and spec.precision != "int8":  # built directly: --force-bf16 may time emulated bf16
        from distilled_shufflenet.inference.backends import TorchBackend

        backend = TorchBackend(model, precision=spec.precision, compiled=spec.compiled, threads=threads)
    else:
        calibration = seeded_clips(4, tuple(x.shape[1:]), seed=1)  # random: right for speed, not accuracy
        backend = create_backend(path, model, bench_info(model, x), threads=threads, calibration=calibration)
    return lambda: backend(x)


def _file_params(path: str, x: Tensor) -> int:
    """Parameters of an exported file (its weights' element count), after checking it takes ``x``."""
    _, info = file_backend(path, threads=1)
    if info.input_shape and tuple(info.input_shape) != tuple(x.shape[1:]):
        raise ValueError(f"model {path}: exported for clips {tuple(info.input_shape)}, the bench input is "
                         f"{tuple(x.shape[1:])}; pass --frames {info.input_shape[1]} --size {info.input_shape[2]}")
    if file_format(path) == "onnx":
        import onnx
        import onnx.numpy_helper

        graph = onnx.load(path).graph
        return int(sum(onnx.numpy_helper.to_array(t).size for t in graph.initializer))
    from distilled_shufflenet.inference.source import read_ir

    ov_model, _ = read_ir(path)
    def is_weight(op: Any) -> bool:  # not a shape constant, a scalar, nor the head's averaging vector
        if op.get_type_name() != "Constant" or not op.get_output_element_type(0).is_real():
            return False
        shape = tuple(op.get_output_shape(0))
        if not shape:
            return False
        values = op.get_data().ravel()
        return not (len(shape) == 1 and bool((values == np.float32(1.0 / values.size)).all()))

    return int(sum(math.prod(op.get_output_shape(0)) for op in ov_model.get_ops() if is_weight(op)))


def _file_calls(path: str, x: Tensor, paths: list[str]) -> list[tuple[str, Callable[[], Tensor]]]:
    """``(backend, call)`` for each of ``paths`` that can run the exported file (every one that can, when
    none of ``paths`` can)."""
    _, info = file_backend(path, threads=1)
    can = [b for b in file_backends(path, info) if backend_support(b) is None]
    chosen = [b for b in paths if b in can] or can
    calls = []
    for name in chosen:
        backend, _ = file_backend(path, backend=name, threads=torch.get_num_threads())
        calls.append((name, lambda b=backend: b(x)))
    return calls


def run_benchmark(config: BenchConfig) -> BenchReport:
    """Measure every model of ``config`` in every path, interleaved, in this process."""
    paths, skipped = resolve_paths(config.paths, compile=config.compile, force_bf16=config.force_bf16)
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    try:
        return _run(config, paths, skipped)
    finally:
        torch.set_num_threads(previous_threads)


def _run(config: BenchConfig, paths: list[str], skipped: dict[str, str]) -> BenchReport:
    info = machine_info(config)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.randn(config.input_shape, generator=generator)  # (N, 3, T, H, W)
    torch.manual_seed(config.seed)

    jobs = _jobs(config, _labels(config.models), x, generator)
    pairs: list[tuple[int, str, Callable[[], Tensor]]] = []
    building = tqdm(total=len(jobs), desc="dsn bench: building", unit="model", file=sys.stderr,
                    disable=not config.progress, leave=False)
    for i, (label, model, _, _, clip, _) in enumerate(jobs):
        building.set_postfix_str(label)
        if isinstance(model, str):  # an exported file, run as it is
            pairs += [(i, name, call) for name, call in _file_calls(model, clip, paths)]
        else:
            pairs += [(i, p, _make_call(model, p, clip)) for p in paths]
        building.update(1)
    building.close()

    # the matmul ceilings take part in the round-robin too, so that they see the same machine
    problems = {"fp32": matmul_problem(torch.float32)}
    if any(path_precision(p) == "bf16" for p in paths):
        problems["bf16"] = matmul_problem(torch.bfloat16)
    calls = [call for _, _, call in pairs] + [call for call, _, _ in problems.values()]
    bar = tqdm(total=len(calls) * (max(config.warmup, 1) + config.repeats), desc="dsn bench", unit="call",
               file=sys.stderr, disable=not config.progress, leave=False)
    times = time_calls(calls, warmup=config.warmup, repeats=config.repeats, on_call=lambda _: bar.update(1))
    bar.close()
    ceilings = {
        precision: flops / (min(t) / 1e3) / 1e9
        for (precision, (_, flops, _)), t in zip(problems.items(), times[len(pairs):])
    }
    info["ceiling_matmul_n"] = {precision: n for precision, (_, _, n) in problems.items()}

    rows = []
    for (i, path, _), t in zip(pairs, times):  # the ceilings' times, after the pairs', are left out
        label, _, params, flops, _, thw = jobs[i]
        frames_per_call = config.batch * thw[0]
        median = statistics.median(t)
        ceiling = ceilings.get(path_precision(path))
        rows.append(
            BenchRow(
                model=label,
                path=path,
                params=params,
                macs=flops // 2,
                flops=flops,
                times_ms=[round(v, 4) for v in t],
                median_ms=median,
                min_ms=min(t),
                max_ms=max(t),
                fps=frames_per_call / (median / 1e3),
                best_fps=frames_per_call / (min(t) / 1e3),
                peak_share=(flops / (median / 1e3) / 1e9 / ceiling) if ceiling and flops else None,
                input=thw,
            )
        )
    info["threads"] = torch.get_num_threads()
    info["load_average_end"] = machine.load_average()
    return BenchReport(config, info, ceilings, skipped, rows)


# ---------------------------------------------------------------------------------------------- output
def format_report(report: BenchReport) -> str:
    """The report as one table plus notes, readable in a 100-column terminal."""
    cfg, m = report.config, report.machine
    lines = [
        f"input {tuple(cfg.input_shape)} (N, C, T, H, W); {m['threads']} threads; {machine.describe(m)}; "
        f"torch {m['torch_version']}",
        f"warm-up {cfg.warmup}, {cfg.repeats} repeats, interleaved round-robin; load average (1, 5, 15 min) "
        f"at start {_loads(m.get('load_average'))}, at end {_loads(m.get('load_average_end'))}",
        "",
    ]
    width = max([5] + [len(r.model) for r in report.rows])
    path_width = max([12] + [len(r.path) for r in report.rows])
    common = tuple(cfg.input_shape[2:])
    # an input column only when some model was timed at another input than the common one
    shapes = {r.input or common for r in report.rows}
    in_width = max(len(_input_text(t)) for t in shapes) if shapes != {common} else 0
    in_head = f"{'input':<{in_width}}  " if in_width else ""
    header = (
        f"{'model':<{width}}  {in_head}{'path':<{path_width}} {'params M':>8} {'GMACs':>7} {'GFLOPs':>7} "
        f"{'median ms':>9} {'min ms':>8} {'max ms':>8} {'FPS':>7} {'best FPS':>8} {'%peak':>5} {'GMACs/FPS':>9}"
    )
    lines += [header, "-" * len(header)]
    previous = None
    for r in report.rows:
        first = (r.model, r.input) != previous
        new_model = previous is None or r.model != previous[0]
        previous = (r.model, r.input)
        size = f"{_num(r.params / 1e6, 8)} {_num(r.macs / 1e9, 7)} {_num(r.flops / 1e9, 7)}" if first else " " * 24
        share = f"{100 * r.peak_share:>5.1f}" if r.peak_share is not None else f"{'-':>5}"
        shown_input = f"{_input_text(r.input or common) if first else '':<{in_width}}  " if in_width else ""
        lines.append(
            f"{r.model if first and new_model else '':<{width}}  {shown_input}{r.path:<{path_width}} {size} "
            f"{r.median_ms:>9.2f} {r.min_ms:>8.2f} {r.max_ms:>8.2f} {r.fps:>7.1f} {r.best_fps:>8.1f} {share} "
            f"{_num(r.gmacs_per_fps, 9)}"
        )
    lines.append("")
    for spec, label in zip(cfg.models, _labels(cfg.models)):
        if spec.kwargs:
            kwargs = ", ".join(f"{k}={_format_value(v)}" for k, v in spec.kwargs.items())
            lines.append(f"{label} built with {kwargs}")
    lines.append(
        "GMACs: multiply-accumulates per call by torch.utils.flop_counter (convolutions and matrix "
        "products); GFLOPs = 2 x GMACs."
    )
    lines.append(
        f"FPS = batch x frames / median seconds per call (batch {cfg.batch}, {cfg.frames} frames"
        + (", or the row's input" if in_width else "") + "); best FPS: the same from the fastest call. "
        "GMACs/FPS: GMACs per call over FPS, lower is better (fewer MACs and faster both lower it)."
    )
    sizes = m.get("ceiling_matmul_n", {})
    ceilings = ", ".join(
        f"{k} {v:.1f} GFLOP/s ({sizes.get(k, '?')}^2 matmul)" for k, v in report.ceilings_gflops.items()
    )
    lines.append(
        f"%peak = GFLOP/s at the median time / this CPU's ceiling of the same precision, the best of "
        f"interleaved matrix products: {ceilings}."
    )
    busy = _busy_warning(m)
    if busy:
        lines.append(busy)
    for name, why in report.skipped_paths.items():
        force = SPECS[name].engine == "torch" and SPECS[name].precision == "bf16" and "emulated" in why
        lines.append(f"skipped {name}: {why}{' (force with --force-bf16)' if force else ''}")
    speedups = report.speedups()
    if speedups:
        first = report.rows[0]
        best = report.speedups(best=True)
        ratios = ", ".join(f"{p} {s:.2f}x" for p, s in speedups.items())
        target = TARGET_SPEEDUPS.get(cfg.reference)
        verdict = "" if target is None else (
            f"(target >= {target:g}x: {'met' if min(speedups.values()) >= target else 'NOT met in every path'}); ")
        at = f" at {_input_text(first.input)}" if in_width and first.input else ""
        lines.append(
            f"{first.model} FPS / {cfg.reference} FPS in the same path{at}: {ratios} {verdict}from best FPS: "
            + ", ".join(f"{p} {s:.2f}x" for p, s in best.items())
        )
    pair = report.best_vs_best()
    if pair is not None:
        mine, theirs = pair
        ratio = mine.fps / theirs.fps
        target = TARGET_SPEEDUPS.get(cfg.reference)
        verdict = "" if target is None else f" (target >= {target:g}x: {'met' if ratio >= target else 'NOT met'})"
        lines.append(f"best path against best path: {mine.model} {mine.path} {mine.fps:.1f} FPS / {theirs.model} "
                     f"{theirs.path} {theirs.fps:.1f} FPS = {ratio:.2f}x{verdict}")
    for model in dict.fromkeys(r.model for r in report.rows):
        gain = report.over_eager(model)
        if gain is not None and len([r for r in report.rows if r.model == model]) > 1:
            lines.append(f"fastest path of {model}: {report.best_row(model).path}, {gain:.2f}x its fp32 eager FPS")
    return "\n".join(lines)


def _busy_warning(machine: dict[str, Any]) -> str | None:
    """A warning when other processes competed for the cores this run used (from the load averages).

    At the end the 1-minute load includes this process's own threads, so those are taken off.
    """
    start, end = machine.get("load_average"), machine.get("load_average_end")
    cpus, threads = machine.get("logical_cpus") or 0, machine.get("threads") or 0
    if not start or not end or not cpus:
        return None
    others = max(start[0], end[0] - threads)
    if others <= cpus - threads + 0.5:
        return None
    advice = "best FPS" + (" (or --threads 1, which suffers less from contention)" if threads > 1 else "")
    return (
        f"WARNING: the machine was busy (a load of about {others:.1f} from other processes on {cpus} logical "
        f"CPUs, {threads} threads used here): latencies are inflated and noisy; compare paths and models "
        f"within this run only, and prefer {advice}."
    )


def _input_text(thw: tuple[int, int, int] | str) -> str:
    """``(16, 224, 224)`` -> ``"16x224x224"``."""
    return thw if isinstance(thw, str) else "x".join(str(v) for v in thw)


def _loads(values: list[float] | None) -> str:
    return " ".join(f"{v:.2f}" for v in values) if values else "n/a"


def _num(value: float, width: int) -> str:
    """Two decimals, or three significant digits for small values (tiny models would all read 0.00)."""
    return f"{value:>{width}.2f}" if value >= 1 or value == 0 else f"{value:>{width}.3g}"


def write_json(report: BenchReport, path: str | os.PathLike) -> Path:
    """Write ``report.to_dict()`` as JSON atomically."""
    return atomic_write_text(json.dumps(report.to_dict(), indent=2) + "\n", path)
