"""Augmentation tests: identity and pure flip matrices, left/right swaps by name, keypoints landing on the same image
content as the warped pixels, unlabelled borders, letterbox + invert round trips, deterministic photometrics."""

from __future__ import annotations

import numpy as np
import pytest

from posepart.data.augment import (
    Affine,
    AugmentConfig,
    apply_affine,
    invert,
    letterbox_affine,
    photometric,
    sample_affine,
    transform_points,
)
from posepart.schema import Schema

IDENTITY = AugmentConfig(scale_min=1.0, scale_max=1.0, rotate_deg=0.0, flip_prob=0.0, center_jitter=0.0,
                         photometric=False)
SIDED = Schema(keypoints=("nose", "left_wrist", "right_wrist"), skeleton=((0, 1), (0, 2)),
               part_classes=("background", "head", "left_arm", "right_arm"))


def sample_arrays(rng: np.random.Generator, h: int, w: int, k: int) -> tuple[np.ndarray, ...]:
    image = rng.integers(0, 256, (h, w, 3), np.uint8)
    parts = rng.integers(0, 4, (h, w), np.uint8)
    ignore = rng.random((h, w)) < 0.2
    kp = np.zeros((2, k, 3), np.float32)
    kp[..., 0] = rng.uniform(0, w - 1, (2, k))
    kp[..., 1] = rng.uniform(0, h - 1, (2, k))
    kp[..., 2] = rng.choice([0, 1, 2], (2, k))
    return image, parts, ignore, kp


def test_identity_config_is_identity() -> None:
    rng = np.random.default_rng(0)
    aff = sample_affine(rng, (48, 64), (48, 64), IDENTITY)
    np.testing.assert_allclose(aff.matrix, [[1, 0, 0], [0, 1, 0]], atol=1e-12)
    assert not aff.flipped
    image, parts, ignore, kp = sample_arrays(rng, 48, 64, SIDED.num_joints)
    out = apply_affine(aff, image, parts, ignore, kp, (48, 64), SIDED.flip_perm, SIDED.part_flip_perm)
    np.testing.assert_array_equal(out[0], image)
    np.testing.assert_array_equal(out[1], parts)
    np.testing.assert_array_equal(out[2], ignore)
    np.testing.assert_allclose(out[3], kp, atol=1e-5)
    assert out[2].dtype == bool and out[3].dtype == np.float32


def test_pure_flip_swaps_sides() -> None:
    rng = np.random.default_rng(1)
    h, w = 40, 56
    cfg = AugmentConfig(scale_min=1.0, scale_max=1.0, rotate_deg=0.0, flip_prob=1.0, center_jitter=0.0)
    aff = sample_affine(rng, (h, w), (h, w), cfg)
    assert aff.flipped
    np.testing.assert_allclose(aff.matrix, [[-1, 0, w - 1], [0, 1, 0]], atol=1e-12)
    image, parts, ignore, kp = sample_arrays(rng, h, w, SIDED.num_joints)
    img2, parts2, ign2, kp2 = apply_affine(aff, image, parts, ignore, kp, (h, w), SIDED.flip_perm,
                                           SIDED.part_flip_perm)
    np.testing.assert_array_equal(img2, image[:, ::-1])
    np.testing.assert_array_equal(ign2, ignore[:, ::-1])
    swap = np.array([0, 1, 3, 2], np.uint8)  # head stays, left_arm <-> right_arm
    np.testing.assert_array_equal(parts2, swap[parts[:, ::-1]])
    left, right, nose = SIDED.joint("left_wrist"), SIDED.joint("right_wrist"), SIDED.joint("nose")
    np.testing.assert_allclose(kp2[:, left, 0], w - 1 - kp[:, right, 0], atol=1e-4)
    np.testing.assert_allclose(kp2[:, left, 1:], kp[:, right, 1:], atol=1e-4)
    np.testing.assert_allclose(kp2[:, right, 0], w - 1 - kp[:, left, 0], atol=1e-4)
    np.testing.assert_allclose(kp2[:, nose, 0], w - 1 - kp[:, nose, 0], atol=1e-4)


def test_flip_with_pascal_names() -> None:
    schema = Schema.pascal_person_part()
    kp = np.zeros((1, schema.num_joints, 3), np.float32)
    kp[0, schema.joint("left_knee")] = (10.0, 20.0, 2)
    aff = Affine(np.array([[-1.0, 0, 99], [0, 1, 0]]), flipped=True)
    _, _, _, out = apply_affine(aff, np.zeros((50, 100, 3), np.uint8), None, None, kp, (50, 100),
                                schema.flip_perm, schema.part_flip_perm)
    np.testing.assert_allclose(out[0, schema.joint("right_knee")], (89.0, 20.0, 2))
    assert out[0, schema.joint("left_knee"), 2] == 0


def blob(h: int, w: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w]
    return (255 * np.exp(-((xs - x) ** 2 + (ys - y) ** 2) / (2 * sigma**2))).astype(np.uint8)


