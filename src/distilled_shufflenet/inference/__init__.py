"""Inference and deployment: backends, whole-video and streaming prediction, export, int8.

>>> from distilled_shufflenet.inference import create_backend, predict_video, stream_predict
>>> model, info = load_model_source("run/best.pt")              # or an exported .onnx / .xml / .ts file
>>> backend = create_backend("ort-fp32", model, info, threads=2)
>>> predict_video(backend, info, "clip.avi").top                 # [(class, probability), ...]

Pieces: :mod:`.source` (class names and preprocessing of checkpoints and exported files),
:mod:`.graph` (export-ready copies with fixed shapes), :mod:`.export` (ONNX / TorchScript, ``dsn export``),
:mod:`.frames` (3D convolutions as 2D ones, for int8), :mod:`.quantize` (ONNX Runtime and PyTorch int8),
:mod:`.openvino` (OpenVINO models and IR files), :mod:`.backends` (PyTorch fp32 / bf16 / compiled / int8,
ONNX Runtime and OpenVINO fp32 / bf16 / int8, ``auto``; also what ``dsn bench`` times),
:mod:`.evaluate` (exported files scored like checkpoints), :mod:`.predict` (top-k per video), :mod:`.stream` (sliding window as a video
decodes), :mod:`.annotate` (the labelled video), :mod:`.runner` (``dsn predict``).
"""

from distilled_shufflenet.inference.backends import (
    AUTO_CANDIDATES,
    BACKENDS,
    Backend,
    OrtBackend,
    TorchBackend,
    auto_backend,
    auto_file_backend,
    create_backend,
    file_backend,
    file_backends,
)
from distilled_shufflenet.inference.export import ExportConfig, export_model, onnx_bytes, run_export
from distilled_shufflenet.inference.frames import frame_graph
from distilled_shufflenet.inference.graph import static_graph
from distilled_shufflenet.inference.openvino import OvBackend
from distilled_shufflenet.inference.predict import VideoPrediction, predict_files, predict_video
from distilled_shufflenet.inference.quantize import quantize_onnx
from distilled_shufflenet.inference.runner import PredictConfig, run_predict
from distilled_shufflenet.inference.source import ModelFileError, ModelInfo, load_model_source, read_onnx
from distilled_shufflenet.inference.stream import StreamConfig, StreamReport, Window, stream_predict

__all__ = [
    "AUTO_CANDIDATES", "BACKENDS", "Backend", "ExportConfig", "ModelFileError", "ModelInfo", "OrtBackend", "OvBackend",
    "PredictConfig", "StreamConfig", "StreamReport", "TorchBackend", "VideoPrediction", "Window", "auto_backend", "auto_file_backend",
    "create_backend", "export_model", "file_backend", "file_backends", "frame_graph", "load_model_source", "onnx_bytes", "predict_files",
    "predict_video", "quantize_onnx", "read_onnx", "run_export", "run_predict", "static_graph", "stream_predict",
]
