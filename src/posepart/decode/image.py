"""Decoding a letterboxed canvas's maps into people in the image's own pixels: the one path from network maps to
image joints, shared by the Predictor (every model output users see) and the oracle (decoded ground truth), so that
the oracle bounds what the pipeline itself can reach."""

from __future__ import annotations

import numpy as np

from posepart.data.augment import transform_points
from posepart.decode.grouping import DecodeConfig, Person, decode
from posepart.heads import HeadMeta, cell_centre


def decode_in_image(heatmaps: np.ndarray, pafs: np.ndarray, head: HeadMeta, config: DecodeConfig,
                    to_image: np.ndarray, image_hw: tuple[int, int]) -> tuple[list[Person], np.ndarray]:
    """Maps of a canvas (heatmaps (K+1, h, w), PAFs (2L, h, w)) -> (people with joints in image pixels, their joints
    in canvas pixels (N, K, 3)). `to_image` is the (2, 3) canvas -> image affine (scale + shift), `image_hw` the
    image's size. A joint not found is (0, 0, 0), COCO's "absent"."""
    k = head.schema.num_joints
    decoded = decode(without_padding(heatmaps, k, to_image, image_hw, head.stride), pafs, head, config)
    if not decoded:
        return [], np.zeros((0, k, 3), np.float32)
    canvas = np.stack([p.keypoints for p in decoded])  # (N, K, 3) canvas pixels
    image = canvas.copy()
    image[..., :2] = transform_points(to_image, canvas[..., :2])
    # sub-cell placement can carry an edge cell's joint into the padding: keep it on the image (its pixels span
    # -0.5 .. W - 0.5; an unpadded canvas spans the same, so nothing moves there)
    np.clip(image[..., 0], -0.5, image_hw[1] - 0.5, out=image[..., 0])
    np.clip(image[..., 1], -0.5, image_hw[0] - 0.5, out=image[..., 1])
    image[image[..., 2] <= 0] = 0.0
    return [Person(kp, p.score) for kp, p in zip(image, decoded)], canvas


def without_padding(heatmaps: np.ndarray, num_joints: int, to_image: np.ndarray, image_hw: tuple[int, int],
                    stride: int) -> np.ndarray:
    """The joint heatmaps (K+1, h, w) with the cells that lie wholly in the letterbox padding set to 0 (a copy; the
    maps themselves when no cell does). Why: a peak there maps back to a joint outside the image (a very wide image
    letterboxed into a few rows of cells is mostly padding), which no annotation can hold. A cell that reaches into
    the image stays, even with its centre in the padding: it holds the peaks of the joints on the image's edge
    (before, at strides 4 and 2 those came back up to half a cell inside the image: 3 px on a 640 x 480 photo at
    368 px, 21 px on a 4032 x 3024 one); what sub-cell placement carries outside, `decode_in_image` clips."""
    h, w = heatmaps.shape[1:]
    centres = stride * np.arange(max(h, w)) + cell_centre(stride)  # canvas pixels; to_image is scale + shift
    x = to_image[0, 0] * centres[:w] + to_image[0, 2]
    y = to_image[1, 1] * centres[:h] + to_image[1, 2]
    half_x, half_y = to_image[0, 0] * stride / 2, to_image[1, 1] * stride / 2  # half a cell, in image pixels
    cols = (x < -0.5 - half_x) | (x > image_hw[1] - 0.5 + half_x)
    rows = (y < -0.5 - half_y) | (y > image_hw[0] - 0.5 + half_y)
    if not (cols.any() or rows.any()):
        return heatmaps
    out = np.array(heatmaps, np.float32, copy=True)
    out[:num_joints, :, cols] = 0.0
    out[:num_joints, rows, :] = 0.0
    return out
