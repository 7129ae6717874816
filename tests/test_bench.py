"""``dsn bench``: model specs, paths, FLOP counts against hand computations, the report, JSON and CLI.

Inputs are tiny (8 frames of 32 px at most) and each pair is timed once or twice; no timing is asserted.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from distilled_shufflenet import bench
from distilled_shufflenet.bench import report as bench_report
from distilled_shufflenet.bench import run as bench_run
from distilled_shufflenet.bench import (
    PATHS,
    BenchConfig,
    ModelSpec,
    count_flops,
    format_report,
    parse_models,
    resolve_paths,
    run_benchmark,
    write_json,
)
from distilled_shufflenet.cli import main
from distilled_shufflenet.inference import backends
from distilled_shufflenet.inference.backends import BACKENDS
from distilled_shufflenet.models import Preprocess, _registry, create_model, list_models

TINY_STUDENT = "shufflenet2plus1d:widths=8|16|32,units=1|1|1,adapter_channels=16|32,stem_channels=8,head_pool=mean"
TINY_STUDENT_KWARGS = dict(
    widths=(8, 16, 32), units=(1, 1, 1), adapter_channels=(16, 32), stem_channels=8, head_pool="mean"
)


def _one_conv(*, out_channels: int = 4) -> nn.Module:
    """Conv3d 3 -> out_channels, kernel 3, same padding, no bias: hand-countable."""
    return nn.Conv3d(3, out_channels, 3, padding=1, bias=False)


@pytest.fixture
def one_conv(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register ``one_conv`` for the duration of a test only."""
    monkeypatch.setitem(_registry._MODELS, "one_conv", _one_conv)
    return "one_conv"


def _clip_conv(*, out_channels: int = 4, clip: tuple[int, int] = (2, 6)) -> nn.Module:
    """:func:`_one_conv` that says which clip it expects, as the registry's models do."""
    model = _one_conv(out_channels=out_channels)
    model.preprocess = Preprocess(clip[0], clip[1], clip[1], (0.5,) * 3, (0.25,) * 3)
    return model


@pytest.fixture
def clip_conv(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(_registry._MODELS, "clip_conv", _clip_conv)
    return "clip_conv"


def _tiny_config(models: str, **kw) -> BenchConfig:
    kw = {"frames": 8, "size": 32, "warmup": 1, "repeats": 2, "progress": False, "paths": ("fp32",), **kw}
    return BenchConfig(models=parse_models(models), **kw)


def _student_available() -> None:
    if "shufflenet2plus1d" not in list_models():
        pytest.skip("the student is not registered")


# ---------------------------------------------------------------------------------------------- specs
def test_parse_models_names_and_kwargs() -> None:
    specs = parse_models("shufflenet2plus1d:num_classes=10,widths=8|16|32,head_pool=mean, r3d_18,mc3_18:x=[1,2]")
    assert specs == (
        ModelSpec("shufflenet2plus1d", {"num_classes": 10, "widths": (8, 16, 32), "head_pool": "mean"}),
        ModelSpec("r3d_18"),
        ModelSpec("mc3_18", {"x": (1, 2)}),
    )
    assert parse_models("a:flag=true,rate=0.5")[0].kwargs == {"flag": True, "rate": 0.5}
    assert str(specs[0]) == "shufflenet2plus1d:num_classes=10,widths=8|16|32,head_pool=mean"
    assert parse_models(str(specs[0])) == specs[:1]


def test_parse_models_reads_the_input_apart_from_the_builder_arguments() -> None:
    specs = parse_models("a:input=8x112,b:k=2,input=13x160x150,c:input=own,d")
    assert [(s.name, s.kwargs, s.input) for s in specs] == [
        ("a", {}, (8, 112, 112)), ("b", {"k": 2}, (13, 160, 150)), ("c", {}, "own"), ("d", {}, None)]
    assert parse_models(",".join(str(s) for s in specs)) == specs
    with pytest.raises(ValueError, match="input='8x'"):
        parse_models("a:input=8x")


@pytest.mark.parametrize("text", ["", "a,,b", "x=1,a", ":x=1", "a:x", "a:1x=2"])
def test_parse_models_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError, match="models"):
        parse_models(text)


