"""Compiled inner loops of the decoder (numba): the work that grows with the number of people.

Vectorised numpy pays for every candidate pair of joints in full (people^2 of them per limb), however early the pair
could be rejected, and the sequential assembly costs a Python loop step per connection. Here the pair scoring drops a
pair as soon as more of its samples have failed than may fail (usually after 5 support-map lookups, about 8 ns), and
`posepart.decode.assembly` (matching, assembly) and `posepart.decode.instances` (the part-instance pixel sweep) run
their loops through `jit` too. `score_pairs` computes exactly what the numpy path in `posepart.decode.grouping`
computes (the same float operations in the same order), which the tests check bit for bit.

Functions compile on their first call and are cached on disk. Without a working numba, `jit` returns the plain
Python function, and the pair scoring and part instances take their numpy paths instead (`use_compiled`): slower,
same result.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, TypeVar

import numpy as np

from posepart.errors import PosepartWarning

try:
    import numba
except Exception as err:  # noqa: BLE001 - numba refuses numpy versions it was not built for, with an ImportError
    numba = None
    _MISSING = f"{type(err).__name__}: {err}"  # said when the decoder first runs (`use_compiled`): before, on import,
    # so every command said it (`--help`, `synth`) in the documented install without numba

F = TypeVar("F", bound=Callable[..., Any])


def jit(fn: F) -> F:
    """`fn` compiled by numba (lazily, on its first call; cached on disk), or `fn` itself without numba.
    A compiled function keeps the original as `.py_func`. Where numba finds nowhere to write its cache (a read-only
    install whose user has no writable home: a container with a read-only root file system) it compiles in every
    process instead; before, the import failed ("cannot cache function ...": `NUMBA_CACHE_DIR` names a folder)."""
    if numba is None:
        return fn
    try:
        return numba.njit(cache=True, nogil=True)(fn)
    except RuntimeError as err:
        if "cannot cache" not in str(err):
            raise
        return numba.njit(cache=False, nogil=True)(fn)


def use_compiled(requested: bool | None) -> bool:
    """Whether a function with both paths runs its compiled one: as `requested`, or (None) when numba is available.
    Without numba the default choice warns, from this line: Python's default filter says it once per process (a
    flag of our own would be spent where a caller's filter hid the warning)."""
    if requested is None and numba is None:
        warnings.warn(f"numba unavailable ({_MISSING}): the decoder runs its slower numpy paths", PosepartWarning)
    return numba is not None if requested is None else requested


