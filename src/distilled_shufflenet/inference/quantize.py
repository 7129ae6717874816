"""int8 models, two ways: ONNX Runtime static quantisation of the clean exported graph, and PyTorch's x86
int8 path (torchao's PT2E quantisation, compiled by inductor; :func:`quantize_pt2e`).

ONNX Runtime's (:func:`quantize_onnx`): QDQ format (QuantizeLinear / DequantizeLinear pairs around each
convolution, which ONNX Runtime fuses into int8 convolution kernels), weights int8 per output channel,
activations uint8 calibrated by min/max over clips the caller provides::

    fp32 ONNX ──quant_pre_process──> ──calibrate on clips──> ──quantize_static (QDQ, per-channel)──> int8 ONNX

The calibration clips should be real ones (a few dozen from the training or test set); random clips
give a model that runs at the right speed but classifies poorly.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from distilled_shufflenet.inference.frames import frame_graph
from distilled_shufflenet.machine import vnni_support

# nodes quantised; the rest (ReduceMean, the classifier) stays fp32. The classifier is left out on purpose:
# one small matrix product, no time to gain, and quantised it made the logits' error five times larger
_OP_TYPES = ["Conv", "Relu", "MaxPool", "Concat", "Split", "Reshape", "Transpose"]


class _ClipReader:
    """An ONNX Runtime calibration data reader over clips, one clip per call."""

    def __init__(self, input_name: str, clips: Tensor) -> None:
        self._items = iter([{input_name: np.ascontiguousarray(c[None].float().numpy())} for c in clips])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def quantize_onnx(model: bytes, calibration: Tensor, *, per_channel: bool = True, reduce_range: bool = False) -> bytes:
    """The QDQ int8 model of the fp32 ONNX ``model``, calibrated on ``calibration`` clips
    ``(N, 3, T, H, W)``; its metadata is kept, with ``dsn.precision`` set to ``int8``. ``reduce_range``
    quantises the weights to 7 bits, for kernels that sum u8 x s8 products in 16 bits (CPUs without VNNI)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if calibration.dim() != 5 or calibration.shape[0] < 1:
        raise ValueError(f"calibration: expected clips (N, 3, T, H, W) with N >= 1, got {tuple(calibration.shape)}")
    proto = onnx.load_from_string(model)
    meta = {p.key: p.value for p in proto.metadata_props}
    input_name = proto.graph.input[0].name
    with tempfile.TemporaryDirectory(prefix="dsn-quantize-") as tmp:
        fp32, prepared, int8 = (Path(tmp) / n for n in ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        fp32.write_bytes(model)
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(int8), _ClipReader(input_name, calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            op_types_to_quantize=_OP_TYPES,
            calibrate_method=CalibrationMethod.MinMax,
        )
        out = onnx.load(str(int8))
    del out.metadata_props[:]
    for key, value in {**meta, "dsn.precision": "int8"}.items():
        entry = out.metadata_props.add()
        entry.key, entry.value = key, value
    return out.SerializeToString()


def top1_agreement(a: Tensor, b: Tensor) -> float:
    """Share of rows whose arg-max agrees between two ``(N, classes)`` logit tensors."""
    return float((a.argmax(1) == b.argmax(1)).float().mean()) if len(a) else float("nan")


def _import_torchao() -> tuple:
    """torchao's PT2E entry points; its import warns about CUDA kernels it cannot load on a CPU build."""
    quiet = [logging.getLogger(n) for n in ("torchao", "torch.utils._pytree")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        import torchao.quantization.pt2e.quantizer.x86_inductor_quantizer as xiq
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    finally:
        for lg, level in zip(quiet, levels):
            lg.setLevel(level)
    return xiq, prepare_pt2e, convert_pt2e


def quantize_pt2e(model: nn.Module, calibration: Tensor, *, reduce_range: bool | None = None) -> nn.Module:
    """The int8 model of ``model`` in PyTorch's x86 path::

        model ──frame_graph (3D convolutions as 2D ones)──> ──torch.export (dynamic batch)──>
              ──prepare_pt2e (X86InductorQuantizer)──> ──calibrate──>
              ──convert_pt2e──> quantize / dequantize pairs around every convolution and linear layer

    int8 weights per output channel, uint8 activations calibrated on histograms
    (the range that minimises the rounding error) of ``calibration`` clips
    ``(N, 3, T, H, W)`` (real ones for accuracy); pass a model with BatchNorm folded
    (``fuse_for_inference``). Run the result under ``torch.compile`` with inductor's ``freezing``: inductor
    replaces each pair and its operator by one oneDNN int8 kernel, which it does for 2D convolutions
    with constant 4-D weights only, hence :func:`~.frames.frame_graph` first. Eager, the result only
    simulates int8 (slowly).

    ``reduce_range`` (default: on where the CPU lacks VNNI) calibrates activations to 0..127 instead of
    0..255. Without VNNI, oneDNN sums pairs of u8 x s8 products in 16 bits, which saturates on full-range
    activations: on an AVX2 CPU the demo's student then moved a class probability by up to 0.51 (80 test
    clips; 0.075 in the quantised model's fp32 simulation), and by up to 0.040 with the reduced range
    (0.045 simulated)."""
    if calibration.dim() != 5 or calibration.shape[0] < 1:
        raise ValueError(f"calibration: expected clips (N, 3, T, H, W) with N >= 1, got {tuple(calibration.shape)}")
    xiq, prepare_pt2e, convert_pt2e = _import_torchao()
    if reduce_range is None:
        reduce_range = not vnni_support()
    example = calibration[:1].float().repeat(2, 1, 1, 1, 1)  # a batch of 1 would fix the batch size to 1
    with torch.no_grad():
        graph = torch.export.export(frame_graph(model), (example,),
                                    dynamic_shapes=({0: torch.export.Dim.AUTO},)).module()
        quantizer = xiq.X86InductorQuantizer()
        quantizer.set_global(xiq.get_default_x86_inductor_quantization_config(reduce_range=reduce_range))
        prepared = prepare_pt2e(graph, quantizer)
        for clip in calibration.float():
            prepared(clip[None])
        return convert_pt2e(prepared)
