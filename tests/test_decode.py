"""Decoder tests: ground-truth maps from a plain reference renderer (written here, independent of posepart.targets)
must decode back to the exact keypoints, people and COCO results."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import pytest

from posepart.decode import (DecodeConfig, Person, decode, decode_in_image, find_peaks, find_peaks_flat,
                             people_to_coco)
from posepart.decode.completion import attach_fragments
from posepart.heads import HeadMeta
from posepart.schema import Schema

STRIDE = 8
SIGMA = 7.0
HALF = (STRIDE - 1) / 2  # input coordinate of cell 0's centre


# -- reference renderer: plain loops over people and joints, one formula per line --------------------------------------
def render(people: np.ndarray, schema: Schema, size: int = 368) -> tuple[np.ndarray, np.ndarray]:
    """Heatmaps (K+1, h, w): Gaussians max-merged over people, background 1 - max. PAFs (2L, h, w): unit vectors on
    cells within 1 cell of each limb, averaged over the people covering a cell."""
    h = w = size // STRIDE
    cx = np.arange(w) * STRIDE + HALF  # cell centres in input pixels
    cy = np.arange(h) * STRIDE + HALF
    k = schema.num_joints
    hm = np.zeros((k + 1, h, w))
    for person in people:
        for j in range(k):
            x, y, v = person[j]
            if v > 0:
                g = np.exp(-((cx[None, :] - x) ** 2 + (cy[:, None] - y) ** 2) / (2 * SIGMA**2))
                hm[j] = np.maximum(hm[j], g)
    hm[k] = 1.0 - hm[:k].max(axis=0)
    paf = np.zeros((schema.paf_channels, h, w))
    gy, gx = np.mgrid[0:h, 0:w].astype(float)  # cell coordinates
    for li, (a, b) in enumerate(schema.skeleton):
        count = np.zeros((h, w))
        for person in people:
            if person[a, 2] <= 0 or person[b, 2] <= 0:
                continue
            pa = (person[a, :2] - HALF) / STRIDE
            pb = (person[b, :2] - HALF) / STRIDE
            d = pb - pa
            u = d / np.linalg.norm(d)
            t = np.clip(((gx - pa[0]) * d[0] + (gy - pa[1]) * d[1]) / (d @ d), 0.0, 1.0)
            dist = np.hypot(gx - (pa[0] + t * d[0]), gy - (pa[1] + t * d[1]))
            on = dist <= 1.0
            paf[2 * li][on] += u[0]
            paf[2 * li + 1][on] += u[1]
            count += on
        paf[2 * li : 2 * li + 2] /= np.maximum(count, 1.0)
    return hm.astype(np.float32), paf.astype(np.float32)


def random_people(rng: np.random.Generator, k: int, n: int, size: int = 368, grid: int = 3) -> np.ndarray:
    """n people (n, k, 3), v = 2, each with joints uniform in its own grid slot shrunk by 20 px on each side, so the
    same joint of two people is >= 40 px apart and their Gaussians and PAFs never compete near a peak. Joints of one
    person are >= 16 px apart (dart throwing), so no limb degenerates even after snapping to cells."""
    slot = size / grid
    cells = rng.choice(grid * grid, size=n, replace=False)
    out = np.zeros((n, k, 3))
    for i, c in enumerate(cells):
        x0, y0 = (c % grid) * slot + 20, (c // grid) * slot + 20
        j = 0
        while j < k:
            xy = rng.uniform((x0, y0), (x0 + slot - 40, y0 + slot - 40))
            if j == 0 or np.hypot(*(out[i, :j, :2] - xy).T).min() >= 16:
                out[i, j, :2] = xy
                j += 1
    out[..., 2] = 2
    return out


def match(people: list[Person], truth: np.ndarray) -> np.ndarray:
    """For each true person, the max joint error (px) of the decoded person that is closest to it (inf if none)."""
    errs = np.full(len(truth), np.inf)
    for i, t in enumerate(truth):
        vis = t[:, 2] > 0
        for p in people:
            if np.array_equal(p.keypoints[:, 2] > 0, vis):
                errs[i] = min(errs[i], np.abs(p.keypoints[vis, :2] - t[vis, :2]).max())
    return errs


def assert_exact(people: list[Person], truth: np.ndarray, tol: float = 1e-3) -> None:
    assert len(people) == len(truth)
    errs = match(people, truth)
    assert errs.max() < tol, errs
    for p in people:
        missing = p.keypoints[:, 2] == 0
        assert np.all(p.keypoints[missing] == 0)
        assert np.all(p.keypoints[~missing, 2] > 0.7)  # the peak cell of a Gaussian is >= exp(-32/98)


PASCAL = Schema.pascal_person_part()


# -- peaks -------------------------------------------------------------------------------------------------------------
def test_peaks_exact_with_ties_and_border() -> None:
    """One Gaussian per channel: off-centre, on a cell centre, halfway in x, in y, in both, in two corner cells."""
    kps = [(44.2, 40.9), (43.5, 43.5), (47.5, 43.5), (43.5, 47.5), (47.5, 47.5), (-0.3, 1.2), (95.1, 94.6)]
    people = np.array([[(x, y, 2) for x, y in kps]], float)
    schema = Schema(keypoints=tuple(f"j{i}" for i in range(len(kps))), skeleton=())
    hm, _ = render(people, schema, size=96)
    peaks = find_peaks(hm, 0.1, num_joints=len(kps))
    assert len(peaks) == len(kps)
    for (x, y), p in zip(kps, peaks):
        assert p.shape == (1, 3)  # a plateau of 2 or 4 equal cells gives exactly one peak
        assert abs(p[0, 0] * STRIDE + HALF - x) < 1e-3 and abs(p[0, 1] * STRIDE + HALF - y) < 1e-3
    # ties really are ties in the rendered map
    gx, gy = (47.5 - HALF) / STRIDE, (47.5 - HALF) / STRIDE
    block = hm[4, int(gy) : int(gy) + 2, int(gx) : int(gx) + 2]
    assert np.all(block == block[0, 0])
    # hand-computed score: the peak cell of the on-centre joint is exactly 1, a half-cell tie exp(-16/98)
    assert peaks[1][0, 2] == pytest.approx(1.0)
    assert peaks[2][0, 2] == pytest.approx(np.exp(-16 / 98), rel=1e-6)
    # without num_joints the background channel is searched too (its maxima are far from the joints)
    assert len(find_peaks(hm, 0.1)) == len(kps) + 1


def test_peaks_threshold_and_empty() -> None:
    hm = np.zeros((3, 10, 12), np.float32)
    assert all(len(p) == 0 for p in find_peaks(hm, 0.1))
    hm[1, 4, 5] = 0.3
    hm[2, 6, 7] = 0.05  # below threshold
    peaks = find_peaks(hm, 0.1)
    assert [len(p) for p in peaks] == [0, 1, 0]
    assert peaks[1][0].tolist() == pytest.approx([5.0, 4.0, 0.3])  # zero neighbours cannot be logged: no offset


def test_plateau_of_three_gives_one_peak() -> None:
    hm = np.zeros((1, 5, 7), np.float32)
    hm[0, 2, 2:5] = 0.9
    hm[0, 1, 1:6] = hm[0, 3, 1:6] = 0.5
    (p,) = find_peaks(hm, 0.1)
    assert len(p) == 1


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_peaks_match_a_brute_force_window_maximum(radius: int) -> None:
    """On maps without ties a peak is exactly a cell above the threshold that is the maximum of the cells within
    dx^2 + dy^2 <= r^2 + 1 (scipy's maximum_filter with that footprint, -inf outside the map), for every radius."""
    from scipy.ndimage import maximum_filter

    rng = np.random.default_rng(radius)
    hm = rng.random((4, 13, 17)).astype(np.float32)
    d = np.arange(-radius, radius + 1)
    disk = d[:, None] ** 2 + d[None, :] ** 2 <= radius**2 + 1
    window = maximum_filter(hm, footprint=disk[None], mode="constant", cval=-np.inf)
    expected = np.argwhere((hm >= window) & (hm > 0.3))  # (N, 3) [joint, y, x], raster order per joint
    peaks = find_peaks_flat(hm, 0.3, radius=radius)
    cells = np.stack([peaks.joint, np.rint(peaks.xy[:, 1]), np.rint(peaks.xy[:, 0])], 1)  # offsets are within 0.5
    assert np.array_equal(cells.astype(int), expected)
    assert np.array_equal(peaks.score, hm[tuple(expected.T)])


def test_peak_radius_suppresses_within_the_window_only() -> None:
    """A weaker maximum two cells from a peak (straight, or a knight's move) is its own peak with radius 1 and
    suppressed with radius 2; three cells away, or two cells diagonally (outside the disk), it survives both. A
    plateau of two equal cells a knight's move apart keeps the first in raster order."""
    hm = np.zeros((5, 9, 9), np.float32)
    hm[0, 4, 4], hm[0, 4, 6] = 0.9, 0.5  # two cells apart
    hm[1, 4, 4], hm[1, 5, 6] = 0.9, 0.5  # a knight's move: 5 = r^2 + 1 cells^2
    hm[2, 4, 4], hm[2, 4, 7] = 0.9, 0.5  # three cells apart
    hm[3, 4, 4], hm[3, 6, 6] = 0.9, 0.5  # two cells diagonally: 8 > r^2 + 1
    hm[4, 4, 6], hm[4, 5, 4] = 0.7, 0.7  # a tie a knight's move apart: (4, 6) comes first in raster order
    counts = {r: [len(p) for p in find_peaks(hm, 0.1, radius=r)] for r in (1, 2)}
    assert counts == {1: [2, 2, 2, 2, 2], 2: [1, 1, 2, 2, 1]}
    (tie,) = find_peaks(hm, 0.1, radius=2)[4]
    assert tie[:2].tolist() == [6.0, 4.0]
    with pytest.raises(ValueError, match="radius"):
        find_peaks(hm, 0.1, radius=0)


def test_decoder_takes_the_heads_peak_radius_unless_told_otherwise() -> None:
    """A stride-4 map with a side maximum two cells from a joint's peak: one person with the head's radius (2), two
    with `DecodeConfig.peak_radius=1`."""
    schema = Schema(keypoints=("j0",), skeleton=())
    head = HeadMeta(schema, pose_stride=4, sigma=6.0)
    hm = np.zeros((2, 8, 8), np.float32)
    hm[0, 3, 3], hm[0, 3, 5] = 0.9, 0.4
    pafs = np.zeros((0, 8, 8), np.float32)
    config = DecodeConfig.for_evaluation()
    assert len(decode(hm, pafs, head, config)) == 1
    assert len(decode(hm, pafs, head, dataclasses.replace(config, peak_radius=1))) == 2


def test_peak_radius_is_one_trunk_cell_whatever_the_sigma() -> None:
    for sigma in (4.0, 6.0, 7.0, 12.0):
        radii = [HeadMeta(PASCAL, pose_stride=s, sigma=sigma).peak_radius for s in (8, 4, 2)]
        assert radii == [1, 2, 4]


# -- decode ------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decode_random_people_exact(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = random_people(rng, PASCAL.num_joints, 5)
    hm, paf = render(truth, PASCAL)
    people = decode(hm, paf, HeadMeta(PASCAL, pose_stride=STRIDE))
    assert_exact(people, truth)
    assert all(0.8 < p.score <= 1.01 for p in people)
    assert [p.score for p in people] == sorted((p.score for p in people), reverse=True)


def test_decode_on_cell_centres_and_ties() -> None:
    """Keypoints on cell centres, halfway in x, halfway in y, halfway in both (plateaus of 2 and 4 equal cells)."""
    rng = np.random.default_rng(3)
    truth = random_people(rng, PASCAL.num_joints, 4)
    cells = np.round((truth[..., :2] - HALF) / STRIDE)
    shift = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5], [0.5, 0.5]])[:, None, :]  # one kind per person
    truth[..., :2] = (cells + shift) * STRIDE + HALF
    hm, paf = render(truth, PASCAL)
    people = decode(hm, paf, HeadMeta(PASCAL, pose_stride=STRIDE))
    assert_exact(people, truth)


