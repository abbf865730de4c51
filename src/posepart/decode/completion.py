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
    limb_sum, limb_cnt (N,): the people's summed limb scores and limb counts; xy: (P, 2) peak positions (any unit).
    Returns the three arrays without the absorbed fragments."""
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
        joints = np.array(joints_t)
        frags = np.array(groups[joints_t])
        frag_xy = xy[slots[frags][:, joints]]  # (F, J, 2)
        # x and y apart: no (H, F, K, J, 2) temporary (170 MB for a loose joint's many peaks on noisy 1024 px maps)
        dx = host_xy[:, None, :, None, 0] - frag_xy[None, :, None, :, 0]  # (H, F, K, J)
        dy = host_xy[:, None, :, None, 1] - frag_xy[None, :, None, :, 1]
        d = np.sqrt(dx * dx + dy * dy)
        cost = np.nanmin(d.reshape(len(hosts), len(frags), -1), 2) / extent[:, None]  # (H, F)
        cost[found[hosts][:, joints].any(1)] = np.inf  # a host must lack every joint of the fragment
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
            host_xy[h, joints] = xy[slots[frag, joints]]
            absorbed[frag] = True
    keep = ~absorbed
    return merged[keep], merged_sum[keep], merged_cnt[keep]
