"""What ``dsn bench`` times: the models (:class:`ModelSpec`, parsed from ``--models``), the execution paths
(:data:`PATHS`, the backends plus the eager baselines) and the cost of a model (parameters, FLOPs)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch
import yaml
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from distilled_shufflenet.inference.backends import BACKENDS, SPECS, backend_support


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
        items = [f"{k}={format_value(v)}" for k, v in self.kwargs.items()]
        if self.input is not None:
            items.append("input=" + input_text(self.input))
        return self.name + (":" + ",".join(items) if items else "")


def format_value(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "|".join(format_value(x) for x in v)
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


def input_text(thw: tuple[int, int, int] | str) -> str:
    """``(16, 224, 224)`` -> ``"16x224x224"``."""
    return thw if isinstance(thw, str) else "x".join(str(v) for v in thw)


def model_labels(specs: Sequence[ModelSpec]) -> list[str]:
    """Row labels: the model name, numbered when the same name appears more than once."""
    counts: dict[str, int] = {}
    labels = []
    for spec in specs:
        counts[spec.name] = counts.get(spec.name, 0) + 1
        labels.append(spec.name if counts[spec.name] == 1 else f"{spec.name}#{counts[spec.name]}")
    return labels
