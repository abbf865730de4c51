"""Training targets (heatmaps, PAFs, pose mask, parts) as pure vectorised numpy functions; see `maps`."""

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