def test_decode_people_at_the_border() -> None:
    """Joints inside the border cells (including corners), where one or both neighbours of a peak are missing."""
    size = 368
    lo, hi = -0.5, size - 0.5
    a = np.array([[lo + 0.2, lo + 1.0], [30.0, 3.0], [lo + 0.1, 40.0], [40.0, 45.0], [2.5, 80.0]])  # top-left corner
    b = np.array([[hi - 0.1, hi - 0.3], [hi - 40, hi - 2.0], [hi - 1.0, hi - 50], [hi - 45, hi - 45], [hi - 3, hi - 90]])
    c = np.array([[200.0, lo + 0.4], [240.0, 2.0], [170.0, 45.0], [260.0, 40.0], [220.0, 70.0]])  # top edge
    schema = Schema(keypoints=tuple(f"j{i}" for i in range(5)), skeleton=((0, 1), (1, 2), (2, 3), (3, 4)))
    truth = np.concatenate([np.stack([a, b, c]), np.full((3, 5, 1), 2.0)], axis=2)
    hm, paf = render(truth, schema, size)
    assert_exact(decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE)), truth)


def test_decode_coco_schema_with_cycles() -> None:
    coco = Schema.coco()
    rng = np.random.default_rng(4)
    truth = random_people(rng, coco.num_joints, 6)
    hm, paf = render(truth, coco)
    people = decode(hm, paf, HeadMeta(coco, pose_stride=STRIDE))
    assert_exact(people, truth)


