"""The README's Python API example and its step-by-step chain run as written, and its picture of the method
has the code's shapes."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
API_HEADING = "## The Python API in a dozen lines"
METHOD_HEADING = "## How the method works"
CHAIN_HEADING = "## From teachers to a fine-tuned student, step by step"
# what the chain test adds to each command to run it on tiny data in seconds (sizes, lengths, workers)
TINY_FLAGS = {
    "data synth": ["--classes", "3", "--groups", "4", "--clips-per-group", "1", "--frames", "32", "--size", "80x60",
                   "--workers", "1"],
    "train": ["--epochs", "1", "--max-steps", "2", "--batch-size", "2", "--num-workers", "0"],
    "distill": ["--epochs", "1", "--max-steps", "2", "--batch-size", "2", "--num-workers", "0"],
    "finetune": ["--epochs", "1", "--max-steps", "2", "--batch-size", "2", "--num-workers", "0"],
    "evaluate": ["--clips", "2", "--crops", "1", "--workers", "0"],
    "predict": ["--backend", "torch-fp32", "--clips", "1"],
}


def section(heading: str) -> str:
    """The README's text from ``heading`` to the next top-level section."""
    text = README.read_text(encoding="utf-8")
    assert text.count(f"\n{heading}\n") == 1, f"README.md has no single section {heading!r}"
    body = text.split(f"\n{heading}\n", 1)[1]
    following = re.search(r"^## ", body, re.MULTILINE)
    return body[: following.start()] if following else body


