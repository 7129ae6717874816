"""torch.distributed: two CPU processes under torchrun (gloo) train the same weights; metrics are global."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from distilled_shufflenet.engine.runtime import dist_env, setup_runtime

HERE = Path(__file__).resolve().parent

# Each rank starts from other initial weights (DDP must broadcast rank 0's), trains 1 epoch (12 clips,
# 2 ranks, batch 2: 3 steps), then writes a hash of its weights and its validation metrics, with the
# same validation computed by this rank alone on the whole validation set for comparison.  The learning
# rate is small: at 0.05, one AVX2 CPU's rounding sent these 4x4x4 BatchNorm layers to NaN in 3 steps.
SCRIPT = """
import hashlib, json, os, sys
from pathlib import Path
import torch
sys.path.insert(0, {tests!r})
from test_train import RandomClips, tiny_config, tiny_student
from distilled_shufflenet.engine import fit
from distilled_shufflenet.engine.runtime import Runtime, SeededSamples, setup_runtime, teardown_runtime
from distilled_shufflenet.engine.train import make_loader, validate

out = Path(sys.argv[1])
rt = setup_runtime("cpu")
cfg = tiny_config(out / "run", epochs=1, batch_size=2, lr=0.01, optimizer="sgd")
val = RandomClips(5, seed=1, augment=False)
result = fit(tiny_student(seed=rt.rank), RandomClips(12), val, cfg, classes=RandomClips.classes, runtime=rt)
digest = hashlib.sha256()
for key, value in sorted(result.model.state_dict().items()):
    digest.update(key.encode() + value.detach().contiguous().numpy().tobytes())
alone = Runtime(torch.device("cpu"))
whole = validate(result.model, make_loader(SeededSamples(val, 0), list(range(5)), cfg, alone, train=False), alone)
report = dict(rank=rt.rank, world=rt.world_size, steps=result.steps, hash=digest.hexdigest(),
              metrics=result.metrics, alone=whole)
(out / f"rank{{rt.rank}}.json").write_text(json.dumps(report))
teardown_runtime(rt)
"""


def test_without_torchrun_it_is_one_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert dist_env() == (0, 1, 0)
    rt = setup_runtime("cpu")
    assert (rt.rank, rt.world_size, rt.distributed, rt.is_main, rt.device.type) == (0, 1, False, True, "cpu")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK / WORLD_SIZE"):
        dist_env()


def test_fp16_on_cpu_and_a_missing_gpu_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="^precision: fp16"):
        setup_runtime("cpu", "fp16")
    if not __import__("torch").cuda.is_available():
        with pytest.raises(ValueError, match="^device: 'cuda'"):
            setup_runtime("cuda")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_under_torchrun_end_with_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "ddp_run.py"
    script.write_text(textwrap.dedent(SCRIPT.format(tests=str(HERE))))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2] and [r["steps"] for r in ranks] == [3, 3]
    assert ranks[0]["hash"] == ranks[1]["hash"]  # parameters and (synchronised) BatchNorm statistics
    for r in ranks:
        # validation was sharded over the ranks and summed: it equals one process scoring all 5 clips
        assert r["metrics"]["val_top1"] == pytest.approx(r["alone"]["val_top1"])
        assert math.isfinite(r["alone"]["val_loss"]), r  # a diverged model would make the comparison vacuous
        assert r["metrics"]["val_loss"] == pytest.approx(r["alone"]["val_loss"], rel=1e-5)
    with (tmp_path / "run" / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 and rows[0]["step"] == "3"  # written once, by rank 0
    assert (tmp_path / "run" / "last.pt").is_file()
