"""Training targets (heatmaps, PAFs, pose mask, parts) as pure vectorised numpy functions (`maps`), and the Mapper
that makes a training sample from a dataset record with them (`mapper`, imported on its own)."""

from posepart.targets.maps import (
    GAUSS_EXPONENT_CUTOFF,
    MASK_THRESHOLD,
    Targets,
    build_targets,
    downsample_mask,
    heatmaps,
    pafs,
)

__all__ = [
    "GAUSS_EXPONENT_CUTOFF",
    "MASK_THRESHOLD",
    "Targets",
    "build_targets",
    "downsample_mask",
    "heatmaps",
    "pafs",
]
