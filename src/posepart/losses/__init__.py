"""Training losses: part segmentation cross-entropy, masked heatmap (MSE or focal) and PAF (MSE) losses, and
pluggable task weighting."""

from posepart.losses.multitask import LossResult, PosePartLoss
from posepart.losses.pose import (
    PoseLoss,
    heatmap_channel_mask,
    masked_mse,
    paf_channel_mask,
    seed_heatmap_mask,
    seed_paf_mask,
)
from posepart.losses.seg import SegLoss, upsample_logits
from posepart.losses.weighting import (
    DynamicWeightAverage,
    FixedWeighting,
    GradNormWeighting,
    TaskWeighting,
    UncertaintyWeighting,
)

__all__ = [
    "DynamicWeightAverage", "FixedWeighting", "GradNormWeighting", "LossResult", "PoseLoss", "PosePartLoss", "SegLoss",
    "TaskWeighting", "UncertaintyWeighting", "heatmap_channel_mask", "masked_mse", "paf_channel_mask",
    "seed_heatmap_mask", "seed_paf_mask", "upsample_logits",
]
