"""Export round trips: the fixed-shape graph, ONNX and TorchScript files against PyTorch, int8."""

from __future__ import annotations

from collections import Counter

import onnx
import pytest
import torch

from distilled_shufflenet.inference.backends import OrtBackend, TorchInt8Backend, backend_support
from distilled_shufflenet.inference.export import example_clip, export_model, onnx_bytes
from distilled_shufflenet.inference.source import read_onnx, read_torchscript
from distilled_shufflenet.inference.graph import static_graph
from distilled_shufflenet.inference.quantize import quantize_onnx, top1_agreement
from distilled_shufflenet.inference.source import ModelFileError
from distilled_shufflenet.models import fuse_for_inference


def test_static_graph_keeps_keys_and_function(student, info) -> None:
    x = example_clip(info, batch=1)
    graph = static_graph(student, x)
    assert list(graph.state_dict()) == list(student.state_dict())
    with torch.inference_mode():
        for batch in (1, 3):  # shapes are fixed except the batch
            clips = example_clip(info, batch=batch, seed=batch)
            torch.testing.assert_close(graph(clips), student(clips), rtol=0, atol=1e-5)


def test_onnx_graph_is_clean(student, info) -> None:
    ops = Counter(n.op_type for n in onnx.load_from_string(onnx_bytes(student, info)).graph.node)
    # no shape arithmetic, no folded-away BatchNorm leftovers
    assert not {"Shape", "Slice", "Mod", "Gather", "Identity", "BatchNormalization"} & set(ops), ops
    assert ops["Conv"] == sum(isinstance(m, torch.nn.Conv3d) for m in student.modules())


def test_onnx_round_trip(student, info, tmp_path) -> None:
    path = tmp_path / "tiny.onnx"
    clips = {"random": example_clip(info, batch=3)}
    report = export_model(student, info, path, "onnx", check_clips=clips)
    assert report.max_abs_diff["random"] <= 1e-4 and report.top1_agreement["random"] == 1.0
    data, meta = read_onnx(path)
    assert meta.classes == info.classes and meta.preprocess == info.preprocess and meta.input_shape == (3, 8, 32, 32)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version >= 17
    # dynamic batch: a batch of 5 through the written file, against PyTorch on the same input
    x = example_clip(info, batch=5, seed=7)
    with torch.inference_mode():
        torch.testing.assert_close(OrtBackend(data, threads=1)(x), student(x), rtol=0, atol=1e-4)


def test_torchscript_round_trip(student, info, tmp_path) -> None:
    path = tmp_path / "tiny.ts"
    export_model(student, info, path, "torchscript")
    module, meta = read_torchscript(path)
    assert meta.classes == info.classes and meta.preprocess == info.preprocess
    assert (meta.model_name, meta.precision) == ("shufflenet2plus1d", "fp32")  # text, as in an ONNX file
    x = example_clip(info, batch=2, seed=3)
    with torch.inference_mode():
        torch.testing.assert_close(module(x), student(x), rtol=0, atol=1e-4)