def test_config_rejects_bad_fields() -> None:
    with pytest.raises(ValueError, match="repeats"):
        BenchConfig(repeats=0)
    with pytest.raises(ValueError, match="size"):
        BenchConfig(size=-1)
    with pytest.raises(ValueError, match="threads"):
        BenchConfig(threads=0)


# ---------------------------------------------------------------------------------------------- paths
def test_paths_are_the_backends_plus_the_eager_baseline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "bf16_support", lambda: (True, "AMX tiles"))
    assert PATHS == ("fp32", "fp32+cl3d") + BACKENDS
    run, skipped = resolve_paths(None)
    assert run == list(bench.DEFAULT_PATHS) and not skipped
    run, _ = resolve_paths(None, compile=True)
    assert run[-3:] == ["torch-compile", "torch-compile-bf16", "torch-int8"]
    # the names the paths had before they were the backends' are read as those backends
    run, _ = resolve_paths(["fp32+fused", "int8+compile", "bf16+cl3d", "bf16"])
    assert run == ["torch-fp32", "torch-int8", "torch-bf16"]
    with pytest.raises(ValueError, match="valid paths: " + ", ".join(PATHS).replace("+", r"\+")):
        resolve_paths(["fp32", "fp16"])


def test_bf16_paths_skipped_with_reason_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(backends, "bf16_support", lambda: (False, "no native bf16 here, so bf16 would be emulated"))
    run, skipped = resolve_paths(["fp32", "torch-bf16", "ov-bf16"])
    assert run == ["fp32"]
    assert set(skipped) == {"torch-bf16", "ov-bf16"} and "emulated" in skipped["ov-bf16"]
    # forcing times PyTorch's emulated bf16; OpenVINO's stays skipped
    run, skipped = resolve_paths(["fp32", "torch-bf16", "ov-bf16"], force_bf16=True)
    assert run == ["fp32", "torch-bf16"] and list(skipped) == ["ov-bf16"]
    with pytest.raises(ValueError, match="every path asked for is skipped"):
        resolve_paths(["ov-bf16"])


class _Probe(nn.Module):
    """Reports how it is run instead of computing anything."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _one_conv()

    def forward(self, x: torch.Tensor) -> dict:
        cl3d, w = torch.channels_last_3d, self.conv.weight
        return {
            "input_cl3d": x.is_contiguous(memory_format=cl3d) and not x.is_contiguous(),
            "weight_cl3d": w.is_contiguous(memory_format=cl3d) and not w.is_contiguous(),
        }


@pytest.mark.parametrize("path, expected", [("fp32", (False, False)), ("fp32+cl3d", (True, True))])
def test_eager_paths_run_in_their_layout(path: str, expected: tuple) -> None:
    model = _Probe().eval()
    seen = bench_run._make_call(model, path, torch.randn(1, 3, 4, 8, 8))()
    assert (seen["input_cl3d"], seen["weight_cl3d"]) == expected
    # a channels-last path works on its own copy: the shared model keeps its layout
    assert model.conv.weight.is_contiguous()


def test_backend_paths_run_the_backend_of_that_name(monkeypatch: pytest.MonkeyPatch) -> None:
    """A bench path is the backend ``dsn predict --backend`` builds under that name, with the model's
    outputs (BatchNorm folded into a copy; the original untouched)."""
    model = create_model("shufflenet2plus1d", num_classes=3, stem_channels=8, widths=(8, 16, 32),
                         units=(1, 1, 1), adapter_channels=(16, 32), clip_len=8)
    with torch.no_grad():
        model.train()(torch.randn(2, 3, 8, 32, 32))  # BatchNorm statistics that are not the identity
    model.eval()
    x = torch.randn(1, 3, 8, 32, 32)
    built: list = []
    real = backends.create_backend
    monkeypatch.setattr(bench_run, "create_backend", lambda name, *a, **k: built.append(real(name, *a, **k)) or built[-1])
    with torch.no_grad():
        expected = model(x)
    for name in ("torch-fp32", "ort-fp32", "ov-fp32"):
        if backends.backend_support(name):
            continue
        out = bench_run._make_call(model, name, x)()
        torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    assert [b.name for b in built] == [n for n in ("ort-fp32", "ov-fp32") if not backends.backend_support(n)]
    assert any(isinstance(m, nn.BatchNorm3d) for m in model.modules())  # the original is untouched


# ---------------------------------------------------------------------------------------------- counting
def test_flops_of_one_conv_match_hand_count() -> None:
    x = torch.randn(2, 3, 4, 8, 8)
    # every output element of (2, 4, 4, 8, 8) is 3 * 27 multiply-accumulates
    assert count_flops(_one_conv(), x) == 2 * (2 * 4 * 4 * 8 * 8) * (3 * 27)


class _ReadsAValue(nn.Module):
    """Reads a number out of a tensor, which the meta device cannot do: counted by a real forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _one_conv()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * 2 if float(y.abs().sum()) > 0 else y


