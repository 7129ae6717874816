"""``dsn demo``: flags (and --config FILE.yaml) -> DemoConfig -> the library's run_demo()."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import signal
import sys
from pathlib import Path

from distilled_shufflenet import demo
from distilled_shufflenet.engine.loop import RunInterrupted
from distilled_shufflenet.io import atomic_write_text
from distilled_shufflenet.options import add_config_arguments, config_from_args, load_yaml

_EPILOG = """\
what it does:
  Generates a target SynthActions (24 training actors, 20 test actors: 240 training and 200 test videos of
  10 classes), takes two narrow teachers trained on a labelled source of other actors (by default the ones
  the project ships, made by `dsn demo --train-teachers DIR`; --teachers-from reads other files), distils
  the small student from both teachers on the target's training videos without labels, fine-tunes it on
  the labels of 20 % of them (--label-fraction), scores it also as a linear probe, trains the same student
  from scratch on the same labels for as many steps as distillation and fine-tuning took (equal compute),
  scores every model's last.pt on the test videos with 95 % bootstrap intervals and paired margins, benches
  them, and writes results.md, results.json and accuracy_fps.png. Stages already done are reused.
  --study runs the label-efficiency curve instead (fractions x settings x seeds, each seed distilling
  60 epochs per teacher setting: hours on 2 cores; --study-settings, fewer fractions or seeds cut it).

examples:
  dsn demo                                     # the default run with the shipped teachers, into runs/demo
  dsn demo --quick --output runs/demo_quick    # tiny data, 1-2 epochs per stage, own tiny teachers: a minute
  dsn demo --train-teachers teachers/          # train the teachers too, and write them there
  dsn demo --teachers-from teachers/           # start from those teachers (teacher3d.pt, teacher2d.pt)
  for s in 0 1 2; do dsn demo --seed $s --output runs/demo_seed$s; done
  dsn demo --summary runs/demo_seed0 runs/demo_seed1 runs/demo_seed2 --output runs/demo_seeds
  dsn demo --study --output runs/study         # 5 fractions x 3 settings x 3 seeds, study.png
  dsn demo --study --study-seeds 0 --study-fractions 0.1,1 --output runs/study_small
  dsn demo --study --study-fractions 0.1,1 --study-settings distilled_both,distilled_3d --output runs/study_2t
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    text = "the method end to end at CPU scale: teachers, distillation, fine-tuning, baselines, table, chart"
    parser = subparsers.add_parser("demo", help=text, description=text[0].upper() + text[1:] + ".",
                                   epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(parser, demo.DemoConfig)
    parser.add_argument("--quick", action="store_true", help="tiny data and 1-2 epochs per stage (the test's run)")
    parser.add_argument("--summary", nargs="+", metavar="RUN", default=None,
                        help="run nothing: the mean and min-max of every model's top-1 over finished demo run "
                             "folders (e.g. three seeds), and the students' margins over equal-compute scratch "
                             "with each run's interval; "
                             "printed, and written to --output as summary.md, summary.json and summary.png "
                             "(accuracy against FPS with the min-max range) when given")
    parser.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    if args.summary:
        return _summary(args)
    config = config_from_args(demo.DemoConfig, args, make=demo.DemoConfig.quick if args.quick else demo.DemoConfig)
    if config.study and not _output_given(args):  # a study beside the single run, not mixed into its folder
        config = dataclasses.replace(config, output=STUDY_OUTPUT[bool(args.quick)])
    if config.teachers_from is None and config.export_teachers is None and not args.quick:
        config = dataclasses.replace(config, teachers_from=str(demo.SHIPPED_TEACHERS))
        print(f"teachers: the shipped demo teachers ({demo.SHIPPED_TEACHERS}); --train-teachers DIR trains them instead")
    try:
        result = (demo.run_study if config.study else demo.run_demo)(config)
    except (RunInterrupted, KeyboardInterrupt) as e:
        # the stage under way wrote a checkpoint (or had its last one) and the finished ones are kept: the same
        # command reuses them and resumes it, which is the advice to give rather than the stage's own --resume
        name = signal.Signals(e.signum).name if isinstance(e, RunInterrupted) else "SIGINT"
        print(f"dsn demo: interrupted ({name}); the finished stages (and the last checkpoint of the one under way) "
              f"are kept in {config.output}; run the same command again to continue from there:\n"
              f"  {_same_command(args, config)}", file=sys.stderr)
        return e.exit_code if isinstance(e, RunInterrupted) else 130
    print(f"stages run: {len(result.ran)}, reused: {len(result.reused)}")
    return 0


STUDY_OUTPUT = {False: "runs/study", True: "runs/study_quick"}  # --study's folder when --output is not given


def _names_output(words: list[str]) -> bool:
    """Whether a command line's words name the output folder."""
    return any(w == "--output" or w.startswith("--output=") for w in words)


def _output_given(args: argparse.Namespace) -> bool:
    """Whether the command line or its --config file names the output folder."""
    if _names_output(getattr(args, "typed", [])):
        return True
    return bool(args.config) and "output" in (load_yaml(args.config) or {})


def _same_command(args: argparse.Namespace, config: demo.DemoConfig) -> str:
    """The ``dsn demo`` command that continues this run: the one typed, every flag kept (a study's
    included), with the output folder spelt out where it was left to its default."""
    words = ["dsn", *getattr(args, "typed", ["demo"])]
    if not _names_output(words):
        words += ["--output", config.output]
    return " ".join(shlex.quote(w) for w in words)


def _summary(args: argparse.Namespace) -> int:
    summary = demo.seed_summary([Path(p) for p in args.summary])
    text = demo.seed_summary_markdown(summary)
    print(text, end="")
    output = getattr(args, "output", None)
    if output:
        out = Path(output)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(text, out / "summary.md")
        atomic_write_text(json.dumps(summary, indent=2) + "\n", out / "summary.json")
        demo.seed_summary_chart(summary, out / "summary.png")
        print(f"written: {out / 'summary.md'}, {out / 'summary.json'}, {out / 'summary.png'}")
    return 0
