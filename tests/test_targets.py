"""Target tests: hand-computed heatmap/PAF/mask values, and the fast windowed implementation against a plain dense
brute-force reference (written here, one formula per line) on random people."""

from __future__ import annotations

import math

import numpy as np
import pytest

from posepart.heads import HeadMeta
from posepart.schema import Schema
from posepart.targets import GAUSS_EXPONENT_CUTOFF, build_targets, downsample_mask, heatmaps, pafs

S = 8
HALF = (S - 1) / 2  # input coordinate of cell 0's centre: 3.5


def centre(g: float) -> float:
    """Input coordinate of output cell g's centre."""
    return S * g + HALF


def person(k: int, joints: dict[int, tuple[float, float]], v: float = 2) -> np.ndarray:
    kp = np.zeros((k, 3), np.float32)
    for j, (x, y) in joints.items():
        kp[j] = (x, y, v)
    return kp


# -- heatmaps ---------------------------------------------------------------------------------------------------------
def test_peak_on_cell_centre_and_neighbour_value() -> None:
    kp = person(2, {0: (centre(5), centre(7))})[None]
    hm = heatmaps(kp, (12, 10), S, sigma=7.0)
    assert hm.shape == (3, 12, 10) and hm.dtype == np.float32
    assert hm[0, 7, 5] == pytest.approx(1.0)
    assert np.unravel_index(hm[0].argmax(), hm[0].shape) == (7, 5)
    # neighbour one cell right: d = 8 px -> exp(-64 / 98); diagonal: d^2 = 128 -> exp(-128 / 98)
    assert hm[0, 7, 6] == pytest.approx(math.exp(-64 / 98), rel=1e-6)
    assert hm[0, 8, 6] == pytest.approx(math.exp(-128 / 98), rel=1e-6)
    # 2 cells away: d^2 = 256, exponent 2.61 < 4.6052 kept; 3 cells: 576 / 98 = 5.88 > cutoff -> truncated to 0
    assert hm[0, 7, 7] == pytest.approx(math.exp(-256 / 98), rel=1e-6)
    assert hm[0, 7, 8] == 0.0 and hm[0, 4, 5] == 0.0
    assert np.all(hm[1] == 0)  # joint 1 unlabelled: empty map
    np.testing.assert_allclose(hm[2], 1 - hm[0], atol=1e-7)  # background


def test_two_people_merge_by_max_not_sum() -> None:
    a = person(1, {0: (centre(3), centre(3))})
    b = person(1, {0: (centre(5), centre(3))})  # two cells apart: they overlap at cell 4
    hm = heatmaps(np.stack([a, b]), (8, 8), S, sigma=7.0)
    g1 = math.exp(-64 / 98)
    assert hm[0, 3, 4] == pytest.approx(g1, rel=1e-6)  # max(g1, g1), not 2 * g1
    assert hm[0, 3, 3] == pytest.approx(1.0) and hm[0, 3, 5] == pytest.approx(1.0)
    assert hm[0].max() <= 1.0 and hm[1].min() >= 0.0
    assert hm[1, 3, 4] == pytest.approx(1 - g1, rel=1e-6)


def test_unlabelled_and_occluded_joints() -> None:
    kp = person(3, {0: (20.0, 20.0), 1: (30.0, 10.0)})[None].copy()
    kp[0, 1, 2] = 1  # occluded but labelled: used
    kp[0, 2] = (40.0, 40.0, 0)  # coordinates but v = 0: ignored
    hm = heatmaps(kp, (8, 8), S)
    assert hm[0].max() > 0.5 and hm[1].max() > 0.5 and not hm[2].any()
    empty = heatmaps(np.zeros((0, 3, 3), np.float32), (8, 8), S)
    assert not empty[:3].any() and np.all(empty[3] == 1)


def test_subcell_keypoint_and_off_image() -> None:
    x, y = 21.3, 30.9
    hm = heatmaps(person(1, {0: (x, y)})[None], (8, 8), S, sigma=5.0)
    d2 = (centre(2) - x) ** 2 + (centre(4) - y) ** 2
    assert hm[0, 4, 2] == pytest.approx(math.exp(-d2 / 50), rel=1e-5)
    # a keypoint just left of the image still lights its Gaussian tail on column 0; a far one lights nothing
    near = heatmaps(person(1, {0: (-6.0, centre(2))})[None], (8, 8), S)
    assert near[0, 2, 0] == pytest.approx(math.exp(-(9.5**2) / 98), rel=1e-5)
    far = heatmaps(person(1, {0: (-500.0, 1e4)})[None], (8, 8), S)
    assert not far[0].any()


