"""The typed-config mechanism on its own: a small dataclass -> flags, YAML < flags, checks naming the field."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import pytest

from distilled_shufflenet.options import add_config_arguments, build_config, config_from_args, need_path, option


def _size(text: str) -> tuple[int, int]:
    w, _, h = text.partition("x")
    return int(w), int(h)


@dataclass
class Inner:
    hop: int | None = option(None, "frames between windows")
    queue: int = 8  # no help text: no flag


@dataclass
class Settings:
    name: str = option("clip", "a name", choices=("clip", "video"))
    frames: int = option(16, "frames per clip")
    rate: float = option(0.5, "a rate")
    fast: bool = option(False, "go fast")
    size: tuple[int, int] = option((160, 120), "frame size", parse=_size, metavar="WxH")
    workers: tuple[int, ...] = option((0, 1), "worker counts")
    extra: dict = option({}, "KEY=VALUE", flag="--extra-arg")
    out: str | None = option(None, "where", flag=("--out", "-o"))
    inner: Inner = option(default_factory=Inner)
    seed: int = 0  # no help text: YAML only


def parse(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Settings)
    return config_from_args(Settings, parser.parse_args(argv))


def test_every_field_with_help_is_a_flag_and_the_others_are_not() -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Settings)
    flags = {s for a in parser._actions for s in a.option_strings}
    assert {"--config", "--name", "--frames", "--rate", "--fast", "--no-fast", "--size", "--workers", "--extra-arg",
            "--out", "-o", "--hop"} <= flags
    assert not {"--seed", "--queue", "--inner"} & flags
    assert "(default: 16)" in parser.format_help() and "(default: 160 120)" in parser.format_help()


def test_no_flag_gives_the_defaults_and_flags_give_typed_values() -> None:
    assert parse([]) == Settings()
    cfg = parse(["--name", "video", "--frames", "8", "--fast", "--size", "64x48", "--workers", "2", "3",
                 "--extra-arg", "k=[1,2]", "-o", "x.json", "--hop", "4"])
    assert (cfg.name, cfg.frames, cfg.fast, cfg.size, cfg.workers) == ("video", 8, True, (64, 48), (2, 3))
    assert cfg.extra == {"k": [1, 2]} and cfg.out == "x.json" and cfg.inner == Inner(hop=4)


def test_yaml_overrides_the_defaults_and_flags_override_yaml(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("frames: 4\nrate: 1e-3\nsize: 32x24\nextra: {a: 1}\ninner: {hop: 2, queue: 3}\nseed: 7\n")
    cfg = parse(["--config", str(path), "--frames", "6", "--extra-arg", "b=2", "--hop", "5"])
    assert cfg.frames == 6 and cfg.rate == 1e-3 and cfg.size == (32, 24) and cfg.seed == 7
    assert cfg.extra == {"a": 1, "b": 2}  # mappings add up
    assert cfg.inner == Inner(hop=5, queue=3)  # a nested config: the flag over the file, the file over defaults


def test_an_unknown_yaml_key_is_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("frames: 4\nfrmaes: 5\n")
    with pytest.raises(ValueError, match=r"s\.yaml: unknown key\(s\) frmaes; known keys: name, frames"):
        parse(["--config", str(path)])
    path.write_text("inner: {hopp: 1}\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) inner\.hopp"):
        parse(["--config", str(path)])


@pytest.mark.parametrize("text, field", [
    ("frames: '8'", "frames"),
    ("frames: 2.5", "frames"),
    ("fast: 1", "fast"),
    ("rate: fast", "rate"),
    ("workers: 3", "workers"),
    ("extra: [1]", "extra"),
    ("inner: {hop: x}", "inner.hop"),
])
def test_a_value_of_the_wrong_type_names_its_source_and_field(tmp_path: Path, text: str, field: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ValueError, match=f"^{path}: {field}: expected "):
        parse(["--config", str(path)])


def test_build_config_applies_values_to_a_base_and_names_its_source() -> None:
    base = Settings(extra={"a": 1})
    cfg = build_config(Settings, {"extra": {"b": 2}, "frames": 3}, base=base, source="here")
    assert cfg.extra == {"a": 1, "b": 2} and cfg.frames == 3 and base.frames == 16
    with pytest.raises(ValueError, match="^here: frames: expected an integer, got 'x'"):
        build_config(Settings, {"frames": "x"}, source="here")


def test_a_bad_flag_value_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(["--name", "photo"])
    assert "argument --name: invalid choice: 'photo'" in capsys.readouterr().err


def test_need_path_names_the_field(tmp_path: Path) -> None:
    need_path("data_root", str(tmp_path), folder=True)
    with pytest.raises(FileNotFoundError, match="^data_root: .*: no such folder"):
        need_path("data_root", str(tmp_path / "missing"), folder=True)
    with pytest.raises(ValueError, match="^weights: .*: expected a file, found a folder"):
        need_path("weights", str(tmp_path))
