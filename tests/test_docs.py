"""The README and the pages of docs/ say what the code does, stand alone, and hold commands that run.

Every shell command in a fenced block of the README or a page (``dsn ...``, ``python -m`` /
``torchrun -m distilled_shufflenet ...``, ``make ...``) must parse with the ``dsn`` command's own parser as
written; every ``dsn`` command and flag quoted inline must exist; every file of the repository they name
must exist; every Python block must compile and import only public names. The examples that can run on
tiny data run: the README's API example and its step-by-step chain in tests/test_readme.py, the data
page's example here.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import re
import shlex
import shutil
from functools import cache
from pathlib import Path

import pytest

from distilled_shufflenet.cli import _COMMAND_MODULES, build_parser
from distilled_shufflenet.data.synth import DEFAULT_CLASSES, SYNTH_CLASSES

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
METHOD = DOCS / "method.md"
PAGES = tuple(DOCS / f"{name}.md" for name in
              ("demo", "method", "distillation", "training", "models", "data", "inference", "benchmarks"))
TEXTS = (README, *PAGES)
README_MAX_LINES = 250


def _text(path: Path) -> str:
    return " ".join(path.read_text(encoding="utf-8").split())


def fenced_blocks(path: Path) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block in ``path`` (language "" where none is given),
    indented blocks (inside a list item) included."""
    blocks = []
    for m in re.finditer(r"^( *)```(\w*)\n(.*?)^\1```$", path.read_text(encoding="utf-8"), re.MULTILINE | re.DOTALL):
        indent = len(m[1])
        blocks.append((m[2], "\n".join(line[indent:] for line in m[3].splitlines())))
    return blocks


def prose(path: Path) -> str:
    """``path``'s text without its fenced blocks."""
    return re.sub(r"^( *)```\w*\n.*?^\1```$", "", path.read_text(encoding="utf-8"), flags=re.MULTILINE | re.DOTALL)


def inline_code(path: Path) -> list[str]:
    """Every inline code span outside the fenced blocks, a span broken over lines joined again."""
    return [" ".join(span.split()) for span in re.findall(r"`([^`]+)`", prose(path))]


