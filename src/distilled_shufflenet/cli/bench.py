"""``dsn bench``: parameters, multiply-accumulates, CPU latency and FPS of models, per execution path."""

from __future__ import annotations

import argparse

from distilled_shufflenet.bench import BenchConfig, format_report, run_benchmark, write_json
from distilled_shufflenet.options import add_config_arguments, config_from_args


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="speed and size of models on this CPU (params, MACs, latency, FPS per execution path)",
        description=(
            "Time every model in every execution path in one process, interleaved round-robin, at batch "
            "1 and 16x224x224 by default (the paper's FPS setting), and print one table. "
            "Defaults < --config FILE.yaml < flags."
        ),
    )
    add_config_arguments(p, BenchConfig)
    p.add_argument("--json", metavar="PATH", default=None, help="also write the figures to this JSON file")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    report = run_benchmark(config_from_args(BenchConfig, args))
    print(format_report(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return 0
