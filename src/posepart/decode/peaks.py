"""Joint peaks: non-maximum suppression over all joint heatmaps at once, with sub-cell log-parabola refinement.

A peak is the maximum of the cells within r = `HeadMeta.peak_radius` cells (one trunk cell): the digital disk
dx^2 + dy^2 <= r^2 + 1, which is the 3x3 block at r = 1 (stride 8) and the 5x5 block less its corners at r = 2
(stride 4), so that the window covers about the same input pixels whatever the stride. Why: a heatmap trained with
the focal loss at stride 4 has secondary maxima a cell or two from its peak (the loss barely penalises values near
a joint); with a 3x3 window each became a joint and the decoder built duplicate people from them (AP 0.240 -> 0.278
on the demo's validation scenes with r = 2, docs/training.md). The disk rather than the 5x5 square keeps more of the
decoded ground truth where same-type joints of two people come close (oracle 0.953 -> 0.961 there).

Why the log-parabola: the ground-truth heatmaps are Gaussians exp(-d^2 / (2 sigma^2)); the log of a Gaussian is an
exact parabola along each axis (it is separable), so fitting a parabola through the logs of a peak cell and its two
neighbours recovers the keypoint exactly, wherever it lies inside the cell. Ties are resolved so that a plateau of
equal maxima (a keypoint exactly between two or four cell centres) gives ONE peak: a cell must be strictly greater
than its 4 neighbours that come earlier in raster order (up-left, up, up-right, left) and greater or equal to the 4
later ones, so exactly the first cell of a plateau survives. Its equal right (or lower) neighbour makes the parabola
symmetric about the midpoint, so the refined offset is exactly +0.5: the midpoint, as seen from either tied cell.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

from posepart.heads import HeadMeta

PEAK_THRESHOLD = 0.1  # the lowest heatmap value a joint is read from (OpenPose's thre1)
_SIGMA_CELLS = HeadMeta.sigma / HeadMeta.pose_stride  # the default head's Gaussian, in cells

_MIN_VALUE = 1e-12  # neighbours at or below this cannot be logged and count as missing


@functools.lru_cache(maxsize=16)
def _offsets(row: int) -> np.ndarray:
    """Flat offsets (5, 1) in an array with rows of length `row` of the cross around a cell: left, up, centre, right,
    down (so [:2] and [3:] are the lower and upper neighbours along [x, y])."""
    return np.array([[-1], [-row], [0], [1], [row]])


@functools.lru_cache(maxsize=16)
def _rings(row: int, radius: int) -> tuple[tuple[int, bool], ...]:
    """(flat offset, earlier in raster order) of the cells of the suppression disk outside the 3x3 block."""
    return tuple((dy * row + dx, (dy, dx) < (0, 0)) for dy in range(-radius, radius + 1)
                 for dx in range(-radius, radius + 1)
                 if max(abs(dy), abs(dx)) >= 2 and dy * dy + dx * dx <= radius * radius + 1)


class Peaks(NamedTuple):
    """All joints' peaks as flat arrays, grouped by joint: joint j owns rows starts[j]:starts[j + 1]."""

    xy: np.ndarray  # (N, 2) float64 refined [x, y] in output-cell coordinates
    score: np.ndarray  # (N,) float64 heatmap value at the peak cell
    joint: np.ndarray  # (N,) int64 joint index, non-decreasing
    starts: np.ndarray  # (K + 1,) int64 row offsets per joint


def _refine(cross: np.ndarray, sigma_cells: float) -> np.ndarray:
    """Sub-cell offsets (2, N) [dx; dy] in [-0.5, 0.5] from the crosses (5, N) [left; up; centre; right; down] around
    the peaks (-inf outside the grid). Laid out peaks-last so that every operation runs along the long axis.

    Along each axis the parabola through log(left), log(centre), log(right) has its vertex at
    0.5 * (l - r) / (l - 2c + r). An axis missing a neighbour (grid border, or a value too small to log) fits through
    the neighbour it has, borrowing the curvature l - 2c + r of the other axis (the Gaussian is isotropic), or the
    prior -1 / sigma^2 when the other axis is incomplete too.
    """
    ok = cross > _MIN_VALUE
    lg = np.log(np.where(ok, cross, 1.0))
    lo, hi, c = lg[:2], lg[3:], lg[2]  # (2, N) per axis [x; y]: [left; up], [right; down]; centre (N,)
    ok_lo, ok_hi = ok[:2], ok[3:]
    complete = ok_lo & ok_hi
    own = lo + hi - 2.0 * c
    if complete.all():  # the usual case: both neighbours on both axes (and own < 0 at a strict maximum)
        return np.clip(0.5 * (lo - hi) / np.minimum(own, -1e-12), -0.5, 0.5)
    curv = np.where(complete, own, np.where(complete[::-1], own[::-1], -1.0 / float(sigma_cells) ** 2))
    curv = np.where(curv < 0.0, curv, -1.0)  # a strict maximum has curvature < 0; never divide by >= 0
    off = np.where(
        complete,
        0.5 * (lo - hi) / curv,  # vertex of f(t) = c + (hi - lo) / 2 t + curv / 2 t^2
        np.where(ok_hi, 0.5 - (hi - c) / curv, np.where(ok_lo, (lo - c) / curv - 0.5, 0.0)),
    )
    return np.clip(off, -0.5, 0.5)


