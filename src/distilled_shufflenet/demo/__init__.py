"""``dsn demo``: the method's whole story at CPU scale, on data the project generates.

::

    source SynthActions (own seed: other actors, scenes, clothes), labelled
        -> a narrow 3D teacher and a narrow 2D teacher          (or --teachers-from DIR: their files)
    target SynthActions (the default seed): the user's footage
        -> distil the student from both teachers on its training videos, no label read
        -> fine-tune it on a labelled share of the training videos (by class, whole actors); its linear probe
        -> baseline: the student from scratch on the same labels for as many steps as distillation +
           fine-tuning (equal compute)
    every model's last.pt scored on the target test split (clip and video level, 95 % bootstrap intervals,
    margins paired over the test videos); nothing is selected on the test split
    --study: label fractions x {both teachers, the 3D teacher, equal-compute scratch} x seeds, and a
    validation-stopped scratch reference on all labels: the label-efficiency curve
    bench: parameters, GMACs, CPU FPS of the student and the teachers at the demo input and 16x224x224
    -> RUN/results.md, RUN/results.json, RUN/accuracy_fps.png, RUN/stages/<stage>/ (every stage's run)

A stage whose run folder holds a finished ``last.pt`` made with the same config is reused; one that
stopped part-way is resumed; so a rerun (or an interrupted run) finishes quickly.  Every number of the
recipe is a field of :class:`DemoConfig`.

Modules: :mod:`~distilled_shufflenet.demo.config` (the settings and their checks),
:mod:`~distilled_shufflenet.demo.stages` (reuse or resume of a stage, its runner, the progress line),
:mod:`~distilled_shufflenet.demo.run` (the run, step by step), :mod:`~distilled_shufflenet.demo.report`
(results.json, results.md, the chart), :mod:`~distilled_shufflenet.demo.summaries` (several seeds) and
:mod:`~distilled_shufflenet.demo.study` (the label-efficiency study).
"""

from distilled_shufflenet.demo.config import DISTILL_MODES, SHIPPED_TEACHERS, TEACHER_FILES, DemoConfig, check_teacher_files
from distilled_shufflenet.demo.report import ROWS, accuracy_fps_chart, collect_results, results_markdown
from distilled_shufflenet.demo.run import DemoSteps, annotate_test_video, check_run_folder, export_teacher, run_demo, write_splits
from distilled_shufflenet.demo.study import run_study
from distilled_shufflenet.demo.stages import DemoResult, Progress, epochs_for_steps, run_stage, stage_config, stage_state
from distilled_shufflenet.demo.summaries import seed_summary, seed_summary_chart, seed_summary_markdown

__all__ = [
    "DISTILL_MODES",
    "DemoConfig",
    "DemoResult",
    "DemoSteps",
    "Progress",
    "ROWS",
    "SHIPPED_TEACHERS",
    "TEACHER_FILES",
    "accuracy_fps_chart",
    "annotate_test_video",
    "check_run_folder",
    "check_teacher_files",
    "collect_results",
    "epochs_for_steps",
    "export_teacher",
    "results_markdown",
    "run_demo",
    "run_stage",
    "run_study",
    "seed_summary",
    "seed_summary_chart",
    "seed_summary_markdown",
    "stage_config",
    "stage_state",
    "write_splits",
]