def test_flops_counted_on_cpu_when_meta_cannot_run() -> None:
    x = torch.randn(1, 3, 4, 8, 8)
    assert count_flops(_ReadsAValue(), x) == count_flops(_one_conv(), x) == 2 * (4 * 4 * 8 * 8) * (3 * 27)


def _macs_from_shapes(model: nn.Module, x: torch.Tensor) -> int:
    """Multiply-accumulates of every Conv3d / Conv2d / Linear, from the shapes their outputs take."""
    total = 0

    def hook(module: nn.Module, _inputs: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Linear):
            total += out.numel() * module.in_features
        else:
            total += out.numel() * (module.in_channels // module.groups) * math.prod(module.kernel_size)

    counted = (nn.Conv3d, nn.Conv2d, nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, counted)]
    with torch.inference_mode():
        model.eval()(x)
    for h in handles:
        h.remove()
    return total


@pytest.mark.parametrize(
    "name, kwargs, shape",
    [("shufflenet2plus1d", TINY_STUDENT_KWARGS, (1, 3, 8, 32, 32)), ("r3d_18", {}, (1, 3, 8, 32, 32))],
)
def test_model_macs_equal_sum_over_convs(name: str, kwargs: dict, shape: tuple) -> None:
    if name not in list_models():
        pytest.skip(f"{name} is not registered")
    model = create_model(name, **kwargs)
    x = torch.randn(shape)
    macs = _macs_from_shapes(model, x)
    assert macs > 0
    assert count_flops(model, x) == 2 * macs


# ---------------------------------------------------------------------------------------------- running
def test_report_has_one_row_per_model_and_path(one_conv: str) -> None:
    config = _tiny_config(f"{one_conv},{one_conv}:out_channels=2", frames=4, size=8, paths=("fp32", "fp32+cl3d"))
    report = run_benchmark(config)
    assert [(r.model, r.path) for r in report.rows] == [
        ("one_conv", "fp32"), ("one_conv", "fp32+cl3d"), ("one_conv#2", "fp32"), ("one_conv#2", "fp32+cl3d"),
    ]
    per_out_channel = (4 * 8 * 8) * (3 * 27)
    for row in report.rows:
        out_channels = 4 if row.model == "one_conv" else 2
        assert row.macs == out_channels * per_out_channel and row.flops == 2 * row.macs
        assert row.params == out_channels * 3 * 27
        assert len(row.times_ms) == 2 and row.min_ms <= row.median_ms <= row.max_ms
        assert row.fps == pytest.approx(4 / (row.median_ms / 1e3))
    assert report.machine["input_shape"] == [1, 3, 4, 8, 8]
    assert report.machine["threads"] == torch.get_num_threads()


