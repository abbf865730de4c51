"""Test-time augmentation: horizontal flip and multiple scales, merged on one reference grid (numpy + OpenCV).

Flip. The network sees the mirrored canvas; its maps are mirrored back before averaging, which is more than a column
reversal: a left joint's heatmap of the mirrored image is the right joint's of the original (`Schema.flip_perm`, the
background channel stays), a limb's PAF becomes its mirror limb's (`Schema.limb_flip`) with the x component negated
(and the whole vector negated when the mirror limb is stored the other way round), and sided part classes swap
(`Schema.part_flip_perm`). Mirroring the canvas is exact because canvas widths are multiples of the stride: output
cell g of the mirrored canvas is cell w - 1 - g of the original (cell centres at s*g + (s-1)/2).

Scales. Each scale letterboxes the image into its own canvas; every view's maps are resampled onto the reference
canvas's grid through image coordinates (one affine warp per view: reference cell -> reference pixel -> image pixel
-> view pixel -> view cell) and averaged: heatmaps and PAFs as OpenPose does, part logits too (their average ranks
classes as the geometric mean of the views' probabilities).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import cv2
import numpy as np

from posepart.heads import HeadMeta, cell_centre
from posepart.schema import Schema


class Maps(NamedTuple):
    """One image's final-stage network maps on a canvas grid; None for a task the model lacks.

    heatmaps (K+1, H/s, W/s), pafs (2L, H/s, W/s), parts: logits (P, H/ps, W/ps) with ps the parts stride.
    """

    heatmaps: np.ndarray | None
    pafs: np.ndarray | None
    parts: np.ndarray | None


@dataclass(frozen=True)
class View:
    """One network pass of an image: the input size is multiplied by `scale`; `flip` mirrors the canvas."""

    scale: float = 1.0
    flip: bool = False


def tta_views(scales: Sequence[float] = (1.0,), flip: bool = False) -> list[View]:
    """Every (scale, flip) combination: scales ascending, each unflipped first."""
    try:  # numbers, numpy values, 0-dim tensors: what float() takes; a string or a lone number is no sequence
        if isinstance(scales, str) or any(isinstance(s, str) for s in scales):
            raise TypeError
        values = [float(s) for s in scales]
    except (TypeError, ValueError):  # before: a bare TypeError
        raise ValueError(f"scales must be a sequence of numbers, e.g. (1.0, 1.25), got {scales!r}") from None
    if not values:
        raise ValueError("give at least one scale")
    if any(not (s > 0 and math.isfinite(s)) for s in values):  # inf: an OverflowError on the first image
        raise ValueError(f"scales must be positive finite numbers, got {values}")
    if len(set(values)) < len(values):  # before: the same network pass run twice
        raise ValueError(f"scales repeat a value: {values}")
    # in ascending order: the merged maps are a float sum over the views, whose order moved the last digits (a
    # walkthrough: three orders of --scales, three keypoint files, one `test_time` recorded, sorted)
    return [View(s, f) for s in sorted(values) for f in ((False, True) if flip else (False,))]


@functools.lru_cache(maxsize=16)
def _flip_tables(schema: Schema, heatmap_channels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Gather indices for mirrored maps: out[c] = in[src[c]] (heatmaps, limbs, parts) and the (L, 2) PAF signs."""
    k = schema.num_joints
    hm_src = np.arange(heatmap_channels)
    hm_src[:k] = schema.flip_perm  # an involution: out[perm[j]] = in[j] is out[j] = in[perm[j]]
    n_l = schema.num_limbs
    limb_src = np.zeros(n_l, np.int64)
    sign = np.full((n_l, 2), np.nan, np.float32)  # NaN stays for a limb without a mirror (see `flip_maps`)
    for limb, (target, reversed_) in enumerate(schema.limb_flip):
        if target is None:
            continue
        limb_src[target] = limb
        # mirroring negates x; a mirror limb stored the other way round (b -> a) negates the whole vector
        sign[target] = (1.0, -1.0) if reversed_ else (-1.0, 1.0)
    part_src = np.asarray(schema.part_flip_perm, np.int64)
    return hm_src, limb_src, sign, part_src