# -- PAFs -------------------------------------------------------------------------------------------------------------
def test_horizontal_limb() -> None:
    kp = person(2, {0: (centre(2), centre(5)), 1: (centre(8), centre(5))})[None]
    paf = pafs(kp, [(0, 1)], (10, 12), S, width=1.0)
    assert paf.shape == (2, 10, 12) and paf.dtype == np.float32
    on = np.zeros((10, 12), bool)
    on[4:7, 1:10] = True  # rows within 1 cell of row 5 (inclusive), columns within [2 - 1, 8 + 1] (box grown by 1)
    np.testing.assert_array_equal(paf[0], on.astype(np.float32))
    assert not paf[1].any()
    # reversed limb (1, 0) points the other way
    back = pafs(kp, [(1, 0)], (10, 12), S, width=1.0)
    np.testing.assert_array_equal(back[0], -on.astype(np.float32))


def test_diagonal_limb_unit_vectors_and_width() -> None:
    kp = person(2, {0: (centre(1), centre(1)), 1: (centre(6), centre(6))})[None]
    paf = pafs(kp, [(0, 1)], (9, 9), S, width=1.0)
    r = 1 / math.sqrt(2)
    assert paf[0, 3, 3] == pytest.approx(r) and paf[1, 3, 3] == pytest.approx(r)
    assert paf[0, 3, 4] == pytest.approx(r)  # perpendicular distance 1/sqrt(2) <= 1
    assert paf[0, 3, 5] == 0.0  # distance sqrt(2) > 1
    assert paf[0, 0, 0] == pytest.approx(r)  # inside the box grown by 1 and on the line: OpenPose's rule covers it
    assert paf[0, 0, 1] == pytest.approx(r)  # (x=1, y=0): 1/sqrt(2) from the line, inside the box
    assert paf[0, 0, 2] == 0.0  # (x=2, y=0): sqrt(2) from the line
    assert paf[0, 8, 8] == 0.0  # (x=8, y=8): on the line but outside the box [0, 7]^2

    norm = np.hypot(paf[0], paf[1])
    assert np.allclose(norm[norm > 0], 1.0)


def test_overlapping_limbs_average() -> None:
    a = person(2, {0: (centre(1), centre(3)), 1: (centre(6), centre(3))})
    same = pafs(np.stack([a, a]), [(0, 1)], (8, 8), S)
    np.testing.assert_allclose(np.hypot(same[0], same[1])[3, 1:7], 1.0)  # equal directions stay unit length
    b = a.copy()
    b[[0, 1]] = a[[1, 0]]  # the same segment, opposite direction
    opposite = pafs(np.stack([a, b]), [(0, 1)], (8, 8), S)
    assert not opposite.any()  # (1,0) + (-1,0) over a count of 2 -> 0
    # half-overlap: a runs 1..6, c runs 4..9 (same direction): cells 4..6 average two unit vectors = unit
    c = person(2, {0: (centre(4), centre(3)), 1: (centre(9), centre(3))})
    both = pafs(np.stack([a, c]), [(0, 1)], (8, 10), S)
    np.testing.assert_allclose(both[0, 3, 1:10], 1.0)
    # perpendicular overlap averages to (1, 1) / 2 where the two cross (count rule, not normalised)
    d = person(2, {0: (centre(4), centre(0)), 1: (centre(4), centre(7))})
    cross = pafs(np.stack([a, d]), [(0, 1)], (8, 8), S)
    assert cross[0, 3, 4] == pytest.approx(0.5) and cross[1, 3, 4] == pytest.approx(0.5)


def test_paf_skips_unlabelled_and_zero_length() -> None:
    kp = person(3, {0: (20.0, 20.0), 1: (60.0, 20.0), 2: (20.0, 20.0)})[None].copy()
    kp[0, 1, 2] = 0  # limb (0, 1) has an unlabelled end
    paf = pafs(kp, [(0, 1), (0, 2)], (8, 10), S)
    assert not paf.any()  # (0, 2) has zero length


# -- mask and build_targets -------------------------------------------------------------------------------------------
def test_downsample_mask_rule() -> None:
    mask = np.ones((16, 24), bool)
    mask[0:8, 0:8] = False  # cell (0, 0) fully ignored
    mask[0:4, 8:16] = False  # cell (0, 1): 32 of 64 supervised -> exactly half: supervised
    mask[0:5, 16:24] = False  # cell (0, 2): 24 of 64 supervised -> ignored
    mask[8, 8] = False  # cell (1, 1): 63 of 64 -> supervised
    out = downsample_mask(mask, S)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out, [[0, 1, 0], [1, 1, 1]])
    np.testing.assert_array_equal(downsample_mask(mask.astype(np.uint8), S), out)
    assert np.all(downsample_mask(np.ones((17, 30), np.uint8), S) == 1) and downsample_mask(
        np.ones((17, 30)), S).shape == (2, 3)


