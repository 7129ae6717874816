"""``dsn bench``: parameters, multiply-accumulates, CPU latency and FPS of models, per execution path."""

from __future__ import annotations

import argparse

from distilled_shufflenet.bench import (
    DEFAULT_MODELS,
    DEFAULT_PATHS,
    DEFAULT_REFERENCE,
    PATHS,
    RENAMED,
    BenchConfig,
    format_report,
    parse_models,
    run_benchmark,
    write_json,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "bench",
        help="speed and size of models on this CPU (params, MACs, latency, FPS per execution path)",
        description=(
            "Time every model in every execution path in one process, interleaved round-robin, at batch "
            "1 and 16x224x224 by default (the paper's FPS setting), and print one table."
        ),
    )
    p.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help=(
            "comma-separated registered models (see 'dsn models'), each optionally followed by builder "
            "arguments: NAME:KEY=VALUE,KEY=VALUE,NEXT_NAME,... A piece with '=' and no ':' is one more argument "
            "of the model before it. Values are YAML scalars (10, 0.5, true, mean); lists are written 8|16|32 "
            "or [8,16,32]. E.g. 'shufflenet2plus1d:num_classes=10,widths=8|16|32,r2plus1d_18' is two models; "
            "'shufflenet2plus1d:clip_len=8' (or head_pool=mean) times the student with --frames 8; "
            "'input=8x112' times that model at 8x112x112 instead of --frames/--size, 'input=own' at the clip "
            "it expects. An exported .onnx file is run in ONNX Runtime as it is (default: %(default)s)"
        ),
    )
    p.add_argument(
        "--paths",
        default=None,
        help=f"comma-separated paths out of {', '.join(PATHS)}: every backend of 'dsn predict --backend' by its "
        "name, plus fp32 (the model eager as built, the baseline) and fp32+cl3d (channels-last-3d). The old names "
        + ", ".join(f"{a}={b}" for a, b in RENAMED.items()) + f" still work. Default: {','.join(DEFAULT_PATHS)}, "
        "plus torch-compile,torch-compile-bf16,torch-int8 with --compile; paths this CPU cannot run are "
        "skipped with the reason",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="add the compiling paths (torch-compile, torch-compile-bf16, torch-int8) to the default set (a minute "
        "or more to start for the paper preset; with --paths, name them there)",
    )
    p.add_argument(
        "--force-bf16", action="store_true",
        help="time the PyTorch bf16 paths even where this CPU only emulates bf16 (ov-bf16 stays skipped there)"
    )
    p.add_argument("--frames", type=int, default=16, help="frames per clip (default: %(default)s)")
    p.add_argument("--size", type=int, default=224, help="height and width in pixels (default: %(default)s)")
    p.add_argument("--batch", type=int, default=1, help="clips per call (default: %(default)s)")
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per model and path (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=10, help="timed calls per model and path (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's default)")
    p.add_argument(
        "--reference",
        default=DEFAULT_REFERENCE,
        help="model the first one is compared with, path by path (default: %(default)s)",
    )
    p.add_argument(
        "--own-input",
        action="store_true",
        help="also time every model at the clip it expects (its clip length and crop, e.g. 13x160x160 for "
        "x3d_s) where that differs from its input",
    )
    p.add_argument("--json", metavar="PATH", default=None, help="also write the figures to this JSON file")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    paths = None if args.paths is None else tuple(s.strip() for s in args.paths.split(","))
    config = BenchConfig(
        models=parse_models(args.models),
        frames=args.frames,
        size=args.size,
        batch=args.batch,
        paths=paths,
        compile=args.compile,
        force_bf16=args.force_bf16,
        warmup=args.warmup,
        repeats=args.repeats,
        threads=args.threads,
        reference=args.reference,
        own_input=args.own_input,
        progress=not args.no_progress,
    )
    report = run_benchmark(config)
    print(format_report(report))
    if args.json:
        print(f"wrote {write_json(report, args.json)}")
    return 0

