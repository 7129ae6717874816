"""The timing run of ``dsn bench``: each model built and costed, each path prepared by the backend of its
name, every (model, path) pair and the matmul ceilings timed round-robin (:func:`run_benchmark`)."""

from __future__ import annotations

import copy
import math
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from distilled_shufflenet import machine
from distilled_shufflenet._text import first_line
from distilled_shufflenet.bench.config import BenchConfig
from distilled_shufflenet.bench.report import BenchReport, BenchRow
from distilled_shufflenet.bench.specs import (
    EAGER_PATHS,
    ModelSpec,
    count_flops,
    count_params,
    model_labels,
    path_precision,
    resolve_paths,
)
from distilled_shufflenet.inference.backends import (
    SPECS,
    backend_support,
    create_backend,
    file_backend,
    file_backends,
    time_calls,
)
from distilled_shufflenet.inference.export import example_clip
from distilled_shufflenet.inference.source import ModelInfo, file_format
from distilled_shufflenet.models import Preprocess, create_model, list_models


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
        info = bench_info(model, x)
        calibration = example_clip(info, batch=4, seed=1)  # random: right for speed, not accuracy
        backend = create_backend(path, model, info, threads=threads, calibration=calibration)
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

    jobs = _jobs(config, model_labels(config.models), x, generator)
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