@pytest.mark.parametrize("seed", range(8))
def test_keypoints_follow_the_pixels(seed: int) -> None:
    """A dot drawn at each keypoint, warped with the image, peaks where the keypoint's matrix transform lands."""
    rng = np.random.default_rng(seed)
    h, w = (120, 90) if seed % 2 else (80, 160)
    cfg = AugmentConfig(scale_min=0.8, scale_max=1.5, rotate_deg=40.0, flip_prob=0.5, center_jitter=0.05)
    kp = np.zeros((1, SIDED.num_joints, 3), np.float32)
    kp[0, :, 0] = rng.uniform(0.3, 0.7, SIDED.num_joints) * w
    kp[0, :, 1] = rng.uniform(0.3, 0.7, SIDED.num_joints) * h
    kp[0, :, 2] = 2
    image = np.stack([blob(h, w, x, y) for x, y in kp[0, :, :2]], -1)  # one dot per joint, one channel each
    aff = sample_affine(rng, (h, w), (96, 96), cfg, center=(float(kp[0, 0, 0]), float(kp[0, 0, 1])))
    warped, _, _, out = apply_affine(aff, image, None, None, kp, (96, 96), SIDED.flip_perm, SIDED.part_flip_perm)
    for j in range(SIDED.num_joints):
        src = SIDED.flip_perm[j] if aff.flipped else j  # the dot drawn for joint src now belongs to joint j
        peak = np.unravel_index(warped[:, :, src].argmax(), warped.shape[:2])
        assert warped[:, :, src].max() > 100
        assert abs(peak[1] - out[0, j, 0]) <= 1.0 and abs(peak[0] - out[0, j, 1]) <= 1.0


def test_letterbox_pads_unlabelled_and_round_trips() -> None:
    h, w = 100, 200
    aff = letterbox_affine((h, w), (368, 368))
    scale = 368 / 200
    np.testing.assert_allclose(aff.matrix[:, :2], np.eye(2) * scale)
    # the image's top edge y = -0.5 lands at 183.5 - scale * 50 = 91.5: rows 0..91 are padding, 92..275 image
    image = np.full((h, w, 3), 7, np.uint8)
    parts = np.ones((h, w), np.uint8)
    img2, parts2, ign2, _ = apply_affine(aff, image, parts, None, np.zeros((0, 3, 3)), (368, 368), (0, 2, 1),
                                         (0, 1))
    assert np.all(parts2[:92] == 255) and np.all(ign2[:92]) and np.all(img2[:91] == 128)
    assert np.all(parts2[92:276] == 1) and not ign2[92:276].any()
    assert np.all(img2[93:275, 1:-1] == 7)  # bilinear blends the image's outer half pixel with the grey border
    assert np.all(parts2[276:] == 255) and np.all(ign2[276:])
    pts = np.random.default_rng(0).uniform(-0.5, 199.5, (20, 2))
    back = transform_points(invert(aff), transform_points(aff.matrix, pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)
    # pixel-centre correctness: a 2x downscale maps the centre of each 2x2 block to an output pixel centre
    half = letterbox_affine((8, 8), (4, 4))
    np.testing.assert_allclose(transform_points(half.matrix, np.array([[0.5, 0.5], [6.5, 2.5]])), [[0, 0], [3, 1]])
    # extent: [-0.5, W - 0.5] maps onto [-0.5, 367.5]
    np.testing.assert_allclose(transform_points(aff.matrix, np.array([[-0.5, 49.5], [199.5, 49.5]]))[:, 0],
                               [-0.5, 367.5])


def test_random_affine_invert_and_determinism() -> None:
    cfg = AugmentConfig()
    a = sample_affine(np.random.default_rng(3), (300, 400), (368, 368), cfg, center=(100.0, 150.0))
    b = sample_affine(np.random.default_rng(3), (300, 400), (368, 368), cfg, center=(100.0, 150.0))
    np.testing.assert_array_equal(a.matrix, b.matrix)
    assert a.flipped == b.flipped
    pts = np.random.default_rng(1).uniform(0, 300, (10, 2))
    np.testing.assert_allclose(transform_points(invert(a), transform_points(a.matrix, pts)), pts, atol=1e-9)
    scales = [np.sqrt(abs(np.linalg.det(sample_affine(np.random.default_rng(s), (300, 400), (368, 368),
                                                            cfg).matrix[:, :2]))) for s in range(50)]
    base = 368 / 400
    assert min(scales) >= 0.6 * base - 1e-9 and max(scales) <= 1.4 * base + 1e-9
    # the crop is centred on `center` up to the jitter (the flip mirrors it about the output centre: same place)
    c = transform_points(a.matrix, np.array([100.0, 150.0]))
    assert np.all(np.abs(c - 183.5) <= 0.1 * 368 + 1e-6)


def test_photometric_is_deterministic_and_changes_only_colours() -> None:
    image = np.random.default_rng(0).integers(0, 256, (64, 80, 3), np.uint8)
    a = photometric(image, np.random.default_rng(5))
    b = photometric(image, np.random.default_rng(5))
    assert a.shape == image.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a, b)
    outs = [photometric(image, np.random.default_rng(s)) for s in range(6)]
    assert any(not np.array_equal(o, image) for o in outs)
    assert any(not np.array_equal(o, outs[0]) for o in outs[1:])
    # only colours: a bright square stays where it was, blurred at most (a 2 px shift scores 0.71, a flip 0)
    image = np.full((64, 80, 3), 60, np.uint8)
    square = np.zeros((64, 80), bool)
    square[20:32, 50:62] = True
    image[square] = 230
    for seed in range(30):
        grey = photometric(image, np.random.default_rng(seed)).mean(-1)
        found = grey > (grey[square].mean() + grey[~square].mean()) / 2
        assert (found & square).sum() / (found | square).sum() > 0.8, seed
