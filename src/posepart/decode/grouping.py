"""Multi-person grouping (OpenPose, Cao et al. 2017): score joint pairs by their PAF line integral, match greedily per
limb, then assemble people across limbs.

Every candidate pair of every limb is scored in one vectorised pass (pairs x samples); Python loops run only over the
connections that survive. Cost grows with the number of pairs, so pairs are first screened on a few interior samples:
a pair needs at least ceil(frac * N) of its N samples above the threshold, so one whose screening samples fail more
often than N - ceil(frac * N) times cannot pass and is dropped before the full sampling (an exact shortcut).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from posepart.decode.peaks import Peaks, find_peaks_flat
from posepart.schema import Schema


@dataclass
class DecodeConfig:
    """Decoder thresholds; defaults are OpenPose's (rtpose python demo / body_25 C++ defaults).

    peak_threshold: a heatmap peak must exceed this (OpenPose thre1 = 0.1).
    paf_samples: points sampled along each candidate limb, endpoints included (OpenPose mid_num = 10).
    paf_threshold: a sample "agrees" when PAF . unit(limb) exceeds this (OpenPose thre2 = 0.05).
    paf_min_fraction: at least ceil(fraction * samples) samples must agree (OpenPose 0.8).
    min_joints: people with fewer joints are dropped (OpenPose uses 4 on COCO; 3 suits PASCAL's 14 joints).
    min_person_score: people whose score (see `Person`) is below this are dropped. OpenPose drops total/joints < 0.4;
        its total/joints is about twice our mean over joints and limbs, hence 0.2.
    sigma: heatmap Gaussian sigma in input pixels (the targets' 7); only used as the prior curvature for the sub-cell
        refinement of a peak in a grid corner.
    """

    peak_threshold: float = 0.1
    paf_samples: int = 10
    paf_threshold: float = 0.05
    paf_min_fraction: float = 0.8
    min_joints: int = 3
    min_person_score: float = 0.2
    sigma: float = 7.0


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


def _bilinear_dot(
    paf_c: np.ndarray, chan: np.ndarray, px: np.ndarray, py: np.ndarray, ux: np.ndarray, uy: np.ndarray
) -> np.ndarray:
    """PAF . u sampled bilinearly. paf_c: (L, h, w) complex (x + iy); chan (T, 1) limb index; px, py (T, S) cell
    coordinates (clamped to the grid); ux, uy (T, 1) unit vectors. Returns (T, S)."""
    n_l, h, w = paf_c.shape
    x = np.clip(px, 0.0, w - 1.0)
    y = np.clip(py, 0.0, h - 1.0)
    x0 = np.minimum(x.astype(np.int64), max(w - 2, 0))  # x >= 0, so truncation is floor
    y0 = np.minimum(y.astype(np.int64), max(h - 2, 0))
    fx = x - x0
    fy = y - y0
    sx = 1 if w > 1 else 0
    sy = w if h > 1 else 0
    flat = paf_c.reshape(-1)
    i00 = (chan * h + y0) * w + x0
    top = flat[i00] * (1.0 - fx) + flat[i00 + sx] * fx
    bot = flat[i00 + sy] * (1.0 - fx) + flat[i00 + sy + sx] * fx
    v = top * (1.0 - fy) + bot * fy
    return v.real * ux + v.imag * uy


def score_limbs(
    peaks: Peaks, pafs: np.ndarray, skeleton: np.ndarray, config: DecodeConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All accepted candidate connections of all limbs: (limb, peak_a, peak_b, score), as flat arrays.

    pafs: (2L, h, w) with channels (x, y) per limb; skeleton: (L, 2) joint pairs. Peak ids index `peaks` rows.
    """
    n_l = len(skeleton)
    _, h, w = pafs.shape
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0),)
    counts = np.diff(peaks.starts)
    if n_l == 0 or len(peaks.score) == 0:
        return empty
    ja, jb = skeleton[:, 0], skeleton[:, 1]
    na, nb = counts[ja], counts[jb]
    npairs = na * nb  # (L,)
    total = int(npairs.sum())
    if total == 0:
        return empty
    # Enumerate every (a, b) pair of every limb without a Python loop.
    limb = np.repeat(np.arange(n_l), npairs)
    local = np.arange(total) - np.repeat(np.cumsum(npairs) - npairs, npairs)
    nb_t = nb[limb]
    ia = peaks.starts[ja][limb] + local // nb_t
    ib = peaks.starts[jb][limb] + local % nb_t
    pa = peaks.xy[ia]
    d = peaks.xy[ib] - pa  # (T, 2) in cells
    length = np.hypot(d[:, 0], d[:, 1])
    good = length > 1e-9
    limb, ia, ib, pa, d, length = limb[good], ia[good], ib[good], pa[good], d[good], length[good]
    if len(limb) == 0:
        return empty

    # (L, h, w) complex view of the PAFs, so one gather fetches both components.
    paf = np.asarray(pafs, np.float32).reshape(n_l, 2, h, w)
    paf_c = np.empty((n_l, h, w), np.complex64)
    paf_c.real = paf[:, 0]
    paf_c.imag = paf[:, 1]

    n = int(config.paf_samples)
    need = math.ceil(config.paf_min_fraction * n - 1e-9)
    t_all = np.linspace(0.0, 1.0, n)

    def agree(sel: np.ndarray | slice, t: np.ndarray) -> np.ndarray:
        """PAF . unit for the selected pairs at fractions t along the limb: (T', len(t))."""
        p0, dd, ln = pa[sel], d[sel], length[sel][:, None]
        px = p0[:, 0:1] + dd[:, 0:1] * t
        py = p0[:, 1:2] + dd[:, 1:2] * t
        return _bilinear_dot(paf_c, limb[sel][:, None], px, py, dd[:, 0:1] / ln, dd[:, 1:2] / ln)

    # Screening: if more than n - need interior samples fail, the pair cannot pass.
    allowed_fail = n - need
    if 0 <= allowed_fail < n - 2 and len(limb) > 4 * n_l:
        pick = np.unique(np.linspace(1, n - 2, allowed_fail + 1).round().astype(int))
        fails = (agree(slice(None), t_all[pick]) <= config.paf_threshold).sum(axis=1)
        alive = np.nonzero(fails <= allowed_fail)[0]
        limb, ia, ib, pa, d, length = limb[alive], ia[alive], ib[alive], pa[alive], d[alive], length[alive]
        if len(limb) == 0:
            return empty
    dots = agree(slice(None), t_all)  # (T, n)
    prior = np.minimum(0.5 * h / length - 1.0, 0.0)  # OpenPose's penalty for limbs longer than half the image height
    score = dots.mean(axis=1) + prior
    ok = ((dots > config.paf_threshold).sum(axis=1) >= need) & (score > 0.0)
    return limb[ok], ia[ok], ib[ok], score[ok]


