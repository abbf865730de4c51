"""The most mean IU a part prediction at output stride s can reach on a dataset: an accuracy bound, not a speed test.

For each stride the ground-truth label map becomes per-class fractions over s x s cells (what a perfectly calibrated
stride-s network would predict), which are upsampled bilinearly back to the image, as `SegLoss` and evaluation do
with logits, and scored by argmax. Thin parts (lower arms a few pixels wide) vanish at coarse strides: this is why
FCN32 at 128 px cannot segment them and why the demo's joint model refines its part logits to stride 4.
A network can beat the bound somewhat (interpolated logits are sharper than interpolated fractions), not by much.

Run: .venv/bin/python benchmarks/seg_stride_ceiling.py runs/demo/data/val [--strides 32 16 8 4 2]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from posepart.data.format import PosePartDataset
from posepart.metrics.segmentation import ConfusionMatrix


def stride_ceiling(dataset: PosePartDataset, stride: int) -> dict:
    """Segmentation scores of the bilinearly upsampled stride-`stride` class fractions of every labelled image."""
    num_classes = dataset.schema.num_parts
    matrix = ConfusionMatrix(num_classes)
    for record in dataset.records:
        labels = dataset.load_parts(record)
        if labels is None:
            continue
        target = torch.from_numpy(labels.astype(np.int64))  # (H, W), 255 = ignore
        valid = target != 255
        fractions = F.one_hot(torch.where(valid, target, 0), num_classes).permute(2, 0, 1)[None].float()
        fractions = fractions * valid  # (1, P, H, W): ignored pixels count for no class
        h, w = labels.shape
        pad = (0, -w % stride, 0, -h % stride)  # whole cells; the padding counts for no class either
        cells = F.avg_pool2d(F.pad(fractions, pad), stride)  # (1, P, ceil(H/s), ceil(W/s))
        up = F.interpolate(cells, scale_factor=stride, mode="bilinear", align_corners=False)[..., :h, :w]
        matrix.update(up[0].argmax(0), target)
    return matrix.compute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", type=Path, help="dataset root with part labels (ROOT/annotations.json, ROOT/parts/)")
    parser.add_argument("--strides", type=int, nargs="+", default=[32, 16, 8, 4, 2])
    args = parser.parse_args()
    dataset = PosePartDataset.open(args.root)
    print(f"{'stride':>6}  {'mean IU':>7}  per-class IoU ({', '.join(dataset.schema.part_classes)})")
    for stride in args.strides:
        scores = stride_ceiling(dataset, stride)
        per_class = " ".join(f"{v:.2f}" if v is not None else "-" for v in scores["iou_per_class"])
        print(f"{stride:>6}  {scores['mean_iou']:>7.3f}  {per_class}")


if __name__ == "__main__":
    main()