@jit
def _strong_map(pafs: np.ndarray, threshold: float) -> np.ndarray:
    """(L, h + 2, w + 2) uint8 support map in padded cell coordinates (those of the samples): 1 where any of the four
    bilinear corners of a sample in that cell has |PAF| > threshold (slightly lowered against rounding). A sample in
    a 0 cell blends four vectors no longer than the threshold, so PAF . u <= threshold: it certainly fails. Samples
    lie in cells 0..h, 0..w: the last row and column are never read (and hold no meaning)."""
    c, h, w = pafs.shape
    row = w + 2
    cut = np.float32(threshold * threshold * 0.999)
    strong = np.empty((h + 2, row), np.uint8)  # |PAF| > threshold at each cell, border replicated
    flat = strong.reshape(-1)
    n = (h + 1) * row - 1  # cells whose four corners lie inside `strong`
    top_left, top_right, bottom_left, bottom_right = flat[:n], flat[1 : n + 1], flat[row : row + n], flat[row + 1 :]
    out = np.zeros((c // 2, h + 2, row), np.uint8)
    for limb in range(c // 2):
        vx, vy = pafs[2 * limb], pafs[2 * limb + 1]
        for y in range(h):
            ax, ay, m = vx[y], vy[y], strong[y + 1]
            for x in range(w):
                m[x + 1] = ax[x] * ax[x] + ay[x] * ay[x] > cut
            m[0] = m[1]
            m[w + 1] = m[w]
        strong[0] = strong[1]
        strong[h + 1] = strong[h]
        o = out[limb].reshape(-1)
        for i in range(n):  # one contiguous pass over four shifted views (35 % faster than row by row)
            o[i] = top_left[i] | top_right[i] | bottom_left[i] | bottom_right[i]
    return out


@jit
def _agreement(vx: np.ndarray, vy: np.ndarray, h: int, w: int, x: Any, y: Any, ux: Any, uy: Any) -> Any:
    """PAF . (ux, uy) of one limb's flattened (h * w) PAF planes, sampled bilinearly at padded cell coordinates
    (x, y), clamped to the grid's edge (what sampling the replicated-border copy of the numpy path reads)."""
    x0 = np.floor(x)
    y0 = np.floor(y)
    fx = x - x0
    fy = y - y0
    c0, r0 = int(x0) - 1, int(y0) - 1  # top-left corner in unpadded cells
    c1, r1 = min(max(c0 + 1, 0), w - 1), min(max(r0 + 1, 0), h - 1)
    c0, r0 = min(max(c0, 0), w - 1), min(max(r0, 0), h - 1)
    # unsigned flat indices, as in `_cell`
    i00, i01 = np.uintp(r0 * w + c0), np.uintp(r0 * w + c1)
    i10, i11 = np.uintp(r1 * w + c0), np.uintp(r1 * w + c1)
    a00 = vx[i00] * ux + vy[i00] * uy
    a01 = vx[i01] * ux + vy[i01] * uy
    a10 = vx[i10] * ux + vy[i10] * uy
    a11 = vx[i11] * ux + vy[i11] * uy
    top = a00 + (a01 - a00) * fx
    bot = a10 + (a11 - a10) * fx
    return top + (bot - top) * fy


@jit
def _cell(x: Any, y: Any, row: int) -> Any:
    """Flat index of the cell holding padded coordinates (x, y) >= 0 (so truncation is floor), unsigned: numba adds a
    negative-index wraparound to every signed index."""
    return np.uintp(np.int32(y) * row + np.int32(x))


@jit
def score_pairs(
    px: np.ndarray, py: np.ndarray, starts: np.ndarray, skeleton: np.ndarray, pafs: np.ndarray, t: np.ndarray,
    order: np.ndarray, need: int, threshold: float, screen: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every acceptable (limb, peak a, peak b, score), limb-major like the numpy path (see `score_limbs`).

    px, py: (N,) peak positions in padded cells (+1), float32 (float64 on huge maps); pafs (2L, h, w) float32;
    t (n,) sample positions along a pair, in the dtype of px; order: sample indices centre first (the screen order).
    With `screen`, samples whose four bilinear corners all have |PAF| <= threshold count as certain failures and a
    pair with more than n - need of them is dropped before any bilinear sampling: exact, it never changes the result.
    """
    n_limbs, (_, h, w) = skeleton.shape[0], pafs.shape
    row = w + 2  # of the padded support map
    n = t.shape[0]
    allowed = n - need
    first = min(n, 5)  # screened without a branch per sample: almost every wrong pair fails 3 of these 5
    thr = pafs.dtype.type(threshold)
    zero, one, eps = px.dtype.type(0.0), px.dtype.type(1.0), px.dtype.type(1e-6)  # the numpy path's, in its dtype
    half_h = px.dtype.type(0.5 * h)
    strong = _strong_map(pafs, threshold).reshape(n_limbs, -1) if screen else np.zeros((n_limbs, 1), np.uint8)
    flat = pafs.reshape(pafs.shape[0], -1)
    cap = 0
    for li in range(n_limbs):
        ja, jb = skeleton[li, 0], skeleton[li, 1]
        cap += (starts[ja + 1] - starts[ja]) * (starts[jb + 1] - starts[jb])
    out_limb = np.empty(cap, np.int64)
    out_a = np.empty(cap, np.int64)
    out_b = np.empty(cap, np.int64)
    out_score = np.empty(cap, np.float64)
    dots = np.empty(n, px.dtype)  # float32 PAFs times a unit vector in the coordinates' dtype
    ts = t[order]
    head = np.zeros(5, ts.dtype)  # the first five in registers: unrolled, the screen costs 12 % less per pair
    head[:first] = ts[:first]
    t0, t1, t2, t3, t4 = head[0], head[1], head[2], head[3], head[4]
    m = 0
    for li in range(n_limbs):
        ja, jb = skeleton[li, 0], skeleton[li, 1]
        s, vx, vy = strong[li], flat[2 * li], flat[2 * li + 1]
        for a in range(starts[ja], starts[ja + 1]):
            sx, sy = px[a], py[a]
            for b in range(starts[jb], starts[jb + 1]):
                dx = px[b] - sx
                dy = py[b] - sy
                if screen:
                    if first == 5:
                        fails = 5 - (s[_cell(sx + t0 * dx, sy + t0 * dy, row)]
                                     + s[_cell(sx + t1 * dx, sy + t1 * dy, row)]
                                     + s[_cell(sx + t2 * dx, sy + t2 * dy, row)]
                                     + s[_cell(sx + t3 * dx, sy + t3 * dy, row)]
                                     + s[_cell(sx + t4 * dx, sy + t4 * dy, row)])
                    else:  # fewer than five samples per pair
                        fails = 0
                        for j in range(first):
                            fails += 1 - s[_cell(sx + ts[j] * dx, sy + ts[j] * dy, row)]
                    if fails > allowed:
                        continue
                    for j in range(first, n):
                        fails += 1 - s[_cell(sx + ts[j] * dx, sy + ts[j] * dy, row)]
                        if fails > allowed:
                            break
                    if fails > allowed:
                        continue
                length = np.sqrt(dx * dx + dy * dy)
                inv = one / max(length, eps)  # a zero-length pair gets u = 0: every sample fails
                ux = dx * inv
                uy = dy * inv
                agree = 0
                for i in range(n):
                    dots[i] = _agreement(vx, vy, h, w, sx + t[i] * dx, sy + t[i] * dy, ux, uy)
                    agree += dots[i] > thr
                    if agree + n - 1 - i < need:  # lost: stop sampling
                        break
                if agree < need:
                    continue
                total = 0.0
                for i in range(n):
                    total += np.float64(dots[i])
                prior = min(half_h / max(length, eps) - one, zero)  # OpenPose: penalise limbs longer than h / 2
                score = total / n + np.float64(prior)
                if score > 0.0:
                    out_limb[m], out_a[m], out_b[m], out_score[m] = li, a, b, score
                    m += 1
    return out_limb[:m], out_a[:m], out_b[:m], out_score[:m]