def _greedy_match(
    limb: np.ndarray, ia: np.ndarray, ib: np.ndarray, score: np.ndarray, n_peaks: int
) -> list[tuple[int, int, int, float]]:
    """Per limb, greedy bipartite matching by descending score: each peak used at most once per limb.
    Returns (limb, a, b, score) sorted by limb, then descending score."""
    order = np.lexsort((-score, limb))
    used: set[int] = set()
    out = []
    for l_, a, b, s in zip(limb[order].tolist(), ia[order].tolist(), ib[order].tolist(), score[order].tolist()):
        ka, kb = l_ * n_peaks + a, l_ * n_peaks + b  # a peak belongs to one joint, so (limb, peak) is unambiguous
        if ka in used or kb in used:
            continue
        used.add(ka)
        used.add(kb)
        out.append((l_, a, b, s))
    return out


def _assemble(
    connections: list[tuple[int, int, int, float]], skeleton: list[tuple[int, int]], num_joints: int
) -> list[tuple[list[int], float, int]]:
    """Join connections into people (OpenPose). Returns (peak id per joint or -1, summed limb score, limb count).

    A connection whose endpoints are both free starts a person; one with a single endpoint in a person extends it when
    that person's other slot is empty; one joining two different people merges them when they share no joint. Any
    other connection contradicts what is already assembled (a cycle in the skeleton, or a weaker duplicate) and is
    skipped; a connection inside one person (closing a cycle) adds its score.
    """
    people: list[list[int] | None] = []
    limb_sum: list[float] = []
    limb_cnt: list[int] = []
    owner: dict[int, int] = {}  # peak id -> person index
    for l_, a, b, s in connections:
        ja, jb = skeleton[l_]
        pa, pb = owner.get(a), owner.get(b)
        if pa is None and pb is None:
            slots = [-1] * num_joints
            slots[ja], slots[jb] = a, b
            owner[a] = owner[b] = len(people)
            people.append(slots)
            limb_sum.append(s)
            limb_cnt.append(1)
        elif pb is None or pa is None:
            p, j, peak = (pa, jb, b) if pb is None else (pb, ja, a)
            slots = people[p]
            assert slots is not None
            if slots[j] == -1:
                slots[j] = peak
                owner[peak] = p
                limb_sum[p] += s
                limb_cnt[p] += 1
        elif pa == pb:
            limb_sum[pa] += s
            limb_cnt[pa] += 1
        else:
            s1, s2 = people[pa], people[pb]
            assert s1 is not None and s2 is not None
            if all(x == -1 or y == -1 for x, y in zip(s1, s2)):
                for j, peak in enumerate(s2):
                    if peak != -1:
                        s1[j] = peak
                        owner[peak] = pa
                limb_sum[pa] += limb_sum[pb] + s
                limb_cnt[pa] += limb_cnt[pb] + 1
                people[pb] = None
    return [(p, limb_sum[i], limb_cnt[i]) for i, p in enumerate(people) if p is not None]


