"""Attaching small fragments to people: the step after PAF grouping.

PAF grouping joins joints only along skeleton edges, so a person whose chain is broken (an occluded or unlabelled
elbow between a visible shoulder and wrist) comes out as a person plus a fragment (the forearm). Fragments of at most
`max_joints` joints are given to assembled people that lack all of their joints, when they lie within that person's
extent (`radius` x the larger side of the person's joint bounding box). Fragments with the same joints compete for
the same people, so each such group is assigned one-to-one by minimum total normalised distance (Hungarian, scipy)
rather than greedily: two left wrists near two people go one to each.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy.optimize import linear_sum_assignment


def attach_fragments(slots: np.ndarray, limb_sum: np.ndarray, limb_cnt: np.ndarray, xy: np.ndarray, *,
                     max_joints: int, radius: float, min_extent: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge fragments (<= max_joints joints) into compatible people. slots (N, K): peak id per joint (-1 = none),
    limb_sum, limb_cnt (N,): the people's summed limb scores and limb counts; xy: (P, 2) finite peak positions (any
    unit; measured in float64). Returns the three arrays without the absorbed fragments."""
    xy = np.asarray(xy, np.float64)
    found = slots >= 0
    size = found.sum(1)
    hosts = np.flatnonzero(size > max_joints)
    if max_joints <= 0 or len(slots) < 2 or not len(hosts) or len(hosts) == len(slots):
        return slots, limb_sum, limb_cnt
    host_xy = np.where(found[hosts, :, None], xy[np.maximum(slots[hosts], 0)], np.nan)  # (H, K, 2)
    extent = np.maximum(np.nanmax(host_xy, 1) - np.nanmin(host_xy, 1), min_extent).max(1)  # (H,)
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)  # joint set -> fragments with exactly those joints
    for f in np.flatnonzero(size <= max_joints):
        groups[tuple(np.flatnonzero(found[f]))].append(int(f))
    merged, merged_sum, merged_cnt = slots.copy(), limb_sum.copy(), limb_cnt.copy()
    absorbed = np.zeros(len(slots), bool)
    for joints_t in sorted(groups, key=lambda js: -len(js)):  # bigger fragments first
        if not joints_t:  # rows without joints (assembly makes none) have nothing to place
            continue
        joints = np.array(joints_t)
        frags = np.array(groups[joints_t])
        host_found = found[hosts]
        cost = _nearest_joint(host_found, merged[hosts], xy, xy[slots[frags][:, joints]]) / extent[:, None]  # (H, F)
        cost[host_found[:, joints].any(1)] = np.inf  # a host must lack every joint of the fragment
        cost[~(cost <= radius)] = radius + 1.0  # too far (or impossible): never chosen over staying alone
        rows, cols = linear_sum_assignment(cost)
        for h, f_i in zip(rows, cols):
            if cost[h, f_i] > radius:
                continue
            host, frag = hosts[h], frags[f_i]
            merged[host, joints] = slots[frag, joints]
            merged_sum[host] += limb_sum[frag]
            merged_cnt[host] += limb_cnt[frag]
            found[host, joints] = True
            absorbed[frag] = True
    keep = ~absorbed
    return merged[keep], merged_sum[keep], merged_cnt[keep]


_PAIRS_PER_CHUNK = 1 << 21  # host joint x fragment joint distances per chunk (each of its temporaries: 16 MB)


def _nearest_joint(found: np.ndarray, slots: np.ndarray, xy: np.ndarray, frag_xy: np.ndarray) -> np.ndarray:
    """(H, F): for each person (found, slots: (H, K), every row with a joint) and fragment (frag_xy: (F, J, 2)), the
    distance between the person's and the fragment's nearest joints; xy, frag_xy float64.

    Over the people's found joints only, host by host (`np.minimum.reduceat`): a grid of every joint of the schema
    (H x F x K x J, most of it the NaN of joints a person lacks) took 31 s on an untrained 133-joint model's maps,
    2,259 people with 4.5 joints each against 3,352 fragments; fragments in chunks, so the distance grids stay
    bounded. The same float operations as that grid, so the same distances bit for bit."""
    person, joint = np.nonzero(found)  # row-major: each person's joints together, people in order
    starts = np.flatnonzero(np.r_[True, person[1:] != person[:-1]])  # (H,) every person has one
    points = xy[slots[person, joint]]  # (M, 2)
    f, j = frag_xy.shape[:2]
    out = np.empty((len(starts), f))
    step = max(1, _PAIRS_PER_CHUNK // max(len(points) * j, 1))
    for a in range(0, f, step):
        ends = frag_xy[a : a + step].reshape(-1, 2)  # (F' * J, 2)
        dx = points[:, None, 0] - ends[None, :, 0]  # (M, F' * J)
        dy = points[:, None, 1] - ends[None, :, 1]
        d = np.minimum.reduceat(np.sqrt(dx * dx + dy * dy), starts, axis=0)  # (H, F' * J)
        out[:, a : a + step] = d.reshape(len(starts), -1, j).min(2)
    return out
