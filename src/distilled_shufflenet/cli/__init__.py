"""The ``dsn`` command: a thin layer over the library.

Each subcommand lives in its own module here, exposing ``register(subparsers)``; it parses its flags,
builds the typed config, calls one library function and prints the result.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand modules, in the order `dsn --help` lists them
_COMMAND_MODULES = ("bench", "data", "train", "distill", "evaluate", "demo")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsn",
        description=(
            "distilled-shufflenet: distil a real-time (2+1)D ShuffleNet action recogniser from a 2D image "
            "teacher and a 3D video teacher, without labels; fine-tune, evaluate and benchmark it."
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
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError) as e:
        # bad input: a clear message, not a traceback
        print(f"dsn {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
