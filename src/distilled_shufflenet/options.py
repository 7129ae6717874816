"""Typed configs as command-line flags and YAML files: one mechanism for every ``dsn`` command.

A command's config is a dataclass whose fields are made with :func:`option` (help text, choices, the
flag's name, a parser for text values) and whose ``validate()`` checks the values, naming the field.

    @dataclass
    class Settings:
        frames: int = option(16, "frames per clip")
        size: tuple[int, int] = option((160, 120), "frame size", parse=parse_size, metavar="WxH")

    add_config_arguments(parser, Settings)        # --frames N, --size WxH, --config FILE.yaml
    config = config_from_args(Settings, parser.parse_args(argv))   # defaults < YAML < flags

Every value, from a YAML file or a flag, is checked against its field's type hint, and a wrong one is a
``ValueError`` naming the source (the file, or "command line") and the field.  Flags default to "not
given", so that only what the user typed overrides the YAML file.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import yaml

__all__ = ["add_config_arguments", "build_config", "coerce", "config_from_args", "field_default", "flag_of",
           "flag_values", "load_yaml", "merge_values", "need_path", "option", "plain"]

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, help: str = "", *, choices: tuple[Any, ...] | None = None,
           flag: str | tuple[str, ...] | None = None, metavar: str | tuple[str, ...] | None = None,
           parse: Callable[[Any], Any] | None = None, group: str | None = None,
           default_factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field that is also a command-line flag.

    ``flag`` replaces the flag made from the field's name (``batch_size`` -> ``--batch-size``), or is
    several spellings of it (``("--output", "-o")``, the first named in messages);
    ``parse`` turns a text value (the flag's, a YAML string or list of strings) into the field's value,
    for values written in a syntax of their own (``160x120``, comma lists), and its result is taken as
    it is;
    ``group`` places the flag under that heading of the help.  A list or dict default is copied per
    instance.
    """
    meta = {"help": help, "choices": choices, "flag": flag, "metavar": metavar, "parse": parse, "group": group}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_default(f: dataclasses.Field) -> Any:
    """A field's default value (a fresh one from its factory), or ``dataclasses.MISSING`` if it has none."""
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


def flag_of(f: dataclasses.Field) -> str:
    """The flag of a field, as the user types it."""
    return _flags(f)[0]


def _flags(f: dataclasses.Field) -> tuple[str, ...]:
    flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
    return (flag,) if isinstance(flag, str) else tuple(flag)


def plain(value: Any) -> Any:
    """``value`` as YAML and JSON write it: tuples as lists, mappings with string keys."""
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    return value


def need_path(name: str, value: str | None, *, folder: bool | None = False) -> None:
    """Raise naming ``name`` unless ``value`` (when given) is an existing file (``folder=False``), folder
    (``True``) or either (``None``)."""
    if value is None:
        return
    path = Path(value)
    if not path.exists():
        raise FileNotFoundError(f"{name}: {value}: no such {'folder' if folder else 'file'}")
    if folder is True and not path.is_dir():
        raise ValueError(f"{name}: {value}: expected a folder, found a file")
    if folder is False and not path.is_file():
        raise ValueError(f"{name}: {value}: expected a file, found a folder")


def need_ints(config: Any, lowest: Mapping[str, int]) -> None:
    """Raise naming the first field of ``config`` in ``lowest`` that is not an integer at least its value."""
    for name, low in lowest.items():
        value = getattr(config, name)
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")


