"""OpenVINO backends: agreement with PyTorch (int8 included, on a model with confident outputs), threads
read back, the IR export and its metadata, the file rule shared with the other engines, the start-up
cache, and clear messages where OpenVINO or native bf16 is missing. No timing is asserted."""

from __future__ import annotations

import importlib.util
import os

import pytest
import torch

from distilled_shufflenet.cli import main
from distilled_shufflenet.inference import backends, openvino
from distilled_shufflenet.inference.backends import auto_file_backend, backend_support, create_backend, file_backend
from distilled_shufflenet.inference.export import example_clip, export_model, onnx_bytes
from distilled_shufflenet.inference.quantize import quantize_onnx, top1_agreement
from distilled_shufflenet.inference.source import ModelFileError, load_model_source

pytestmark = pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")

# largest |probability - fp32 probability| each backend may show on the tiny student
TOLERANCE = {"ov-fp32": 1e-5, "ov-bf16": 2e-2, "ov-int8": 5e-2}


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("DSN_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", list(TOLERANCE))
def test_backend_agrees_with_fp32(name, student, info) -> None:
    if backend_support(name):
        pytest.skip(backend_support(name))
    x = example_clip(info, batch=3, seed=5)
    backend = create_backend(name, student, info, threads=1, calibration=example_clip(info, batch=4, seed=6))
    assert backend.name == name
    with torch.inference_mode():
        expected = torch.softmax(student(x), 1)
    got = torch.softmax(backend(x), 1)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max() <= TOLERANCE[name]


@pytest.mark.slow
def test_int8_error_is_small_against_the_logit_range_of_a_trained_model(student, info) -> None:
    """On a model whose outputs are far from uniform, int8 logits stay close to fp32 relative to their
    spread, and the top-1 agrees; a model calibrated on zeros (a broken calibration) does not."""
    from test_export import _trained_tiny

    model, batch = _trained_tiny(student, info)
    calibration, _ = batch(16)
    test, _ = batch(64)
    with torch.inference_mode():
        fp32 = model(test)
    spread = float((fp32.max(1).values - fp32.min(1).values).mean())
    assert spread > 4  # confident outputs, where a poor int8 model shows
    int8 = create_backend("ov-int8", model, info, threads=1, calibration=calibration)(test)
    assert float((int8 - fp32).abs().max()) <= 0.1 * spread
    assert top1_agreement(int8, fp32) >= 0.95 and not torch.equal(int8, fp32)
    zeros = openvino.OvBackend(quantize_onnx(onnx_bytes(model, info), torch.zeros_like(calibration)),
                               precision="int8", threads=1)(test)
    assert float((zeros - fp32).abs().max()) > 0.1 * spread


def test_threads_are_read_back(student, info) -> None:
    for threads in (1, 2):
        backend = create_backend("ov-fp32", student, info, threads=threads)
        assert backend.threads == threads and backend.compiled_threads() == threads
    assert create_backend("ov-fp32", student, info, threads=1).compiled_precision() == "f32"
    with pytest.raises(ValueError, match="threads"):
        openvino.OvBackend(onnx_bytes(student, info), threads=0)


def test_second_start_reads_the_prepared_model_from_the_cache(student, info, monkeypatch) -> None:
    calibration = example_clip(info, batch=2, seed=3)
    first = backends.prepared_onnx(student, info, "int8", calibration)
    cached = list((openvino.cache_dir() / "models").glob("*.onnx"))
    assert len(cached) == 1 and cached[0].read_bytes() == first

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("distilled_shufflenet.inference.export.onnx_bytes", no_export)
    assert backends.prepared_onnx(student, info, "int8", calibration) == first
    with pytest.raises(AssertionError, match="exported again"):  # other clips: another model
        backends.prepared_onnx(student, info, "int8", example_clip(info, batch=2, seed=4))
    # a CPU without VNNI (or ONEDNN_MAX_CPU_ISA=AVX2) gets the 7-bit weights' model, not the cached one
    vnni = openvino.vnni_support()
    monkeypatch.setattr(openvino, "vnni_support", lambda: not vnni)
    with pytest.raises(AssertionError, match="exported again"):
        backends.prepared_onnx(student, info, "int8", calibration)


def test_ir_export_round_trip_and_metadata(student, info, tmp_path, make_video) -> None:
    path = tmp_path / "tiny.xml"
    report = export_model(student, info, path, "openvino", check_clips={"random": example_clip(info, batch=2)})
    assert path.is_file() and path.with_suffix(".bin").is_file()
    assert report.format == "openvino" and report.max_abs_diff["random"] <= 1e-4
    assert report.size_bytes == path.stat().st_size + path.with_suffix(".bin").stat().st_size
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    _, read = load_model_source(path)
    assert read.classes == info.classes and read.preprocess == info.preprocess
    assert read.precision == "fp32" and read.input_shape == (3, 8, 32, 32)
    backend, _ = file_backend(str(path), threads=1)
    x = example_clip(info, batch=2, seed=9)
    with torch.inference_mode():
        torch.testing.assert_close(backend(x), student(x), rtol=0, atol=1e-4)
    video = make_video("ov.mp4", 20)
    assert main(["predict", str(path), str(video), "--backend", "ov-fp32", "--threads", "1", "--clips", "2"]) == 0
    path.with_suffix(".bin").unlink()
    with pytest.raises(ModelFileError, match=r"tiny\.bin"):
        load_model_source(path)