def test_build_targets_shapes_and_masks() -> None:
    schema = Schema.pascal_person_part()
    kp = np.zeros((1, schema.num_joints, 3), np.float32)
    kp[0, :, 0] = np.linspace(40, 300, schema.num_joints)
    kp[0, :, 1] = 100
    kp[0, :, 2] = 2
    ignore = np.zeros((368, 368), bool)
    ignore[:, :16] = True
    parts = np.zeros((368, 368), np.uint8)
    t = build_targets(kp, ignore, parts, HeadMeta(schema))
    assert t.heatmaps.shape == (schema.heatmap_channels, 46, 46) and t.pafs.shape == (schema.paf_channels, 46, 46)
    assert t.pose_mask.shape == (46, 46) and t.pose_mask.dtype == np.float32
    assert np.all(t.pose_mask[:, :2] == 0) and np.all(t.pose_mask[:, 2:] == 1)
    assert t.parts.shape == (368, 368) and t.parts.dtype == np.uint8 and not t.parts.any()
    none = build_targets(kp, ignore, None, HeadMeta(schema))
    assert np.all(none.parts == 255)
    np.testing.assert_array_equal(none.heatmaps, t.heatmaps)
    # the people drawn with the head's own sigma and PAF width (not the defaults), against the dense references
    head = HeadMeta(schema, sigma=5.0, paf_width=1.5)
    drawn = build_targets(kp, ignore, parts, head)
    np.testing.assert_allclose(drawn.heatmaps, reference_heatmaps(kp, 46, 46, 5.0), atol=2e-6)
    far = ~np.isclose(drawn.pafs, reference_pafs(kp.astype(np.float64), schema.skeleton, 46, 46, 1.5), atol=1e-5)
    assert far.sum() <= 6 and drawn.pafs.any()  # cells on a band's border may flip between float32 and float64


# -- fast implementation vs a plain dense reference -------------------------------------------------------------------
def reference_heatmaps(kp: np.ndarray, h: int, w: int, sigma: float) -> np.ndarray:
    k = kp.shape[1]
    out = np.zeros((k + 1, h, w))
    ys, xs = np.mgrid[0:h, 0:w] * S + HALF  # every cell centre, input pixels
    for p in kp:
        for j in range(k):
            x, y, v = p[j]
            if v > 0:
                g = np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))
                g[g < math.exp(-GAUSS_EXPONENT_CUTOFF)] = 0
                out[j] = np.maximum(out[j], g)
    out[k] = np.clip(1 - out[:k].max(0), 0, 1)
    return out


def reference_pafs(kp: np.ndarray, skeleton, h: int, w: int, width: float) -> np.ndarray:
    total = np.zeros((len(skeleton), 2, h, w))
    count = np.zeros((len(skeleton), h, w))
    gy, gx = np.mgrid[0:h, 0:w].astype(float)  # cell centres in grid units
    for p in kp:
        for i, (a, b) in enumerate(skeleton):
            if p[a, 2] <= 0 or p[b, 2] <= 0:
                continue
            ax, ay = (p[a, :2] - HALF) / S
            bx, by = (p[b, :2] - HALF) / S
            length = math.hypot(bx - ax, by - ay)
            if length < 1e-6:
                continue
            ux, uy = (bx - ax) / length, (by - ay) / length
            across = abs((gy - ay) * ux - (gx - ax) * uy)
            in_box = (gx >= min(ax, bx) - width) & (gx <= max(ax, bx) + width)
            in_box &= (gy >= min(ay, by) - width) & (gy <= max(ay, by) + width)
            on = in_box & (across <= width)
            total[i, 0][on] += ux
            total[i, 1][on] += uy
            count[i][on] += 1
    return (total / np.maximum(count, 1)[:, None]).reshape(-1, h, w)


def random_people(rng: np.random.Generator, n: int, k: int, size: int) -> np.ndarray:
    kp = np.zeros((n, k, 3), np.float32)
    centres = rng.uniform(-20, size + 20, (n, 1, 2))
    kp[..., :2] = centres + rng.normal(0, size / 8, (n, k, 2))
    kp[..., 2] = rng.choice([0, 1, 2], (n, k), p=[0.15, 0.25, 0.6])
    return kp


@pytest.mark.parametrize("seed", range(6))
def test_fast_matches_reference(seed: int) -> None:
    schema = Schema.pascal_person_part() if seed % 2 else Schema.coco()
    rng = np.random.default_rng(seed)
    h, w = (46, 46) if seed < 4 else (32, 40)
    n = [1, 3, 10, 20, 0, 7][seed]
    kp = random_people(rng, n, schema.num_joints, S * max(h, w))
    if n:
        a, b = schema.skeleton[0]
        kp[0, b] = kp[0, a]  # a zero-length limb
    sigma = [7.0, 7.0, 5.0, 7.0, 9.0, 3.0][seed]
    width = [1.0, 1.0, 1.5, 1.0, 0.7, 1.0][seed]
    np.testing.assert_allclose(heatmaps(kp, (h, w), S, sigma), reference_heatmaps(kp, h, w, sigma), atol=2e-6)
    fast = pafs(kp, schema.skeleton, (h, w), S, width)
    ref = reference_pafs(kp.astype(np.float64), schema.skeleton, h, w, width)
    # cells exactly on the band's border can flip between float32 and float64: allow a handful
    far = ~np.isclose(fast, ref, atol=1e-5)
    assert far.sum() <= 6, f"{far.sum()} PAF values differ"
    assert fast.dtype == np.float32