def find_peaks_flat(
    heatmaps: np.ndarray,
    threshold: float = PEAK_THRESHOLD,
    *,
    num_joints: int | None = None,
    sigma_cells: float = _SIGMA_CELLS,
    radius: int = 1,
) -> Peaks:
    """Peaks of every joint channel at once (see module doc); the flat form the decoder works on.

    heatmaps: (C, h, w); only the first `num_joints` channels are searched (default all, so pass the schema's
    `num_joints` when the background channel is present). sigma_cells: the Gaussian sigma in output cells, used only
    as the prior curvature -1/sigma^2 for a peak in a grid corner, where neither axis has both neighbours.
    radius: a peak is the maximum of the cells within `radius` (the disk above; ties: the first in raster order).
    """
    if isinstance(radius, bool) or not isinstance(radius, (int, np.integer)) or radius < 1:
        raise ValueError(f"radius must be an integer >= 1, got {radius!r}")
    hm = np.asarray(heatmaps)
    if hm.ndim != 3:
        raise ValueError(f"heatmaps must be (C, h, w), got shape {hm.shape}")
    k = hm.shape[0] if num_joints is None else int(num_joints)
    if k > hm.shape[0]:
        raise ValueError(f"num_joints={k} but heatmaps have only {hm.shape[0]} channels")
    if hm.dtype != np.float32 and hm.dtype != np.float64:
        hm = hm.astype(np.float32)
    hm = hm[:k]
    _, h, w = hm.shape
    # -inf padded copy (`radius` cells each side), flattened: the neighbours of flat index i are i +- 1 and i +- row,
    # so the 3x3 maximum is two separable passes of contiguous 1-D maxima (cost independent of the number of people).
    pad_cells = int(radius)
    row = w + 2 * pad_cells
    pad = np.full((k, h + 2 * pad_cells, row), -np.inf, hm.dtype)
    pad[:, pad_cells:-pad_cells, pad_cells:-pad_cells] = hm
    flat = pad.reshape(-1)
    rmax = np.maximum(flat[:-2], flat[2:])  # rmax[i - 1] = max over i - 1, i, i + 1
    np.maximum(rmax, flat[1:-1], out=rmax)
    max3 = np.maximum(rmax[: -2 * row], rmax[2 * row :])  # max3[m] = 3x3 max at flat index m + row + 1
    np.maximum(max3, rmax[row:-row], out=max3)
    # value >= its 3x3 max and > threshold, in one comparison: max3 is raised to the next float above threshold
    np.maximum(max3, np.nextafter(hm.dtype.type(threshold), hm.dtype.type(np.inf)), out=max3)
    pos = np.flatnonzero(flat[row + 1 : row + 1 + len(max3)] >= max3) + (row + 1)  # padded flat indices, raster order
    # Every neighbour is <= the peak already; a plateau keeps only its first cell: strictly above the 4 earlier ones.
    # (Four vector comparisons: reducing an (N, 4) block along its short axis costs 3x more at 20 people.)
    v = flat[pos]
    keep = (flat[pos - row - 1] < v) & (flat[pos - row] < v) & (flat[pos - row + 1] < v) & (flat[pos - 1] < v)
    if radius > 1:  # the wider disk, checked for the 3x3 maxima only, with the same tie rule
        for offset, earlier in _rings(row, int(radius)):
            ring = flat[pos + offset]
            keep &= (ring < v) if earlier else (ring <= v)
    if not keep.all():
        pos = pos[keep]
    jj, rem = np.divmod(pos, (h + 2 * pad_cells) * row)
    yy, xx = np.divmod(rem, row)
    cross = flat[pos + _offsets(row)].astype(np.float64)  # (5, N), -inf outside the grid
    off = _refine(cross, sigma_cells)
    xy = np.empty((len(pos), 2))
    xy[:, 0] = (xx - pad_cells) + off[0]
    xy[:, 1] = (yy - pad_cells) + off[1]
    starts = np.searchsorted(jj, np.arange(k + 1))
    return Peaks(xy=xy, score=cross[2], joint=jj, starts=starts)


def find_peaks(
    heatmaps: np.ndarray,
    threshold: float = PEAK_THRESHOLD,
    *,
    num_joints: int | None = None,
    sigma_cells: float = _SIGMA_CELLS,
    radius: int = 1,
) -> list[np.ndarray]:
    """Per joint, an array (P, 3) of [x_cell, y_cell, score]: refined peak position in output cells and the heatmap
    value at the peak cell. heatmaps (K or K+1, h, w): pass `num_joints=K` to skip a background channel."""
    p = find_peaks_flat(heatmaps, threshold, num_joints=num_joints, sigma_cells=sigma_cells, radius=radius)
    both = np.concatenate([p.xy, p.score[:, None]], axis=1)
    return [both[p.starts[j] : p.starts[j + 1]] for j in range(len(p.starts) - 1)]