def flip_maps(maps: Maps, schema: Schema) -> Maps:
    """The maps of the mirrored image from those of the image (an involution): see the module docstring. The PAF
    channels of a limb whose mirror the skeleton lacks (`Schema.limb_flip`) are NaN: `merge_views` leaves them out."""
    heatmaps = pafs = parts = None
    if maps.heatmaps is not None:
        hm_src, _, _, _ = _flip_tables(schema, maps.heatmaps.shape[0])
        heatmaps = maps.heatmaps[hm_src, :, ::-1]
    if maps.pafs is not None:
        _, limb_src, sign, _ = _flip_tables(schema, schema.heatmap_channels)
        c, h, w = maps.pafs.shape
        by_limb = maps.pafs.reshape(c // 2, 2, h, w)
        pafs = (by_limb[limb_src, :, :, ::-1] * sign[:, :, None, None]).reshape(c, h, w)
    if maps.parts is not None:
        part_src = _flip_tables(schema, schema.heatmap_channels)[3]
        parts = maps.parts[:, :, ::-1] if len(part_src) != maps.parts.shape[0] else maps.parts[part_src, :, ::-1]
    return Maps(heatmaps, pafs, parts)


def _cell_to_pixel(stride: int) -> np.ndarray:
    """(3, 3): output cell coordinates -> canvas pixel coordinates (cell centre at s*g + (s-1)/2)."""
    return np.array([[stride, 0.0, cell_centre(stride)], [0.0, stride, cell_centre(stride)], [0.0, 0.0, 1.0]])


def _h(matrix: np.ndarray) -> np.ndarray:
    return np.vstack([np.asarray(matrix, np.float64).reshape(2, 3), [0.0, 0.0, 1.0]])


def grid_transfer(view_matrix: np.ndarray, base_matrix: np.ndarray, stride: int) -> np.ndarray:
    """(2, 3) map from a reference-grid cell to the view-grid cell that sees the same image point.

    view_matrix / base_matrix: image pixels -> view / reference canvas pixels. Used with WARP_INVERSE_MAP, so every
    reference cell samples the view's map.
    """
    grid = _cell_to_pixel(stride)
    return (np.linalg.inv(grid) @ _h(view_matrix) @ np.linalg.inv(_h(base_matrix)) @ grid)[:2]


def resample(maps: np.ndarray, transfer: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) float maps sampled bilinearly at transfer(reference cell) -> (C, H, W); edges replicated.

    One OpenCV call per channel: its single-channel paths are several times faster than its many-channel ones."""
    src = np.asarray(maps, np.float32)
    out = np.empty((src.shape[0], out_hw[0], out_hw[1]), np.float32)
    for c in range(src.shape[0]):
        cv2.warpAffine(np.ascontiguousarray(src[c]), transfer, (out_hw[1], out_hw[0]), dst=out[c],
                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
    return out


def merge_views(
    views: Sequence[tuple[Maps, np.ndarray]], base_matrix: np.ndarray, base_hw: tuple[int, int], head: HeadMeta,
) -> Maps:
    """Average the views' maps on the reference canvas grid.

    views: (maps already mirrored back when flipped, image -> view-canvas matrix); base_matrix / base_hw: the
    reference canvas (image -> canvas pixels, and its (H, W)); head: the model's `HeadMeta` (the maps' strides).
    A view on the reference canvas itself is not resampled.
    """
    strides = (head.stride, head.stride, head.parts_stride or 1)
    if len(views) == 1 and np.allclose(views[0][1], base_matrix, rtol=0.0, atol=1e-9):
        maps = views[0][0]  # no TTA: the network's maps as they are (no copy)
        if all(m is None or m.shape[1:] == (base_hw[0] // s, base_hw[1] // s) for m, s in zip(maps, strides)):
            return Maps(*(None if m is None else np.asarray(m, np.float32) for m in maps))
    fields: list[np.ndarray | None] = [None, None, None]
    counts: list[np.ndarray | float] = [0.0, 0.0, 0.0]  # views per channel: a NaN channel (`flip_maps`) is left out
    for maps, matrix in views:
        same = np.allclose(matrix, base_matrix, rtol=0.0, atol=1e-9)
        for i, array in enumerate(maps):
            if array is None:
                continue
            grid_hw = (base_hw[0] // strides[i], base_hw[1] // strides[i])
            if same and array.shape[1:] == grid_hw:
                array = np.asarray(array, np.float32)
            else:
                array = resample(array, grid_transfer(matrix, base_matrix, strides[i]), grid_hw)
            # left out (`flip_maps`): NaN throughout, resampled or not; a model's own NaN stays, for the Predictor
            missing = np.isnan(array[:, 0, 0])  # looked at in full only where the first cell is NaN
            missing[missing] = np.isnan(array[missing]).all(axis=(1, 2))
            if missing.any():
                array = np.where(missing[:, None, None], np.float32(0.0), array)
                counts[i] = counts[i] + ~missing[:, None, None]
            else:
                counts[i] = counts[i] + 1.0
            fields[i] = array.copy() if fields[i] is None else fields[i] + array  # type: ignore[operator]
    return Maps(*(None if f is None else f / c for f, c in zip(fields, counts)))


def resize_maps(maps: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
    """(C, h, w) -> (C, H, W) bilinear with pixel-centre alignment (torch's `align_corners=False`): a stride-s map of
    an s-times larger canvas puts each value at its s x s block's centre, the project's convention."""
    if maps.shape[1:] == tuple(out_hw):
        return maps
    src = np.asarray(maps, np.float32)
    out = np.empty((src.shape[0], out_hw[0], out_hw[1]), np.float32)
    for c in range(src.shape[0]):  # per channel: see `resample`
        cv2.resize(np.ascontiguousarray(src[c]), (out_hw[1], out_hw[0]), dst=out[c], interpolation=cv2.INTER_LINEAR)
    return out


def argmax_channels(maps: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) uint8 index of the largest channel (the first on ties, as np.argmax; C <= 256).

    Channel by channel with branch-free arithmetic: several times faster than np.argmax(axis=0) or masked
    assignment for the handful of part classes a segmentation head has.
    """
    if maps.shape[0] > 256:
        raise ValueError(f"at most 256 channels fit uint8 labels, got {maps.shape[0]}")
    best = np.array(maps[0], np.float32, copy=True)
    index = np.zeros(best.shape, np.uint8)
    better = np.empty(best.shape, bool)
    for c in range(1, maps.shape[0]):
        np.greater(maps[c], best, out=better)
        step = np.subtract(np.uint8(c), index)  # uint8 arithmetic: index + better * (c - index) is c or index
        step *= better.view(np.uint8)
        index += step
        np.maximum(best, maps[c], out=best)
    return index