def code_block(heading: str, language: str = "") -> str:
    """The one fenced code block (of ``language``) in the section under ``heading``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", section(heading), re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, f"expected one ```{language} block under {heading!r}, found {len(blocks)}"
    return blocks[0]


def test_api_example_imports_only_public_names() -> None:
    tree = ast.parse(code_block(API_HEADING, "python"))
    imported = [(node.module, alias.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for alias in node.names]
    assert imported
    for module, name in imported:
        public = getattr(importlib.import_module(module), "__all__", ())
        assert name in public, f"{module}.{name} is not a public name (not in {module}.__all__)"


def test_api_example_runs(tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    """The snippet exactly as the README has it: it distils one step from narrow random teachers, writes
    ``distilled.pt``, fine-tunes one epoch on a tiny SynthActions folder (UCF101 layout) standing in for
    ``UCF-101``, and predicts ``clip.avi``, one of that folder's videos."""
    snippet = code_block(API_HEADING, "python")
    shutil.copytree(tiny_synth, tmp_path / "UCF-101")
    shutil.copy(sorted((tiny_synth / "JumpingJacks").glob("*.avi"))[0], tmp_path / "clip.avi")
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    namespace: dict = {"__name__": "readme_api_example"}
    exec(compile(snippet, f"{README}:{API_HEADING}", "exec"), namespace)  # noqa: S102

    classes = tuple(line.split()[1] for line in (tiny_synth / "classInd.txt").read_text().split("\n") if line.strip())
    assert (tmp_path / "distilled.pt").is_file()
    assert namespace["run"].steps >= 1 and Path(namespace["run"].best_checkpoint).is_file()
    assert namespace["info"].classes == classes
    assert set(namespace["parts"]) >= {"loss", "mid", "final", "mid/2d", "mid/3d", "final/2d", "final/3d"}
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[(")]
    assert printed, "the example prints no prediction"
    top = ast.literal_eval(printed[-1])
    assert {name for name, _ in top} == set(classes)
    assert sum(p for _, p in top) == pytest.approx(1.0, abs=1e-4)


def test_method_picture_has_the_shapes_of_the_code() -> None:
    from distilled_shufflenet.distill import DEFAULT_TAP_WEIGHTS, TargetBuilder
    from distilled_shufflenet.models import create_model, freeze

    picture = " ".join(code_block(METHOD_HEADING).split())
    with torch.device("meta"):  # the paper preset and the paper's teachers, without memory or weights
        student = create_model("shufflenet2plus1d", num_classes=101)
        teacher2d, teacher3d = freeze(create_model("resnet101")), freeze(create_model("r3d_50"))
    layout = TargetBuilder(student, teacher2d, teacher3d).plan((16, 224, 224))

    def shape(*dims: int) -> str:
        return " x ".join(map(str, dims))

    assert "3 x 16 x 224 x 224" in picture
    for tap, (c, t, h, w) in layout.student_taps.items():
        stage = {"mid": "stage3", "final": "stage4"}[tap]
        assert f"{tap} ({stage}) {shape(c, t, h, w)}" in picture, tap
        parts = layout.tap_parts(tap)
        width = parts[0].channels
        assert f"adapt_{tap} -> {shape(width, t, h, w)}" in picture, tap
        assert f"target {tap} {shape(width, t, h, w)}:" in picture, tap
        slots = " | ".join(f"{p.teacher.upper()}" + (f" t{i}" if p.teacher == "3d" and p.slots > 1 else "")
                           for p in parts for i in range(p.slots))
        assert f"| {slots} |" in picture, (tap, slots)
        for p in parts:
            c2, t2, h2, w2 = p.teacher_shape
            assert (shape(c2, h2, w2) if p.teacher == "2d" else shape(c2, t2, h2, w2)) in picture, p.key
    weights = DEFAULT_TAP_WEIGHTS
    assert f"loss = {weights['final']} x MSE(final) + {weights['mid']} x MSE(mid)" in picture
    mid, final = layout.student_taps["mid"], layout.student_taps["final"]
    pooled = (layout.tap_parts("mid")[0].channels, layout.tap_parts("final")[0].channels * final[1])
    assert f"{pooled[0]} --+" in picture and f"{pooled[1]} --+" in picture
    assert f"concat {student.fc.in_features} -> fc" in picture and sum(pooled) == student.fc.in_features
    assert mid[0] == 256 and final[0] == 512  # the raw taps the adapters widen


def chain_commands() -> list[list[str]]:
    """The ``dsn`` commands of the README's step-by-step block, as argument lists after ``dsn``."""
    block = code_block(CHAIN_HEADING).replace("\\\n", " ")
    commands = [shlex.split(line) for line in block.splitlines() if line.strip()]
    assert commands and all(c[0] == "dsn" for c in commands), commands
    return [c[1:] for c in commands]


def test_the_chain_uses_the_presets_that_fit_the_distillation_recipe() -> None:
    """The 2D teacher's preset builds the same narrow ResNet-18 as the distillation recipe's teacher (the
    full-width ``resnet18.yaml`` does not fit ``distill_small.yaml``), and the 3D teacher's the same R3D-18."""
    import yaml

    commands = chain_commands()
    distill = next(c for c in commands if c[0] == "distill")
    recipe = yaml.safe_load((ROOT / distill[distill.index("--config") + 1]).read_text())
    trained = {}
    for c in commands:
        if c[0] == "train":
            preset = yaml.safe_load((ROOT / c[c.index("--config") + 1]).read_text())
            trained[c[c.index("--output") + 1]] = (preset["model"], preset.get("model_kwargs") or {})
    for slot in ("teacher2d", "teacher3d"):
        name, _, path = distill[distill.index(f"--{slot}") + 1].partition(":")
        run = str(Path(path).parent)
        assert run in trained, f"--{slot} {path}: no command of the chain trains it"
        assert trained[run] == (name, recipe[f"{slot}_kwargs"]) and recipe[slot] == name, (slot, trained[run])


@pytest.mark.slow
def test_the_chain_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Every command of the step-by-step block, in order, in a fresh folder (``configs/`` linked in), with
    only ``TINY_FLAGS`` added: SynthActions, the two teachers, distillation, fine-tuning, evaluation and a
    prediction. Then the loop of docs/distillation.md runs on the teachers the chain trained."""
    from distilled_shufflenet.checkpoint import read_checkpoint
    from distilled_shufflenet.cli import main

    (tmp_path / "configs").symlink_to(ROOT / "configs")
    monkeypatch.chdir(tmp_path)
    for argv in chain_commands():
        name = " ".join(argv[:2]) if argv[0] == "data" else argv[0]
        if main([*argv, *TINY_FLAGS[name]]) != 0:
            errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
            pytest.fail(f"dsn {' '.join(argv)} failed: {' '.join(errors)[-2000:]}")
    distilled = read_checkpoint(tmp_path / "runs" / "distill" / "last.pt")
    assert distilled["step"] == 2 and distilled["config"]["teacher2d_kwargs"] == {"widen_factor": 0.25}
    assert read_checkpoint(tmp_path / "runs" / "finetune" / "last.pt")["step"] == 2
    assert "JumpingJacks" in capsys.readouterr().out  # the prediction lists the classes

    page = ROOT / "docs" / "distillation.md"
    loop = re.findall(r"^```python\n(.*?)^```$", page.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL)
    assert len(loop) == 1
    namespace: dict = {}
    exec(compile(loop[0], str(page), "exec"), namespace)  # noqa: S102
    assert set(namespace["parts"]) >= {"mid/2d", "mid/3d", "final/2d", "final/3d"}
    assert torch.isfinite(namespace["loss"])