@pytest.mark.parametrize("skeleton", [((0, 1), (1, 2)), ((0, 1), (1, 2), (2, 0)), ((1, 0), (2, 1))])
def test_decode_tiny_schema(skeleton: tuple[tuple[int, int], ...]) -> None:
    """A 3-joint chain, a 3-joint cycle, and the chain with edges stored backwards (assembled from the far end)."""
    schema = Schema(keypoints=("a", "b", "c"), skeleton=skeleton)
    rng = np.random.default_rng(5)
    truth = random_people(rng, 3, 7)
    hm, paf = render(truth, schema)
    people = decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE), config=DecodeConfig(min_joints=3))
    assert_exact(people, truth)


@pytest.mark.parametrize("keypoints, skeleton", [(("a", "b"), ((0, 1),)), (("a",), ())])
def test_a_schema_of_fewer_joints_than_min_joints_keeps_its_whole_people(keypoints, skeleton) -> None:
    """The default `min_joints` (3) is capped at the schema's joints: before, `posepart predict` and the Predictor
    (which decode with the defaults) found nobody in a 2- or 1-joint schema, while evaluation (min_joints 1) did."""
    schema = Schema(keypoints=keypoints, skeleton=skeleton)
    truth = random_people(np.random.default_rng(3), len(keypoints), 5)
    hm, paf = render(truth, schema)
    assert_exact(decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE)), truth)


