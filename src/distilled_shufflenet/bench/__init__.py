"""Speed and size of models on this CPU: parameters, multiply-accumulates, latency and FPS per path.

What is timed (:mod:`.specs`: models, paths, cost), what is measured (:mod:`.config`), the timing run
(:mod:`.run`) and its report (:mod:`.report`: the table and the JSON file).

Every (model, execution path) pair runs in one process and is timed round-robin, so that drift of the
machine (other processes, clock changes) hits all of them alike::

    warm-up:  for each (model, path): call it `warmup` times        (compiles the torch.compile paths)
    measure:  for r in range(repeats): for each (model, path): time one call

Paths (see :data:`PATHS`): every backend of ``dsn predict --backend`` under its own name (``torch-fp32``,
``torch-bf16``, ``torch-compile``, ``torch-compile-bf16``, ``torch-int8``, ``ort-fp32``, ``ort-int8``,
``ov-fp32``, ``ov-bf16``, ``ov-int8``: :mod:`distilled_shufflenet.inference.backends`), built by the same
``create_backend`` and timed by the same interleaved timer, so a figure here is what that backend gives a
user; plus two paths only the bench needs: ``fp32``, the model eager as built (BatchNorm not folded), the
baseline every speed-up is read against, and ``fp32+cl3d``, the same with channels-last-3d weights and
input. The int8 paths are calibrated on random clips here: right for speed, not for accuracy. A model
given as an exported file (``.onnx``, OpenVINO ``.xml``) runs as it is in each backend that can run it
(its GMACs are not counted).

Cost is counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode``, which counts convolutions
and matrix products only, as FLOPs = 2 x multiply-accumulates. FPS follows the paper: frames per second of
video, ``batch * frames / seconds per call``.

Every model runs at the common input (``frames`` x ``size`` x ``size``) unless its spec names another
(``x3d_s:input=13x160``, ``input=own``); with ``own_input`` each model is also timed at the clip it
expects (its ``preprocess``), so that efficient networks are seen both at equal input and at their own.

>>> report = run_benchmark(BenchConfig(models=parse_models("shufflenet2plus1d,r2plus1d_18")))
>>> print(format_report(report))
"""

from distilled_shufflenet.bench.config import BenchConfig
from distilled_shufflenet.bench.report import BenchReport, BenchRow, format_report, write_json
from distilled_shufflenet.bench.run import matmul_gflops, run_benchmark
from distilled_shufflenet.bench.specs import (
    DEFAULT_MODELS,
    DEFAULT_PATHS,
    PATHS,
    ModelSpec,
    count_flops,
    count_params,
    parse_models,
    resolve_paths,
)

__all__ = [
    "DEFAULT_MODELS",
    "DEFAULT_PATHS",
    "PATHS",
    "BenchConfig",
    "BenchReport",
    "BenchRow",
    "ModelSpec",
    "count_flops",
    "count_params",
    "format_report",
    "matmul_gflops",
    "parse_models",
    "resolve_paths",
    "run_benchmark",
    "write_json",
]
