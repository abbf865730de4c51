"""Training targets at output resolution: joint heatmaps, part affinity fields (PAFs), the pose mask.

Pure, vectorised numpy functions (float32 out). Conventions, as in OpenPose / the PAF paper (Cao et al. 2017):

- Geometry (docs/conventions.md): output cell (gx, gy) has its centre at input pixel (s*gx + (s-1)/2, s*gy + (s-1)/2);
  keypoints are in input pixels with the pixel-centre-at-integer convention. Every joint with v > 0 is used; a
  keypoint outside the image still contributes the part of its Gaussian / limb that falls on the grid.
- Heatmaps: per joint, exp(-d^2 / (2 sigma^2)) with d in INPUT pixels to each cell centre. People are merged by the
  MAXIMUM (so nearby peaks stay distinct, unlike a sum). Values below exp(-4.6052) ~= 0.01 are set to 0, as OpenPose
  does; that truncation bounds each Gaussian to a small window of cells, which is all that is evaluated (a separable
  outer product of 1-D x and y profiles). The last channel is the background, 1 - max over joints, clipped to [0, 1].
- PAFs: limb (a, b) of a person with both joints labelled writes the unit vector from a to b on every cell whose
  centre lies within `width` OUTPUT cells of the limb's line and inside the segment's bounding box grown by `width`
  on every side (all in output-grid units) -- OpenPose's rule. The box, unlike a projection in [0, length], reaches a
  little past the endpoints, which matters for limbs shorter than a cell (COCO's eye-nose, a foreshortened forearm):
  a band cut at the endpoints can hold no cell centre at all, and such a limb could never be decoded. Where several
  people's limbs cover a cell, the field is the AVERAGE of their vectors (sum / number of limbs covering the cell):
  equal directions stay unit length, opposite ones cancel. Channel 2l is x, 2l+1 is y. Zero-length limbs contribute
  nothing.
- Pose mask: the input-resolution "supervise" mask is area-averaged over each s x s cell and thresholded: a cell is
  supervised (1.0) when at least half of its pixels are (`MASK_THRESHOLD`), else 0.0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np

from posepart.heads import HeadMeta, cell_centre
from posepart.schema import IGNORE_LABEL

GAUSS_EXPONENT_CUTOFF = 4.6052  # OpenPose: exp(-4.6052) = 0.01; smaller heatmap values are truncated to 0
MASK_THRESHOLD = 0.5  # a cell is supervised when >= this fraction of its input pixels are
_EPS = 1e-6  # limbs shorter than this (output cells) have no direction


def _as_keypoints(keypoints: np.ndarray) -> np.ndarray:
    """(N, K, 3) float32 view/copy; a (K, 3) single person is accepted too."""
    kp = np.asarray(keypoints, np.float32)
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] != 3:
        raise ValueError(f"keypoints must be (N, K, 3), got {kp.shape}")
    return kp


def _labelled(kp: np.ndarray) -> np.ndarray:
    """(N, K) bool: joints that take part in the targets (v > 0, finite coordinates)."""
    return (kp[..., 2] > 0) & np.isfinite(kp[..., 0]) & np.isfinite(kp[..., 1])


def heatmaps(keypoints: np.ndarray, out_hw: tuple[int, int], stride: int, sigma: float = HeadMeta.sigma
             ) -> np.ndarray:
    """(K+1, h, w) float32 joint Gaussians (max over people) plus the background channel; see module docstring."""
    kp = _as_keypoints(keypoints)
    h, w = out_hw
    k = kp.shape[1]
    out = np.zeros((k + 1, h, w), np.float32)
    which = np.flatnonzero(_labelled(kp))  # indices into (N*K)
    if which.size:
        joint = which % k  # (M,)
        xy = kp.reshape(-1, 3)[which, :2]  # (M, 2) input px
        off = cell_centre(stride)
        radius = sigma * math.sqrt(2.0 * GAUSS_EXPONENT_CUTOFF)  # input px beyond which the Gaussian is truncated
        win = int(math.floor(2.0 * radius / stride)) + 1  # most cells on one axis whose centre is within radius
        size = np.array([w, h])
        wins = np.minimum(win, size)  # (2,) window per axis, never larger than the grid
        # first cell at or after xy - radius, moved inside the grid: every window cell is a real cell, and cells of
        # the window that are beyond the radius evaluate to the truncated 0, so no masking is needed
        start = np.minimum(np.maximum(np.ceil((xy - (radius + off)) / stride), 0), size - wins).astype(np.intp)
        cx = start[:, 0, None] + np.arange(wins[0])  # (M, wx) cell indices
        cy = start[:, 1, None] + np.arange(wins[1])  # (M, wy)
        inv = np.float32(-0.5 / (sigma * sigma))
        px = np.exp(np.square((cx * stride + off).astype(np.float32) - xy[:, 0, None]) * inv)  # (M, wx) 1-D profiles
        py = np.exp(np.square((cy * stride + off).astype(np.float32) - xy[:, 1, None]) * inv)  # (M, wy)
        val = py[:, :, None] * px[:, None, :]  # (M, wy, wx) separable Gaussian patches
        val *= val >= np.float32(math.exp(-GAUSS_EXPONENT_CUTOFF))  # OpenPose's truncation
        flat = (joint[:, None] * (h * w) + cy * w)[:, :, None] + cx[:, None, :]  # (M, wy, wx) indices into out[:k]
        np.maximum.at(out.reshape(-1), flat.ravel(), val.ravel())
    if k:
        np.subtract(1.0, out[:k].max(axis=0), out=out[k])  # in [0, 1] already: every Gaussian value is in [0, 1]
    else:
        out[k] = 1.0
    return out


def pafs(
    keypoints: np.ndarray,
    skeleton: Sequence[tuple[int, int]],
    out_hw: tuple[int, int],
    stride: int,
    width: float = HeadMeta.paf_width,
) -> np.ndarray:
    """(2L, h, w) float32 part affinity fields (unit limb directions, averaged over people); see module docstring."""
    kp = _as_keypoints(keypoints)
    h, w = out_hw
    n_limbs = len(skeleton)
    out = np.zeros((n_limbs, 2, h * w), np.float32)
    if n_limbs == 0 or kp.shape[0] == 0:
        return out.reshape(2 * n_limbs, h, w)
    edges = np.asarray(skeleton, np.intp).reshape(-1, 2)
    good = _labelled(kp)
    which = np.flatnonzero(good[:, edges[:, 0]] & good[:, edges[:, 1]])  # indices into (N*L)
    if not which.size:
        return out.reshape(2 * n_limbs, h, w)
    person, limb = np.divmod(which, n_limbs)
    off = cell_centre(stride)
    a = (kp[person, edges[limb, 0], :2] - off) / stride  # (M, 2) endpoints in grid units (cell centres at integers)
    b = (kp[person, edges[limb, 1], :2] - off) / stride
    d = b - a
    length = np.hypot(d[:, 0], d[:, 1])  # (M,)
    u = d / np.maximum(length, _EPS)[:, None]  # (M, 2) unit directions
    valid = length > _EPS  # zero-length limbs have no direction and write nothing
    # Window: the band's bounding box clipped to the grid, one size for all limbs so everything is one array op;
    # windows are moved inside the grid (the extra cells are simply tested like the others), so no bounds checks.
    lo = np.ceil(np.minimum(a, b) - width)  # (M, 2)
    hi = np.floor(np.maximum(a, b) + width)
    size = np.array([w, h])
    span = np.minimum(hi, size - 1) - np.maximum(lo, 0) + 1
    wx, wy = (min(max(int(v), 1), n) for v, n in zip(span.max(0), (w, h)))
    lo = np.minimum(np.maximum(lo, 0), size - (wx, wy)).astype(np.intp)
    cx = lo[:, 0, None] + np.arange(wx)  # (M, wx) cell indices, all on the grid
    cy = lo[:, 1, None] + np.arange(wy)  # (M, wy)
    rx = (cx - a[:, 0, None]).astype(np.float32)[:, None, :]  # (M, 1, wx) cell centre minus endpoint a
    ry = (cy - a[:, 1, None]).astype(np.float32)[:, :, None]  # (M, wy, 1)
    ux, uy = u[:, 0, None, None], u[:, 1, None, None]
    box_lo = (np.minimum(d, 0) - width).astype(np.float32)  # (M, 2) the grown bounding box, relative to a
    box_hi = (np.maximum(d, 0) + width).astype(np.float32)
    in_x = (rx >= box_lo[:, 0, None, None]) & (rx <= box_hi[:, 0, None, None])  # (M, 1, wx)
    in_y = (ry >= box_lo[:, 1, None, None]) & (ry <= box_hi[:, 1, None, None]) & valid[:, None, None]  # (M, wy, 1)
    across = np.abs(ux * ry - uy * rx)  # (M, wy, wx) perpendicular distance to the limb's line
    hit = np.flatnonzero(in_x & in_y & (across <= width))
    m = hit // (wy * wx)  # which limb instance each covered cell belongs to
    cells = ((cy * w)[:, :, None] + cx[:, None, :]).ravel()[hit]  # flat cell index (row * w + col)
    slot = limb[m] * (h * w) + cells  # (limb, cell) in a (L, h*w) array
    count = np.bincount(slot, minlength=n_limbs * h * w)
    weight = 1.0 / count[slot]  # average over the limbs covering the cell (count rule of the PAF paper)
    slot += limb[m] * (h * w)  # x channel of (L, 2, h*w); y is h*w further
    values = np.concatenate([u[m, 0] * weight, u[m, 1] * weight]).astype(np.float32)  # x values, then y values
    np.add.at(out.reshape(-1), np.concatenate([slot, slot + h * w]), values)
    return out.reshape(2 * n_limbs, h, w)


def _supervised_cells(ignored: np.ndarray, stride: int, threshold: float) -> np.ndarray:
    """(H, W) bool, True = ignored -> (H//s, W//s) float32: 1.0 where >= threshold of the cell's pixels are supervised.

    Exact integer pixel counts per s x s cell from one integral image (faster than resizing or reshape-summing)."""
    h, w = ignored.shape[0] // stride, ignored.shape[1] // stride
    if not ignored.any():  # the common case (nothing ignored): skip the counting
        return np.ones((h, w), np.float32)
    crop = np.ascontiguousarray(ignored[: h * stride, : w * stride]).view(np.uint8)
    grid = cv2.integral(crop)[::stride, ::stride].astype(np.int64)  # (h+1, w+1) cumulative ignored counts
    bad = grid[1:, 1:] - grid[:-1, 1:] - grid[1:, :-1] + grid[:-1, :-1]  # (h, w) ignored pixels per cell
    good = stride * stride - bad
    return (good >= math.ceil(threshold * stride * stride - 1e-9)).astype(np.float32)


def downsample_mask(mask: np.ndarray, stride: int, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """(H, W) bool/uint8 (1 = supervise) -> (H//s, W//s) float32 in {0, 1}: the area average over each s x s cell
    (rows/columns past the last whole cell are dropped), then 1.0 where the average is >= `threshold` (default: at
    least half the cell is supervised; OpenPose resizes its mask instead, a soft version of the same rule)."""
    mask = np.asarray(mask)
    return _supervised_cells(~mask if mask.dtype == np.bool_ else mask == 0, stride, threshold)


@dataclass
class Targets:
    """One sample's targets: heatmaps (K+1, h, w), pafs (2L, h, w), pose_mask (h, w) float32 (1 = supervise),
    parts (H, W) uint8 at input resolution (255 = ignore)."""

    heatmaps: np.ndarray
    pafs: np.ndarray
    pose_mask: np.ndarray
    parts: np.ndarray


def build_targets(
    keypoints: np.ndarray,
    ignore: np.ndarray | None,
    parts: np.ndarray | None,
    head: HeadMeta,
) -> Targets:
    """All targets of one network-input-sized sample, on the grid and with the sigma / PAF width of `head` (the
    model's `HeadMeta`; a parts-only head still gets pose maps on its `stride` grid, which its loss never reads).

    keypoints (N, K, 3) in input pixels; ignore (H, W) bool, True = do not supervise pose there (None = nothing
    ignored, then `parts` gives the size); parts (H, W) uint8 or None (-> all 255, i.e. no segmentation label).
    """
    if ignore is not None:
        size = ignore.shape[:2]
    elif parts is not None:
        size = parts.shape[:2]
    else:
        raise ValueError("build_targets needs the input size: pass an ignore mask or a part map")
    schema, stride = head.schema, head.stride
    out_hw = head.pose_grid(size)
    kp = _as_keypoints(keypoints) if np.size(keypoints) else np.zeros((0, schema.num_joints, 3), np.float32)
    if kp.shape[1] != schema.num_joints:
        raise ValueError(f"keypoints have {kp.shape[1]} joints, the schema {schema.num_joints}")
    if ignore is None:
        pose_mask = np.ones(out_hw, np.float32)
    else:
        pose_mask = _supervised_cells(np.asarray(ignore, bool), stride, MASK_THRESHOLD)
    part_map = np.full(size, IGNORE_LABEL, np.uint8) if parts is None else np.asarray(parts, np.uint8)
    return Targets(
        heatmaps=heatmaps(kp, out_hw, stride, head.sigma),
        pafs=pafs(kp, schema.skeleton, out_hw, stride, head.paf_width),
        pose_mask=pose_mask,
        parts=part_map,
    )
