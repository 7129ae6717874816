"""Shared fixtures: a tiny SynthActions dataset in the UCF101 layout, and the real test data folder."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from distilled_shufflenet.data.synth import SynthConfig, generate_synth_actions

# the classes of the tiny dataset: a pose class, an order pair and a tempo pair
TINY_SYNTH_CONFIG = SynthConfig(
    classes=("JumpingJacks", "SquatDown", "StandUp", "WaveFast"),
    groups=4,
    clips_per_group=2,
    frames=24,
    size=(64, 48),
    fps=25,
    seed=0,
    format="avi",
)


@pytest.fixture(autouse=True)
def _default_sigchld() -> None:
    """After each test, the default SIGCHLD handler again. PyTorch installs its own the first time a
    DataLoader starts worker processes, and in this long-lived test process it crashed pytest (a
    segmentation fault) when a later test's subprocess exited."""
    yield
    if hasattr(signal, "SIGCHLD") and signal.getsignal(signal.SIGCHLD) is not signal.SIG_DFL:
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny SynthActions dataset (see ``TINY_SYNTH_CONFIG``), made once per test session.

    UCF101 layout: ``classInd.txt`` (4 classes), ``trainlist0{1,2,3}.txt`` / ``testlist0{1,2,3}.txt``
    (split 1 tests on group g01: 8 test and 24 train videos), ``<Class>/v_<Class>_gXX_cYY.avi``:
    32 MPEG-4 AVI videos of 24 frames, 64x48 px, 25 fps. Treat it as read-only.
    """
    root = tmp_path_factory.mktemp("tiny_synth")
    generate_synth_actions(root, TINY_SYNTH_CONFIG, workers=1, progress=False)
    return root


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real test data folder (``../shared/data``); skips the test where it is absent."""
    path = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"real test data not found at {path}")
    return path.resolve()


def _decode_all(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    return np.stack(frames)  # (T, H, W, 3) uint8


@pytest.fixture(scope="session")
def decode_all() -> Callable[[Path], np.ndarray]:
    """A function decoding every frame of a video with PyAV: ``path -> (T, H, W, 3)`` uint8 RGB."""
    return _decode_all


@pytest.fixture
def dead_pid() -> int:
    """The id of a process that has exited: the owner of temporary files a killed run left behind."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _kill_and_resume(command: str, args: list[str], tmp_path: Path, resume_args: tuple[str, ...] = (),
                     timeout: float = 400) -> tuple[dict, int, dict]:
    """Run ``dsn COMMAND ARGS`` to its end into ``whole``; run it again into ``killed``, ``kill -9`` it as
    soon as it has written a checkpoint and resume it. Returns the uninterrupted run's ``last.pt``, the step
    the killed run had saved, and the resumed run's ``last.pt``."""
    import os
    import signal
    import time

    from distilled_shufflenet.checkpoint import read_checkpoint

    dsn = [sys.executable, "-m", "distilled_shufflenet", command]
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    done = subprocess.run([*dsn, *args, "--output", str(whole)], timeout=timeout, **quiet)
    assert done.returncode == 0, done.stderr
    proc = subprocess.Popen([*dsn, *args, "--output", str(killed)], **quiet)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "last.pt").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)  # no clean-up, no last words
    finally:
        proc.wait(timeout=60)
    stopped_at = int(read_checkpoint(killed / "last.pt")["step"])
    resumed = subprocess.run([*dsn, "--resume", str(killed), *resume_args], timeout=timeout, **quiet)
    assert resumed.returncode == 0, resumed.stderr
    return read_checkpoint(whole / "last.pt"), stopped_at, read_checkpoint(killed / "last.pt")


@pytest.fixture(scope="session")
def kill_and_resume() -> Callable[..., tuple[dict, int, dict]]:
    return _kill_and_resume
