"""Model files that must not load: non-finite weights are refused with an error naming the file and the tensor."""

from __future__ import annotations

import json

import pytest
import torch
from inference_helpers import write_checkpoint

from posepart.cli import main
from posepart.engine.checkpoint import load_model
from posepart.schema import Schema

PASCAL = Schema.pascal_person_part()


def test_non_finite_weights_are_refused_at_load(tmp_path, capsys):
    """A checkpoint or .safetensors whose weights hold a NaN is an error naming the file and the tensor, in the API
    and in `posepart evaluate` / `predict` (exit status 2), not a model that scores 0."""
    from safetensors.torch import save_file

    from posepart.data.synth import write_synth
    from posepart.engine.checkpoint import CheckpointError, load_checkpoint

    ckpt = write_checkpoint(tmp_path / "nan.ckpt", PASCAL)
    checkpoint = load_checkpoint(ckpt)
    key = next(k for k, v in checkpoint["state_dict"].items() if v.is_floating_point() and "trunk" in k)
    checkpoint["state_dict"][key][0] = float("nan")
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError, match=rf"nan.ckpt: refusing non-finite weights .*{key[len('model.'):]}"):
        load_model(ckpt)
    st = tmp_path / "nan.safetensors"
    metadata = {"format": "posepart-weights-v1", "schema": json.dumps(PASCAL.to_category()),
                "config": json.dumps(checkpoint["posepart"]["config"])}
    save_file({k[len("model."):]: v.contiguous() for k, v in checkpoint["state_dict"].items()}, str(st), metadata)
    with pytest.raises(CheckpointError, match="nan.safetensors: refusing non-finite weights"):
        load_model(st)
    root = write_synth(tmp_path / "data", n=2, seed=1, size=64)
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ckpt), "--data", str(root)]) == 2
    assert main(["predict", "--checkpoint", str(st), str(root / "images"), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("refusing non-finite weights") == 2