def test_a_joint_in_no_limb_joins_its_person_at_the_default_min_joints() -> None:
    """A joint no limb touches (a schema's loose landmark) is found near the person that lacks it with the defaults
    `posepart predict` and the Predictor decode with (min_joints 3): before, only evaluation's min_joints 1 made its
    peaks one-joint fragments, and predict never output the joint. A lone peak of it far from everyone stays out."""
    schema = Schema(keypoints=("a", "b", "c", "loose"), skeleton=((0, 1), (1, 2)))
    truth = random_people(np.random.default_rng(11), 4, 5)
    hm, paf = render(truth, schema)
    assert_exact(decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE)), truth)

    slot = 368 / 3  # random_people's grid: 5 people in 9 slots
    free = min(set(range(9)) - {int(x // slot) + 3 * int(y // slot) for x, y in truth[:, 0, :2]})
    stray = np.zeros((1, 4, 3))
    stray[0, 3] = ((free % 3 + 0.5) * slot, (free // 3 + 0.5) * slot, 2)  # one "loose" peak alone in a free slot
    hm, paf = render(np.concatenate([truth, stray]), schema)
    assert_exact(decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE)), truth)


def test_missing_joints_score_zero() -> None:
    rng = np.random.default_rng(6)
    truth = random_people(rng, PASCAL.num_joints, 3)
    wrist, ankle = PASCAL.joint("left_wrist"), PASCAL.joint("right_ankle")
    truth[0, wrist, 2] = 0  # a leaf
    truth[1, [ankle, wrist], 2] = 0
    hm, paf = render(truth, PASCAL)
    people = decode(hm, paf, HeadMeta(PASCAL, pose_stride=STRIDE))
    assert_exact(people, truth)
    n_found = sorted(int((p.keypoints[:, 2] > 0).sum()) for p in people)
    assert n_found == [12, 13, 14]


def test_missing_neck_keeps_person_whole_through_torso_limbs_and_min_joints() -> None:
    """Without the neck (Xia's hub) the redundant torso limbs still hold arms and legs together; only the head, whose
    one limb goes to the neck, is cut off. With Xia's 13 limbs alone the person falls apart into four chains."""
    truth = random_people(np.random.default_rng(7), PASCAL.num_joints, 1)
    truth[0, PASCAL.joint("neck"), 2] = 0
    hm, paf = render(truth, PASCAL)
    people = decode(hm, paf, HeadMeta(PASCAL), config=DecodeConfig(min_joints=3))
    assert len(people) == 1 and int((people[0].keypoints[:, 2] > 0).sum()) == 12
    assert len(decode(hm, paf, HeadMeta(PASCAL), config=DecodeConfig(min_joints=13))) == 0

    xia = Schema(keypoints=PASCAL.keypoints, skeleton=PASCAL.skeleton[:13])
    hm, paf = render(truth, xia)
    # head is isolated; each arm chain has 3 joints (shoulder-elbow-wrist), each leg 3 (hip-knee-ankle)
    assert len(decode(hm, paf, HeadMeta(xia), config=DecodeConfig(min_joints=3, fragment_max_joints=0))) == 4
    assert len(decode(hm, paf, HeadMeta(xia), config=DecodeConfig(min_joints=4))) == 0


def test_empty_maps_give_no_people() -> None:
    hm = np.zeros((PASCAL.heatmap_channels, 46, 46), np.float32)
    hm[-1] = 1.0
    paf = np.zeros((PASCAL.paf_channels, 46, 46), np.float32)
    assert decode(hm, paf, HeadMeta(PASCAL)) == []
    assert people_to_coco([], image_id=3) == []


def test_decode_rejects_wrong_shapes() -> None:
    with pytest.raises(ValueError):
        decode(np.zeros((5, 46, 46)), np.zeros((PASCAL.paf_channels, 46, 46)), HeadMeta(PASCAL))
    with pytest.raises(ValueError):
        decode(np.zeros((PASCAL.heatmap_channels, 46, 46)), np.zeros((PASCAL.paf_channels, 40, 46)), HeadMeta(PASCAL))


def test_paf_disagreement_rejects_connections() -> None:
    """A PAF pointing the wrong way along every limb leaves only isolated peaks: nobody is assembled."""
    truth = random_people(np.random.default_rng(8), PASCAL.num_joints, 2)
    hm, paf = render(truth, PASCAL)
    assert len(decode(hm, -paf, HeadMeta(PASCAL))) == 0
    assert len(decode(hm, paf, HeadMeta(PASCAL))) == 2


# -- COCO results ------------------------------------------------------------------------------------------------------
def test_people_to_coco() -> None:
    kp = np.array([[10.0, 20.0, 0.9], [3.0, 4.0, 0.0], [30.0, 5.0, 0.8]], np.float32)
    (res,) = people_to_coco([Person(keypoints=kp, score=0.75)], image_id=42, category_id=7)
    assert res["image_id"] == 42 and res["category_id"] == 7
    assert res["score"] == pytest.approx(0.75)
    assert res["keypoints"] == pytest.approx([10.0, 20.0, 0.9, 0.0, 0.0, 0.0, 30.0, 5.0, 0.8])  # absent: (0, 0, 0)
    assert all(isinstance(v, float) for v in res["keypoints"])


def test_decode_then_coco_round_trip_through_affine() -> None:
    """Decoded people mapped by the inverse of the image->input affine land on the original-image keypoints."""
    rng = np.random.default_rng(9)
    truth_img = random_people(rng, PASCAL.num_joints, 3, size=736)  # original image twice the input size
    to_input = np.array([[0.5, 0.0, -0.25], [0.0, 0.5, -0.25]])  # pixel-centre-correct 2x downscale
    truth_in = truth_img.copy()
    truth_in[..., :2] = truth_img[..., :2] @ to_input[:, :2].T + to_input[:, 2]
    hm, paf = render(truth_in, PASCAL)
    inv = np.linalg.inv(np.vstack([to_input, [0, 0, 1]]))[:2]
    people, canvas = decode_in_image(hm, paf, HeadMeta(PASCAL), DecodeConfig(), inv, (736, 736))
    np.testing.assert_array_equal(canvas, np.stack([p.keypoints for p in decode(hm, paf, HeadMeta(PASCAL))]))
    results = people_to_coco(people, image_id=1)
    assert len(results) == 3
    for t in truth_img:
        errs = [np.abs(np.reshape(r["keypoints"], (-1, 3))[:, :2] - t[:, :2]).max() for r in results]
        assert min(errs) < 2e-3


# -- fast paths equal the straightforward ones -------------------------------------------------------------------------
def noisy_maps(seed: int, people: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Network-like maps: many spurious peaks, ragged PAFs, so most candidate pairs are wrong."""
    rng = np.random.default_rng(seed)
    hm, paf = render(random_people(rng, PASCAL.num_joints, people), PASCAL)
    hm = (hm + rng.normal(0, 0.08, hm.shape)).astype(np.float32)
    paf = (paf * rng.uniform(0.3, 1.2, paf.shape) + rng.normal(0, 0.05, paf.shape)).astype(np.float32)
    return hm, paf


@pytest.mark.parametrize("seed", [10, 11])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("samples, need", [(10, 8), (4, 3), (7, 3), (16, 15)])
def test_compiled_scoring_equals_numpy_with_and_without_screen(seed: int, dtype: type, samples: int,
                                                                 need: int) -> None:
    """The compiled pair loop and the vectorised numpy path keep the same connections with bit-identical scores,
    and the support screen (an exact shortcut) changes neither. float64 coordinates are what huge maps use; the
    sample counts cover the screen's unrolled first five samples and its loop for fewer, with 1 to 4 failures
    allowed."""
    from posepart.decode import compiled, grouping

    hm, paf = noisy_maps(seed)
    skeleton = np.asarray(PASCAL.skeleton)
    peaks = grouping.find_peaks_flat(hm, 0.1, num_joints=PASCAL.num_joints)
    assert len(peaks.score) > 7 * PASCAL.num_joints  # noise adds peaks: many wrong pairs to screen
    px, py = (peaks.xy[:, i].astype(dtype) + dtype(1.0) for i in (0, 1))
    t, order = grouping._samples(samples, dtype)
    args = (px, py, peaks.starts, skeleton)
    rest = (t, order, need, np.float32(0.05))
    reference = grouping._score_limbs_numpy(*args, paf, *rest, False)
    assert len(reference[0]) > 7 * len(skeleton) // 2
    for screen in (False, True):
        numpy_path = grouping._score_limbs_numpy(*args, paf, *rest, screen)
        compiled_loop = compiled.score_pairs(*args, paf, *rest, screen)
        for got in (numpy_path, compiled_loop):
            for a, b in zip(got, reference):
                np.testing.assert_array_equal(a, b)
    config = DecodeConfig()
    for a, b in zip(grouping.score_limbs(peaks, paf, skeleton, config, jit=True),
                    grouping.score_limbs(peaks, paf, skeleton, config, jit=False)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("shape", [(46, 46), (7, 13), (1, 1)])
def test_compiled_support_map_equals_numpy(shape: tuple[int, int]) -> None:
    """The compiled support map (one contiguous pass over shifted views) marks exactly the cells the numpy screen
    marks, on every cell a sample can fall in (rows 0..h, columns 0..w of the padded grid), with magnitudes packed
    around the threshold."""
    from posepart.decode import compiled, grouping

    h, w = shape
    rng = np.random.default_rng(h * w)
    paf = (rng.choice([0.0, 0.049, 0.0501, 0.3], (6, h, w)) * rng.choice([-1.0, 1.0], (6, h, w))).astype(np.float32)
    got = compiled._strong_map(paf, 0.05)
    expected = grouping._support(grouping._padded(paf), w + 2, 0.05).reshape(3, h + 2, w + 2)
    np.testing.assert_array_equal(got[:, : h + 1, : w + 1], expected[:, : h + 1, : w + 1])
    assert 0 < got[:, : h + 1, : w + 1].mean() < 1 or h * w == 1


def test_score_limbs_refuses_peaks_off_the_maps() -> None:
    """The compiled loop reads without bounds checks, so inputs that would make it read outside the maps are refused."""
    from posepart.decode import grouping

    hm, paf = noisy_maps(4, people=2)
    skeleton = np.asarray(PASCAL.skeleton)
    peaks = grouping.find_peaks_flat(hm, 0.1, num_joints=PASCAL.num_joints)
    config = DecodeConfig()
    for bad in (np.nan, -0.6, paf.shape[2] - 0.4):
        xy = peaks.xy.copy()
        xy[3, 0] = bad
        with pytest.raises(ValueError, match="peak positions"):
            grouping.score_limbs(peaks._replace(xy=xy), paf, skeleton, config)
    with pytest.raises(ValueError, match="do not fit"):
        grouping.score_limbs(peaks, paf[:-2], skeleton, config)
    with pytest.raises(ValueError, match="do not fit"):
        grouping.score_limbs(peaks, paf, skeleton + 1, config)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_compiled_matching_and_assembly_equal_plain_python(seed: int) -> None:
    """Random connections with contested peaks, ties and merges: the compiled loops give what the same code run
    as Python gives, and the matching is a valid greedy one (each peak once per limb, by descending score)."""
    from posepart.decode import assembly

    rng = np.random.default_rng(seed)
    skeleton = np.asarray(PASCAL.skeleton)
    n_peaks = 60
    joint_of = rng.integers(0, PASCAL.num_joints, n_peaks)
    limb, ia, ib = [], [], []
    for li, (ja, jb) in enumerate(skeleton):
        for a in np.flatnonzero(joint_of == ja):
            for b in np.flatnonzero(joint_of == jb):
                if rng.random() < 0.5:
                    limb.append(li), ia.append(a), ib.append(b)
    limb, ia, ib = (np.array(v, np.int64) for v in (limb, ia, ib))
    score = rng.integers(1, 6, len(limb)) / 5.0  # few distinct values: many ties
    take = assembly.greedy_match(limb, ia, ib, score, n_peaks)
    np.testing.assert_array_equal(take, assembly.greedy_match.py_func(limb, ia, ib, score, n_peaks))
    for li in np.unique(limb[take]):
        mine = take[limb[take] == li]
        assert len(set(ia[mine])) == len(mine) and len(set(ib[mine])) == len(mine)
        assert np.all(np.diff(score[mine]) <= 0)
        rejected = np.setdiff1d(np.flatnonzero(limb == li), mine)
        for r in rejected:  # rejected only because a better (or equal, earlier) connection took one of its peaks
            assert any((ia[m] == ia[r] or ib[m] == ib[r]) and score[m] >= score[r] for m in mine)
    matched = (limb[take], ia[take], ib[take], score[take])
    got = assembly._assemble(*matched, skeleton, PASCAL.num_joints, n_peaks)
    want = assembly._assemble.py_func(*matched, skeleton, PASCAL.num_joints, n_peaks)
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    slots = got[0]
    used = slots[slots >= 0]
    assert len(used) == len(set(used.tolist()))  # a peak belongs to at most one person
    assert np.all(joint_of[np.maximum(slots, 0)][slots >= 0] == np.nonzero(slots >= 0)[1])  # in its joint's slot


def test_a_function_numba_cannot_cache_is_compiled_without_the_cache() -> None:
    """A serving walkthrough: on a read-only install whose user has no writable home (a container), numba finds no
    place for its cache and `import posepart.inference` failed ("cannot cache function"). A function without a source
    file stands for it: numba has nowhere to cache it either."""
    pytest.importorskip("numba")
    from posepart.decode.compiled import jit

    namespace: dict = {}
    exec(compile("def add_one(x):\n    return x + 1\n", "<no file>", "exec"), namespace)
    compiled = jit(namespace["add_one"])
    assert compiled(2) == 3 and compiled.py_func is namespace["add_one"]


def test_decode_without_numba_gives_the_same_people() -> None:
    """With numba unimportable the decoder warns once, when it first runs, and runs the plain Python/numpy path: same
    people, and the part-instance assignment takes its numpy path: same instance map."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import hashlib, sys, warnings
        import numpy as np
        if sys.argv[1] == "off":
            sys.modules["numba"] = None  # makes `import numba` raise ImportError
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            from posepart.decode import decode
            from posepart.heads import HeadMeta
            from posepart.schema import Schema
            from posepart.decode.instances import assign_part_instances, cell_index
            imported = len(caught)  # nothing is said before the decoder runs
            maps = np.load(sys.argv[2])
            schema = Schema.pascal_person_part()
            people = decode(maps["hm"], maps["paf"], HeadMeta(schema))
            decode(maps["hm"], maps["paf"], HeadMeta(schema))
        print(imported + 10 * sum("numba unavailable" in str(w.message) for w in caught))
        print(np.concatenate([p.keypoints.ravel() for p in people] + [[p.score for p in people]]).tobytes().hex())
        cells = np.stack([p.keypoints for p in people])
        cells[..., :2] = (cells[..., :2] - 3.5) / 8
        grid = maps["hm"].shape[1:]
        rows, cols = cell_index(np.eye(2, 3), maps["labels"].shape, grid, 8)
        instances = assign_part_instances(maps["labels"], cells, schema, rows, cols, grid)
        print(",".join(map(str, np.bincount(instances.ravel()))), hashlib.sha1(instances.tobytes()).hexdigest())
    """)
    hm, paf = noisy_maps(3, people=5)
    labels = np.random.default_rng(3).integers(0, PASCAL.num_parts, (hm.shape[1] * 8, hm.shape[2] * 8), np.uint8)
    path = Path(tempfile.mkdtemp()) / "maps.npz"
    np.savez(path, hm=hm, paf=paf, labels=labels)
    out = {mode: subprocess.run([sys.executable, "-c", code, mode, str(path)], capture_output=True, text=True,
                                check=True).stdout.split() for mode in ("on", "off")}
    said = int(out["off"][0])  # 10 x the warnings decoding gave (here under an "always" filter) + those on import
    assert out["on"][0] == "0" and said >= 10 and said % 10 == 0
    assert out["on"][1] == out["off"][1] and len(out["on"][1]) > 100
    assert out["on"][2:] == out["off"][2:] and len(out["on"][2].split(",")) > 6  # unassigned + every person


def test_limb_score_and_distance_prior_hand_computed() -> None:
    """Two joints 10 cells apart and a uniform PAF along them: every sample agrees (1.0), so the limb score is
    1 + min(0.5 * h / 10 - 1, 0): 1.0 on a 46-cell map, 0.8 on a 16-cell map (OpenPose's long-limb penalty)."""
    from posepart.decode import grouping

    schema = Schema(keypoints=("a", "b"), skeleton=((0, 1),))
    for size, expected in ((368, 1.0), (128, 0.8)):
        truth = np.array([[[3 * STRIDE + HALF, 2 * STRIDE + HALF, 2], [3 * STRIDE + HALF, 12 * STRIDE + HALF, 2]]])
        hm, _ = render(truth, schema, size)
        paf = np.zeros((2, size // STRIDE, size // STRIDE), np.float32)
        paf[1] = 1.0
        peaks = grouping.find_peaks_flat(hm, 0.1, num_joints=2)
        limb, ia, ib, score = grouping.score_limbs(peaks, paf, np.array([[0, 1]]), DecodeConfig())
        assert limb.tolist() == [0] and score == pytest.approx([expected], abs=1e-6)
        (person,) = decode(hm, paf, HeadMeta(schema), config=DecodeConfig(min_joints=2))
        assert person.score == pytest.approx((1.0 + 1.0 + expected) / 3, abs=1e-6)  # mean of 2 peaks and 1 limb
    # pointing the wrong way: every sample disagrees, no connection
    peaks = grouping.find_peaks_flat(hm, 0.1, num_joints=2)
    assert len(grouping.score_limbs(peaks, -paf, np.array([[0, 1]]), DecodeConfig())[0]) == 0


# -- fragments: chains broken by a missing joint ------------------------------------------------------------------------
def figure(dx: float = 0.0, dy: float = 0.0) -> np.ndarray:
    """A standing PASCAL-schema person (14, 3), all joints visible, shifted by (dx, dy)."""
    xy = [(100, 40), (100, 70), (80, 75), (120, 75), (70, 110), (130, 110), (65, 145), (135, 145),
          (88, 150), (112, 150), (88, 200), (112, 200), (88, 250), (112, 250)]
    out = np.zeros((14, 3))
    out[:, :2] = np.asarray(xy, float) + (dx, dy)
    out[:, 2] = 2
    return out


def test_broken_chain_fragment_joins_its_person() -> None:
    schema = Schema.pascal_person_part()
    person = figure(40, 40)
    person[schema.joint("left_elbow"), 2] = 0  # the wrist is now connected to nothing
    hm, paf = render(person[None], schema)
    plain = decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE),
                   DecodeConfig(min_joints=1, min_person_score=0.0, fragment_max_joints=0))
    assert len(plain) == 2  # the body and a lone wrist
    people = decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE), DecodeConfig.for_evaluation())
    assert len(people) == 1
    wrist = schema.joint("left_wrist")
    assert np.abs(people[0].keypoints[wrist, :2] - person[wrist, :2]).max() < 1e-3
    assert people[0].keypoints[schema.joint("left_elbow"), 2] == 0


def test_same_joint_fragments_are_assigned_one_to_one() -> None:
    """Two people missing their left elbows; wrist A lies closer to person 2's joints than to its own person, yet each
    wrist must go to its own person (greedy nearest-first would give wrist A to person 2 and wrist B to person 1)."""
    schema = Schema.pascal_person_part()
    elbow, wrist = schema.joint("left_elbow"), schema.joint("left_wrist")
    one, two = figure(0, 40), figure(150, 40)
    one[elbow, 2] = two[elbow, 2] = 0
    one[wrist, :2] = (205, 150)  # an outstretched arm reaching towards person 2
    two[wrist, :2] = (205, 290)  # lower, farther from both bodies
    hm, paf = render(np.stack([one, two]), schema)
    people = decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE), DecodeConfig.for_evaluation())
    assert len(people) == 2
    for truth in (one, two):
        p = min(people, key=lambda q: np.abs(q.keypoints[0, :2] - truth[0, :2]).max())
        assert np.abs(p.keypoints[wrist, :2] - truth[wrist, :2]).max() < 1e-3


def test_fragment_distances_are_the_nearest_joints_in_any_chunking(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distance from each person to each fragment, over the people's found joints only and the fragments in
    chunks (of one fragment's joints, of a few, of all at once): bit for bit the dense grid over every joint of the
    schema that it replaced (NaN where a person lacks a joint), and scipy's pairwise distances to rounding."""
    from scipy.spatial.distance import cdist

    from posepart.decode import completion

    rng = np.random.default_rng(0)
    for _ in range(40):
        h, k, f, j = (int(n) for n in rng.integers(1, (12, 20, 15, 4)))
        found = rng.random((h, k)) < 0.4
        found[np.arange(h), rng.integers(0, k, h)] = True  # every person has a joint
        slots = np.where(found, rng.integers(0, 50, (h, k)), -1)
        xy = rng.random((50, 2)) * 100
        frag_xy = rng.random((f, j, 2)) * 100
        person_xy = np.where(found[:, :, None], xy[np.maximum(slots, 0)], np.nan)  # (H, K, 2)
        grid = np.sqrt(np.square(person_xy[:, None, :, None] - frag_xy[None, :, None]).sum(-1))  # (H, F, K, J)
        dense = np.nanmin(grid.reshape(h, f, -1), 2)
        pairwise = np.array([[cdist(xy[slots[p][found[p]]], frag_xy[q]).min() for q in range(f)] for p in range(h)])
        for pairs in (1, 7, completion._PAIRS_PER_CHUNK):
            monkeypatch.setattr(completion, "_PAIRS_PER_CHUNK", pairs)
            got = completion._nearest_joint(found, slots, xy, frag_xy)
            assert np.array_equal(got, dense)
            np.testing.assert_allclose(got, pairwise, rtol=1e-12)


def test_fragments_are_measured_in_float64_whatever_the_peaks_dtype() -> None:
    """A wrist 50 px from a person of extent 200 at radius 0.3 joins it; given as int16, the other joint's 250 px
    squared wrapped to a negative number, a NaN distance, and the wrist stayed alone (review of the sparse
    distances). float32 positions are measured as float64 too."""
    slots = np.array([[0, 1, -1], [-1, -1, 2]])
    kwargs = dict(max_joints=1, radius=0.3, min_extent=1.0)
    xy = np.array([[0, 0], [200, 0], [250, 0]])
    for dtype in (np.float64, np.float32, np.int16):
        merged, _, _ = attach_fragments(slots, np.zeros(2), np.zeros(2, np.int64), xy.astype(dtype), **kwargs)
        assert merged.tolist() == [[0, 1, 2]], dtype


def test_far_fragment_stays_alone() -> None:
    schema = Schema.pascal_person_part()
    person = figure(0, 40)
    person[schema.joint("left_elbow"), 2] = 0
    person[schema.joint("left_wrist"), :2] = (340, 340)  # farther than the person's own extent
    hm, paf = render(person[None], schema)
    people = decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE), DecodeConfig.for_evaluation())
    assert len(people) == 2 and sorted(int((p.keypoints[:, 2] > 0).sum()) for p in people) == [1, 12]



@pytest.mark.parametrize("field, value", [("paf_samples", 0), ("paf_samples", 1), ("paf_min_fraction", 1.5),
                                          ("peak_threshold", float("nan")), ("min_joints", 0), ("min_joints", 2.5),
                                          ("fragment_radius", -1.0), ("peak_radius", 0), ("min_person_score", "0.2"),
                                          ("paf_threshold", -0.5)])
def test_decode_config_refuses_what_the_decoder_cannot_use(field, value) -> None:
    """Before: paf_samples 0 divided by zero in the compiled scorer on the first image with peaks; a NaN threshold kept
    no peak without a word; a string compared with floats deep inside the decoder; a negative PAF threshold accepted
    a limb on a zero field with 1 pair and refused it with 4 (the limb screen, exact for thresholds >= 0)."""
    with pytest.raises(ValueError, match=f"DecodeConfig.{field} must be"):
        DecodeConfig(**{field: value})
    assert DecodeConfig(**{field: getattr(DecodeConfig(), field)}) == DecodeConfig()  # the defaults pass


def test_each_joint_keeps_its_strongest_peaks_up_to_max_peaks():
    """A review: an untrained model's noise holds thousands of peaks per joint, and the candidate limbs grow as their
    square (12,566 per joint at 2048 px took 242 s and 4.6 GB to decode); at most `max_peaks` of each joint are kept,
    the highest-scored, in their raster order."""
    from posepart.decode.grouping import _strongest

    hm = np.zeros((2, 5, 9), np.float32)
    hm[0, 2, [1, 4, 7]] = [0.5, 0.9, 0.7]
    hm[1, 2, 4] = 0.3
    kept = _strongest(find_peaks_flat(hm, 0.1), 2)
    np.testing.assert_allclose(kept.score, [0.9, 0.7, 0.3], rtol=1e-6)
    assert kept.xy[:, 0].round().tolist() == [4, 7, 4] and kept.starts.tolist() == [0, 2, 3]
    with pytest.raises(ValueError, match="max_peaks must be an integer >= 1"):
        DecodeConfig(max_peaks=0)
    schema = Schema.pascal_person_part()  # noise maps: every joint at its cap, and a decode that still ends
    rng = np.random.default_rng(0)
    noise = rng.random((schema.num_joints + 1, 128, 128), np.float32)
    pafs = rng.standard_normal((2 * schema.num_limbs, 128, 128)).astype(np.float32)
    people = decode(noise, pafs, HeadMeta(schema, pose_stride=4), DecodeConfig(max_peaks=8, min_joints=1))
    joints = np.stack([p.keypoints for p in people])  # (N, K, 3)
    assert all((joints[:, j, 2] > 0).sum() <= 8 for j in range(schema.num_joints))


def test_maps_holding_infinity_are_refused_with_the_reason():
    """A review: one overflowed heatmap cell gave a person scored inf (invalid JSON in keypoints.json), two adjacent
    ones "peak positions must lie on the maps", an error about something else."""
    schema = Schema.pascal_person_part()
    hm = np.zeros((schema.num_joints + 1, 46, 46), np.float32)
    pafs = np.zeros((2 * schema.num_limbs, 46, 46), np.float32)
    for cells in ([(20, 20)], [(20, 20), (20, 21)]):
        maps = hm.copy()
        for y, x in cells:
            maps[0, y, x] = np.inf
        with pytest.raises(ValueError, match="the heatmaps hold NaN or infinite values"):
            decode(maps, pafs, HeadMeta(schema), DecodeConfig(min_joints=1))
