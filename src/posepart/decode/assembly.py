"""From scored candidate connections to people: per-limb greedy matching, then OpenPose's assembly across limbs.

Both steps are sequential by nature (which connection wins depends on what was taken before it), so they are plain
loops over the accepted connections (about one per limb per person), compiled by numba (`posepart.decode.compiled`)
and run as Python without it. People are arrays: `Assembled` = (slots (P, K) peak id per joint or -1, summed limb
scores (P,), limb counts (P,)).
"""

from __future__ import annotations

import numpy as np

from posepart.decode.compiled import jit

Connections = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # (limb, peak a, peak b, score), each (C,)
Assembled = tuple[np.ndarray, np.ndarray, np.ndarray]  # (slots (P, K) int64, limb score sums (P,), limb counts (P,))


@jit
def greedy_match(limb: np.ndarray, ia: np.ndarray, ib: np.ndarray, score: np.ndarray, n_peaks: int) -> np.ndarray:
    """Per limb, greedy bipartite matching by descending score: each peak used at most once per limb.

    The connections must be grouped by limb in ascending order (as `score_limbs` returns them). Returns the indices
    of the accepted connections, by limb, then descending score (ties: input order): the order people are assembled
    in.
    """
    used_in = np.full(n_peaks, -1, np.int64)  # the limb a peak was last matched in
    take = np.empty(len(limb), np.int64)
    n = 0
    start = 0
    while start < len(limb):
        end = start
        while end < len(limb) and limb[end] == limb[start]:
            end += 1
        current = limb[start]
        for i in start + np.argsort(-score[start:end], kind="mergesort"):
            if used_in[ia[i]] != current and used_in[ib[i]] != current:
                used_in[ia[i]] = current
                used_in[ib[i]] = current
                take[n] = i
                n += 1
        start = end
    return take[:n]


@jit
def _assemble(limb: np.ndarray, ia: np.ndarray, ib: np.ndarray, score: np.ndarray, skeleton: np.ndarray,
              num_joints: int, n_peaks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    slots = np.full((len(limb), num_joints), -1, np.int64)  # at most one new person per connection
    limb_sum = np.zeros(len(limb))
    limb_cnt = np.zeros(len(limb), np.int64)
    alive = np.zeros(len(limb), np.bool_)
    owner = np.full(n_peaks, -1, np.int64)  # peak id -> person
    n = 0
    for c in range(len(limb)):
        a, b, s = ia[c], ib[c], score[c]
        ja, jb = skeleton[limb[c], 0], skeleton[limb[c], 1]
        pa, pb = owner[a], owner[b]
        if pa < 0 and pb < 0:  # both free: a new person
            slots[n, ja], slots[n, jb] = a, b
            owner[a] = owner[b] = n
            limb_sum[n], limb_cnt[n], alive[n] = s, 1, True
            n += 1
        elif pa < 0 or pb < 0:  # one end in a person: extend it if that slot is empty
            p, j, peak = (pa, jb, b) if pb < 0 else (pb, ja, a)
            if slots[p, j] == -1:
                slots[p, j] = peak
                owner[peak] = p
                limb_sum[p] += s
                limb_cnt[p] += 1
        elif pa == pb:  # closes a cycle inside one person
            limb_sum[pa] += s
            limb_cnt[pa] += 1
        else:  # joins two people: merge when they share no joint
            disjoint = True
            for j in range(num_joints):
                if slots[pa, j] != -1 and slots[pb, j] != -1:
                    disjoint = False
            if disjoint:
                for j in range(num_joints):
                    if slots[pb, j] != -1:
                        slots[pa, j] = slots[pb, j]
                        owner[slots[pb, j]] = pa
                limb_sum[pa] += limb_sum[pb] + s
                limb_cnt[pa] += limb_cnt[pb] + 1
                alive[pb] = False
    keep = np.flatnonzero(alive[:n])
    return slots[keep], limb_sum[keep], limb_cnt[keep]


def assemble(connections: Connections, skeleton: np.ndarray, num_joints: int, n_peaks: int) -> Assembled:
    """People from the scored connections (limb-major, as `score_limbs` returns them): `greedy_match` per limb, then
    OpenPose's assembly of the accepted connections, one at a time in the matching's order.

    A connection whose endpoints are both free starts a person; one with a single endpoint in a person extends it when
    that person's other slot is empty; one joining two different people merges them when they share no joint. Any
    other connection contradicts what is already assembled (a cycle in the skeleton, or a weaker duplicate) and is
    skipped; a connection inside one person (closing a cycle) adds its score. People come out in creation order.
    """
    limb, ia, ib, score = connections
    take = greedy_match(limb, ia, ib, score, n_peaks)
    return _assemble(limb[take], ia[take], ib[take], np.asarray(score[take], np.float64), skeleton, num_joints,
                     n_peaks)
