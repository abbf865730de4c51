"""Masked losses of the confidence maps (heatmaps: MSE, or CenterNet's focal loss on the joint channels) and the part
affinity fields (MSE), one per stage.

Per stage and task, with a weight W (B, C, h, w) that is 0 wherever there is nothing to learn:

    L_stage = sum(W * (pred - gt)^2) / max(sum(W), 1)

i.e. the mean squared error over the supervised (sample, channel, pixel) entries of the whole batch (one batch-wide
denominator, so samples are weighted by how much of them is supervised, and samples with `has_pose` False add nothing
to numerator or denominator). With binary masks sum(W) is a count, and a batch with no supervised entry gives exactly 0
with gradient 0. W is the product of

- `has_pose` (B,): samples without pose annotation are not supervised at all;
- `pose_mask` (B, h, w): crowds, unlabelled people and padding are 0;
- a per-channel mask from `joint_mask` (B, K): heatmap channel k only if the sample's source annotates joint k; the
  background channel only if it annotates every joint, because its target (1 - max of the joint maps) would claim
  "no joint here" at the unannotated joints' true locations; a limb's two PAF channels only if both its joints are;
- in mask mode "seed" additionally a spatial mask from the ground truth (see `seed_heatmap_mask`, `seed_paf_mask`).

Self-training's pseudo-labelled samples are weighed by `PosePartLoss` (their mean over all their entries, times the
ramp's weight), not here.

PAF channel layout: limb l of `schema.skeleton` owns channels (2l, 2l+1) = its (x, y) field.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from posepart.schema import Schema

MaskMode = Literal["openpose", "seed"]
PoseTask = Literal["heatmap", "paf"]
HeatmapLoss = Literal["mse", "focal"]
TARGET_KEYS: dict[str, str] = {"heatmap": "heatmaps", "paf": "pafs"}  # pose task -> its batch target (and output)
SEED_THRESHOLD = 0.02  # `mask: seed`: a heatmap cell is supervised where its target exceeds this (the seed's W(p))


def heatmap_channel_mask(joint_mask: Tensor) -> Tensor:
    """(B, K) bool -> (B, K + 1) bool: joints as annotated, background only when every joint is annotated."""
    joint_mask = joint_mask.bool()
    return torch.cat([joint_mask, joint_mask.all(1, keepdim=True)], 1)


def paf_channel_mask(joint_mask: Tensor, skeleton: Sequence[tuple[int, int]]) -> Tensor:
    """(B, K) bool -> (B, 2L) bool: both channels of limb (a, b) supervised iff joints a and b are annotated."""
    joint_mask = joint_mask.bool()
    a = torch.tensor([e[0] for e in skeleton], dtype=torch.long, device=joint_mask.device)
    b = torch.tensor([e[1] for e in skeleton], dtype=torch.long, device=joint_mask.device)
    limbs = joint_mask[:, a] & joint_mask[:, b]  # (B, L)
    return limbs.repeat_interleave(2, dim=1)  # (B, 2L)


def seed_heatmap_mask(gt: Tensor, threshold: float = SEED_THRESHOLD) -> Tensor:
    """The seed paper's W(p): 1 where the ground-truth heatmap exceeds `threshold`, per channel (B, K+1, h, w).

    Faithful to the paper, so it never penalises false positives in a joint channel's background (a joint map is only
    supervised near its annotated peaks). The background channel follows the same rule; its target is ~1 away from
    joints, so it is supervised almost everywhere except at the joint peaks.
    """
    return gt > threshold


def seed_paf_mask(gt: Tensor) -> Tensor:
    """The analogous PAF rule: both channels of a limb supervised where that limb's ground-truth field is non-zero.

    gt (B, 2L, h, w) -> (B, 2L, h, w) bool; a pixel counts if either component (x or y) is non-zero, so the x channel
    of a vertical limb is still pushed to 0 on the limb. Like the heatmap rule, spurious fields elsewhere are free.
    """
    b, c, h, w = gt.shape
    on_limb = (gt.reshape(b, c // 2, 2, h, w) != 0).any(2)  # (B, L, h, w)
    return on_limb.repeat_interleave(2, dim=1)


def masked_mse(pred: Tensor, gt: Tensor, weight: Tensor) -> Tensor:
    """sum(weight * (pred - gt)^2) / max(sum(weight), 1), computed in float32."""
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(gt.shape)} differ")
    diff = pred.float() - gt.float()
    return (weight * diff * diff).sum() / weight.sum().clamp(min=1.0)


FOCAL_BETA = 4.0  # CenterNet's exponent of the penalty reduction (1 - gt)^beta next to a joint


def focal_heatmap_loss(pred: Tensor, gt: Tensor, weight: Tensor, *, alpha: float = 2.0, beta: float = FOCAL_BETA,
                       peak: float = 0.5) -> Tensor:
    """CenterNet's penalty-reduced focal loss (Zhou et al. 2019, after CornerNet) on joint heatmaps.

    pred: probabilities (B, K, h, w) (the model's sigmoid); gt: the Gaussian targets; weight: the mask W.
    A positive is a target cell that is a 3x3 local maximum of at least `peak` (CenterNet's gt == 1 assumes peaks on
    cell centres; ours are sub-cell, so a joint halfway between two cells has two positives). Positives pay
    (1 - p)^alpha log p, every other cell (1 - gt)^beta p^alpha log(1 - p): misses near a peak are cheap, false peaks
    far from one are not. Normalised by the number of supervised positives. Why: with MSE most of the gradient comes
    from the mostly-zero background, and sparse peaks are learned slowly.
    """
    p = pred.float().clamp(1e-4, 1.0 - 1e-4)
    g = gt.float()
    pos = ((g >= peak) & (g == F.max_pool2d(g, 3, stride=1, padding=1))).float()
    pos_loss = -((1.0 - p) ** alpha) * torch.log(p) * pos
    neg_loss = -((1.0 - g) ** beta) * p**alpha * torch.log(1.0 - p) * (1.0 - pos)
    return ((pos_loss + neg_loss) * weight).sum() / (pos * weight).sum().clamp(min=1.0)


class PoseLoss(nn.Module):
    """Masked MSE of heatmap and PAF stages against the batch targets (see module docstring for the masks); with
    `heatmap_loss="focal"` the joint heatmaps use `focal_heatmap_loss` (with `focal_beta`) instead (the background
    channel keeps MSE)."""

    def __init__(self, schema: Schema, *, mask_mode: MaskMode = "openpose", seed_threshold: float = SEED_THRESHOLD,
                 heatmap_loss: HeatmapLoss = "mse", focal_beta: float = FOCAL_BETA) -> None:
        super().__init__()
        if mask_mode not in get_args(MaskMode):
            raise ValueError(f"mask_mode must be one of {get_args(MaskMode)}, got {mask_mode!r}")
        if heatmap_loss not in get_args(HeatmapLoss):
            raise ValueError(f"heatmap_loss must be one of {get_args(HeatmapLoss)}, got {heatmap_loss!r}")
        self.schema = schema
        self.mask_mode = mask_mode
        self.seed_threshold = seed_threshold
        self.heatmap_loss = heatmap_loss
        self.focal_beta = focal_beta
        self._focal_checked = False  # whether the first heatmaps the focal loss saw were probabilities

    def weight(self, task: PoseTask, batch: Mapping[str, Tensor]) -> Tensor:
        """The (B, C, h, w) float32 weight W of `task` ("heatmap" or "paf") for this batch."""
        weight = self.labelled(task, batch)
        if self.mask_mode == "seed":
            gt = batch[TARGET_KEYS[task]]
            weight = weight * (seed_heatmap_mask(gt, self.seed_threshold) if task == "heatmap" else seed_paf_mask(gt))
        return weight

    def labelled(self, task: PoseTask, batch: Mapping[str, Tensor]) -> Tensor:
        """The (B, C, h, w) float32 mask of the entries the batch's labels cover (`has_pose`, `joint_mask`,
        `pose_mask`): W without the seed mask."""
        gt = batch[TARGET_KEYS[task]]
        b, c, h, w = gt.shape
        expected = self.schema.heatmap_channels if task == "heatmap" else self.schema.paf_channels
        if c != expected:
            raise ValueError(f"batch {task} targets have {c} channels, the schema expects {expected}")
        joint_mask = batch.get("joint_mask")
        if joint_mask is None:  # a source that annotates every joint
            joint_mask = torch.ones(b, self.schema.num_joints, dtype=torch.bool, device=gt.device)
        channels = heatmap_channel_mask(joint_mask) if task == "heatmap" else \
            paf_channel_mask(joint_mask, self.schema.skeleton)  # (B, C)
        has_pose = batch.get("has_pose")
        if has_pose is not None:
            channels = channels & has_pose.bool()[:, None]
        pose_mask = batch.get("pose_mask")
        spatial = torch.ones(b, h, w, device=gt.device) if pose_mask is None else pose_mask.float()  # (B, h, w)
        return channels.float()[:, :, None, None] * spatial[:, None]  # (B, C, h, w)

    def forward(self, task: PoseTask, stages: Sequence[Tensor], batch: Mapping[str, Tensor]) -> list[Tensor]:
        """One scalar loss per stage of `task`; every stage is compared with the same target and weight."""
        if task not in TARGET_KEYS:
            raise ValueError(f"task must be one of {tuple(TARGET_KEYS)}, got {task!r}")
        gt = batch[TARGET_KEYS[task]]
        for t, pred in enumerate(stages):
            if pred.shape[-2:] != gt.shape[-2:]:  # before: masked_mse's bare "prediction and target differ"
                raise ValueError(f"{task} stage {t + 1}: the model's maps are {tuple(pred.shape[-2:])} cells, the "
                                 f"batch's targets {tuple(gt.shape[-2:])}: they were drawn for another stride (build "
                                 f"the Mapper with TargetConfig(input_size, model.meta))")
        weight = self.weight(task, batch)
        if task == "heatmap" and self.heatmap_loss == "focal":
            k = self.schema.num_joints  # joints, then the background channel
            if not self._focal_checked:  # once (a host sync): a model without the sigmoid trains on clamped logits
                self._focal_checked = True
                low, high = (float(v) for v in torch.aminmax(stages[0][:, :k].detach()))
                if low < 0.0 or high > 1.0:
                    raise ValueError(f"the focal heatmap loss needs probabilities, got heatmaps in [{low:.3g}, "
                                     f"{high:.3g}]: build the model with heatmap_sigmoid=True")
            return [focal_heatmap_loss(pred[:, :k], gt[:, :k], weight[:, :k], beta=self.focal_beta)
                    + masked_mse(pred[:, k:], gt[:, k:], weight[:, k:]) for pred in stages]
        return [masked_mse(pred, gt, weight) for pred in stages]
