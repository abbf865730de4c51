"""Multi-person decoding of heatmaps + part affinity fields into people (OpenPose-style grouping).

`find_peaks` finds refined joint peaks, `decode` groups them into `Person`s in network-input pixels, and
`people_to_coco` writes COCO keypoint results (optionally mapped back to the original image).
"""

from posepart.decode.grouping import DecodeConfig, Person, decode, people_to_coco, score_limbs
from posepart.decode.peaks import Peaks, find_peaks, find_peaks_flat

__all__ = [
    "DecodeConfig", "Person", "Peaks", "decode", "find_peaks", "find_peaks_flat", "people_to_coco", "score_limbs",
]
