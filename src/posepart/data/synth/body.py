"""Synthetic people, part 3: outfits and the filled shapes (primitives) a projected person is drawn with.

Each primitive carries its part label (what the part map records), its material (what the image shows: garments span
several parts, so colour does not give the part away), a depth (drawing order, far first) and a tag naming the body
segment (which joints it touches, for keypoint visibility).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from posepart.data.synth.pose import (
    ANKLE,
    CHIN,
    ELBOW,
    EYE,
    FACE,
    HAIR_BOTTOM,
    HAIR_TOP,
    HAND,
    HEAD_CENTRE,
    HEAD_TOP,
    HEEL,
    HIP,
    KNEE,
    NECK,
    PELVIS,
    SHOULDER,
    TOE,
    WRIST,
    Body,
    Projected,
)
from posepart.data.synth.texture import (
    Material,
    capsule_polygon,
    ellipse_polygon,
    hair_colour,
    random_colour,
    sample_material,
    skin_colour,
)
from posepart.names import split_side
from posepart.schema import PASCAL_KEYPOINTS, PASCAL_PART_CLASSES

PART = {name: i for i, name in enumerate(PASCAL_PART_CLASSES)}
MATERIALS = ("skin", "top", "bottom", "legwear", "shoes", "hair", "eye", "inner")

# Tags of the primitives on which each joint lies: the joint is visible when one of them is front-most there.
# "torso" is a shoulder's / hip's own surface only on the near side (see scene.keypoint_visibility).
_SIDE_TAGS = {
    "shoulder": ("upper_arm",), "elbow": ("upper_arm", "forearm"), "wrist": ("forearm", "hand"),
    "hip": ("thigh", "skirt_upper"), "knee": ("thigh", "shin", "skirt_upper", "skirt_lower"),
    "ankle": ("shin", "foot", "skirt_lower"),
}


def joint_tags(name: str) -> tuple[str, ...]:
    """Primitive tags a joint lies on, e.g. 'left_wrist' -> ('forearm_0', 'hand_0', ...)."""
    if name == "head":
        return ("head",)
    if name == "neck":
        return ("neck", "torso")
    side, kind = split_side(name)
    i = 0 if side == "left" else 1
    return tuple(t if t.startswith("skirt") else f"{t}_{i}" for t in _SIDE_TAGS[kind])


JOINT_TAGS = tuple(joint_tags(n) for n in PASCAL_KEYPOINTS)


@dataclass(frozen=True)
class Outfit:
    materials: dict[str, Material]
    sleeve: float  # arm coverage by the top: 0 sleeveless, 0..1 of the upper arm, 1..2 also the forearm
    legs: float  # leg coverage by `legwear`: 0 bare, 0..1 of the thigh (shorts), 1..2 also the shin
    skirt: float  # 0 none, else where the hem is: 0..1 along the thigh, 1..2 along the shin
    tucked: bool  # lower torso shows the bottom garment (waistband)
    hair: str  # "none" | "short" | "long"
    open_jacket: bool
    barefoot: bool


def sample_outfit(rng: np.random.Generator) -> Outfit:
    """Random clothes, skin and hair; a garment covers parts of several body segments."""
    skin = skin_colour(rng)
    mats = {
        "skin": Material("solid", skin.astype(np.float32), skin.astype(np.float32), grain=float(rng.uniform(1, 4))),
        "top": sample_material(rng),
        "bottom": sample_material(rng, plain=0.6),
        "shoes": sample_material(rng, base=random_colour(rng) * (0.4 if rng.random() < 0.7 else 1.0), plain=0.8),
        "inner": sample_material(rng),
        "eye": Material("solid", np.full(3, 30, np.float32), np.full(3, 30, np.float32), grain=2.0),
    }
    if rng.random() < 0.3:  # denim
        blue = np.array([40, 60, 110]) * rng.uniform(0.6, 1.5)
        mats["bottom"] = Material("noise", blue.astype(np.float32), (blue * 1.3).astype(np.float32), period=2.0,
                                  grain=6.0)
    hc = hair_colour(rng).astype(np.float32)
    mats["hair"] = Material("stripes", hc, hc * 0.75, period=float(rng.uniform(2, 4)),
                            angle=float(rng.uniform(1.2, 1.9)), grain=5.0)
    r = rng.random()
    sleeve = 0.0 if r < 0.15 else float(rng.uniform(0.3, 0.75)) if r < 0.5 else float(rng.uniform(1.6, 2.0))
    skirt = float(rng.uniform(0.45, 1.85)) if rng.random() < 0.2 else 0.0
    if skirt:
        legs = 2.0 if rng.random() < 0.3 else 0.0
        mats["legwear"] = sample_material(rng, base=random_colour(rng) * 0.5, plain=0.8)
    else:
        r = rng.random()
        legs = float(rng.uniform(1.75, 2.0)) if r < 0.7 else float(rng.uniform(0.35, 0.9)) if r < 0.93 else 0.0
        mats["legwear"] = mats["bottom"]
    dress = skirt > 0 and rng.random() < 0.5
    if dress:
        mats["bottom"] = mats["top"]
    h = rng.random()
    return Outfit(mats, sleeve, legs, skirt, tucked=bool(rng.random() < 0.4),
                  hair="none" if h < 0.07 else "short" if h < 0.65 else "long",
                  open_jacket=bool(rng.random() < 0.15 and not dress), barefoot=bool(rng.random() < 0.05))


@dataclass
class Prim:
    poly: np.ndarray  # (M, 2) px outline
    part: int
    material: str
    depth: float
    tag: str


def _torso_outline(xy: np.ndarray, widths: tuple[float, float, float], scale: float, t0: float, t1: float
                   ) -> np.ndarray:
    """Torso silhouette between fractions t0 < t1 of the way from below the pelvis (0) to above the neck (1)."""
    neck, pelvis = xy[NECK], xy[PELVIS]
    axis = neck - pelvis
    length = max(float(np.hypot(*axis)), 1e-3)
    u = axis / length
    n = np.array([-u[1], u[0]])
    ws, ww, wh = widths
    pos = np.array([-0.06 * scale, -0.045 * scale, 0.0, 0.35 * length, 0.75 * length, length - 0.02 * scale,
                    length + 0.012 * scale])
    half = np.array([0.3 * wh, 0.85 * wh, wh, ww, 0.97 * ws, ws, 0.45 * ws])
    pos = np.maximum.accumulate(pos)  # strongly foreshortened torsos keep a monotonic profile
    a, b = pos[0] + t0 * (pos[-1] - pos[0]), pos[0] + t1 * (pos[-1] - pos[0])
    inner = (pos > a) & (pos < b)
    p = np.concatenate([[a], pos[inner], [b]])
    w = np.interp(p, pos, half)
    left = pelvis + p[:, None] * u + w[:, None] * n
    right = pelvis + p[:, None] * u - w[:, None] * n
    return np.concatenate([left, right[::-1]])


def _limb(prims: list[Prim], a: np.ndarray, b: np.ndarray, ra: float, rb: float, part: int, depth: float, tag: str,
          cover: float, cover_mat: str, bare_mat: str = "skin", loose: float = 1.12) -> None:
    """A segment in skin (or `bare_mat`) with the first `cover` fraction (0..1) sleeved in `cover_mat`."""
    prims.append(Prim(capsule_polygon(a, b, ra, rb), part, bare_mat, depth, tag))
    if cover > 0.05:
        c = min(cover, 1.0)
        end = a + c * (b - a)
        prims.append(Prim(capsule_polygon(a, end, ra * loose, (ra + c * (rb - ra)) * loose, cap_b=c >= 1.0), part,
                          cover_mat, depth + 1e-4, tag))


def person_prims(pr: Projected, body: Body, out: Outfit) -> list[Prim]:
    """All primitives of one person, sorted far to near (stable: ties keep construction order)."""
    xy, z, s = pr.xy, pr.depth, pr.scale
    prims: list[Prim] = []
    d_torso = float(np.mean(z[[NECK, PELVIS, SHOULDER, SHOULDER + 1, HIP, HIP + 1]])) - 0.02
    waist = 0.28
    lower_mat = "bottom" if (out.tucked or out.skirt) else "top"
    prims.append(Prim(_torso_outline(xy, pr.torso_half_widths, s, 0, waist), PART["torso"], lower_mat, d_torso,
                      "torso"))
    prims.append(Prim(_torso_outline(xy, pr.torso_half_widths, s, waist - 0.01, 1), PART["torso"], "top",
                      d_torso + 1e-4, "torso"))
    if out.open_jacket and np.cos(pr.yaw) > 0.5:
        u = xy[NECK] - xy[PELVIS]
        n = np.array([-u[1], u[0]]) / max(float(np.hypot(*u)), 1e-3)
        w = pr.torso_half_widths[0] * 0.22 * np.cos(pr.yaw)
        top, bot = xy[NECK] + 0.01 * s * u / max(float(np.hypot(*u)), 1e-3), xy[PELVIS] + waist * u
        poly = np.array([top + n * w * 1.4, top - n * w * 1.4, bot - n * w, bot + n * w])
        prims.append(Prim(poly, PART["torso"], "inner", d_torso + 2e-4, "torso"))
    prims.append(Prim(capsule_polygon(xy[NECK], xy[CHIN], body.r_neck * s, body.r_neck * s * 0.95), PART["torso"],
                      "skin", d_torso - 1e-3, "neck"))
    # head: hair (or bald skin), face, eyes, long hair behind
    chin, top = xy[CHIN], xy[HEAD_TOP]
    hv = top - chin
    hl = max(float(np.hypot(*hv)), 1e-3)
    uh = hv / hl
    half_w = 0.5 * body.head_w * s * (1 + 0.12 * abs(np.sin(pr.yaw)))
    d_head = float(z[HEAD_CENTRE])
    if out.hair == "long":
        behind = d_torso - 2e-3 if pr.facing > -0.3 else d_torso + 5e-3  # over the back only in back views
        prims.append(Prim(capsule_polygon(xy[HAIR_TOP], xy[HAIR_BOTTOM], half_w * 0.85, half_w * 0.9), PART["head"],
                          "hair", behind, "head"))
    head_poly = ellipse_polygon(xy[HEAD_CENTRE], uh, hl / 2, half_w)
    prims.append(Prim(head_poly, PART["head"], "skin" if out.hair == "none" else "hair", d_head, "head"))
    if out.hair != "none" and pr.facing > -0.3:
        centre = xy[HEAD_CENTRE] - uh * 0.07 * hl + (xy[FACE] - xy[HEAD_CENTRE]) * 0.3
        prims.append(Prim(ellipse_polygon(centre, uh, hl * 0.43, half_w * 0.84), PART["head"], "skin",
                          d_head + 1e-4, "head"))
    if pr.facing > 0.2:
        for i in range(2):
            if z[EYE + i] > d_head:
                eye = ellipse_polygon(xy[EYE + i], np.array([uh[1], -uh[0]]), 0.07 * body.head_w * s,
                                      0.045 * body.head_w * s, n=10)
                prims.append(Prim(eye, PART["head"], "eye", d_head + 2e-4, "head"))
    for i in range(2):  # arms
        sh, el, wr, hd = xy[SHOULDER + i], xy[ELBOW + i], xy[WRIST + i], xy[HAND + i]
        rs, re, rw = body.r_shoulder * s, body.r_elbow * s, body.r_wrist * s
        _limb(prims, sh, el, rs, re, PART["upper_arm"], float(z[[SHOULDER + i, ELBOW + i]].mean()), f"upper_arm_{i}",
              min(out.sleeve, 1.0), "top")
        _limb(prims, el, wr, re, rw, PART["lower_arm"], float(z[[ELBOW + i, WRIST + i]].mean()), f"forearm_{i}",
              out.sleeve - 1.0, "top")
        prims.append(Prim(capsule_polygon(wr, hd, rw * 1.1, rw * 1.25), PART["lower_arm"], "skin",
                          float(z[[WRIST + i, HAND + i]].mean()) + 1e-3, f"hand_{i}"))
    leg_depths = []
    for i in range(2):  # legs
        hp, kn, an = xy[HIP + i], xy[KNEE + i], xy[ANKLE + i]
        rh, rk, ra = body.r_hip * s, body.r_knee * s, body.r_ankle * s
        d_thigh, d_shin = float(z[[HIP + i, KNEE + i]].mean()), float(z[[KNEE + i, ANKLE + i]].mean())
        leg_depths += [d_thigh, d_shin]
        _limb(prims, hp, kn, rh, rk, PART["upper_leg"], d_thigh, f"thigh_{i}", min(out.legs, 1.0), "legwear",
              loose=1.08)
        _limb(prims, kn, an, rk, ra, PART["lower_leg"], d_shin, f"shin_{i}", out.legs - 1.0, "legwear", loose=1.1)
        foot = capsule_polygon(xy[HEEL + i], xy[TOE + i], ra * 1.05, ra * 0.8)
        prims.append(Prim(foot, PART["lower_leg"], "skin" if out.barefoot else "shoes",
                          float(z[[HEEL + i, TOE + i]].mean()) + 1e-3, f"foot_{i}"))
    if out.skirt:
        prims += _skirt(xy, body, out.skirt, s, max(leg_depths) + 2e-3)
    prims.sort(key=lambda p: p.depth)
    return prims


def _skirt(xy: np.ndarray, body: Body, hem: float, s: float, depth: float) -> list[Prim]:
    """A skirt (or a dress's lower half) as the hull around both legs; upper_leg above the knees, lower_leg below."""
    flare = 0.03 * s * hem
    hips = [capsule_polygon(xy[HIP + i], xy[HIP + i], body.r_hip * s * 1.15, body.r_hip * s * 1.15) for i in (0, 1)]
    upper, lower = list(hips), []
    for i in (0, 1):
        hp, kn, an = xy[HIP + i], xy[KNEE + i], xy[ANKLE + i]
        end = hp + min(hem, 1.0) * (kn - hp)
        upper.append(capsule_polygon(hp, end, body.r_hip * s * 1.15, body.r_knee * s + flare * min(hem, 1.0)))
        if hem > 1.0:
            lower.append(capsule_polygon(kn, kn + (hem - 1.0) * (an - kn), body.r_knee * s + flare,
                                         body.r_knee * s + flare * hem))
    out = [Prim(cv2.convexHull(np.concatenate(upper).astype(np.float32))[:, 0].astype(float), PART["upper_leg"],
                "bottom", depth, "skirt_upper")]
    if lower:
        out.append(Prim(cv2.convexHull(np.concatenate(lower).astype(np.float32))[:, 0].astype(float),
                        PART["lower_leg"], "bottom", depth + 1e-4, "skirt_lower"))
    return out
