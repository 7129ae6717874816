"""The README and docs/method.md say what the code does, and stand alone."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distilled_shufflenet.cli import _COMMAND_MODULES, build_parser
from distilled_shufflenet.data.synth import DEFAULT_CLASSES, SYNTH_CLASSES

ROOT = Path(__file__).resolve().parents[1]
METHOD = ROOT / "docs" / "method.md"


def _text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


def test_method_page_has_the_papers_figures_and_the_projects_count() -> None:
    text = _text(METHOD)
    for figure in ("86.4 %", "59.9 %", "47.16 FPS", "17.1 M", "12.07 GFLOPs", "15.85 M", "17.16 M"):
        assert figure in text, figure
    # the MAC count of tests/models/test_student.py, and how it was counted
    assert f"{15_453_119_488 / 1e9:.2f} G MACs" in text and "FlopCounterMode" in text
    for part in ("adapt_mid", "adapt_final", "0.9 * MSE", "Nesterov", "clip level", "video level", "HandstandPushups"):
        assert part in text, part


def test_method_page_stands_alone() -> None:
    raw = METHOD.read_text(encoding="utf-8")
    assert "../" not in raw and "/work" not in raw and "shared/" not in raw and "METHOD.md" not in raw
    for target in re.findall(r"\]\(([^)#]+)\)", raw):  # relative links stay inside the repository
        assert (METHOD.parent / target).resolve().is_relative_to(ROOT), target


def test_code_cites_sections_the_method_page_has() -> None:
    headings = set(re.findall(r"^## (\d+)\.", METHOD.read_text(encoding="utf-8"), re.MULTILINE))
    cited = []
    for path in (ROOT / "src").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "METHOD.md" not in text, path
        cited += [(path, n) for n in re.findall(r"docs/method\.md section (\d+)", text)]
    assert cited
    for path, number in cited:
        assert number in headings, (path, number)


def test_readme_is_true_about_synthactions_commands_and_config_files() -> None:
    readme = _text(ROOT / "README.md")
    assert f"{len(SYNTH_CLASSES)} classes, of which the first {len(DEFAULT_CLASSES)} are the default" in readme
    for name in _COMMAND_MODULES:
        assert f"`dsn {name}" in readme, name
    assert "`dsn train`, `dsn finetune` and `dsn evaluate` each have one typed config; `--config FILE.yaml`" in readme
    assert "--config run.yaml` overrides" not in readme  # the old claim for every command


@pytest.mark.parametrize("command", ["train", "finetune", "evaluate"])
def test_the_commands_the_readme_names_take_a_config_file(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    assert "--config FILE.yaml" in capsys.readouterr().out