def test_each_model_at_the_common_input_and_at_its_own(clip_conv: str, one_conv: str,
                                                        capsys: pytest.CaptureFixture) -> None:
    models = (f"{clip_conv},{clip_conv}:out_channels=2,clip=4|8,{clip_conv}:input=own,{clip_conv}:input=3x7,"
              f"{one_conv}")
    report = run_benchmark(_tiny_config(models, frames=4, size=8, own_input=True, reference="clip_conv#2"))
    assert [(r.model, r.input) for r in report.rows] == [
        ("clip_conv", (4, 8, 8)), ("clip_conv", (2, 6, 6)),  # common, then its own clip
        ("clip_conv#2", (4, 8, 8)),  # its own clip is the common input: timed once
        ("clip_conv#3", (2, 6, 6)),  # input=own: its own clip only
        ("clip_conv#4", (3, 7, 7)),  # a named input only
        ("one_conv", (4, 8, 8)),  # no preprocess: nothing more to time
    ]
    for r in report.rows:
        t, h, w = r.input
        out_channels = 2 if r.model == "clip_conv#2" else 4
        assert r.macs == out_channels * t * h * w * 3 * 27
        assert r.fps == pytest.approx(t / (r.median_ms / 1e3))
        assert r.gmacs_per_fps == pytest.approx(r.macs / 1e9 / r.fps)
    # the speedup compares the first model with the reference at the first model's first input
    first, ref = report.row("clip_conv", "fp32", (4, 8, 8)), report.row("clip_conv#2", "fp32")
    assert report.speedups() == {"fp32": pytest.approx(first.fps / ref.fps)}
    text = format_report(report)
    lines = [line.split() for line in text.splitlines()]
    header = next(line for line in lines if line[:1] == ["model"])
    assert header[:3] == ["model", "input", "path"] and header[-1] == "GMACs/FPS"
    assert ["clip_conv", "4x8x8", "fp32"] in [line[:3] for line in lines]
    assert ["2x6x6", "fp32"] in [line[:2] for line in lines]
    assert "clip_conv FPS / clip_conv#2 FPS in the same path at 4x8x8: fp32" in text


def test_best_path_against_best_path_and_over_eager(one_conv: str) -> None:
    """The comparison the project's targets use: each model's fastest path (median FPS), whichever it is."""
    report = run_benchmark(_tiny_config(f"{one_conv},{one_conv}:out_channels=2", frames=4, size=8,
                                        paths=("fp32", "fp32+cl3d"), reference="one_conv#2"))
    mine, theirs = report.best_vs_best()
    assert mine.fps == max(r.fps for r in report.rows if r.model == "one_conv")
    assert theirs.fps == max(r.fps for r in report.rows if r.model == "one_conv#2")
    assert report.over_eager("one_conv") == pytest.approx(mine.fps / report.row("one_conv", "fp32").fps)
    text = format_report(report)
    assert f"best path against best path: one_conv {mine.path} {mine.fps:.1f} FPS" in text
    data = report.to_dict()
    assert data["best_path_vs_best_path"]["ratio"] == pytest.approx(mine.fps / theirs.fps)
    assert data["best_path_over_fp32_eager"]["one_conv"] == pytest.approx(report.over_eager("one_conv"))


def test_input_own_needs_a_model_that_says_its_clip(one_conv: str) -> None:
    with pytest.raises(ValueError, match="one_conv has no preprocess"):
        run_benchmark(_tiny_config(f"{one_conv}:input=own"))


def test_peak_share_uses_the_ceiling_of_the_same_precision(one_conv: str, monkeypatch: pytest.MonkeyPatch) -> None:
    a = torch.randn(64, 64)

    def problem(dtype: torch.dtype = torch.float32, n: int = 2048) -> tuple:
        # the same product for both precisions, but the fp32 one claims a million times the FLOPs
        return (lambda: a @ a), 2 * 64**3 * (10**6 if dtype == torch.float32 else 1), 64

    monkeypatch.setattr(bench_run, "matmul_problem", problem)
    config = _tiny_config(one_conv, frames=4, size=8, paths=("fp32", "torch-bf16"), force_bf16=True, repeats=1)
    report = run_benchmark(config)
    ceilings = report.ceilings_gflops
    assert set(ceilings) == {"fp32", "bf16"} and ceilings["fp32"] > 1000 * ceilings["bf16"]
    for row, precision in zip(report.rows, ("fp32", "bf16")):
        assert row.peak_share == pytest.approx(row.flops / (row.median_ms / 1e3) / 1e9 / ceilings[precision])
    assert report.machine["ceiling_matmul_n"] == {"fp32": 64, "bf16": 64}


def test_matmul_gflops_is_positive() -> None:
    assert bench.matmul_gflops(torch.float32, n=128, repeats=1) > 0