# --------------------------------------------------------------------------- values and their types
def _optional(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> ``(X, True)``; any other hint -> ``(hint, False)``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and len(inner) < len(typing.get_args(hint)):
            return inner[0], True
    return hint, False


def coerce(name: str, hint: Any, value: Any, source: str) -> Any:
    """``value`` checked against the field's type hint (ints are accepted for floats, lists for tuples,
    a mapping for a nested config); a ``ValueError`` names ``source`` and the field otherwise."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return coerce(name, inner, value, source)
    bad = ValueError(f"{source}: {name}: expected {_describe(hint)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        if isinstance(value, hint):
            return value
        if not isinstance(value, Mapping):
            raise bad
        return merge_values(hint, [(value, source)], prefix=f"{name}.")
    if hint is bool:
        if not isinstance(value, bool):
            raise bad
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise bad
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad
        return dict(value)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad
        return tuple(coerce(name, args[0], v, source) for v in value)
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise bad
        return tuple(coerce(name, a, v, source) for a, v in zip(args, value))
    if origin is list:
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise bad
        return [coerce(name, args[0], v, source) for v in value]
    raise TypeError(f"{name}: unsupported config type {hint}")


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        return f"a list of {_describe(args[0])}s"
    if origin is tuple:
        return f"a list of {len(args)} numbers"
    if origin is list:
        return f"a list of {_describe(args[0])}s"
    if hint is dict or origin is dict:
        return "a mapping of names to values"
    if dataclasses.is_dataclass(hint):
        return f"a mapping of {', '.join(f.name for f in dataclasses.fields(hint))}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def merge_values(cls: type, layers: Iterable[tuple[Mapping[str, Any], str]], *, prefix: str = "") -> dict[str, Any]:
    """The field values of ``cls`` that ``layers`` set, later layers winning: each layer is ``(values,
    source)``, each value checked against its field (or parsed by its ``parse``), unknown keys refused
    naming the source.  Mappings add up (builder arguments from YAML, then from flags); a nested config
    is built from the values given for it."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    nested: dict[str, list[tuple[Mapping[str, Any], str]]] = {}
    for values, source in layers:
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{source}: unknown key(s) {', '.join(prefix + k for k in unknown)}; known keys: "
                             f"{', '.join(prefix + k for k in fields)}")
        for key, value in values.items():
            hint, _ = _optional(hints[key])
            parse = fields[key].metadata.get("parse")
            if parse is not None and _is_text(value):
                out[key] = parse(value)
            elif parse is not None:  # a flag's value, which argparse parsed already
                out[key] = value
            elif dataclasses.is_dataclass(hint) and isinstance(value, Mapping):
                nested.setdefault(key, []).append((value, source))
            else:
                value = coerce(prefix + key, hints[key], value, source)
                if isinstance(value, dict) and isinstance(out.get(key), dict):
                    value = {**out[key], **value}
                out[key] = value
    for key, given in nested.items():
        hint, _ = _optional(hints[key])
        out[key] = hint(**merge_values(hint, given, prefix=f"{prefix}{key}."))
    return out


def _is_text(value: Any) -> bool:
    """A string, or a list of strings: what a ``parse`` hook reads."""
    if isinstance(value, (list, tuple)):
        return all(isinstance(v, str) for v in value)
    return isinstance(value, str)


def build_config(cls: type[T], values: Mapping[str, Any], *, base: T | None = None, source: str = "config") -> T:
    """``base`` (or the defaults of ``cls``) with ``values`` applied, each checked against its field's type.

    Unknown keys raise ``ValueError`` naming them and ``source`` (a YAML file, "command line", ...).
    """
    current = {f.name: getattr(base, f.name) for f in dataclasses.fields(cls)} if base is not None else {}
    # the base's mappings come first, so that given builder arguments add to them
    layers = [({k: v for k, v in current.items() if isinstance(v, dict)}, source), (values, source)]
    return cls(**{**current, **merge_values(cls, layers)})


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file (empty file = no overrides)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"config: {path} is a folder; expected a YAML file of config values")
    if not path.is_file():
        raise FileNotFoundError(f"config: {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config: {path}: not valid YAML ({e})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"config: {path}: expected a mapping of keys to values, got {type(data).__name__}")
    return data


# --------------------------------------------------------------------------- command line
def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, hidden: Iterable[str] = ()) -> None:
    """One flag per :func:`option` field of ``cls`` plus ``--config FILE.yaml``.

    Booleans are ``--flag/--no-flag``, mappings ``KEY=VALUE`` (repeatable), lists repeatable, tuples
    their number of values; a field with ``parse`` takes one text value.  Fields without help text, and
    those named in ``hidden`` or the class's ``cli_hidden``, have no flag (a YAML file may still set
    them).  A nested config's fields are flags too.  Flags default to "not given".
    """
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML file of config values (flags override it)")
    _add_fields(parser, cls, set(hidden) | set(getattr(cls, "cli_hidden", ())), prefix="", groups={})


