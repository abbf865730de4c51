"""Drawing and writing predictions: overlays, palette PNGs for part labels and instances, heatmap/PAF pictures.

All torch-free (numpy, OpenCV, Pillow), for `posepart predict` with either backend.
"""

from __future__ import annotations

import colorsys
from pathlib import Path

import cv2
import numpy as np

from posepart.decode import DecodeConfig
from posepart.errors import writing
from posepart.files import write_image
from posepart.heads import cell_centre
from posepart.inference.predictor import ImageResult
from posepart.schema import Schema, voc_palette
from posepart.viz import overlay

OVERLAY_MIN_SCORE = DecodeConfig.peak_threshold  # joints with a weaker heatmap peak are not drawn


def instance_palette(n: int = 256) -> np.ndarray:
    """(n, 3) uint8 RGB: 0 black, then well-separated hues (golden-ratio steps) for people 1, 2, ..."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(1, n):
        hue = (i * 0.618033988749895) % 1.0
        palette[i] = [int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 1.0 if i % 2 else 0.75)]
    return palette


def save_indexed_png(path: str | Path, labels: np.ndarray, palette: np.ndarray) -> Path:
    """Write a label map as an indexed PNG: pixel values are the labels (read back by PIL or any VOC tool), the
    palette colours them in viewers. More than 255 labels: a 16-bit grey PNG of the raw values instead."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        if labels.size and int(labels.max()) > 255:
            write_image(path, labels.astype(np.uint16))
            return path
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(labels, np.uint8))
        full = np.zeros((256, 3), np.uint8)
        full[: min(256, len(palette))] = palette[:256]
        image.putpalette(full.reshape(-1).tolist())
        image.save(path, format="PNG", optimize=False)
    return path


def save_parts(path: str | Path, parts: np.ndarray, schema: Schema) -> Path:
    """Part labels as an indexed PNG in the VOC palette (the colours of `posepart.viz.draw_parts`)."""
    return save_indexed_png(path, parts, voc_palette(256))


def save_instances(path: str | Path, instances: np.ndarray) -> Path:
    """Instance ids (0 = none, i = person i - 1 of keypoints.json's order for that image) as an indexed PNG."""
    return save_indexed_png(path, instances, instance_palette(256))


def draw_result(image: np.ndarray, result: ImageResult, schema: Schema, min_score: float = OVERLAY_MIN_SCORE
                ) -> np.ndarray:
    """The RGB image with translucent part colours and the people's skeletons."""
    keypoints = result.keypoints if result.people else None
    return overlay(image, schema, parts=result.parts, keypoints=keypoints, min_score=min_score, scores=True)


def _grid_to_image(result: ImageResult, stride: int) -> np.ndarray:
    """(2, 3) image pixels -> output-grid cells (for WARP_INVERSE_MAP sampling of a map onto the image)."""
    assert result.to_image is not None
    to_canvas = cv2.invertAffineTransform(result.to_image)
    half = cell_centre(stride)
    return np.vstack([(to_canvas[0] - [0, 0, half]) / stride, (to_canvas[1] - [0, 0, half]) / stride])


def _on_image(grid_map: np.ndarray, result: ImageResult, stride: int) -> np.ndarray:
    """A (h, w[, C]) float map on the output grid sampled at every image pixel (bilinear)."""
    return cv2.warpAffine(np.ascontiguousarray(grid_map, np.float32), _grid_to_image(result, stride),
                          (result.width, result.height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def draw_heatmaps(image: np.ndarray, result: ImageResult, schema: Schema, stride: int) -> np.ndarray:
    """The image under the maximum over all joint heatmaps (JET colours, 50 % blend)."""
    if result.maps is None or result.maps.heatmaps is None:
        raise ValueError("no heatmaps kept: use a Predictor with keep_maps=True and a pose model")
    peak = result.maps.heatmaps[: schema.num_joints].max(0)
    heat = (np.clip(_on_image(peak, result, stride), 0.0, 1.0) * 255).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(heat, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(image, 0.5, colour, 0.5, 0.0)


def draw_pafs(image: np.ndarray, result: ImageResult, schema: Schema, stride: int) -> np.ndarray:
    """The image under the strongest PAF at each point: hue = direction, brightness = magnitude (50 % blend)."""
    if result.maps is None or result.maps.pafs is None:
        raise ValueError("no PAFs kept: use a Predictor with keep_maps=True and a pose model")
    pafs = result.maps.pafs
    vx, vy = pafs[0::2], pafs[1::2]  # (L, h, w)
    magnitude = np.sqrt(vx * vx + vy * vy)
    best = magnitude.argmax(0)[None]
    x = np.take_along_axis(vx, best, 0)[0]
    y = np.take_along_axis(vy, best, 0)[0]
    xy = _on_image(np.stack([x, y], -1), result, stride)
    angle = (np.degrees(np.arctan2(xy[..., 1], xy[..., 0])) % 360.0) / 2.0  # OpenCV hue: 0..180
    value = np.clip(np.sqrt((xy**2).sum(-1)), 0.0, 1.0) * 255
    hsv = np.stack([angle, np.full_like(angle, 255.0), value], -1).astype(np.uint8)
    colour = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return cv2.addWeighted(image, 0.5, colour, 0.5, 0.0)
