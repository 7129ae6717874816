"""``dsn models``: every registered model with its parameters, taps and the checkpoints that load into it."""

from __future__ import annotations

import argparse
import json

from distilled_shufflenet.models import ModelCard, list_models, model_card


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the registered models: parameters, taps, builder arguments, checkpoints that load",
        description=(
            "List every registered model (or those named): parameters of its default build, its taps "
            "(named feature maps, with channels and stride in t, h, w; a tap's size is ceil(input / stride)), "
            "its builder arguments with their defaults (pass them as --model-arg KEY=VALUE to dsn train, or "
            "NAME:KEY=VALUE in dsn bench --models), and which checkpoints load into it as they are."
        ),
    )
    p.add_argument("names", metavar="NAME", nargs="*", help="models to describe (default: all)")
    p.add_argument("--json", action="store_true", help="print the descriptions as JSON")
    p.set_defaults(func=run)


def format_card(card: ModelCard) -> str:
    """A few indented lines describing one model."""
    taps = "; ".join(f"{t.name} {t.channels} ch, stride {','.join(map(str, t.stride))}" for t in card.taps)
    arguments = ", ".join(f"{k}={list(v) if isinstance(v, tuple) else v}" for k, v in card.arguments.items())
    return "\n".join([
        f"{card.name}  ({card.parameters / 1e6:.2f} M parameters)",
        f"  {card.summary}",
        f"  taps:        {taps or 'none'}",
        f"  arguments:   {arguments or 'none'}",
        f"  checkpoints: {card.checkpoints}",
    ])


def run(args: argparse.Namespace) -> int:
    cards = [model_card(name) for name in (args.names or list_models())]
    if args.json:
        print(json.dumps([c.to_dict() for c in cards], indent=2))
    else:
        print("\n\n".join(format_card(c) for c in cards))
    return 0
