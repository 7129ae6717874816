"""Training curves and confusion matrices are written as real, non-trivial PNG files."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from distilled_shufflenet.engine.plots import plot_confusion, plot_curves, read_curves

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

LOG = """epoch,step,train_loss,train_top1,val_loss,val_top1,val_top5,lr,clips_per_s,data_wait_share
1,10,2.40,0.05,,,,0.001,40.0,0.10
1,20,2.30,0.10,2.35,0.08,0.40,0.001,41.0,0.10
2,40,1.90,0.30,,,,0.001,40.5,0.20
3,60,1.50,0.45,1.70,0.35,0.75,0.0001,40.1,0.10
"""


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def test_read_curves_keeps_the_last_value_of_each_epoch(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(LOG)
    curves = read_curves(tmp_path / "log.csv")
    assert curves["epoch"].tolist() == [1.0, 2.0, 3.0]
    assert curves["train_loss"].tolist() == [2.30, 1.90, 1.50]
    assert curves["val_top1"][0] == 0.08 and math.isnan(curves["val_top1"][1]) and curves["val_top1"][2] == 0.35


def test_plot_curves_writes_a_png(tmp_path: Path) -> None:
    (tmp_path / "log.csv").write_text(LOG)
    out = plot_curves(tmp_path / "log.csv", tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    width, height = _png_size(out)
    assert width >= 600 and height >= 300
    assert out.stat().st_size > 10_000  # two panels of axes, lines and text, not a blank image
    assert not [p for p in out.parent.iterdir() if p.name != "curves.png"]  # no temporary file left


def test_plot_curves_with_only_a_header_and_no_validation(tmp_path: Path) -> None:
    log = tmp_path / "log.csv"
    log.write_text(LOG.splitlines()[0] + "\n")
    assert _png_size(plot_curves(log, tmp_path / "empty.png"))[0] > 0
    log.write_text(LOG.splitlines()[0] + "\n1,10,2.0,0.1,,,,0.1,1,0\n")
    assert _png_size(plot_curves(log, tmp_path / "train_only.png"))[0] > 0


def test_plot_curves_names_the_file_on_bad_input(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        plot_curves(tmp_path / "missing.csv", tmp_path / "x.png")
    bad = tmp_path / "bad.csv"
    bad.write_text("epoch,train_loss\n1,abc\n")
    with pytest.raises(ValueError, match=r"bad.csv, line 2"):
        plot_curves(bad, tmp_path / "x.png")
    (tmp_path / "nohead.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="epoch"):
        plot_curves(tmp_path / "nohead.csv", tmp_path / "x.png")


@pytest.mark.parametrize("num_classes", [5, 101])
def test_plot_confusion_writes_a_png_for_few_and_many_classes(tmp_path: Path, num_classes: int) -> None:
    rng = np.random.default_rng(0)
    matrix = np.diag(rng.integers(3, 10, num_classes)) + rng.integers(0, 2, (num_classes, num_classes))
    matrix[0] = 0  # a class without any video must not break the row normalisation
    classes = [f"Class{i:03d}" for i in range(num_classes)]
    out = plot_confusion(matrix, classes, tmp_path / f"confusion_{num_classes}.png", "test split")
    width, height = _png_size(out)
    assert width >= 500 and height >= 500
    assert out.stat().st_size > 10_000


def test_plot_confusion_checks_the_matrix_shape(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        plot_confusion(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "x.png")


def test_the_run_log_redraws_its_curves_at_most_every_few_seconds_and_on_close(tmp_path: Path, monkeypatch) -> None:
    import distilled_shufflenet.engine.plots as plots
    from distilled_shufflenet.engine.runlog import RunLog

    drawn: list[int] = []  # the rows log.csv held at each drawing
    monkeypatch.setattr(plots, "plot_curves",
                        lambda csv, png: drawn.append(len(csv.read_text().splitlines()) - 1))
    log = RunLog(tmp_path, ("epoch", "step", "train_loss"), enabled=True, tensorboard=False, plots=True,
                 resume_step=None)
    for epoch in range(1, 6):  # five short epochs in well under plot_every seconds
        log.row({"epoch": epoch, "step": epoch * 7, "train_loss": 1.0 / epoch})
    assert drawn == [1]
    log.plot_every = 0.0
    log.row({"epoch": 6, "step": 42, "train_loss": 0.1})
    assert drawn == [1, 6]
    log.close()  # nothing new since the last drawing
    assert drawn == [1, 6]
    log.plot_every = 3600.0
    log.row({"epoch": 7, "step": 49, "train_loss": 0.05})
    log.close()  # the end of the run draws every row
    assert drawn == [1, 6, 7]
