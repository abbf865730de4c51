"""How good a teacher's pseudo-labels are (docs/training.md, "Self-training"): a diagnostic on labelled images.

Runs a trained checkpoint as the self-training teacher (`posepart.engine.self_training.SelfTraining`, the filters of
`train.self_training`) on images whose labels are known, letterboxed as in validation (no augmentation), and compares
its part pseudo-labels with the true part maps: the share of pixels kept, their accuracy, and for each true class how
many of its pixels are kept and what they are called. Also the pose yield (people kept and dropped per image).

    .venv/bin/python benchmarks/pseudo_label_quality.py runs/study_st/runs/joint_f0.1_seed0/checkpoints/last.ckpt \
        --data runs/study_quick/data/train --annotations runs/study_st/splits/seed0_unlabelled.json --images 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import default_collate

from posepart.data.format import PosePartDataset
from posepart.engine.checkpoint import load_model
from posepart.engine.self_training import SelfTraining
from posepart.engine.settings import SelfTrainingConfig
from posepart.schema import IGNORE_LABEL
from posepart.targets.mapper import Mapper, TargetConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path, help="the teacher: a training checkpoint")
    parser.add_argument("--data", type=Path, required=True, help="dataset root (images and part maps)")
    parser.add_argument("--annotations", type=Path, help="annotation file inside it (default ROOT/annotations.json)")
    parser.add_argument("--images", type=int, default=200, help="images to label (default %(default)s)")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint)
    dataset = PosePartDataset.open(args.data, annotations=args.annotations)
    mapper = Mapper(dataset, TargetConfig(input_size=loaded.input_size, head=loaded.head), None)
    teacher = SelfTraining(loaded.model, SelfTrainingConfig(ramp_steps=0), loaded.schema)
    teacher.update(loaded.model)  # the first update copies: the teacher is the checkpoint's model
    classes = loaded.schema.part_classes
    confusion = np.zeros((len(classes), len(classes)), np.int64)  # true class -> pseudo class, kept pixels
    totals = np.zeros(len(classes), np.int64)
    people = dropped = pixels = 0.0
    records = dataset.records[: args.images]
    for start in range(0, len(records), 8):
        batch = default_collate([mapper(r) for r in records[start : start + 8]])
        truth = batch["parts"].numpy().copy()
        batch["weak_image"] = batch["image"]
        batch["unlabelled"] = torch.ones(len(truth), dtype=torch.bool)
        found = teacher.label(batch, step=10**9)
        people += found.get("people", 0.0) * len(truth)
        dropped += found.get("dropped", 0.0) * len(truth)
        pixels += truth.size
        pseudo = batch["parts"].numpy()
        known = truth != IGNORE_LABEL
        totals += np.bincount(truth[known], minlength=len(classes))[: len(classes)]
        kept = known & (pseudo != IGNORE_LABEL)
        np.add.at(confusion, (truth[kept].astype(np.int64), pseudo[kept].astype(np.int64)), 1)
    n = len(records)
    print(f"{n} images: pseudo people {people / n:.2f} kept, {dropped / n:.2f} dropped per image")
    print(f"part pseudo-labels on {confusion.sum() / pixels:.3f} of the pixels, accuracy "
          f"{np.trace(confusion) / max(confusion.sum(), 1):.3f}")
    print("| true class | pixels | kept | called right | called background |")
    print("|---|---:|---:|---:|---:|")
    for c, name in enumerate(classes):
        kept = confusion[c].sum()
        print(f"| {name} | {totals[c]} | {kept / max(totals[c], 1):.3f} | {confusion[c, c] / max(kept, 1):.3f} "
              f"| {confusion[c, 0] / max(kept, 1):.3f} |")


if __name__ == "__main__":
    main()
