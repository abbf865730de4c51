"""Joint peaks: 3x3 non-maximum suppression over all joint heatmaps at once, with sub-cell log-parabola refinement.

Why the log-parabola: the ground-truth heatmaps are Gaussians exp(-d^2 / (2 sigma^2)); the log of a Gaussian is an
exact parabola along each axis (it is separable), so fitting a parabola through the logs of a peak cell and its two
neighbours recovers the keypoint exactly, wherever it lies inside the cell. Ties are resolved so that a plateau of
equal maxima (a keypoint exactly between two or four cell centres) gives ONE peak: a cell must be strictly greater
than its 4 neighbours that come earlier in raster order (up-left, up, up-right, left) and greater or equal to the 4
later ones, so exactly the first cell of a plateau survives. Its equal right (or lower) neighbour makes the parabola
symmetric about the midpoint, so the refined offset is exactly +0.5: the midpoint, as seen from either tied cell.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Offsets (dy, dx) of the 3x3 neighbourhood in raster order; index 4 is the centre.
_NEIGHBOURS = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))
_EARLIER = np.array([0, 1, 2, 3])  # must be strictly below the centre
_LATER = np.array([5, 6, 7, 8])  # must be at most the centre
_MIN_VALUE = 1e-12  # neighbours at or below this cannot be logged and count as missing


class Peaks(NamedTuple):
    """All joints' peaks as flat arrays, grouped by joint: joint j owns rows starts[j]:starts[j + 1]."""

    xy: np.ndarray  # (N, 2) float64 refined [x, y] in output-cell coordinates
    score: np.ndarray  # (N,) float64 heatmap value at the peak cell
    joint: np.ndarray  # (N,) int64 joint index, non-decreasing
    starts: np.ndarray  # (K + 1,) int64 row offsets per joint


