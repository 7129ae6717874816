"""What ``dsn bench`` measures (:class:`BenchConfig`): models, paths, input, repeats and threads."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

from distilled_shufflenet.bench.specs import (
    DEFAULT_MODELS,
    DEFAULT_PATHS,
    DEFAULT_REFERENCE,
    PATHS,
    RENAMED,
    ModelSpec,
    input_text,
    parse_models,
)
from distilled_shufflenet.options import need_ints, option


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
        need_ints(self, {"frames": 1, "size": 1, "batch": 1, "warmup": 0, "repeats": 1})
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise ValueError(f"threads: expected an integer >= 1, got {self.threads!r}")

    @property
    def input_shape(self) -> tuple[int, int, int, int, int]:
        """``(N, 3, T, H, W)`` of every call."""
        return (self.batch, 3, self.frames, self.size, self.size)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["models"] = [
            {"name": m.name, "kwargs": dict(m.kwargs), **({"input": input_text(m.input)} if m.input else {})}
            for m in self.models
        ]
        return d
