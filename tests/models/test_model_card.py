"""``model_card`` and ``dsn models``: what the registry says about each model."""

from __future__ import annotations

import json

import pytest
import torch

from distilled_shufflenet.cli import main
from distilled_shufflenet.models import create_model, list_models, model_card

# models whose builders say which published checkpoints load into them
DOCUMENTED = ("shufflenet2plus1d", "resnet18", "resnet34", "resnet50", "resnet101", "r3d_18", "mc3_18",
              "r2plus1d_18", "r3d_50")


@pytest.mark.parametrize("name", list_models())
def test_card_describes_the_default_build(name: str) -> None:
    card = model_card(name)
    with torch.device("meta"):
        model = create_model(name)
    assert card.name == name and card.parameters == sum(p.numel() for p in model.parameters()) > 0
    assert card.taps == tuple(model.feature_info) and card.summary
    assert "num_classes" in card.arguments


def test_known_figures_and_checkpoints() -> None:
    assert model_card("resnet18").parameters == 11_689_512  # torchvision's count
    student = model_card("shufflenet2plus1d")
    assert [(t.name, t.channels, t.stride) for t in student.taps] == [("mid", 256, (4, 16, 16)),
                                                                      ("final", 512, (8, 32, 32))]
    assert student.arguments["widths"] == (64, 128, 256) and "own" in student.checkpoints
    assert "Kinetics-400" in model_card("r3d_18").checkpoints
    assert "r3d50_K_200ep.pth" in model_card("r3d_50").checkpoints
    assert "ImageNet" in model_card("resnet101").checkpoints
    for name in DOCUMENTED:
        assert model_card(name).checkpoints != "not stated by its builder", name
    with pytest.raises(ValueError, match="unknown model 'nope'; known models"):
        model_card("nope")


def test_dsn_models_lists_every_registered_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name in list_models():
        assert f"\n{name}  (" in f"\n{text}", name
    assert text.count("  taps:        mid ") == len(list_models())
    assert "shufflenet2plus1d  (17.68 M parameters)" in text
    assert main(["models", "r3d_18", "--json"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["taps"] == [{"name": "mid", "channels": 256, "stride": [4, 8, 8]},
                             {"name": "final", "channels": 512, "stride": [8, 16, 16]}]
    assert entry["parameters"] == 33_371_472 and entry["arguments"]["widen_factor"] == 1.0


def test_dsn_bench_documents_the_models_syntax_and_hints_clip_len(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "NAME:KEY=VALUE,KEY=VALUE,NEXT_NAME" in text and "8|16|32" in text and "clip_len=8" in text
    tiny = "shufflenet2plus1d:widths=8|16|32,units=1|1|1,adapter_channels=16|32"
    rc = main(["bench", "--models", tiny, "--frames", "8", "--size", "32", "--warmup", "0", "--repeats", "1",
               "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "add clip_len=8 to its builder arguments" in err and "'shufflenet2plus1d:clip_len=8'" in err
