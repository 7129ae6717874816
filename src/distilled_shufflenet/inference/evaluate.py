"""``dsn evaluate`` of any model file: a checkpoint through the engine's evaluation, a file written by
``dsn export`` (``.onnx``, int8 ``.onnx``, OpenVINO ``.xml``, ``.ts``) through the backend that runs it, on the CPU.

>>> report = evaluate_file("student.int8.onnx", dataset="ucf101", data_root="UCF-101")
>>> report.video.accuracy(1)                      # the int8 model's own video-level top-1
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from distilled_shufflenet.engine.eval_report import EvalReport
from distilled_shufflenet.engine.evaluate import EvalConfig, eval_config, evaluate_checkpoint, evaluate_model
from distilled_shufflenet.inference.backends import Backend, file_backend
from distilled_shufflenet.inference.source import file_format
from distilled_shufflenet.models import Preprocess


class ExportedModel(nn.Module):
    """An exported file run by its backend, as a module the evaluation calls: ``(N, 3, T, H, W)`` clips ->
    ``(N, classes)`` logits, computed on the CPU."""

    def __init__(self, backend: Backend, preprocess: Preprocess) -> None:
        super().__init__()
        self.backend = backend
        self.preprocess = preprocess

    def forward(self, clips: Tensor) -> Tensor:
        return self.backend(clips.cpu()).to(clips.device)


def evaluate_file(path: str | os.PathLike, config: EvalConfig | None = None, **options: Any) -> EvalReport:
    """Evaluate the model file at ``path`` as :func:`~distilled_shufflenet.engine.evaluate_checkpoint`
    does (same ``config`` and options): a checkpoint or run folder in PyTorch; an exported file in its
    own runtime on the CPU, with the class names and preprocessing of its metadata (an ONNX file takes
    the clip size it was exported at only). The report of an exported file says its format, precision
    and backend under ``"exported"``."""
    if file_format(path) is None:
        return evaluate_checkpoint(path, config, **options)
    cfg = eval_config(config, **options)
    if cfg.device == "cuda":
        raise ValueError(f"device: {path} is an exported file, which runs on the CPU; pass --device cpu, or "
                         "evaluate the checkpoint it was exported from on the GPU")
    backend, info = file_backend(str(path))
    if cfg.precision != "fp32":
        raise ValueError(f"precision: {path} is an exported file; it runs at the precision it was exported at "
                         f"({info.precision}), so leave --precision at fp32")
    # the fields of a run checkpoint that the evaluation reads, from the file's metadata
    checkpoint = {"model_name": info.model_name, "model_kwargs": dict(info.model_kwargs), "classes": list(info.classes),
                  "config": {"frame_stride": info.frame_stride}, "epoch": None}
    about = {"format": file_format(path), "precision": info.precision, "backend": backend.name}
    return evaluate_model(Path(path), ExportedModel(backend, info.preprocess), checkpoint,
                          eval_config(cfg, device="cpu"), input_shape=info.input_shape,
                          extra_info={"exported": about})