def test_export_never_replaces_a_bin_it_did_not_write(checkpoint, tmp_path, capsys) -> None:
    weights = tmp_path / "m.bin"
    weights.write_bytes(b"someone's data")
    assert main(["export", str(checkpoint), "--format", "openvino", "-o", str(tmp_path / "m.xml")]) == 2
    assert "m.bin: exists beside no m.xml" in capsys.readouterr().err
    assert weights.read_bytes() == b"someone's data" and not (tmp_path / "m.xml").exists()
    assert main(["export", str(checkpoint), "--format", "openvino", "-o", str(tmp_path / "m.xml"), "--force"]) == 0
    # an earlier export is replaced without --force
    assert main(["export", str(checkpoint), "--format", "openvino", "-o", str(tmp_path / "m.xml")]) == 0


def test_cli_exports_an_int8_ir(checkpoint, tiny_synth, tmp_path, capsys) -> None:
    out = tmp_path / "m.xml"
    assert main(["export", str(checkpoint), "--format", "openvino", "-o", str(out), "--quantize", "int8",
                 "--data-root", str(tiny_synth), "--calibration-clips", "4", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "top-1 agreement" in text and "m.int8.xml" in text
    assert load_model_source(out)[1].precision == "fp32"
    assert load_model_source(tmp_path / "m.int8.xml")[1].precision == "int8"
    backend, _ = file_backend(str(tmp_path / "m.int8.xml"), threads=1)
    assert backend.name == "ov-int8"


def test_a_backend_that_cannot_run_a_file_is_refused(student, info, tmp_path) -> None:
    fp32_onnx, ir = tmp_path / "s.onnx", tmp_path / "s.xml"
    export_model(student, info, fp32_onnx)
    export_model(student, info, ir, "openvino")
    int8_onnx = tmp_path / "s.int8.onnx"
    int8_onnx.write_bytes(quantize_onnx(onnx_bytes(student, info), example_clip(info, batch=2)))
    cases = [(fp32_onnx, "ort-int8"), (fp32_onnx, "torch-fp32"), (int8_onnx, "ort-fp32"), (int8_onnx, "ov-fp32"),
             (ir, "ort-fp32"), (ir, "ov-int8")]
    for path, name in cases:
        with pytest.raises(ValueError, match=rf"backend {name}: cannot run .*{path.name}"):
            file_backend(str(path), backend=name, threads=1)
    for path, name in [(fp32_onnx, "ov-fp32"), (fp32_onnx, "ort-fp32"), (int8_onnx, "ov-int8"),
                       (int8_onnx, "ort-int8"), (ir, "ov-fp32")]:
        assert file_backend(str(path), backend=name, threads=1)[0].name == name
    choice, _ = auto_file_backend(str(int8_onnx), threads=1, repeats=1)
    assert [c.name for c in choice.candidates] == ["ort-int8", "ov-int8"] and choice.backend.name in ("ort-int8", "ov-int8")


def test_cli_refuses_a_backend_for_a_file_it_cannot_run(student, info, tmp_path, make_video, capsys) -> None:
    path = tmp_path / "s.onnx"
    export_model(student, info, path)
    assert main(["predict", str(path), str(make_video("r.mp4", 12)), "--backend", "ov-int8"]) == 2
    assert "cannot run" in capsys.readouterr().err


def test_missing_openvino_or_bf16_is_a_clear_message(student, info, monkeypatch, make_video, capsys) -> None:
    monkeypatch.setattr(backends, "bf16_support", lambda: (False, "this CPU has no native bf16"))
    assert backend_support("ov-bf16") == "this CPU has no native bf16"
    monkeypatch.setattr(openvino, "bf16_support", lambda: (False, "this CPU has no native bf16"))
    with pytest.raises(ValueError, match="ov-bf16: not available here: this CPU has no native bf16"):
        openvino.OvBackend(onnx_bytes(student, info), precision="bf16", threads=1)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert backend_support("ov-fp32") == "openvino is not installed (pip install openvino)"
    with pytest.raises(ValueError, match="backend ov-int8: not available here: openvino is not installed"):
        create_backend("ov-int8", student, info, threads=1)


def test_profile_says_where_the_time_goes(student, info) -> None:
    rows = openvino.profile(onnx_bytes(student, info), example_clip(info), threads=1, calls=2)
    assert rows == sorted(rows, key=lambda r: -r["ms"]) and all(r["ms"] >= 0 for r in rows)
    convs = [r for r in rows if r["type"] == "Convolution"]
    assert len(convs) == sum(isinstance(m, torch.nn.Conv3d) for m in student.modules())
    assert {"layer", "type", "kernel", "ms"} <= set(rows[0])


def test_openvino_agrees_with_pytorch_on_avx2_kernels(student, info, tmp_path) -> None:
    """With oneDNN limited to AVX2 (as on a CPU without AVX-512), ov-fp32 gives PyTorch's logits: a
    multi-axis mean in the exported head once gave wrong ones there. A new process: the limit is read once."""
    import subprocess
    import sys

    path = tmp_path / "tiny.onnx"
    export_model(student, info, path)
    x = example_clip(info, batch=2, seed=3)
    with torch.inference_mode():
        torch.save(student(x), tmp_path / "expected.pt")
    torch.save(x, tmp_path / "x.pt")
    code = (f"import torch; from distilled_shufflenet.inference.backends import file_backend; "
            f"b, _ = file_backend({str(path)!r}, backend='ov-fp32', threads=1); "
            f"x, e = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'expected.pt')!r}); "
            f"print(float((b(x) - e).abs().max()))")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip().splitlines()[-1]) <= 1e-4

