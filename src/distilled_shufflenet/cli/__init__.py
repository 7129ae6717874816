"""The ``dsn`` command: a thin layer over the library.

Each subcommand lives in its own module here, exposing ``register(subparsers)``; it parses its flags,
builds the typed config, calls one library function and prints the result.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order `dsn --help` lists them
_COMMAND_MODULES = ("demo", "models", "bench", "data", "train", "distill", "distill_report", "evaluate", "predict", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsn",
        description=(
            "distilled-shufflenet: distil a real-time (2+1)D ShuffleNet action recogniser from a 2D image "
            "teacher and a 3D video teacher, without labels; fine-tune, evaluate, benchmark, export and run it."
        ),
    )
    from distilled_shufflenet import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(f"distilled_shufflenet.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.typed = list(sys.argv[1:] if argv is None else argv)  # the command as typed, for advice to rerun it
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as e:
        # bad input or an unusable path: a clear message in the words of the command typed, not a traceback
        print(f"{command_name(args)}: error: {_message(e)}", file=sys.stderr)
        return 2


def command_name(args: argparse.Namespace) -> str:
    """The command as typed, e.g. ``dsn data check``."""
    return " ".join(["dsn", args.command] + ([args.data_command] if getattr(args, "data_command", None) else []))


def _message(error: BaseException) -> str:
    """An error's text for the command line: the flag form of its advice where it has one, and for an
    operating-system error the file and the reason instead of a raw errno."""
    if hasattr(error, "cli_message"):
        return error.cli_message()
    if isinstance(error, OSError) and not isinstance(error, FileNotFoundError) and error.strerror:
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror.lower()}"
    if isinstance(error, FileNotFoundError) and error.strerror and error.filename:
        return f"{error.filename}: no such file or folder"
    return str(error)


if __name__ == "__main__":
    sys.exit(main())