def shell_commands(block: str) -> list[list[str]]:
    """The commands of a shell block as argument lists: continuation lines joined, comments dropped, split
    at ``;`` / ``&&``, leading ``VAR=value`` assignments and ``do`` dropped, ``$var`` read as ``0``; only
    lines of commands (``dsn``, ``python -m``, ``torchrun``, ``make``, ``for``) count, so pictures don't."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        if not re.match(r"\s*(?:[A-Z_]+=\S*\s+)*(?:dsn|python|torchrun|make|for)\s", line):
            continue
        words = shlex.split(re.sub(r"\$\w+", "0", line), comments=True)
        command: list[str] = []
        for word in [*words, ";"]:
            if word in (";", "&&", "||") or word.endswith(";"):
                if word.endswith(";") and word != ";":
                    command.append(word[:-1])
                while command and (re.fullmatch(r"[A-Z_]+=\S*", command[0]) or command[0] == "do"):
                    command.pop(0)
                if command and command[0] in ("dsn", "python", "torchrun", "make"):
                    commands.append(command)
                command = []
            else:
                command.append(word)
    return commands


def dsn_argv(command: list[str]) -> list[str] | None:
    """The arguments after ``dsn`` (or ``python -m distilled_shufflenet``, ``torchrun ... -m
    distilled_shufflenet``) with ``...`` (left out on purpose) dropped; None for other commands."""
    if command[0] == "dsn":
        rest = command[1:]
    elif "-m" in command and command[command.index("-m") + 1] == "distilled_shufflenet":
        rest = command[command.index("-m") + 2:]
    else:
        return None
    return [word for word in rest if word != "..."]


@cache
def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]  # noqa: SLF001
    return dict(actions[0].choices) if actions else {}


@cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def command_parser(words: list[str]) -> tuple[argparse.ArgumentParser, str] | None:
    """The parser of ``dsn WORDS...`` (``data synth`` included) and its name; None if there is none."""
    parser, name = _parser(), "dsn"
    for word in words:
        sub = _subparsers(parser).get(word)
        if sub is None:
            break
        parser, name = sub, f"{name} {word}"
    return (parser, name) if name != "dsn" else None


def flags_of(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in parser._actions for o in a.option_strings}  # noqa: SLF001


@cache
def all_flags() -> frozenset[str]:
    """Every flag of every ``dsn`` command."""
    found: set[str] = set()
    stack = [_parser()]
    while stack:
        parser = stack.pop()
        found |= flags_of(parser)
        stack += _subparsers(parser).values()
    return frozenset(found)


def _shell_cases() -> list:
    return [pytest.param(path, command, id=f"{path.name}:{' '.join(command)[:70]}")
            for path in TEXTS for language, body in fenced_blocks(path) if language != "python"
            for command in shell_commands(body)]


def _python_cases() -> list:
    return [pytest.param(path, body, id=f"{path.name}:{i}")
            for path in TEXTS for i, (language, body) in enumerate(fenced_blocks(path)) if language == "python"]


# --------------------------------------------------------------------------- the pages and their links
def test_the_readme_reads_in_five_minutes_and_links_every_page() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"
    head = "\n".join(lines[:30])
    assert head.index("make demo ") < head.index("make demo DEMO_ARGS=--quick") < head.index("make test")
    for page in PAGES:
        assert f"](docs/{page.name})" in README.read_text(encoding="utf-8"), page.name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_page_opens_with_what_it_covers(page: Path) -> None:
    title, _, rest = page.read_text(encoding="utf-8").partition("\n\n")
    assert title.startswith("# ") and "\n" not in title, f"{page.name} opens with one '# ' title"
    assert rest.startswith("This page"), f"{page.name}: its first paragraph says what the page covers"


def _anchors(path: Path) -> set[str]:
    """The anchors of ``path``'s headings, as GitHub makes them."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), re.MULTILINE):
        anchors.add(re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_pages_stand_alone_and_their_links_lead_somewhere(path: Path) -> None:
    """Nothing outside the repository is cited (no ``../`` folder, no machine path); every relative link
    and image names a file of the repository, and every ``#anchor`` a heading of its page."""
    raw = path.read_text(encoding="utf-8")
    for outside in ("../", "/work", "shared/data", "METHOD.md", "STYLE.md"):
        assert outside not in prose(path), f"{path.name} cites {outside!r}, outside the repository"
    for target in re.findall(r"\]\(([^)\s]+)\)", raw):
        if re.match(r"[a-z]+://", target):
            continue
        file, _, anchor = target.partition("#")
        where = (path.parent / file).resolve() if file else path
        assert where.is_relative_to(ROOT) and where.exists(), f"{path.name}: link {target!r} leads nowhere"
        if anchor:
            assert anchor in _anchors(where), f"{path.name}: {target!r}: no heading for #{anchor} in {where.name}"


# --------------------------------------------------------------------------- commands
def test_the_pages_hold_commands() -> None:
    names = {" ".join(c[:2]) for c in (param.values[1] for param in _shell_cases())}
    assert {"dsn train", "dsn distill", "dsn finetune", "dsn evaluate", "dsn predict", "dsn export",
            "dsn bench", "dsn demo", "make demo"} <= names


@pytest.mark.parametrize(("path", "command"), _shell_cases())
def test_every_command_in_a_block_parses_as_written(path: Path, command: list[str],
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    if command[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(encoding="utf-8"), re.MULTILINE)
        assert command[1] in targets, f"{path.name}: no make target {command[1]!r}"
        demo_args = [w.split("=", 1)[1] for w in command[2:] if w.startswith("DEMO_ARGS=")]
        if demo_args:
            _parser().parse_args(["demo", *shlex.split(demo_args[0])])
        return
    argv = dsn_argv(command)
    if argv is None:
        pytest.fail(f"{path.name}: {' '.join(command)}: not a dsn command")
    try:
        _parser().parse_args(argv)
    except SystemExit as e:
        pytest.fail(f"{path.name}: `{' '.join(command)}` does not parse: {capsys.readouterr().err.strip()} ({e})")


def _inline_cases() -> list:
    return [pytest.param(path, span, id=f"{path.name}:{span[:70]}") for path in TEXTS for span in inline_code(path)
            if re.match(r"(?:[A-Z_]+=\S*\s+)*dsn [a-z]", span)]


@pytest.mark.parametrize(("path", "span"), _inline_cases())
def test_every_command_quoted_inline_parses(path: Path, span: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A ``dsn`` command quoted in the prose parses as written, but for the arguments it leaves out
    (`dsn predict --backend torch-bf16` names a flag, not a whole command)."""
    argv = dsn_argv(shell_commands(span)[0])
    assert argv is not None
    try:
        _parser().parse_args(argv)
    except SystemExit as e:
        error = capsys.readouterr().err.strip()
        left_out = ("the following arguments are required", "expected one argument", "expected at least one argument")
        if e.code and not any(reason in error for reason in left_out):
            pytest.fail(f"{path.name}: `{span}` does not parse: {error}")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_every_command_and_flag_quoted_inline_exists(path: Path) -> None:
    """``dsn NAME --flag`` in the prose names a command that has that flag; a bare ``--flag`` is a flag of
    some ``dsn`` command."""
    for span in inline_code(path):
        words = span.split()
        if words[0] == "dsn" and len(words) > 1 and not words[1].startswith(("<", "-")):
            found = command_parser(words[1:])
            assert found is not None, f"{path.name}: `{span}`: no such command"
            parser, _ = found
            known = flags_of(parser)
        else:
            known = all_flags()
        for word in words:
            if re.fullmatch(r"--[a-z][\w-]*(=.*)?", word):
                flag = word.split("=", 1)[0]
                assert flag in known, f"{path.name}: `{span}`: {flag} is not a flag of it"


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_the_files_the_pages_name_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for name in set(re.findall(r"(?<![\w./-])((?:configs|src|docs|tests)/[\w./-]*[\w/])", text)):
        assert (ROOT / name).exists() or (path.parent / name).exists(), f"{path.name} names {name}, which does not exist"


# --------------------------------------------------------------------------- Python examples
@pytest.mark.parametrize(("path", "snippet"), _python_cases())
def test_every_python_example_compiles_and_imports_public_names(path: Path, snippet: str) -> None:
    tree = ast.parse(snippet)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("distilled_shufflenet"):
            public = getattr(importlib.import_module(node.module), "__all__", ())
            for alias in node.names:
                assert alias.name in public, f"{path.name}: {node.module}.{alias.name} is not public"
    compile(tree, str(path), "exec")


def page_python(path: Path, heading: str) -> str:
    """The one Python block under ``heading`` (a ``##`` heading) of ``path``."""
    body = path.read_text(encoding="utf-8").split(f"\n{heading}\n", 1)[1]
    following = re.search(r"^## ", body, re.MULTILINE)
    section = body[: following.start()] if following else body
    blocks = re.findall(r"^```python\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert len(blocks) == 1, (path.name, heading)
    return blocks[0]


def test_the_data_page_example_runs(tiny_synth: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """As written, on a tiny SynthActions copied into ``UCF-101/`` (its split files also into
    ``ucfTrainTestlist/``) and a few of its videos as ``my_footage/``."""
    shutil.copytree(tiny_synth, tmp_path / "UCF-101")
    (tmp_path / "ucfTrainTestlist").mkdir()
    for split_file in tiny_synth.glob("*.txt"):
        shutil.copy(split_file, tmp_path / "ucfTrainTestlist")
    (tmp_path / "my_footage").mkdir()
    for video in sorted(tiny_synth.rglob("*.avi"))[:3]:
        shutil.copy(video, tmp_path / "my_footage")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(page_python(DOCS / "data.md", "## Datasets"), "docs/data.md", "exec"), namespace)  # noqa: S102
    sample = namespace["train"][0]
    assert tuple(sample["clip"].shape) == (3, 16, 224, 224) and "label" in sample
    assert len(namespace["unlabelled"]) == 3 and "label" not in namespace["unlabelled"][0]


# --------------------------------------------------------------------------- what the pages claim
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


def test_the_pages_are_true_about_synthactions_commands_and_config_files() -> None:
    data = _text(DOCS / "data.md")
    assert f"{len(SYNTH_CLASSES)} classes, of which the first {len(DEFAULT_CLASSES)} are the default" in data
    readme = _text(README)
    for name in _COMMAND_MODULES:
        assert f"`dsn {name.replace('_', '-')}" in readme, name
    training = _text(DOCS / "training.md")
    assert "Every command but `dsn models` has one typed config" in training
    for text in map(_text, TEXTS):
        assert "--config run.yaml` overrides" not in text  # the old claim for every command


@pytest.mark.parametrize("command", [c for c in _COMMAND_MODULES if c not in ("models", "data")] + ["data synth",
                                     "data check", "data prepare", "data bench"])
def test_the_commands_the_readme_names_take_a_config_file(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args([*command.replace("_", "-").split(), "--help"])
    assert "--config FILE.yaml" in capsys.readouterr().out
