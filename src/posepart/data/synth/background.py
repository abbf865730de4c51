"""Synthetic people, part 4: textured, cluttered backgrounds with limb-like distractors (label 0, not people)."""

from __future__ import annotations

import cv2
import numpy as np

from posepart.data.synth.texture import (
    Material,
    capsule_polygon,
    ellipse_polygon,
    fixed,
    paint,
    paint_at,
    random_colour,
    sample_material,
    skin_colour,
)


def fill_textured(image: np.ndarray, poly: np.ndarray, mat: Material, rng: np.random.Generator) -> None:
    """Paint a polygon of float image (H, W, 3) with a texture, working inside the polygon's bounding box only."""
    h, w = image.shape[:2]
    x0, y0 = np.floor(poly.min(0)).astype(int) - 1
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return
    mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
    cv2.fillPoly(mask, [fixed(poly, (x0, y0))], 1, cv2.LINE_8, 4)
    ys, xs = np.nonzero(mask)
    if len(ys):
        colours = paint_at(mat, ys, xs, y1 - y0, x1 - x0, rng)
        image[y0 + ys, x0 + xs] = colours + rng.standard_normal((len(ys), 1), dtype=np.float32) * np.float32(mat.grain)


def _floor(image: np.ndarray, rng: np.random.Generator) -> None:
    """A tiled/striped floor or wall below a horizon, warped in perspective."""
    s = image.shape[0]
    mat = sample_material(rng, plain=0.2)
    half = max(s // 2, 1)  # painted at half size: the warp magnifies it anyway
    tex = paint(mat, half, half, rng)
    horizon = rng.uniform(0.3, 0.8) * s
    squeeze = rng.uniform(0.0, 0.4) * s
    src = np.float32([[0, 0], [half, 0], [half, half], [0, half]])
    dst = np.float32([[squeeze, horizon], [s - squeeze, horizon], [s * 1.3, s], [-0.3 * s, s]])
    warp = cv2.warpPerspective(tex, cv2.getPerspectiveTransform(src, dst), (s, s), flags=cv2.INTER_LINEAR)
    rows = np.arange(s) >= horizon
    image[rows] = warp[rows]


def _distractor(image: np.ndarray, rng: np.random.Generator) -> None:
    """A limb-like shape (tapered capsule, sometimes bent at an 'elbow') in skin or garment colour."""
    s = image.shape[0]
    a = rng.uniform(-0.1, 1.1, 2) * s
    length, r = rng.uniform(0.05, 0.3) * s, rng.uniform(0.01, 0.05) * s
    base = skin_colour(rng) if rng.random() < 0.5 else random_colour(rng)
    mat = sample_material(rng, base=base, plain=0.6)
    ang = rng.uniform(0, 2 * np.pi)
    for _ in range(1 + int(rng.random() < 0.5)):
        b = a + length * np.array([np.cos(ang), np.sin(ang)])
        r2 = r * rng.uniform(0.6, 1.0)
        fill_textured(image, capsule_polygon(a, b, r, r2), mat, rng)
        a, r, ang = b, r2, ang + rng.uniform(-2.0, 2.0)
    if rng.random() < 0.2:  # a head-sized blob
        c = rng.uniform(0, 1, 2) * s
        fill_textured(image, ellipse_polygon(c, np.array([0.0, 1.0]), r * 2.2, r * 1.7), mat, rng)


def background(rng: np.random.Generator, size: int, clutter: float = 1.0) -> np.ndarray:
    """(size, size, 3) float32 RGB: gradient + low-frequency noise, floor, random shapes and lines, distractors.

    `clutter` in [0, 1] scales the number of shapes and limb-like distractors (0: a smooth gradient, maybe a floor).
    """
    s = size
    c1, c2 = random_colour(rng, 0.05), random_colour(rng, 0.05)
    lo = max(s // 4, 2)  # gradient + low-frequency noise are smooth: build them at 1/4 size, then upsample
    ramp = np.arange(lo, dtype=np.float32) / lo
    ang = rng.uniform(0, 2 * np.pi)
    t = (ramp[None, :] * np.float32(np.cos(ang)) + ramp[:, None] * np.float32(np.sin(ang)))[..., None]
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    cells = int(rng.integers(2, 12))
    noise = cv2.resize(rng.uniform(-1, 1, (cells, cells, 3)).astype(np.float32), (lo, lo),
                       interpolation=cv2.INTER_CUBIC)
    small = c1.astype(np.float32) + t * (c2 - c1).astype(np.float32) + noise * np.float32(rng.uniform(0, 60))
    image = cv2.resize(small, (s, s), interpolation=cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        _floor(image, rng)
    for _ in range(round(int(rng.integers(4, 25)) * clutter)):
        kind = rng.random()
        colour = tuple(float(c) for c in random_colour(rng, 0.1))
        centre = rng.uniform(-0.1, 1.1, 2) * s
        half = rng.uniform(0.02, 0.3, 2) * s
        thick = -1 if rng.random() < 0.7 else int(rng.integers(1, 6))
        if kind < 0.35:  # rectangle (possibly rotated), textured sometimes
            rot = rng.uniform(0, np.pi) if rng.random() < 0.3 else 0.0
            u = np.array([np.cos(rot), np.sin(rot)])
            v = np.array([-u[1], u[0]])
            poly = np.array([centre + sx * half[0] * u + sy * half[1] * v for sx, sy in
                             ((-1, -1), (1, -1), (1, 1), (-1, 1))])
            if thick < 0 and rng.random() < 0.4:
                fill_textured(image, poly, sample_material(rng, plain=0.0), rng)
            elif thick > 0:
                cv2.polylines(image, [fixed(poly)], True, colour, thick, cv2.LINE_AA, 4)
            else:
                cv2.fillPoly(image, [fixed(poly)], colour, cv2.LINE_AA, 4)
        elif kind < 0.6:  # ellipse
            poly = ellipse_polygon(centre, np.array([1.0, 0.0]), half[0], half[1])
            if thick < 0:
                cv2.fillPoly(image, [fixed(poly)], colour, cv2.LINE_AA, 4)
            else:
                cv2.polylines(image, [fixed(poly)], True, colour, thick, cv2.LINE_AA, 4)
        elif kind < 0.85:  # line
            p, q = fixed(rng.uniform(-0.1, 1.1, (2, 2)) * s)
            cv2.line(image, tuple(int(c) for c in p), tuple(int(c) for c in q), colour, int(rng.integers(1, 8)),
                     cv2.LINE_AA, 4)
        else:  # random polygon
            pts = centre + rng.normal(0, 1, (int(rng.integers(3, 7)), 2)) * half
            cv2.fillPoly(image, [fixed(pts)], colour, cv2.LINE_AA, 4)
    for _ in range(round(int(rng.integers(0, 7)) * clutter)):
        _distractor(image, rng)
    if rng.random() < 0.3:  # defocused background
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.8, 2.5))
    return image
