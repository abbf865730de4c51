"""Multi-person grouping (OpenPose, Cao et al. 2017): score joint pairs by their PAF line integral, match greedily per
limb, then assemble people across limbs.

The number of candidate pairs grows as people^2, so with many pairs they are first screened against a cheap "support"
map (cells where some bilinear corner has |PAF| > threshold): a pair needs at least ceil(frac * N) of its N samples
above the threshold, so one with more than N - ceil(frac * N) samples off the support cannot pass and is dropped
before the bilinear sampling. The screen is exact: it never changes the result. The pairs are scored by a compiled
loop (`posepart.decode.compiled`, numba) that drops a pair as soon as it is lost; the vectorised numpy path here
(samples x pairs in one pass) is its reference and the fallback without numba. Both give identical results.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from posepart.decode import compiled
from posepart.decode.assembly import assemble
from posepart.decode.completion import attach_fragments
from posepart.decode.peaks import PEAK_THRESHOLD, Peaks, find_peaks_flat
from posepart.heads import HeadMeta, cell_centre

_SCREEN_MIN_PAIRS_PER_LIMB = 3  # screen only when there are more candidate pairs than this per limb on average
MAX_PEAKS = 256  # peaks kept per joint (`DecodeConfig.max_peaks`)


@dataclass(frozen=True)  # checked when made (`__post_init__`): `dataclasses.replace` makes a changed copy
class DecodeConfig:
    """Decoder thresholds; defaults are OpenPose's (rtpose python demo / body_25 C++ defaults).

    peak_threshold: a heatmap peak must exceed this (OpenPose thre1 = 0.1).
    paf_samples: points sampled along each candidate limb, endpoints included (OpenPose mid_num = 10).
    paf_threshold: a sample "agrees" when PAF . unit(limb) exceeds this (OpenPose thre2 = 0.05).
    paf_min_fraction: at least ceil(fraction * samples) samples must agree (OpenPose 0.8).
    min_joints: people with fewer joints are dropped (OpenPose uses 4 on COCO; 3 suits PASCAL's 14 joints), at most
        the schema's joints (a person of a 2-joint schema with both is kept). With 1, peaks left unconnected become
        one-joint people (what evaluation uses: `DecodeConfig.for_evaluation()`). The peaks of a joint in no limb
        join a person that lacks it at any min_joints, as fragments do (below; not with fragment_max_joints 0).
    min_person_score: people whose score (see `Person`) is below this are dropped. OpenPose drops total/joints < 0.4;
        its total/joints is about twice our mean over joints and limbs, hence 0.2.
    fragment_max_joints, fragment_radius: fragments of at most this many joints join the nearest person that lacks
        them, within radius x that person's extent (`posepart.decode.completion`); 0 disables.
    peak_radius: the peak suppression radius in cells; None (the default) takes the model's, `HeadMeta.peak_radius`
        (one trunk cell). A smaller radius above the trunk's stride keeps same-type joints of two people closer than
        a trunk cell apart, at the cost of duplicate people from a trained map's side maxima (docs/training.md).
    max_peaks: at most this many peaks of each joint are kept, the highest-scored. A trained model's maps hold one
        or two per person; an untrained or diverged model's noise holds thousands, and the candidate limbs grow as
        their square (before the cap: 1,849 peaks per joint at 1024 px took 5 s to decode, 12,566 at 2048 px 242 s
        and 4.6 GB). 256 bounds a decode of noise to 0.1-0.3 s on one core for COCO's or PASCAL's joints (a schema
        of 133 joints still takes seconds, in the fragments' attachment); raise it for crowds of more.
    """

    peak_threshold: float = PEAK_THRESHOLD
    paf_samples: int = 10
    paf_threshold: float = 0.05
    paf_min_fraction: float = 0.8
    min_joints: int = 3
    min_person_score: float = 0.2
    fragment_max_joints: int = 2
    fragment_radius: float = 1.0
    peak_radius: int | None = None
    max_peaks: int = MAX_PEAKS

    def __post_init__(self) -> None:
        """Refuse values the decoder cannot use (before: paf_samples 0 divided by zero on the first image with peaks,
        NaN thresholds kept every peak or none)."""
        def integer(value: Any, low: int) -> bool:
            return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= low

        def number(value: Any, low: float = -math.inf, high: float = math.inf) -> bool:
            return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and math.isfinite(
                value) and low <= value <= high

        checks = (("peak_threshold", number(self.peak_threshold), "a finite number"),
                  ("paf_samples", integer(self.paf_samples, 2), "an integer >= 2 (both ends of a limb)"),
                  # negative: a weak or reversed field would pass, which the screen of limbs (exact for >= 0,
                  # it tests |PAF| against the threshold) does not model, so the result depended on the people's count
                  ("paf_threshold", number(self.paf_threshold, 0.0), "a finite number >= 0"),
                  ("paf_min_fraction", number(self.paf_min_fraction, 0.0, 1.0), "a number in [0, 1]"),
                  ("min_joints", integer(self.min_joints, 1), "an integer >= 1"),
                  ("min_person_score", number(self.min_person_score), "a finite number"),
                  ("fragment_max_joints", integer(self.fragment_max_joints, 0), "an integer >= 0"),
                  ("fragment_radius", number(self.fragment_radius, 0.0), "a finite number >= 0"),
                  ("peak_radius", self.peak_radius is None or integer(self.peak_radius, 1), "None or an integer >= 1"),
                  ("max_peaks", integer(self.max_peaks, 1), "an integer >= 1"))
        for name, ok, expected in checks:
            if not ok:
                raise ValueError(f"DecodeConfig.{name} must be {expected}, got {getattr(self, name)!r}")

    def window(self, head: HeadMeta) -> int:
        """The peak suppression radius used on `head`'s maps: `peak_radius`, or the head's own when it is None."""
        return head.peak_radius if self.peak_radius is None else self.peak_radius

    @classmethod
    def for_evaluation(cls) -> DecodeConfig:
        """Keep everything the maps support, ranked by score: AP rewards recall, and a low-scored extra detection
        ranks below the good ones instead of hiding a person who was seen at only one or two joints."""
        return cls(min_joints=1, min_person_score=0.0)


@dataclass
class Person:
    """One decoded person.

    keypoints: (K, 3) float32 [x, y, score] in network-input pixels (cell centre at stride * cell + (stride - 1) / 2);
        score is the heatmap value at the peak cell, and the row is all zeros for a joint that was not found.
    score: mean of the person's peak scores and accepted limb (PAF) scores, each limb score being the mean PAF
        agreement plus OpenPose's length prior; about 1 for a clean person.
    """

    keypoints: np.ndarray
    score: float


def _padded(pafs: np.ndarray) -> np.ndarray:
    """(2, L * (h + 2) * (w + 2)) float32: the x and y PAF planes with a replicated 1-cell border, flattened.
    Bilinear sampling at (x + 1, y + 1) equals clamp-to-edge bilinear sampling of the PAFs at any (x, y) in the grid's
    extent [-0.5, w - 0.5] x [-0.5, h - 0.5], with no clipping."""
    c, h, w = pafs.shape
    out = np.empty((2, c // 2, h + 2, w + 2), np.float32)
    out[:, :, 1:-1, 1:-1] = pafs.reshape(c // 2, 2, h, w).transpose(1, 0, 2, 3)
    out[:, :, 0, 1:-1] = out[:, :, 1, 1:-1]
    out[:, :, -1, 1:-1] = out[:, :, -2, 1:-1]
    out[:, :, :, 0] = out[:, :, :, 1]
    out[:, :, :, -1] = out[:, :, :, -2]
    return out.reshape(2, -1)


def _support(paf_xy: np.ndarray, row: int, threshold: float) -> np.ndarray:
    """Flat bool: True at padded cell i when any of the 4 bilinear corners i, i + 1, i + row, i + row + 1 has
    |PAF| > threshold (slightly lowered against rounding). A sample whose corner cell is False has PAF . u <= threshold
    (a bilinear blend is no longer than its longest corner), so it certainly fails: a cheap, exact screen."""
    x, y = paf_xy
    m = x * x
    m += y * y
    m = m > np.float32(threshold * threshold * 0.999)
    m[:-1] |= m[1:]
    m[:-row] |= m[row:]
    return m


class _Pairs:
    """Candidate pairs as rows of one (8, T) float32 array (so selecting pairs is one gather), in padded cell
    coordinates (every point of the grid has x, y >= 0.5): start, delta, unit vector, length, and the flat offset of
    the pair's PAF channel. `pid` maps columns back to the original pair numbering."""

    SX, SY, DX, DY, UX, UY, LEN, BASE = range(8)

    def __init__(self, attrs: np.ndarray, pid: np.ndarray) -> None:
        self.a, self.pid = attrs, pid

    @classmethod
    def build(
        cls, sx: np.ndarray, sy: np.ndarray, dx: np.ndarray, dy: np.ndarray, base: np.ndarray, dtype: type = np.float32
    ) -> _Pairs:
        a = np.empty((8, len(sx)), dtype)
        a[0], a[1], a[2], a[3], a[7] = sx, sy, dx, dy, base
        length = np.sqrt(dx * dx + dy * dy)  # (np.hypot and np.modf are many times slower than plain arithmetic)
        a[6] = length
        inv = 1.0 / np.maximum(length, np.float32(1e-6))  # a zero-length pair gets u = 0: every sample fails
        a[4] = dx * inv
        a[5] = dy * inv
        return cls(a, np.arange(len(sx)))

    def take(self, idx: np.ndarray) -> _Pairs:
        return _Pairs(self.a[:, idx], self.pid[idx])

    def __len__(self) -> int:
        return len(self.pid)

    def corners(self, row: int, t: np.ndarray, frac: bool = True) -> tuple[np.ndarray, ...]:
        """At the points start + t * d, (S, T) for t (S,): flat index of the top-left bilinear corner (and, with frac,
        the fractional x and y). Laid out (samples, pairs) so every numpy loop runs along the long pair axis."""
        a, tc = self.a, t[:, None]
        x = a[0] + tc * a[2]
        y = a[1] + tc * a[3]
        x0 = np.floor(x)
        y0 = np.floor(y)
        i00 = y0 + a[7]
        i00 *= row
        i00 += x0
        i00 = i00.astype(np.int64)  # exact: attrs are float64 when the maps have 2**24 cells or more
        if not frac:
            return (i00,)
        x -= x0
        y -= y0
        return i00, x, y

    def support_fails(self, support: np.ndarray, row: int, t: np.ndarray) -> np.ndarray:
        """(T,) number of the samples t that certainly fail (their corner cell is outside `support`)."""
        (i00,) = self.corners(row, t, frac=False)
        return len(t) - support[i00].sum(axis=0)

    def agreement(self, paf_xy: np.ndarray, row: int, t: np.ndarray) -> np.ndarray:
        """PAF . u, bilinear, at the points start + t * d: (S, T) float32 for t (S,)."""
        i00, fx, fy = self.corners(row, t)
        px, py = paf_xy
        ux, uy = self.a[4], self.a[5]

        def dot(i: np.ndarray) -> np.ndarray:
            return px[i] * ux + py[i] * uy

        a00 = dot(i00)
        top = a00 + (dot(i00 + 1) - a00) * fx
        a10 = dot(i00 + row)
        bot = a10 + (dot(i00 + (row + 1)) - a10) * fx
        return top + (bot - top) * fy


def _no_connections() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The (limb, peak_a, peak_b, score) arrays of `score_limbs` when nothing connects."""
    return (np.zeros(0, np.int64),) * 3 + (np.zeros(0),)


def _enumerate_pairs(starts: np.ndarray, skeleton: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every (limb, a, b) candidate: for each limb, every peak of joint a with every peak of joint b. (T,) each."""
    counts = np.diff(starts)
    ja, jb = skeleton[:, 0], skeleton[:, 1]
    na, nb = counts[ja], counts[jb]
    # one row per (limb, peak of a), repeated nb times
    rows_limb = np.repeat(np.arange(len(skeleton)), na)
    rows_a = np.arange(int(na.sum())) - np.repeat(np.cumsum(na) - na, na) + starts[ja][rows_limb]
    reps = nb[rows_limb]
    total = int(reps.sum())
    ia = np.repeat(rows_a, reps)
    limb = np.repeat(rows_limb, reps)
    # b runs over starts[jb] .. starts[jb] + nb - 1 within each row
    ib = np.arange(total) - np.repeat(np.cumsum(reps) - reps - starts[jb][rows_limb], reps)
    return limb, ia, ib


def score_limbs(
    peaks: Peaks, pafs: np.ndarray, skeleton: np.ndarray, config: DecodeConfig, *, jit: bool | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All acceptable candidate connections of all limbs: (limb, peak_a, peak_b, score), as flat arrays, limb-major.

    pafs: (2L, h, w) with channels (x, y) per limb; skeleton: (L, 2) joint pairs. Peak ids index `peaks` rows. A pair
    is acceptable when at least ceil(paf_min_fraction * paf_samples) of its samples have PAF . unit > paf_threshold
    and its score, mean(PAF . unit) + min(0.5 * h / length - 1, 0) (lengths in cells), is positive.
    jit: use the compiled loop (`posepart.decode.compiled`; default: when numba is available) or the vectorised
    numpy path; both give identical results.
    """
    n_l = len(skeleton)
    _, h, w = pafs.shape
    if n_l == 0 or len(peaks.score) == 0:
        return _no_connections()
    # The compiled loop does not bounds-check its reads: refuse what would make it read outside the maps.
    if pafs.shape[0] != 2 * n_l or skeleton.min() < 0 or skeleton.max() >= len(peaks.starts) - 1:
        raise ValueError(f"pafs {pafs.shape} and skeleton (max joint {skeleton.max()}) do not fit {n_l} limbs and "
                         f"{len(peaks.starts) - 1} joints of peaks")
    xy = peaks.xy
    if not (np.all(xy >= -0.5) and np.all(xy[:, 0] <= w - 0.5) and np.all(xy[:, 1] <= h - 0.5)):
        raise ValueError(f"peak positions must lie on the {h}x{w} maps (cell coordinates -0.5 to size - 0.5, "
                         "as find_peaks_flat gives them)")
    dtype = np.float32 if n_l * (h + 2) * (w + 2) < 2**24 else np.float64  # numpy's flat indices must be exact floats
    px = xy[:, 0].astype(dtype) + dtype(1.0)  # padded cell coordinates
    py = xy[:, 1].astype(dtype) + dtype(1.0)
    n = int(config.paf_samples)
    need = math.ceil(config.paf_min_fraction * n - 1e-9)
    thr = np.float32(config.paf_threshold)
    t_all, order = _samples(n, dtype)
    counts = np.diff(peaks.starts)
    n_pairs = int((counts[skeleton[:, 0]] * counts[skeleton[:, 1]]).sum())
    if n_pairs == 0:
        return _no_connections()
    # Screening (exact): a pair may fail at most n - need samples. Samples are checked centre-first against a cheap
    # support map and a pair with more certain failures than allowed is dropped before the costly bilinear sampling.
    # Worth it only when most pairs are wrong (several people).
    screen = n_pairs > _SCREEN_MIN_PAIRS_PER_LIMB * n_l and 0 <= n - need < n - 1
    if compiled.use_compiled(jit):
        maps = np.ascontiguousarray(pafs, np.float32)
        return compiled.score_pairs(px, py, peaks.starts, skeleton, maps, t_all, order, need, thr, screen)
    return _score_limbs_numpy(px, py, peaks.starts, skeleton, pafs, t_all, order, need, thr, screen)


def _score_limbs_numpy(
    px: np.ndarray, py: np.ndarray, starts: np.ndarray, skeleton: np.ndarray, pafs: np.ndarray, t_all: np.ndarray,
    order: np.ndarray, need: int, thr: np.float32, screen: bool,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`score_limbs` vectorised over all candidate pairs (samples x pairs): the reference for the compiled loop."""
    _, h, w = pafs.shape
    row = w + 2
    limb, ia, ib = _enumerate_pairs(starts, skeleton)
    sx, sy = px[ia], py[ia]
    pairs = _Pairs.build(sx, sy, px[ib] - sx, py[ib] - sy, limb * (h + 2), px.dtype.type)
    paf_xy = _padded(np.asarray(pafs, np.float32))
    n = len(t_all)
    allowed_fail = n - need
    if screen:  # in two chunks of samples: most wrong pairs are gone after the first
        support = _support(paf_xy, row, float(thr))
        fails = np.zeros(len(pairs), np.int64)
        for chunk in (order[: allowed_fail + 2], order[allowed_fail + 2 :]):
            fails += pairs.support_fails(support, row, t_all[chunk])
            alive = np.flatnonzero(fails <= allowed_fail)
            if len(alive) == 0:
                return _no_connections()
            if len(alive) < len(pairs):
                pairs, fails = pairs.take(alive), fails[alive]
    dots = pairs.agreement(paf_xy, row, t_all)  # (n, T)
    length = pairs.a[_Pairs.LEN]
    prior = np.minimum(0.5 * h / np.maximum(length, 1e-6) - 1.0, 0.0)  # OpenPose: penalise limbs > h / 2
    score = dots.mean(axis=0, dtype=np.float64) + prior
    ok = ((dots > thr).sum(axis=0) >= need) & (score > 0.0)
    keep = pairs.pid[ok]
    return limb[keep], ia[keep], ib[keep], score[ok]


def _strongest(peaks: Peaks, limit: int) -> Peaks:
    """`peaks` less all but each joint's `limit` highest-scored (ties: the first in raster order), in their order."""
    counts = np.diff(peaks.starts)
    if (counts <= limit).all():
        return peaks
    keep = np.ones(len(peaks.score), bool)
    for j in np.flatnonzero(counts > limit):
        rows = np.arange(peaks.starts[j], peaks.starts[j + 1])
        weakest = rows[np.argsort(-peaks.score[rows], kind="stable")[limit:]]
        keep[weakest] = False
    joint = peaks.joint[keep]
    return Peaks(xy=peaks.xy[keep], score=peaks.score[keep], joint=joint,
                 starts=np.searchsorted(joint, np.arange(len(peaks.starts))))


def decode(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    head: HeadMeta,
    config: DecodeConfig | None = None,
) -> list[Person]:
    """People from one image's maps. heatmaps (K+1 or K, h, w), pafs (2L, h, w): numpy, output resolution.

    `head` (the model's `HeadMeta`) gives the schema, the maps' stride and the heatmaps' Gaussian width (the sub-cell
    prior of a peak in a grid corner). Keypoints come back in network-input pixels. People are sorted by descending
    score.
    """
    cfg = config if config is not None else DecodeConfig()
    schema, stride = head.schema, head.stride
    k, n_l = schema.num_joints, schema.num_limbs
    hm = np.asarray(heatmaps)
    paf = np.asarray(pafs)
    if hm.ndim != 3 or hm.shape[0] not in (k, k + 1):
        raise ValueError(f"heatmaps must be ({k + 1} or {k}, h, w) for schema {schema.name!r}, got {hm.shape}")
    if paf.shape != (2 * n_l,) + hm.shape[1:]:
        raise ValueError(f"pafs must be {(2 * n_l,) + hm.shape[1:]}, got {paf.shape}")
    peaks = _strongest(find_peaks_flat(hm, cfg.peak_threshold, num_joints=k, sigma_cells=head.heatmap_sigma_cells,
                                       radius=cfg.window(head)), cfg.max_peaks)
    if not (np.isfinite(peaks.score).all() and np.isfinite(peaks.xy).all()):  # a NaN cell is never a peak; inf is
        raise ValueError("the heatmaps hold NaN or infinite values (a diverged model, or an overflow in reduced "
                         "precision)")
    skeleton = _skeleton(schema.skeleton)
    n_peaks = len(peaks.score)
    connections = score_limbs(peaks, paf, skeleton, cfg)
    ids, limb_sum, limb_cnt = assemble(connections, skeleton, k, n_peaks)  # ids (P, K): peak per joint, -1 = none
    # before the cap, a schema of fewer joints than min_joints (3 by default) never had a person to keep
    min_joints = min(cfg.min_joints, k)
    limbless = _limbless(schema.skeleton, k)  # (K,) joints in no limb: grouping never reaches their peaks
    if min_joints <= 1 or limbless.any():
        # Peaks no limb connects (a person annotated or seen only at one joint, or a chain broken by a missing
        # joint) become one-joint people rather than vanishing; they rank by their peak score. Above min_joints 1
        # only a joint in no limb's: as a one-joint fragment it joins a person that lacks it (before, predict
        # never output such a joint); one that joins nobody is dropped below with the small people.
        owned = np.zeros(n_peaks, bool)
        owned[ids[ids >= 0]] = True
        single = np.flatnonzero(~owned & (limbless[peaks.joint] | (min_joints <= 1)))
        alone = np.full((len(single), k), -1, np.int64)
        alone[np.arange(len(single)), peaks.joint[single]] = single
        ids = np.concatenate([ids, alone])
        limb_sum = np.concatenate([limb_sum, np.zeros(len(single))])
        limb_cnt = np.concatenate([limb_cnt, np.zeros(len(single), np.int64)])
    ids, limb_sum, limb_cnt = attach_fragments(ids, limb_sum, limb_cnt, peaks.xy, max_joints=cfg.fragment_max_joints,
                                               radius=cfg.fragment_radius, min_extent=1.0)
    if not len(ids):
        return []

    found = ids >= 0
    n_joints = found.sum(axis=1)
    safe = np.maximum(ids, 0)
    peak_score = np.where(found, peaks.score[safe], 0.0)
    score = (peak_score.sum(axis=1) + limb_sum) / (n_joints + limb_cnt)
    keep = np.flatnonzero((n_joints >= min_joints) & (score >= cfg.min_person_score))
    keep = keep[np.argsort(-score[keep], kind="stable")]
    kps = np.zeros((len(keep), k, 3), np.float32)
    kps[:, :, :2] = peaks.xy[safe[keep]] * stride + cell_centre(stride)
    kps[:, :, 2] = peak_score[keep]
    kps[~found[keep]] = 0.0
    return [Person(kp, sc) for kp, sc in zip(kps, score[keep].tolist())]  # (keywords: 50 % slower)


@functools.lru_cache(maxsize=8)
def _samples(n: int, dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Sample positions t (n,) along a pair, 0 to 1, and their screening order, centre first (read-only, cached)."""
    t = np.linspace(0.0, 1.0, n, dtype=dtype)
    order = np.argsort(np.abs(np.arange(n) - (n - 1) / 2), kind="stable")
    t.setflags(write=False)
    order.setflags(write=False)
    return t, order


@functools.lru_cache(maxsize=32)
def _skeleton(skeleton: tuple[tuple[int, int], ...]) -> np.ndarray:
    """The skeleton as an (L, 2) int64 array (cached: schemas are immutable)."""
    arr = np.asarray(skeleton, np.int64).reshape(-1, 2)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=32)
def _limbless(skeleton: tuple[tuple[int, int], ...], k: int) -> np.ndarray:
    """(k,) bool: the joints no limb of `skeleton` touches (read-only, cached)."""
    alone = np.ones(k, bool)
    alone[_skeleton(skeleton).ravel()] = False
    alone.setflags(write=False)
    return alone


def people_to_coco(people: list[Person], image_id: int, *, category_id: int = 1) -> list[dict]:
    """COCO keypoint results: {image_id, category_id, keypoints [x, y, s] * K, score} per person, in the people's
    own pixels (`decode_in_image` maps a canvas's people to their image's). Joints not found are written as
    (0, 0, 0), COCO's "absent"."""
    out = []
    for person in people:
        kp = np.asarray(person.keypoints, np.float64).copy()  # (K, 3)
        kp[kp[:, 2] <= 0] = 0.0
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "keypoints": [float(v) for v in kp.reshape(-1)],
                "score": float(person.score),
            }
        )
    return out
