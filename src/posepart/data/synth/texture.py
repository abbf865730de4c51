"""Synthetic people, part 2: colours, garment/background textures and whole-image degradations."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

TEXTURES = ("solid", "stripes", "checks", "noise", "gradient", "dots")


@dataclass(frozen=True)
class Material:
    """A paintable surface: a texture kind with two colours (RGB float) and its geometry (period px, angle rad)."""

    kind: str
    c1: np.ndarray
    c2: np.ndarray
    period: float = 8.0
    angle: float = 0.0
    duty: float = 0.5
    grain: float = 4.0  # per-pixel noise amplitude (fabric / skin grain)


def skin_colour(rng: np.random.Generator) -> np.ndarray:
    """A skin tone between very light and very dark (RGB float)."""
    t = rng.uniform(0, 1)
    light, dark = np.array([245, 208, 185]), np.array([70, 42, 30])
    return (light * (1 - t) + dark * t) * rng.uniform(0.93, 1.07, 3)


def hair_colour(rng: np.random.Generator) -> np.ndarray:
    palette = np.array([[20, 16, 14], [60, 40, 25], [110, 75, 45], [200, 165, 110], [150, 70, 35], [180, 180, 175]])
    if rng.random() < 0.05:
        return random_colour(rng)
    return palette[rng.choice(len(palette), p=[0.35, 0.25, 0.15, 0.1, 0.07, 0.08])] * rng.uniform(0.85, 1.15, 3)


def random_colour(rng: np.random.Generator, skin_like: float = 0.1) -> np.ndarray:
    """A garment/clutter colour: any hue, muted to saturated, dark to light; sometimes skin-like (hard negatives)."""
    if rng.random() < skin_like:
        return skin_colour(rng)
    h, s, v = rng.random(), rng.beta(1.2, 1.5), rng.beta(2.0, 1.5)
    return np.array(colorsys.hsv_to_rgb(h, s, v)) * 255.0


def sample_material(rng: np.random.Generator, base: np.ndarray | None = None, plain: float = 0.45) -> Material:
    """A texture with random kind/colours; `base` fixes the main colour (e.g. skin), `plain` = P(solid)."""
    c1 = random_colour(rng) if base is None else base
    kind = "solid" if rng.random() < plain else str(rng.choice(TEXTURES[1:]))
    if rng.random() < 0.5:  # tone-on-tone
        c2 = np.clip(c1 * rng.uniform(0.5, 1.4), 0, 255)
    else:
        c2 = random_colour(rng)
    return Material(kind, c1.astype(np.float32), c2.astype(np.float32), period=float(rng.uniform(3, 18)),
                    angle=float(rng.uniform(0, np.pi)), duty=float(rng.uniform(0.2, 0.7)),
                    grain=float(rng.uniform(1, 8)))


def paint_at(mat: Material, ys: np.ndarray, xs: np.ndarray, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) float32 colours of the material at the pixels (ys, xs) of an (h, w) local frame (random pattern phase).

    Computing only the pixels that show the material keeps the cost proportional to the visible area.
    """
    x, y = xs.astype(np.float32), ys.astype(np.float32)
    c, s = np.float32(np.cos(mat.angle)), np.float32(np.sin(mat.angle))
    phase = rng.uniform(0, 1, 2).astype(np.float32)
    if mat.kind == "solid":
        return np.broadcast_to(mat.c1, (len(xs), 3))
    if mat.kind == "stripes":
        t = (((x * c + y * s) / mat.period + phase[0]) % 1 < mat.duty).astype(np.float32)
    elif mat.kind == "checks":
        a = ((x * c + y * s) / mat.period + phase[0]) % 1 < mat.duty
        b = ((y * c - x * s) / mat.period + phase[1]) % 1 < mat.duty
        t = 0.5 * (a.astype(np.float32) + b)
    elif mat.kind == "dots":
        u = ((x * c + y * s) / mat.period + phase[0]) % 1 - 0.5
        v = ((y * c - x * s) / mat.period + phase[1]) % 1 - 0.5
        t = (u * u + v * v < 0.1 * mat.duty).astype(np.float32)
    elif mat.kind == "noise":
        cells = rng.random((max(h // int(mat.period) + 2, 2), max(w // int(mat.period) + 2, 2))).astype(np.float32)
        t = cv2.resize(cells, (w, h), interpolation=cv2.INTER_LINEAR)[ys, xs]
    else:  # gradient
        t = np.clip((x * c + y * s) / max(h, w, 1) + phase[0] - 0.5, 0, 1)
    return mat.c1 + t[:, None] * (mat.c2 - mat.c1)


def paint(mat: Material, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """(h, w, 3) float32 texture of the material, with its grain."""
    ys, xs = np.divmod(np.arange(h * w), w)
    out = paint_at(mat, ys, xs, h, w, rng).reshape(h, w, 3)
    return out + grain(rng, h, w, mat.grain)


def grain(rng: np.random.Generator, h: int, w: int, amplitude: float) -> np.ndarray:
    """(h, w, 1) float32 per-pixel noise (fabric, skin, sensor-independent texture)."""
    return rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(amplitude)


def capsule_polygon(a: np.ndarray, b: np.ndarray, ra: float, rb: float, cap_a: bool = True, cap_b: bool = True,
                    n: int = 8) -> np.ndarray:
    """(M, 2) outline of a tapered capsule from a (radius ra) to b (radius rb); a flat end where cap_* is False."""
    d = b - a
    length = float(np.hypot(*d))
    ang = float(np.arctan2(d[1], d[0])) if length > 1e-6 else 0.0
    t_b = np.linspace(-np.pi / 2, np.pi / 2, n + 1) if cap_b else np.array([-np.pi / 2, np.pi / 2])
    t_a = np.linspace(np.pi / 2, 3 * np.pi / 2, n + 1) if cap_a else np.array([np.pi / 2, 3 * np.pi / 2])
    pb = b + rb * np.stack([np.cos(t_b + ang), np.sin(t_b + ang)], 1)
    pa = a + ra * np.stack([np.cos(t_a + ang), np.sin(t_a + ang)], 1)
    return np.concatenate([pb, pa])


def ellipse_polygon(centre: np.ndarray, axis_u: np.ndarray, half_u: float, half_v: float, n: int = 24) -> np.ndarray:
    """(n, 2) outline of an ellipse with semi-axis half_u along the unit vector axis_u and half_v across it."""
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)[:, None]
    v = np.array([-axis_u[1], axis_u[0]])
    return centre + np.cos(t) * half_u * axis_u + np.sin(t) * half_v * v


def fixed(poly: np.ndarray, origin: np.ndarray | tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Polygon in 1/16 px int32 for cv2.fillPoly(..., shift=4), relative to origin."""
    return np.round((poly - np.asarray(origin)) * 16).astype(np.int32)


def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Camera-like degradations of a float image: colour cast, exposure, blur, noise, gamma -> uint8."""
    gain = rng.uniform(0.85, 1.15, 3) * rng.uniform(0.8, 1.15)
    img = cv2.multiply(image, tuple(float(g) for g in gain) + (0.0,))
    img = cv2.add(img, float(rng.uniform(-20, 20)))
    r = rng.random()
    if r < 0.45:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.4, 1.4))
    elif r < 0.55:
        k = int(rng.integers(3, 8))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2] = 1.0 / k
        rot = cv2.getRotationMatrix2D(((k - 1) / 2, (k - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    if rng.random() < 0.7:
        img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(rng.uniform(1, 9))
    out = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        lut = np.clip(255.0 * (np.arange(256) / 255.0) ** rng.uniform(0.75, 1.35) + 0.5, 0, 255).astype(np.uint8)
        out = cv2.LUT(out, lut)
    return out