def _add_fields(parser: argparse.ArgumentParser, cls: type, hidden: set[str], prefix: str,
                groups: dict[str, argparse._ArgumentGroup]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        inner, _ = _optional(hints[f.name])
        if f.name in hidden:
            continue
        if dataclasses.is_dataclass(inner):
            _add_fields(parser, inner, set(getattr(inner, "cli_hidden", ())), f"{prefix}{f.name}.", groups)
            continue
        if not f.metadata.get("help"):
            continue
        where: Any = parser
        if f.metadata.get("group"):
            if f.metadata["group"] not in groups:
                groups[f.metadata["group"]] = parser.add_argument_group(f.metadata["group"])
            where = groups[f.metadata["group"]]
        default = field_default(f)
        shown = default not in (dataclasses.MISSING, None, "") and "default:" not in f.metadata["help"]
        kw: dict[str, Any] = {"dest": prefix + f.name, "default": argparse.SUPPRESS,
                              "help": f.metadata["help"] + (f" (default: {_shown(default)})" if shown else "")}
        origin, args = typing.get_origin(inner), typing.get_args(inner)
        if f.metadata.get("metavar"):
            kw["metavar"] = f.metadata["metavar"]
        elif inner is not bool and not f.metadata.get("choices"):  # choices show as {a,b}, as argparse does
            kw["metavar"] = flag_of(f).lstrip("-").replace("-", "_").upper()  # after the flag, not the nested field
        if f.metadata.get("parse"):
            where.add_argument(*_flags(f), type=_argument_type(f.metadata["parse"]), **kw)
        elif inner is bool:
            where.add_argument(*_flags(f), action=argparse.BooleanOptionalAction, **kw)
        elif inner is dict or origin is dict:
            where.add_argument(*_flags(f), action="append", type=_key_value, **{**kw, "metavar": "KEY=VALUE"})
        elif origin is list:
            where.add_argument(*_flags(f), action="append", type=args[0], **{**kw, "metavar": "VALUE"})
        elif origin is tuple:
            variadic = len(args) == 2 and args[1] is Ellipsis
            where.add_argument(*_flags(f), nargs="+" if variadic else len(args), type=args[0],
                               **{**kw, **({} if variadic else {"metavar": f.metadata.get("metavar") or "X"})})
        else:
            where.add_argument(*_flags(f), type=inner, choices=f.metadata.get("choices"), **kw)


def _argument_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse`` as an argparse type: its ``ValueError`` becomes the usage error naming the flag."""

    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return convert


def _shown(value: Any) -> str:
    """A default as the help prints it: lists with commas, as they are typed."""
    if isinstance(value, (tuple, list)):  # numbers as nargs flags take them, anything else as a comma list
        numbers = all(isinstance(v, (int, float)) for v in value)
        return (" " if numbers else ",").join(map(str, value))
    return str(plain(value))


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, yaml.safe_load(value)
    except yaml.YAMLError:
        return key, value


def flag_values(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of ``cls``'s fields that were given on the command line (positional arguments with a
    field's name included), a nested config's as a mapping."""
    names = {f.name for f in dataclasses.fields(cls)}
    given: dict[str, Any] = {}
    for key, value in vars(args).items():
        outer, _, inner = key.partition(".")
        if outer not in names:
            continue
        if isinstance(value, list) and value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            value = dict(value)  # KEY=VALUE flags arrive as lists of pairs
        if inner:
            given.setdefault(outer, {})[inner] = value
        else:
            given[key] = value
    return given


def config_from_args(cls: type[T], args: argparse.Namespace, *, make: Callable[..., T] | None = None) -> T:
    """The config the command line asks for: defaults < ``--config FILE.yaml`` < flags, each value checked.

    ``make`` builds the config from the values set (default: ``cls`` itself, whose defaults fill the rest),
    for commands whose presets are other defaults (``dsn demo --quick``)."""
    layers = []
    if getattr(args, "config", None) is not None:
        layers.append((load_yaml(args.config), str(args.config)))
    layers.append((flag_values(cls, args), "command line"))
    return (make or cls)(**merge_values(cls, layers))
