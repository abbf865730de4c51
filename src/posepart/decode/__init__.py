"""Multi-person decoding of heatmaps + part affinity fields into people (OpenPose-style grouping).

`find_peaks` finds refined joint peaks, `decode` groups them into `Person`s in network-input pixels,
`decode_in_image` maps a letterboxed canvas's people back to their image, and `people_to_coco` writes COCO keypoint
results.
"""

from posepart.decode.grouping import DecodeConfig, Person, decode, people_to_coco, score_limbs
from posepart.decode.image import decode_in_image
from posepart.decode.peaks import Peaks, find_peaks, find_peaks_flat

__all__ = [
    "DecodeConfig", "Person", "Peaks", "decode", "decode_in_image", "find_peaks", "find_peaks_flat", "people_to_coco",
    "score_limbs",
]
