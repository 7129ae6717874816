"""``dsn bench`` with the ONNX Runtime and OpenVINO paths and with exported files as models (no timing asserted)."""

from __future__ import annotations

import pytest

from distilled_shufflenet.bench import BenchConfig, format_report, parse_models, resolve_paths, run_benchmark
from distilled_shufflenet.cli import main
from distilled_shufflenet.inference.backends import backend_support
from distilled_shufflenet.inference.export import export_model
from distilled_shufflenet.models import fuse_for_inference

TINY = "shufflenet2plus1d:num_classes=4,widths=8|16|32,units=1|1|1,adapter_channels=16|32,clip_len=8"


def test_ort_paths_and_onnx_files(student, info, tmp_path) -> None:
    path = tmp_path / "tiny.onnx"
    export_model(student, info, path)
    config = BenchConfig(models=parse_models(f"{TINY},{path}"), frames=8, size=32, warmup=1, repeats=1,
                         progress=False, paths=("fp32", "ort-fp32", "ort-int8"), threads=1)
    report = run_benchmark(config)
    rows = {(r.model, r.path) for r in report.rows}
    # the fp32 file runs in the one asked-for backend that can run it, under that backend's name
    assert {("shufflenet2plus1d", "ort-fp32"), ("shufflenet2plus1d", "ort-int8"), (str(path), "ort-fp32")} <= rows
    assert (str(path), "ort-int8") not in rows and (str(path), "fp32") not in rows
    file_row = report.row(str(path), "ort-fp32")
    # the file holds the weights with BatchNorm folded in
    assert file_row.params == sum(p.numel() for p in fuse_for_inference(student).parameters())
    assert str(path) in format_report(report)
    assert resolve_paths(("ort-fp32",))[0] == ["ort-fp32"]


def test_openvino_paths_and_ir_files(student, info, tmp_path) -> None:
    if backend_support("ov-fp32"):
        pytest.skip(backend_support("ov-fp32"))
    path = tmp_path / "tiny.xml"
    export_model(student, info, path, "openvino")
    config = BenchConfig(models=parse_models(f"{TINY},{path}"), frames=8, size=32, warmup=1, repeats=1,
                         progress=False, paths=("fp32", "ov-fp32", "ov-int8"), threads=1)
    report = run_benchmark(config)
    assert [(r.model, r.path) for r in report.rows] == [
        ("shufflenet2plus1d", "fp32"), ("shufflenet2plus1d", "ov-fp32"), ("shufflenet2plus1d", "ov-int8"),
        (str(path), "ov-fp32")]
    assert report.row(str(path), "ov-fp32").params == sum(p.numel() for p in fuse_for_inference(student).parameters())


def test_onnx_file_of_another_clip_size_is_refused(student, info, tmp_path, capsys) -> None:
    path = tmp_path / "tiny.onnx"
    export_model(student, info, path)
    code = main(["bench", "--models", str(path), "--frames", "8", "--size", "64", "--repeats", "1", "--no-progress"])
    assert code == 2
    assert "--size 32" in capsys.readouterr().err
