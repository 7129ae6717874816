"""dsn distill-report: each target part's variance, the student's error and the share it explains, with the
2D teacher's between-frame share; a known case by hand, a tiny distilled run end to end, clear refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import save as torch_save

from distilled_shufflenet.checkpoint import read_checkpoint
from distilled_shufflenet.cli import main
from distilled_shufflenet.engine.target_fit import add_clip, part_fits

from tests.engine.test_distill import CLIP, QUIET, TEACHERS, student_args


def _t(*values: float) -> torch.Tensor:
    """Scalars on the time axis: ``(1, C=1, T, 1, 1)``."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, -1, 1, 1)


def test_the_figures_of_a_case_worked_by_hand() -> None:
    # two clips of two frames; the 2D targets of clip A are 0 and 2, of clip B 4 and 6; the student predicts
    # each clip's mean (1, 5) on its one 2D slot. The 3D targets are 1 and 3, the student says 1 and 4.
    sums: dict = {}
    add_clip(sums, {"final/2d": _t(1), "final/3d": _t(1)}, {"final/3d": _t(1)}, {"final/2d": _t(0, 2)})
    add_clip(sums, {"final/2d": _t(5), "final/3d": _t(4)}, {"final/3d": _t(3)}, {"final/2d": _t(4, 6)})
    fits = part_fits(sums)
    two, three = fits["final/2d"], fits["final/3d"]
    assert two.variance == pytest.approx(5.0)  # of 0, 2, 4, 6
    assert two.error == pytest.approx(1.0) and two.explained == pytest.approx(0.8)
    assert two.between_frames == pytest.approx(0.2)  # each clip's frames vary by 1 around its mean
    assert two.error_to_mean == pytest.approx(0.0) and two.mean_variance == pytest.approx(4.0)  # means 1 and 5
    assert two.explained_of_mean == pytest.approx(1.0)
    assert three.variance == pytest.approx(1.0) and three.error == pytest.approx(0.5)
    assert three.explained == pytest.approx(0.5) and three.between_frames is None and three.explained_of_mean is None

    # a run distilled on the middle frame (index T // 2: 2 and 6 here) is scored against that frame's target
    sums = {}
    add_clip(sums, {"final/2d": _t(1)}, {"final/2d": _t(2)}, {"final/2d": _t(0, 2)}, frame2d="middle")
    add_clip(sums, {"final/2d": _t(5)}, {"final/2d": _t(6)}, {"final/2d": _t(4, 6)}, frame2d="middle")
    middle = part_fits(sums)["final/2d"]
    assert middle.variance == pytest.approx(4.0) and middle.error == pytest.approx(1.0)  # of 2 and 6; 1 off each
    assert middle.explained == pytest.approx(0.75)
    assert middle.between_frames == pytest.approx(0.2) and middle.explained_of_mean == pytest.approx(1.0)  # as before


def test_every_slot_of_a_part_is_scored_against_every_frame() -> None:
    sums: dict = {}
    for s, frames in ((_t(0, 2), _t(1, 1)), (_t(1, 1), _t(3, 5))):
        add_clip(sums, {"mid/2d": s}, {}, {"mid/2d": frames})
    fit = part_fits(sums)["mid/2d"]
    # clip A: slots 0, 2 against 1 -> 1; clip B: slots 1, 1 against 3, 5 -> (4 + 16) / 2 = 10
    assert fit.error == pytest.approx(5.5)
    # the error splits into the clip-mean error and the between-frame part
    assert fit.error == pytest.approx(fit.error_to_mean + fit.between_frames * fit.variance)


def test_distill_report_of_a_tiny_run(tiny_synth: Path, tmp_path: Path, capsys) -> None:
    run = tmp_path / "distill"
    code = main(["distill", "--data-root", str(tiny_synth), *student_args(), *CLIP, *TEACHERS, *QUIET,
                 "--epochs", "1", "--val-fraction", "0", "--output", str(run)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    out_json = tmp_path / "fit.json"
    assert main(["distill-report", str(run), "--videos", "6", "--no-progress", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "6 train videos" in out and "| final/2d |" in out and "| mid/3d |" in out
    report = json.loads(out_json.read_text())
    assert report["videos"] == 6 and set(report["parts"]) == {"mid/2d", "mid/3d", "final/2d", "final/3d"}
    for key, part in report["parts"].items():
        assert part["variance"] > 0 and part["error"] > 0
        assert part["explained"] == pytest.approx(1 - part["error"] / part["variance"])
        if key.endswith("/2d"):
            assert 0 < part["between_frames"] < 1  # random teachers still see different frames differently
            assert part["error"] == pytest.approx(part["error_to_mean"] + part["between_frames"] * part["variance"],
                                                  rel=1e-4)
        else:
            assert part["between_frames"] is None

    # a run that held nothing out has no validation videos to measure on
    assert main(["distill-report", str(run), "--on", "val", "--no-progress"]) == 2
    assert "held no videos out" in capsys.readouterr().err
    # an unreadable video is skipped and named, not fatal
    broken = tmp_path / "broken"
    shutil.copytree(tiny_synth, broken)
    first = broken / (broken / "trainlist01.txt").read_text().split()[0]  # a training video (g02 on)
    first.write_bytes(b"not a video")
    ckpt = read_checkpoint(run / "last.pt")
    ckpt["config"]["data_root"] = str(broken)
    ckpt["config"].pop("paths_root", None)
    torch_save(ckpt, tmp_path / "moved.pt")
    assert main(["distill-report", str(tmp_path / "moved.pt"), "--videos", "100", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "skipped 1 unreadable videos" in out and first.name in out


def test_distill_report_refuses_a_run_that_is_not_a_distillation(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "trained.pt"
    torch_save({"model_name": "shufflenet2plus1d", "state_dict": {}, "command": "train"}, fake)
    assert main(["distill-report", str(fake), "--no-progress"]) == 2
    assert "not a dsn distill run" in capsys.readouterr().err
