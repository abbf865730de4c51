"""Evaluation metrics: FCN segmentation scores, COCO OKS AP, multi-person PCKh and the seed paper's PCK_dist."""

from posepart.data.records import mpii_head_size  # the reader's normaliser, exported with the metrics
from posepart.metrics.oks import coco_keypoint_ap, oks
from posepart.metrics.pck import PCKhCounts, match_people, pck_dist, pckh, pckh_counts
from posepart.metrics.segmentation import ConfusionMatrix

__all__ = ["ConfusionMatrix", "PCKhCounts", "coco_keypoint_ap", "match_people", "mpii_head_size", "oks", "pck_dist",
           "pckh", "pckh_counts"]