def decode(
    heatmaps: np.ndarray,
    pafs: np.ndarray,
    schema: Schema,
    stride: int = 8,
    config: DecodeConfig | None = None,
) -> list[Person]:
    """People from one image's maps. heatmaps (K+1 or K, h, w), pafs (2L, h, w): numpy, output resolution.

    Keypoints come back in network-input pixels. People are sorted by descending score.
    """
    cfg = config if config is not None else DecodeConfig()
    k, n_l = schema.num_joints, schema.num_limbs
    hm = np.asarray(heatmaps)
    paf = np.asarray(pafs)
    if hm.ndim != 3 or hm.shape[0] not in (k, k + 1):
        raise ValueError(f"heatmaps must be ({k + 1} or {k}, h, w) for schema {schema.name!r}, got {hm.shape}")
    if paf.shape != (2 * n_l,) + hm.shape[1:]:
        raise ValueError(f"pafs must be {(2 * n_l,) + hm.shape[1:]}, got {paf.shape}")
    peaks = find_peaks_flat(hm, cfg.peak_threshold, num_joints=k, sigma_cells=cfg.sigma / stride)
    skeleton = np.asarray(schema.skeleton, np.int64).reshape(-1, 2)
    limb, ia, ib, s = score_limbs(peaks, paf, skeleton, cfg)
    if len(limb) == 0:
        return []
    connections = _greedy_match(limb, ia, ib, s, len(peaks.score))
    people = _assemble(connections, [tuple(e) for e in schema.skeleton], k)
    if not people:
        return []

    ids = np.array([p for p, _, _ in people], np.int64)  # (P, K), -1 = not found
    found = ids >= 0
    n_joints = found.sum(axis=1)
    peak_sum = np.where(found, peaks.score[np.maximum(ids, 0)], 0.0).sum(axis=1)
    limb_sum = np.array([ls for _, ls, _ in people])
    limb_cnt = np.array([lc for _, _, lc in people])
    score = (peak_sum + limb_sum) / (n_joints + limb_cnt)
    keep = (n_joints >= cfg.min_joints) & (score >= cfg.min_person_score)
    ids, found, score = ids[keep], found[keep], score[keep]
    half = (stride - 1) / 2.0
    kps = np.zeros(ids.shape + (3,), np.float64)
    safe = np.maximum(ids, 0)
    kps[..., :2] = peaks.xy[safe] * stride + half
    kps[..., 2] = peaks.score[safe]
    kps[~found] = 0.0
    order = np.argsort(-score, kind="stable")
    return [Person(keypoints=kps[i].astype(np.float32), score=float(score[i])) for i in order]


def people_to_coco(
    people: list[Person], image_id: int, to_image: np.ndarray | None = None, category_id: int = 1
) -> list[dict]:
    """COCO keypoint results: {image_id, category_id, keypoints [x, y, s] * K, score} per person.

    to_image: optional (2, 3) affine from network-input pixels to original-image pixels. Joints not found are written
    as (0, 0, 0), COCO's "absent".
    """
    out = []
    m = None if to_image is None else np.asarray(to_image, np.float64).reshape(2, 3)
    for person in people:
        kp = np.asarray(person.keypoints, np.float64).copy()  # (K, 3)
        found = kp[:, 2] > 0
        if m is not None:
            kp[:, :2] = kp[:, :2] @ m[:, :2].T + m[:, 2]
        kp[~found] = 0.0
        out.append(
            {
                "image_id": int(image_id),
                "category_id": int(category_id),
                "keypoints": [float(v) for v in kp.reshape(-1)],
                "score": float(person.score),
            }
        )
    return out
