"""references/: the plain PyTorch loop trains, scores and saves a model that loads back."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from posepart import cli
from posepart.data.synth import write_synth

REFERENCES = Path(__file__).resolve().parents[1] / "references"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, REFERENCES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_plain_loop_trains_scores_and_saves_a_model_that_loads_back(tmp_path, capsys):
    plain = _module("train_plain")
    data = write_synth(tmp_path / "synth", n=8, seed=0, size=64)
    out = tmp_path / "plain.safetensors"
    metrics = plain.main(["--train", str(data), "--val", str(data), "--steps", "3", "--batch", "4", "--size", "64",
                          "--width", "0.125", "--out", str(out)])
    printed = capsys.readouterr().out
    assert "step 0: total" in printed and "step 2: total" in printed and f"weights: {out}" in printed
    assert metrics["images"] == 8 and 0.0 <= metrics["pose"]["ap"] <= 1.0
    assert 0.0 < metrics["segmentation"]["mean_iou"] <= 1.0
    from posepart.data.format import PosePartDataset
    from posepart.evaluate_model import evaluate_model

    dataset = PosePartDataset.open(data)
    model = plain.load(out)  # the saved weights score as the trained model did
    assert model.meta.pose_stride == 4 and not model.training and model.meta.sigma == 3.0  # (6 px at 128: at 64, 3)
    again, _ = evaluate_model(model, dataset, input_size=64, progress=False)
    assert again["pose"] == metrics["pose"] and again["segmentation"] == metrics["segmentation"]
    # a walkthrough: the loop saved a bare state dict, which every verb refused ("not posepart weights")
    scored = tmp_path / "scored.json"
    assert cli.main(["evaluate", "--checkpoint", str(out), "--data", str(data), "--out", str(scored)]) == 0
    assert json.loads(scored.read_text())["pose"] == metrics["pose"]
    with pytest.raises(SystemExit):  # fewer images than a batch: refused (before: an endless loop over no batch)
        plain.main(["--train", str(data), "--val", str(data), "--batch", "9", "--steps", "1"])
    assert "--batch 9: " in (err := capsys.readouterr().err) and "has only 8 images" in err
    # before: a ZeroDivisionError, a ValueError traceback, a whole training lost to a name save_weights refuses
    for wrong in (["--steps", "0"], ["--size", "100"], ["--out", str(tmp_path / "plain.pt")]):
        with pytest.raises(SystemExit):
            plain.main(["--train", str(data), "--val", str(data), *wrong])
        err = capsys.readouterr().err
        assert err.count("error:") == 1 and "--set" not in err  # (a walkthrough: "--set: data.input_size ...")
    refused = _refusal(plain, ["--train", str(data), "--val", str(data), "--size", "100"], capsys)
    assert "--size 100 / --width 0.25: data.input_size: must be a positive multiple of 8" in refused
    fresh = plain.build(dataset.schema, plain.recipe(0.125, 64))
    assert not torch.equal(fresh.state_dict()["trunk.features.0.weight"], model.state_dict()["trunk.features.0.weight"])


def _refusal(module, argv: list[str], capsys) -> str:
    """The error line a reference script's refusal prints (argparse exits)."""
    with pytest.raises(SystemExit):
        module.main(argv)
    return capsys.readouterr().err