def _log_offsets(
    lo: np.ndarray, c: np.ndarray, hi: np.ndarray, lo_ok: np.ndarray, hi_ok: np.ndarray, curv_fallback: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertex offset of the parabola through log values at -1, 0, +1 (logs already taken).

    Returns (offset, curvature, complete) where `complete` marks rows with both neighbours. Rows missing one neighbour
    (grid border, or a non-positive value) use `curv_fallback` as the second difference and fit through the other
    neighbour alone; rows missing both get offset 0.
    """
    complete = lo_ok & hi_ok
    curv = np.where(complete, lo - 2.0 * c + hi, curv_fallback)  # second difference, < 0 at a strict maximum
    curv = np.where(curv < 0.0, curv, -1.0)  # guard: never divide by a non-negative curvature
    off_both = 0.5 * (lo - hi) / curv  # vertex of f(t) = c + B t + curv/2 t^2 with B = (hi - lo) / 2
    off_hi = 0.5 - (hi - c) / curv  # from f(1) - f(0) = B + curv / 2
    off_lo = (lo - c) / curv - 0.5  # from f(-1) - f(0) = -B + curv / 2
    off = np.where(complete, off_both, np.where(hi_ok, off_hi, np.where(lo_ok, off_lo, 0.0)))
    return off, curv, complete


def find_peaks_flat(
    heatmaps: np.ndarray, threshold: float = 0.1, *, num_joints: int | None = None, sigma_cells: float = 7.0 / 8.0
) -> Peaks:
    """Peaks of every joint channel at once (see module doc); the flat form the decoder works on.

    heatmaps: (C, h, w); only the first `num_joints` channels are searched (default all, so pass the schema's
    `num_joints` when the background channel is present). sigma_cells: the Gaussian sigma in output cells, used only
    as the prior curvature -1/sigma^2 for a peak in a grid corner, where neither axis has both neighbours.
    """
    hm = np.asarray(heatmaps)
    if hm.ndim != 3:
        raise ValueError(f"heatmaps must be (C, h, w), got shape {hm.shape}")
    k = hm.shape[0] if num_joints is None else int(num_joints)
    if k > hm.shape[0]:
        raise ValueError(f"num_joints={k} but heatmaps have only {hm.shape[0]} channels")
    hm = hm[:k]
    _, h, w = hm.shape
    # 3x3 maximum by two separable passes over a -inf padded copy (cost independent of the number of people).
    pad = np.full((k, h + 2, w + 2), -np.inf, np.float32 if hm.dtype == np.float32 else np.float64)
    pad[:, 1:-1, 1:-1] = hm
    rows = np.maximum(np.maximum(pad[:, :, :-2], pad[:, :, 1:-1]), pad[:, :, 2:])  # (k, h+2, w)
    max3 = np.maximum(np.maximum(rows[:, :-2], rows[:, 1:-1]), rows[:, 2:])  # (k, h, w)
    cand = (hm >= max3) & (hm > threshold)
    jj, yy, xx = np.nonzero(cand)  # raster order: by joint, then y, then x
    # 3x3 neighbourhoods of the candidates (N, 9) from the padded array; -inf outside the grid.
    flat = pad.reshape(-1)
    centre = (jj * (h + 2) + yy + 1) * (w + 2) + xx + 1
    offs = np.array([dy * (w + 2) + dx for dy, dx in _NEIGHBOURS])
    nb = flat[centre[:, None] + offs[None, :]].astype(np.float64)
    c = nb[:, 4:5]
    keep = (nb[:, _EARLIER] < c).all(axis=1) & (nb[:, _LATER] <= c).all(axis=1)  # plateau -> its first cell
    nb, jj, yy, xx = nb[keep], jj[keep], yy[keep], xx[keep]

    ok = nb > _MIN_VALUE
    with np.errstate(divide="ignore", invalid="ignore"):
        lg = np.log(np.where(ok, nb, 1.0))
    prior = np.full(len(nb), -1.0 / float(sigma_cells) ** 2)
    ly, lc, ry, lx, rx = lg[:, 1], lg[:, 4], lg[:, 7], lg[:, 3], lg[:, 5]
    # Each axis first with its own neighbours; an incomplete axis borrows the other axis's curvature (the Gaussian
    # is isotropic), or the sigma prior when both axes are incomplete.
    x_complete = ok[:, 3] & ok[:, 5]
    y_complete = ok[:, 1] & ok[:, 7]
    curv_x = np.where(x_complete, lx - 2.0 * lc + rx, prior)
    curv_y = np.where(y_complete, ly - 2.0 * lc + ry, prior)
    dx, _, _ = _log_offsets(lx, lc, rx, ok[:, 3], ok[:, 5], np.where(y_complete, curv_y, prior))
    dy, _, _ = _log_offsets(ly, lc, ry, ok[:, 1], ok[:, 7], np.where(x_complete, curv_x, prior))
    dx = np.clip(dx, -0.5, 0.5)
    dy = np.clip(dy, -0.5, 0.5)

    xy = np.stack([xx + dx, yy + dy], axis=1)
    starts = np.searchsorted(jj, np.arange(k + 1)).astype(np.int64)
    return Peaks(xy=xy, score=nb[:, 4].copy(), joint=jj.astype(np.int64), starts=starts)


def find_peaks(
    heatmaps: np.ndarray, threshold: float = 0.1, *, num_joints: int | None = None, sigma_cells: float = 7.0 / 8.0
) -> list[np.ndarray]:
    """Per joint, an array (P, 3) of [x_cell, y_cell, score]: refined peak position in output cells and the heatmap
    value at the peak cell. heatmaps (K or K+1, h, w): pass `num_joints=K` to skip a background channel."""
    p = find_peaks_flat(heatmaps, threshold, num_joints=num_joints, sigma_cells=sigma_cells)
    both = np.concatenate([p.xy, p.score[:, None]], axis=1)
    return [both[p.starts[j] : p.starts[j + 1]] for j in range(len(p.starts) - 1)]
