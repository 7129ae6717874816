"""Backends agree with PyTorch fp32 within their tolerance, obey --threads, and auto explains itself."""

from __future__ import annotations

import pytest
import torch

from distilled_shufflenet.inference.backends import (
    OrtBackend,
    TorchBackend,
    auto_backend,
    backend_support,
    create_backend,
)
from distilled_shufflenet.inference.export import example_clip

# largest |probability - fp32 probability| each backend may show on the tiny student
TOLERANCE = {"torch-fp32": 1e-5, "ort-fp32": 1e-5, "torch-bf16": 2e-2, "ort-int8": 5e-2}


@pytest.mark.parametrize("name", list(TOLERANCE))
def test_backend_agrees_with_fp32(name, student, info) -> None:
    why = backend_support(name)
    if why:
        pytest.skip(why)
    x = example_clip(info, batch=3, seed=5)
    backend = create_backend(name, student, info, threads=1, calibration=example_clip(info, batch=4, seed=6))
    with torch.inference_mode():
        expected = torch.softmax(student(x), 1)
    got = torch.softmax(backend(x), 1)
    assert got.shape == expected.shape and got.dtype == torch.float32
    assert (got - expected).abs().max() <= TOLERANCE[name]


def test_threads_are_obeyed(student, info) -> None:
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        backend = TorchBackend(student, threads=1)
        torch.set_num_threads(2)  # something else changes the process-wide pool between calls
        backend(example_clip(info))
        assert torch.get_num_threads() == 1
        ort = create_backend("ort-fp32", student, info, threads=1)
        assert isinstance(ort, OrtBackend) and ort.session_threads() == 1
        assert ort.session.get_session_options().inter_op_num_threads == 1
    finally:
        torch.set_num_threads(previous)


def test_bad_thread_count(student) -> None:
    with pytest.raises(ValueError, match="threads"):
        TorchBackend(student, threads=0)


def test_auto_picks_an_agreeing_backend_and_says_why(student, info) -> None:
    probe = example_clip(info, batch=2)
    choice = auto_backend(student, info, probe, threads=1, candidates=("torch-fp32", "ort-fp32"), repeats=2)
    names = [c.name for c in choice.candidates]
    assert names == ["torch-fp32", "ort-fp32"]
    kept = [c for c in choice.candidates if c.kept]
    assert len(kept) == 1 and kept[0].name == choice.backend.name
    assert all(c.why_not for c in choice.candidates if not c.kept)
    assert f"chose {choice.backend.name}" in choice.summary()
    # an impossible tolerance leaves only fp32 itself
    strict = auto_backend(student, info, probe, threads=1, candidates=("torch-bf16", "ort-int8"),
                          tolerance=0.0, repeats=1, calibration=example_clip(info, batch=2, seed=3))
    assert strict.backend.name == "torch-fp32"
    left = {c.name: c.why_not for c in strict.candidates if not c.kept}
    assert "ort-int8" in left and left["ort-int8"]


def test_torch_int8_runs_int8_kernels_and_any_batch(student, info) -> None:
    """The PT2E model holds quantize / dequantize pairs, which inductor turns into int8 kernels for every
    convolution; the compiled backend agrees with fp32 like ort-int8 and takes batches other than the one
    it was exported with. (One test: each backend compiles, which takes seconds.)"""
    if backend_support("torch-int8"):
        pytest.skip(backend_support("torch-int8"))
    from distilled_shufflenet.inference.quantize import quantize_pt2e
    from distilled_shufflenet.models import fuse_for_inference

    graph = quantize_pt2e(fuse_for_inference(student), example_clip(info, batch=2, seed=6))
    ops = {str(n.target) for n in graph.graph.nodes if n.op == "call_function"}
    assert any("quantize_per_tensor" in o for o in ops) and any("dequantize_per_channel" in o for o in ops)
    pools = [n for n in graph.graph.nodes if "max_pool2d" in str(n.target)]  # the stem's, on int8 values
    assert pools and all("dequantize_per_tensor" in str(n.args[0].target) for n in pools)
    backend = create_backend("torch-int8", student, info, threads=1, calibration=example_clip(info, batch=4, seed=6))
    assert backend.name == "torch-int8"
    x = example_clip(info, batch=3, seed=5)
    with torch.inference_mode():
        expected = torch.softmax(student(x), 1)
    got = torch.softmax(backend(x), 1)
    assert got.dtype == torch.float32 and (got - expected).abs().max() <= 5e-2
    # every convolution runs in oneDNN's int8 kernel, none in fp32 between a dequantise and a quantise
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        backend(x)
    ran = [e.name for e in prof.events()]
    convs = sum(isinstance(m, torch.nn.Conv3d) for m in student.modules())
    assert sum("qconv" in n for n in ran) == convs and not [n for n in ran if "convolution" in n]
    assert backend(x[:1]).shape == (1, 4)
    with pytest.raises(ValueError, match="calibration"):
        quantize_pt2e(student, torch.zeros(3, 8, 32, 32))


def test_int8_activations_use_half_the_range_without_vnni(monkeypatch) -> None:
    """Without VNNI, oneDNN's int8 kernels sum product pairs in 16 bits: activations must stay in 0..127."""
    if backend_support("torch-int8"):
        pytest.skip(backend_support("torch-int8"))
    from distilled_shufflenet.inference import quantize

    model = torch.nn.Sequential(torch.nn.Conv3d(3, 4, (1, 3, 3), padding=(0, 1, 1)), torch.nn.ReLU(),
                                torch.nn.Conv3d(4, 4, 1))
    clips = torch.randn(2, 3, 4, 8, 8)
    for vnni, top in ((False, 127), (True, 255)):
        monkeypatch.setattr(quantize, "vnni_support", lambda vnni=vnni: vnni)
        graph = quantize.quantize_pt2e(model, clips)
        assert {int(n.args[4]) for n in graph.graph.nodes if "quantize_per_tensor" in str(n.target)} == {top}