@pytest.mark.slow
def test_student_vs_reference_speedup_and_json(tmp_path) -> None:
    _student_available()
    if "r2plus1d_18" not in list_models():
        pytest.skip("r2plus1d_18 is not registered")
    threads = torch.get_num_threads()
    report = run_benchmark(_tiny_config(f"{TINY_STUDENT},r2plus1d_18", threads=threads))
    assert [r.model for r in report.rows] == ["shufflenet2plus1d", "r2plus1d_18"]
    speedups = report.speedups()
    student, reference = report.rows
    assert speedups == {"fp32": pytest.approx(student.fps / reference.fps)}
    assert report.speedups(best=True) == {"fp32": pytest.approx(student.best_fps / reference.best_fps)}
    tiny = create_model("shufflenet2plus1d", **TINY_STUDENT_KWARGS)
    assert student.params == sum(p.numel() for p in tiny.parameters())

    text = format_report(report)
    assert "shufflenet2plus1d FPS / r2plus1d_18 FPS in the same path: fp32" in text
    assert "GFLOPs = 2 x GMACs" in text

    path = write_json(report, tmp_path / "out" / "bench.json")
    data = json.loads(path.read_text())
    assert [r["model"] for r in data["rows"]] == ["shufflenet2plus1d", "r2plus1d_18"]
    assert data["rows"][0]["macs"] == student.macs
    assert data["config"]["models"][0] == {
        "name": "shufflenet2plus1d",
        "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in TINY_STUDENT_KWARGS.items()},
    }
    assert data["machine"]["torch_version"] == torch.__version__ and data["machine"]["threads"] == threads
    assert data["speedups_vs_reference"]["fp32"] == pytest.approx(speedups["fp32"])
    assert data["best_speedups_vs_reference"]["fp32"] == pytest.approx(student.best_fps / reference.best_fps)
    assert [p.name for p in path.parent.iterdir()] == ["bench.json"]  # no temporary file left behind


def test_model_too_small_for_input_names_the_model(one_conv: str) -> None:
    if "r3d_18" not in list_models():
        pytest.skip("r3d_18 is not registered")
    with pytest.raises(ValueError, match=r"model r3d_18 cannot take input \(1, 3, 2, 8, 8\)"):
        run_benchmark(_tiny_config("r3d_18", frames=2, size=8))
    with pytest.raises(ValueError, match="cannot build one_conv:bogus=1"):
        run_benchmark(_tiny_config("one_conv:bogus=1"))


def test_busy_machine_warning() -> None:
    quiet = {"load_average": [0.1, 0.1, 0.1], "load_average_end": [2.1, 1.0, 0.5], "logical_cpus": 2, "threads": 2}
    assert bench_report._busy_warning(quiet) is None
    busy = dict(quiet, load_average=[3.0, 3.0, 3.0])
    assert "WARNING: the machine was busy (a load of about 3.0" in bench_report._busy_warning(busy)
    # one thread on two CPUs leaves room for one other process
    assert bench_report._busy_warning(dict(quiet, load_average=[1.0, 1, 1], threads=1)) is None


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_prints_table_and_writes_json(one_conv: str, tmp_path, capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "b.json"
    argv = ["bench", "--models", f"{one_conv},{one_conv}:out_channels=2", "--frames", "4", "--size", "8",
            "--warmup", "0", "--repeats", "1", "--paths", "fp32,fp32+cl3d", "--no-progress",
            "--json", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "GMACs" in out and "median ms" in out and "FPS" in out
    assert "one_conv#2 built with out_channels=2" in out and "input" not in out.split("\n\n")[1].split()[:3]
    rows = [line.split() for line in out.splitlines() if line.startswith("one_conv") and " built " not in line]
    assert [r[:2] for r in rows] == [["one_conv", "fp32"], ["one_conv#2", "fp32"]]
    assert len(json.loads(out_json.read_text())["rows"]) == 4


@pytest.mark.parametrize(
    "args, message",
    [
        (["--paths", "fp32,fastest"], "unknown path 'fastest'; valid paths: fp32, fp32+cl3d, torch-fp32"),
        (["--models", "no_such_model"], "unknown model 'no_such_model'; known models:"),
        (["--repeats", "0"], "repeats: expected an integer >= 1"),
    ],
)
def test_cli_bad_input_exits_2(args: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(["bench", "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