def test_bad_onnx_files(student, info, tmp_path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(ModelFileError, match="corrupt.onnx"):
        read_onnx(corrupt)
    bare = tmp_path / "bare.onnx"
    proto = onnx.load_from_string(onnx_bytes(student, info))
    del proto.metadata_props[:]
    bare.write_bytes(proto.SerializeToString())
    with pytest.raises(ModelFileError, match="preprocessing"):
        read_onnx(bare)
    with pytest.raises(ModelFileError, match="no such file"):
        read_onnx(tmp_path / "missing.onnx")


def _trained_tiny(student, info, steps: int = 80):
    """The tiny student trained to tell apart four kinds of synthetic clips (which colour channel is lit),
    on one thread so that the short training run is reproducible."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train_tiny(student, steps)
    finally:
        torch.set_num_threads(previous)


def _train_tiny(student, steps: int):
    g = torch.Generator().manual_seed(0)

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 4, (n,), generator=g)
        x = 0.5 * torch.randn(n, 3, 8, 32, 32, generator=g)
        lit = torch.nn.functional.one_hot(y, 4)[:, :3].float()  # class 3: no channel lit
        return x + 1.5 * lit.view(n, 3, 1, 1, 1), y

    model = student.train()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):  # running statistics: the plain mean over the few steps
            m.reset_running_stats()
            m.momentum = None
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(steps):
        x, y = batch(8)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), batch


@pytest.mark.slow
def test_int8_agrees_with_fp32_on_a_trained_model(student, info) -> None:
    model, batch = _trained_tiny(student, info)
    calibration, _ = batch(16)
    test, labels = batch(64)
    with torch.inference_mode():
        fp32 = model(test)
    assert top1_agreement(fp32, torch.nn.functional.one_hot(labels, 4)) >= 0.9  # it did learn
    data = quantize_onnx(onnx_bytes(model, info), calibration)
    proto = onnx.load_from_string(data)
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["QuantizeLinear"] and ops["DequantizeLinear"]
    assert {p.key: p.value for p in proto.metadata_props}["dsn.precision"] == "int8"
    int8 = OrtBackend(data, threads=1)(test)
    assert top1_agreement(int8, fp32) >= 0.95
    assert not torch.equal(int8, fp32.float())  # it is another model, not the fp32 one
    if backend_support("torch-int8") is None:  # PyTorch's own int8 path, on the same clips
        int8 = TorchInt8Backend(model, calibration, threads=1)(test)
        assert top1_agreement(int8, fp32) >= 0.95
        assert not torch.equal(int8, fp32.float())


def test_int8_quantises_the_convolutions_but_not_the_classifier(student, info) -> None:
    proto = onnx.load_from_string(quantize_onnx(onnx_bytes(student, info), example_clip(info, batch=2)))
    made_by = {out: n.op_type for n in proto.graph.node for out in n.output}
    weights = {n.op_type: made_by.get(n.input[1], "fp32 initializer")
               for n in proto.graph.node if n.op_type in ("Conv", "Gemm", "MatMul")}
    assert weights.get("Conv") == "DequantizeLinear"  # int8 weights
    # the classifier's weights stay fp32: quantised, they made the logits' error five times larger
    assert weights.get("Gemm", weights.get("MatMul")) == "fp32 initializer", weights


def test_conv2d_layout_matches(student, info) -> None:
    x = example_clip(info, batch=2)
    graph = static_graph(fuse_for_inference(student), x[:1], convs="conv2d")
    assert list(graph.state_dict()) == list(fuse_for_inference(student).state_dict())
    with torch.inference_mode():
        torch.testing.assert_close(graph(x), student(x), rtol=0, atol=1e-5)
    data = onnx_bytes(student, info, convs="conv2d")
    torch.testing.assert_close(OrtBackend(data, threads=1)(x), student(x).detach(), rtol=0, atol=1e-4)


def test_cli_export_int8_with_a_dataset(checkpoint, tiny_synth, tmp_path, capsys) -> None:
    from distilled_shufflenet.cli import main

    out = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "-o", str(out), "--quantize", "int8", "--data-root", str(tiny_synth),
                 "--calibration-clips", "4", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "check on real clips" in text and "top-1 agreement" in text and "8 test clips" in text
    assert read_onnx(out)[1].precision == "fp32" and read_onnx(tmp_path / "m.int8.onnx")[1].precision == "int8"
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "n.onnx"), "--quantize", "int8"]) == 2
    assert "--data-root" in capsys.readouterr().err
    assert not (tmp_path / "n.int8.onnx").exists() and not (tmp_path / "n.onnx").exists()


def test_export_names_follow_the_format_predict_reads_them_by(checkpoint, tmp_path, capsys) -> None:
    from distilled_shufflenet.cli import main
    from distilled_shufflenet.inference.export import FORMATS
    from distilled_shufflenet.inference.source import EXPORT_FORMATS, file_format

    for fmt in FORMATS:  # one table: every name export accepts is read back as its format
        assert EXPORT_FORMATS[fmt] and all(file_format(f"m{suffix}") == fmt for suffix in EXPORT_FORMATS[fmt])
    for args, words in [(["-o", str(tmp_path / "s.txt")], "s.txt: a onnx model is written as NAME.onnx"),
                        (["--format", "torchscript", "-o", str(tmp_path / "x.onnx")],
                         "x.onnx: a torchscript model is written as NAME.ts or NAME.torchscript"),
                        (["--format", "torchscript", "-o", str(tmp_path / "x.pt")], "x.pt: a torchscript model")]:
        assert main(["export", str(checkpoint), *args]) == 2
        assert words in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["export", str(checkpoint), "--format", "torchscript", "-o", str(tmp_path / "x.torchscript")]) == 0
    assert read_torchscript(tmp_path / "x.torchscript")[1].classes == ("Bow", "Clap", "Kick", "Punch")


def test_export_never_replaces_the_checkpoint_or_a_file_it_did_not_write(checkpoint, tmp_path, capsys) -> None:
    from distilled_shufflenet.cli import main

    victim = tmp_path / "victim.pt"
    victim.write_bytes(checkpoint.read_bytes())
    original = victim.read_bytes()
    alias = tmp_path / "alias.onnx"
    alias.symlink_to(victim)  # the same file under an export's name: never replaced, even with --force
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes\n")
    for args, words in [(["-o", str(victim)], "a onnx model is written as NAME.onnx"),
                        (["-o", str(alias), "--force"], f"output {alias}: is the checkpoint being exported"),
                        (["-o", str(notes)], f"output {notes}: exists and is not a model written by dsn export"),
                        # the int8 file is checked too, before the fp32 one is written
                        (["-o", str(notes), "--quantize", "int8",
                          "--dataset", "folder", "--data-root", str(tmp_path)], "notes.int8.onnx: exists and is not")]:
        if "--quantize" in args:
            notes.rename(tmp_path / "notes.int8.onnx")
        assert main(["export", str(victim), *args]) == 2
        assert words in capsys.readouterr().err
    assert victim.read_bytes() == original and (tmp_path / "notes.int8.onnx").read_text() == "my notes\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alias.onnx", "notes.int8.onnx", "victim.pt"]
    # an earlier export is replaced; a foreign file only with --force
    out = tmp_path / "m.onnx"
    assert main(["export", str(victim), "-o", str(out), "--threads", "1"]) == 0
    assert main(["export", str(victim), "-o", str(out), "--threads", "1"]) == 0
    assert main(["export", str(victim), "-o", str(tmp_path / "notes.int8.onnx"), "--force", "--threads", "1"]) == 0
    assert read_onnx(tmp_path / "notes.int8.onnx")[1].classes == ("Bow", "Clap", "Kick", "Punch")
    assert victim.read_bytes() == original


def test_int8_calibrates_on_a_folder_of_unlabelled_videos_or_a_list(checkpoint, tiny_synth, tmp_path, capsys) -> None:
    """Calibration needs no labels: any folder of videos will do; a list file is taken by --list-file. Both
    check int8 on videos they did not calibrate on."""
    from distilled_shufflenet.cli import main

    assert main(["export", str(checkpoint), "-o", str(tmp_path / "f.onnx"), "--quantize", "int8", "--dataset",
                 "folder", "--data-root", str(tiny_synth), "--calibration-clips", "4", "--test-clips", "3",
                 "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "calibrated on 4 clips" in text and "3 test clips (the videos not calibrated on)" in text
    assert "accuracy" not in text  # a folder has no labels
    assert read_onnx(tmp_path / "f.int8.onnx")[1].precision == "int8"
    videos = sorted(tiny_synth.rglob("*.avi"))[:6]
    classes = ("Bow", "Clap", "Kick", "Punch")  # the checkpoint's
    listing = tmp_path / "mine.csv"
    listing.write_text("".join(f"{v},{classes[i % 4]}\n" for i, v in enumerate(videos)))
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "l.onnx"), "--quantize", "int8", "--list-file",
                 str(listing), "--calibration-clips", "2", "--threads", "1"]) == 0
    text = capsys.readouterr().out
    assert "calibrated on 2 clips" in text and "4 test clips (the videos not calibrated on)" in text
    assert "top-1 accuracy fp32" in text
    assert main(["export", str(checkpoint), "-o", str(tmp_path / "n.onnx"), "--dataset", "list"]) == 2
    assert "--list-file FILE" in capsys.readouterr().err


def test_folding_batchnorm_divides_by_the_running_deviation_with_its_epsilon(student, info) -> None:
    """With running variances near BatchNorm's eps, a fold that left eps out would scale each weight by
    gamma / sqrt(var) instead of gamma / sqrt(var + eps): here a factor of up to sqrt(2) too large."""
    conv, bn = student.stem[0][0], student.stem[0][1]
    bn.running_var.uniform_(0.5e-5, 2e-5)  # eps is 1e-5
    fused = fuse_for_inference(student)
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)  # (C,)
    torch.testing.assert_close(fused.stem[0][0].weight, conv.weight * scale.view(-1, 1, 1, 1, 1))
    torch.testing.assert_close(fused.stem[0][0].bias, bn.bias - bn.running_mean * scale)
    x = example_clip(info, batch=2)
    with torch.inference_mode():
        torch.testing.assert_close(fused(x), student(x), rtol=1e-4, atol=1e-4)


def test_torch_int8_is_calibrated_on_the_clips_it_is_given(student, info) -> None:
    """The input's int8 range comes from the calibration clips, and the quantised model (simulated, eager)
    stays within a few percent of the logit range of a model whose classes are far from uniform: a model
    calibrated on anything else (zeros, say) clips its inputs and misses both."""
    if backend_support("torch-int8"):
        pytest.skip(backend_support("torch-int8"))
    from distilled_shufflenet.inference.quantize import quantize_pt2e

    with torch.no_grad():
        student.fc.weight.mul_(40)  # logits spread over several units, not near-uniform probabilities
    calibration = 2 * example_clip(info, batch=4, seed=6)
    graph = quantize_pt2e(fuse_for_inference(student), calibration)
    first = next(n for n in graph.graph.nodes if str(n.target).startswith("quantized_decomposed.quantize_per_tensor"))
    _, scale, _, low, high, _ = first.args
    covered = scale * (high - low)  # the span of input values int8 represents
    spread = float(calibration.max() - calibration.min())
    assert 0.25 * spread <= covered <= 1.5 * spread, (covered, spread)
    x = 2 * example_clip(info, batch=3, seed=5)
    with torch.no_grad():
        fp32, int8 = student(x), graph(x)
    assert float(fp32.max() - fp32.min()) > 2
    assert float((int8 - fp32).abs().max()) <= 0.15 * float(fp32.max() - fp32.min())
