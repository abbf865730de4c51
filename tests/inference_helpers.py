"""Helpers for the inference/export tests: tiny checkpoints written directly, and a "network" that returns the
ground-truth maps of the canvases it is shown (so decoding, TTA and instances can be checked against the truth)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from posepart.data.augment import Affine, apply_affine, canvas_size, letterbox_affine, normalize
from posepart.data.format import PosePartDataset
from posepart.engine.config import load_config
from posepart.engine.builders import build_from_config
from posepart.heads import HeadMeta
from posepart.inference.preprocess import letterbox
from posepart.models import ModelOutput
from posepart.schema import Schema
from posepart.targets import build_targets


def write_checkpoint(path: Path, schema: Schema, *overrides: str, input_size: int = 64, seed: int = 0,
                     gain: float = 1.0, tasks: Sequence[str] | None = None) -> Path:
    """A posepart checkpoint of an untrained tiny model (width 0.125, one stage) as training would save it.

    gain > 1 scales the last conv of every pose branch, so the random maps have peaks the decoder accepts. `tasks`:
    record one training source of these tasks (as `posepart train` does), else none (an older checkpoint).
    """
    cfg = load_config(None, ["model.name=joint_vgg16", "model.stages=1", "model.width=0.125", "model.fc_width=32",
                             f"data.input_size={input_size}", *overrides])
    torch.manual_seed(seed)
    model = build_from_config(cfg, schema, pretrained=False)
    if gain != 1.0:
        amplify(model, gain)
    sources = {} if tasks is None else {"sources": [{"name": "train", "tasks": list(tasks)}]}
    checkpoint = {"posepart": {"schema": schema.to_category(), "config": cfg.to_dict(), **sources},
                  "state_dict": {"model." + k: v for k, v in model.state_dict().items()}}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def amplify(model: nn.Module, gain: float) -> None:
    """Multiply the weights and bias of the last conv of each pose branch by `gain` (in place)."""
    if model.pose_head is None:
        return
    last = [m for m in model.pose_head.modules() if isinstance(m, nn.Conv2d)]
    by_out = {}
    for conv in last:  # the branch outputs are the convs with K+1 / 2L output channels
        by_out[conv.out_channels] = conv
    with torch.no_grad():
        for channels in (model.schema.heatmap_channels, model.schema.paf_channels):
            if channels in by_out:
                by_out[channels].weight.mul_(gain)
                by_out[channels].bias.mul_(gain)


def key(canvas: np.ndarray | Tensor) -> str:
    array = canvas.detach().cpu().numpy() if isinstance(canvas, Tensor) else canvas
    return hashlib.sha1(np.ascontiguousarray(array, np.float32).tobytes()).hexdigest()


class GroundTruthNet(nn.Module):
    """Returns the training targets of each canvas it is shown, registered beforehand by `register`.

    heatmaps and PAFs as `build_targets` makes them, part logits 10 x one-hot of the label map (ignore -> background).
    Canvases are found by a hash of their normalised pixels; an unknown canvas is a KeyError (the test is wrong).
    """

    def __init__(self, schema: Schema) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))
        self.schema = schema
        self.stride, self.parts_stride, self.has_pose, self.has_parts = 8, 1, True, True
        self.meta = HeadMeta(schema, pose_stride=8, parts_stride=1)
        self.targets: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def register(self, image: np.ndarray, parts: np.ndarray | None, keypoints: np.ndarray, size: int,
                 flip: bool = False) -> None:
        """Targets of `image` letterboxed as the Predictor does at canvas long side `size` (mirrored with flip)."""
        hw = canvas_size(image.shape[:2], size, self.stride)
        canvas, matrix = letterbox(image, hw)
        assert np.allclose(matrix, letterbox_affine(image.shape[:2], hw).matrix)
        if flip:
            mirrored = matrix.copy()
            mirrored[0] = -matrix[0]
            mirrored[0, 2] += hw[1] - 1
            affine = Affine(mirrored, flipped=True)
            canvas = canvas[:, ::-1]
        else:
            affine = Affine(matrix)
        _, parts_in, ignore_in, kp_in = apply_affine(affine, image, parts, None, keypoints, hw, self.schema.flip_perm,
                                                     self.schema.part_flip_perm)
        targets = build_targets(kp_in, ignore_in, parts_in, self.meta)
        labels = np.where(targets.parts == 255, 0, targets.parts)
        logits = 10.0 * np.eye(self.schema.num_parts, dtype=np.float32)[labels].transpose(2, 0, 1)
        self.targets[key(normalize(canvas))] = (targets.heatmaps, targets.pafs, logits)

    def register_dataset(self, dataset: PosePartDataset, size: int, flip: bool = True) -> None:
        for record in dataset.records:
            image, parts = dataset.load_image(record), dataset.load_parts(record)
            for mirrored in (False, True) if flip else (False,):
                self.register(image, parts, record.keypoints, size, mirrored)

    def forward(self, images: Tensor) -> ModelOutput:
        found = [self.targets[key(image)] for image in images]
        hm, paf, parts = (torch.from_numpy(np.stack(column)) for column in zip(*found))
        return ModelOutput(heatmaps=[hm], pafs=[paf], parts=[parts])
