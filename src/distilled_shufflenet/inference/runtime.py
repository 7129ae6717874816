"""The engines' common ground: the ``Backend`` call, PyTorch's thread count, and ONNX Runtime's session.

Low in :mod:`distilled_shufflenet.inference` so that both :mod:`.export` (which checks an exported file in
ONNX Runtime) and :mod:`.backends` (which builds every backend) use it without importing each other.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from torch import Tensor


def set_threads(threads: int | None) -> int:
    """Set PyTorch's intra-op thread count (``None`` keeps it); returns the count in force."""
    if threads is not None:
        if not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        torch.set_num_threads(threads)
    return torch.get_num_threads()


class Backend:
    """``backend(clips)``: ``(N, 3, T, H, W)`` float32 normalised clips -> ``(N, classes)`` float32 logits."""

    name: str = "?"
    threads: int = 1

    def __call__(self, clips: Tensor) -> Tensor:
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.threads} thread{'s' if self.threads != 1 else ''})"


class OrtBackend(Backend):
    """An ONNX Runtime session on ``threads`` intra-op threads (one inter-op thread), all graph
    optimisations on; ``model`` is the bytes or the path of an ONNX file."""

    def __init__(self, model: bytes | str, *, threads: int | None = None, name: str = "ort-fp32") -> None:
        import onnxruntime as ort

        self.threads = threads if threads is not None else torch.get_num_threads()
        if not isinstance(self.threads, int) or self.threads < 1:
            raise ValueError(f"threads: expected an integer >= 1, got {threads!r}")
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.name = name
        self._model = model
        try:
            self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own exception types
            where = model if isinstance(model, str) else "the ONNX model"
            raise ValueError(f"{where}: ONNX Runtime cannot load it ({str(e).splitlines()[0]})") from None
        self.input_name = self.session.get_inputs()[0].name

    def session_threads(self) -> int:
        """The intra-op thread count the session was created with, read back from it."""
        return int(self.session.get_session_options().intra_op_num_threads)

    def node_counts(self) -> dict[str, int]:
        """Operator types of the model's graph and how many nodes of each."""
        import onnx

        proto = onnx.load_from_string(self._model) if isinstance(self._model, bytes) else onnx.load(self._model)
        return dict(Counter(n.op_type for n in proto.graph.node))

    def __call__(self, clips: Tensor) -> Tensor:
        x = np.ascontiguousarray(torch.as_tensor(clips).float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: x})[0])
