"""``dsn demo``: the method's whole story at CPU scale, on data the project generates.

::

    source SynthActions (own seed: other actors, scenes, clothes), labelled
        -> a narrow 3D teacher and a narrow 2D teacher          (or --teachers-from DIR: their files)
    target SynthActions (the default seed): the user's footage
        -> distil the student from both teachers on its training videos, no label read
           (and from each teacher alone: the ablation); one teacher cache of both teachers, built by
           the first distillation, serves them all
        -> fine-tune each on a labelled fraction of the training actor groups (fixed step budget)
        -> baselines: the student from scratch on the same labels, and on all target labels
    every model's last.pt scored on the target test split (clip and video level); nothing is selected
    on the test split
    bench: parameters, GMACs, CPU FPS of the student and the teachers at the demo input and 16x224x224
    -> RUN/results.md, RUN/results.json, RUN/accuracy_fps.png, RUN/stages/<stage>/ (every stage's run)

A stage whose run folder holds a finished ``last.pt`` made with the same config is reused; one that
stopped part-way is resumed; so a rerun (or an interrupted run) finishes quickly.  Every number of the
recipe is a field of :class:`DemoConfig`.

Modules: :mod:`~distilled_shufflenet.demo.config` (the settings and their checks),
:mod:`~distilled_shufflenet.demo.stages` (reuse or resume of a stage, its runner, the progress line),
:mod:`~distilled_shufflenet.demo.run` (the run, step by step), :mod:`~distilled_shufflenet.demo.report`
(results.json, results.md, the chart) and :mod:`~distilled_shufflenet.demo.summaries` (several seeds).
"""

from distilled_shufflenet.demo.config import DISTILL_MODES, SHIPPED_TEACHERS, TEACHER_FILES, DemoConfig, check_teacher_files
from distilled_shufflenet.demo.report import ROWS, accuracy_fps_chart, collect_results, results_markdown
from distilled_shufflenet.demo.run import annotate_test_video, check_run_folder, export_teacher, labelled_split, run_demo
from distilled_shufflenet.demo.stages import DemoResult, Progress, epochs_for_steps, run_stage, stage_config, stage_state
from distilled_shufflenet.demo.summaries import seed_summary, seed_summary_chart, seed_summary_markdown

__all__ = [
    "DISTILL_MODES",
    "DemoConfig",
    "DemoResult",
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
    "labelled_split",
    "results_markdown",
    "run_demo",
    "run_stage",
    "seed_summary",
    "seed_summary_chart",
    "seed_summary_markdown",
    "stage_config",
    "stage_state",
]
