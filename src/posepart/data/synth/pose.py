"""Synthetic people, part 1: body proportions and articulated 3D poses from joint angles, projected to the image.

Body frame (units of standing height): x = the person's left, y = up, z = forward; the pelvis is the origin. The view
rotates the body about the vertical axis by `yaw` (0 = facing the camera, so the person's left is the image's right);
projection is orthographic with image y pointing down and depth = z after the yaw (larger = nearer the camera).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from posepart.schema import PASCAL_KEYPOINTS

SIDES = (1.0, -1.0)  # body-x sign of the left and right limbs

# Projected points: the 14 PASCAL joints (schema order) followed by the extra points the renderer needs.
HEAD_TOP, NECK = PASCAL_KEYPOINTS.index("head"), PASCAL_KEYPOINTS.index("neck")
SHOULDER, ELBOW, WRIST, HIP, KNEE, ANKLE = (PASCAL_KEYPOINTS.index(f"left_{joint}") for joint in  # right = left + 1
                                            ("shoulder", "elbow", "wrist", "hip", "knee", "ankle"))
CHIN, PELVIS, HAND, TOE, HEEL, HEAD_CENTRE, FACE, EYE = 14, 15, 16, 18, 20, 22, 23, 24  # HAND/TOE/HEEL/EYE: L, R
HAIR_TOP, HAIR_BOTTOM = 26, 27
NUM_POINTS = 28


@dataclass(frozen=True)
class Body:
    """Segment lengths and radii as fractions of standing height (head top to sole)."""

    head: float  # chin to top of head
    head_w: float
    neck: float
    torso: float  # pelvis to neck (base of the neck, between the shoulders)
    shoulder: float  # half shoulder width
    hip: float  # half distance between the hip joints
    waist: float  # half width of the waist
    chest: float  # half depth of the torso
    upper_arm: float
    forearm: float
    hand: float
    thigh: float
    shin: float
    ankle: float  # ankle joint above the sole
    foot: float
    r_neck: float
    r_shoulder: float
    r_elbow: float
    r_wrist: float
    r_hip: float
    r_knee: float
    r_ankle: float
    child: bool


def sample_body(rng: np.random.Generator, child: bool) -> Body:
    """Random proportions: adult or child (bigger head, shorter limbs), thin to heavy build, +-10% per segment."""
    j = lambda: float(rng.uniform(0.9, 1.1))  # noqa: E731 - per-segment jitter
    build = float(rng.uniform(0.8, 1.35))
    if child:
        lengths = dict(head=0.17, neck=0.035, torso=0.29, thigh=0.2, shin=0.19, ankle=0.04)
        arm, width = (0.14, 0.125, 0.075), 1.15 * build
    else:
        lengths = dict(head=0.125, neck=0.045, torso=0.30, thigh=0.245, shin=0.235, ankle=0.045)
        arm, width = (0.17, 0.15, 0.09), build
    lengths = {k: v * j() for k, v in lengths.items()}
    total = sum(lengths.values())
    lengths = {k: v / total for k, v in lengths.items()}
    shoulder = (0.105 if not child else 0.095) * j() * (0.5 + 0.5 * width)
    hip = 0.055 * j() * (0.6 + 0.4 * width)
    return Body(
        head=lengths["head"], head_w=lengths["head"] * float(rng.uniform(0.72, 0.85)), neck=lengths["neck"],
        torso=lengths["torso"], shoulder=shoulder, hip=hip, waist=shoulder * float(rng.uniform(0.7, 0.95)),
        chest=0.055 * width * j(), upper_arm=arm[0] * j(), forearm=arm[1] * j(), hand=arm[2] * j(),
        thigh=lengths["thigh"], shin=lengths["shin"], ankle=lengths["ankle"], foot=0.11 * j(),
        r_neck=0.028 * width * j(), r_shoulder=0.036 * width * j(), r_elbow=0.026 * width * j(),
        r_wrist=0.019 * width * j(), r_hip=0.047 * width * j(), r_knee=0.036 * width * j(),
        r_ankle=0.023 * width * j(), child=child,
    )


@dataclass
class Pose:
    """Joint angles in radians; per-limb arrays are indexed [left, right]."""

    yaw: float
    pitch: float  # torso lean forward
    roll: float  # torso lean sideways
    head_pitch: float
    head_yaw: float
    head_roll: float
    arm_flex: np.ndarray  # swing forward (-50..180 deg)
    arm_abd: np.ndarray  # raise sideways (-30..180 deg), negative = across the body
    arm_twist: np.ndarray  # internal rotation of the upper arm (-40..100 deg): where the bent forearm points
    elbow: np.ndarray  # elbow bend (0..150 deg)
    hip_flex: np.ndarray  # thigh forward (-30..130 deg)
    hip_abd: np.ndarray  # thigh sideways (-10..45 deg)
    knee: np.ndarray  # knee bend (0..150 deg)
    hand_bend: np.ndarray


POSE_KINDS = ("stand", "walk", "arms_raised", "arms_crossed", "hands_on_hips", "sit", "crouch", "reach", "random")
POSE_WEIGHTS = np.array([0.15, 0.17, 0.1, 0.08, 0.08, 0.1, 0.08, 0.12, 0.12])
LIMITS = {  # degrees
    "arm_flex": (-50, 180), "arm_abd": (-30, 180), "arm_twist": (-40, 100), "elbow": (0, 150),
    "hip_flex": (-30, 130), "hip_abd": (-10, 45), "knee": (0, 150),
}


def sample_pose(rng: np.random.Generator, kind: str | None = None) -> tuple[Pose, str]:
    """A pose of a random (or the given) kind, jittered within joint limits, randomly mirrored and viewed."""
    kind = kind or POSE_KINDS[int(rng.choice(len(POSE_KINDS), p=POSE_WEIGHTS / POSE_WEIGHTS.sum()))]
    u = lambda lo, hi, n=2: rng.uniform(lo, hi, n)  # noqa: E731
    a = {  # standing defaults
        "arm_flex": u(-12, 15), "arm_abd": u(4, 20), "arm_twist": u(-10, 30), "elbow": u(0, 25),
        "hip_flex": u(-5, 8), "hip_abd": u(0, 10), "knee": u(0, 10),
    }
    pitch, roll = rng.normal(0, 4), rng.normal(0, 3)
    if kind == "walk":
        amp = rng.uniform(15, 35)
        a["hip_flex"] = np.array([amp, -0.6 * amp]) + u(-5, 5)
        a["knee"] = np.array([rng.uniform(0, 15), rng.uniform(15, 55)])
        a["arm_flex"] = np.array([-0.8 * amp, 0.8 * amp]) + u(-8, 8)
        a["elbow"] = u(10, 45)
    elif kind == "arms_raised":
        raised = rng.random(2) < 0.7 if rng.random() < 0.6 else np.array([True, True])
        up = np.where(rng.random(2) < 0.5, 1, 0)
        a["arm_abd"] = np.where(raised & (up == 1), u(110, 180), a["arm_abd"])
        a["arm_flex"] = np.where(raised & (up == 0), u(110, 175), a["arm_flex"])
        a["elbow"] = np.where(raised, u(0, 70), a["elbow"])
        a["arm_twist"] = np.where(raised, u(-30, 30), a["arm_twist"])
    elif kind == "arms_crossed":
        a.update(arm_flex=u(15, 40), arm_abd=u(0, 15), arm_twist=u(75, 95), elbow=u(100, 130))
    elif kind == "hands_on_hips":
        both = rng.random() < 0.7
        on = np.array([True, both or rng.random() < 0.5])
        on = on[::-1] if rng.random() < 0.5 else on
        a["arm_flex"] = np.where(on, u(-20, 0), a["arm_flex"])
        a["arm_abd"] = np.where(on, u(35, 55), a["arm_abd"])
        a["arm_twist"] = np.where(on, u(55, 85), a["arm_twist"])
        a["elbow"] = np.where(on, u(95, 125), a["elbow"])
    elif kind == "sit":
        a.update(hip_flex=u(75, 100), knee=u(70, 105), hip_abd=u(0, 20), arm_flex=u(20, 60), elbow=u(20, 70))
        pitch = rng.uniform(-5, 15)
    elif kind == "crouch":
        a.update(hip_flex=u(95, 125), knee=u(105, 145), hip_abd=u(5, 30), arm_flex=u(20, 80), elbow=u(10, 90))
        pitch = rng.uniform(15, 40)
    elif kind == "reach":
        a["arm_flex"][0] = rng.uniform(60, 160)
        a["arm_abd"][0] = rng.uniform(-20, 60)
        a["elbow"][0] = rng.uniform(0, 25)
        pitch, roll = rng.uniform(0, 25), rng.normal(0, 8)
    elif kind == "random":
        a = {k: u(lo, hi) for k, (lo, hi) in LIMITS.items()}
        a["hip_flex"] = u(-20, 60)
        a["knee"] = np.minimum(a["knee"], u(0, 90))
        pitch, roll = rng.uniform(-10, 30), rng.normal(0, 8)
    for k in a:  # jitter and clip to the limits
        lo, hi = LIMITS[k]
        a[k] = np.clip(np.asarray(a[k], float) + rng.normal(0, 5, 2), lo, hi)
    if rng.random() < 0.5:  # mirrored pose
        a = {k: v[::-1].copy() for k, v in a.items()}
        roll = -roll
    view = rng.random()
    if view < 0.45:
        yaw = rng.normal(0, 18)
    elif view < 0.7:
        yaw = rng.choice([-1, 1]) * rng.uniform(30, 65)
    elif view < 0.9:
        yaw = rng.choice([-1, 1]) * rng.uniform(70, 110)
    else:
        yaw = 180 + rng.normal(0, 25)
    head_pitch = -0.7 * pitch + rng.normal(0, 8)
    r = np.radians
    return Pose(
        yaw=float(r(yaw)), pitch=float(r(pitch)), roll=float(r(roll)), head_pitch=float(r(head_pitch)),
        head_yaw=float(r(rng.normal(0, 20))), head_roll=float(r(rng.normal(0, 6))),
        arm_flex=r(a["arm_flex"]), arm_abd=r(a["arm_abd"]), arm_twist=r(a["arm_twist"]), elbow=r(a["elbow"]),
        hip_flex=r(a["hip_flex"]), hip_abd=r(a["hip_abd"]), knee=r(a["knee"]), hand_bend=r(rng.normal(0, 15, 2)),
    ), kind


# The four kinds of view `sample_pose` draws, named by |yaw| (degrees, wrapped to 0..180): each kind's upper bound,
# put between two kinds' ranges where they leave a gap (front ~ N(0, 18), oblique 30-65, side 70-110, back 180 +- 25).
VIEWS = ((30.0, "front"), (67.5, "oblique"), (130.0, "side"), (180.0, "back"))


def view_of(yaw_deg: float) -> str:
    """The view a body yaw in degrees gives: "front", "oblique", "side" or "back" (`VIEWS`)."""
    turned = abs((yaw_deg + 180.0) % 360.0 - 180.0)
    return next(name for bound, name in VIEWS if turned <= bound)


def _rx(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def _ry(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(t: float) -> np.ndarray:
    c, s = np.cos(t), np.sin(t)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def _rotate_about(v: np.ndarray, axis: np.ndarray, t: float) -> np.ndarray:
    """Rodrigues rotation of v about the unit axis by t."""
    return v * np.cos(t) + np.cross(axis, v) * np.sin(t) + axis * np.dot(axis, v) * (1 - np.cos(t))


DOWN, FWD = np.array([0.0, -1.0, 0.0]), np.array([0.0, 0.0, 1.0])


def skeleton_3d(body: Body, pose: Pose) -> np.ndarray:
    """(NUM_POINTS, 3) body-frame points (before the view's yaw) of the posed skeleton."""
    p = np.zeros((NUM_POINTS, 3))
    torso = _rz(pose.roll) @ _rx(pose.pitch)
    neck = torso @ np.array([0, body.torso, 0])
    p[NECK], p[PELVIS] = neck, 0
    head = torso @ _ry(pose.head_yaw) @ _rz(pose.head_roll) @ _rx(pose.head_pitch)
    up_h, fwd_h = head[:, 1], head[:, 2]
    p[CHIN] = neck + up_h * body.neck
    p[HEAD_TOP] = p[CHIN] + up_h * body.head
    p[HEAD_CENTRE] = p[CHIN] + up_h * body.head * 0.5
    p[FACE] = p[HEAD_CENTRE] + fwd_h * body.head_w * 0.5
    for i, side in enumerate(SIDES):
        p[EYE + i] = p[HEAD_CENTRE] + head @ np.array([0.21 * side * body.head_w, 0.04 * body.head, 0.4 * body.head_w])
    p[HAIR_TOP] = p[HEAD_CENTRE] - fwd_h * body.head_w * 0.3
    p[HAIR_BOTTOM] = neck - torso[:, 1] * body.torso * 0.15 - torso[:, 2] * body.chest * 0.8
    for i, side in enumerate(SIDES):
        shoulder = neck + torso @ np.array([side * body.shoulder, -0.015, 0])
        arm = torso @ _rz(side * pose.arm_abd[i]) @ _rx(-pose.arm_flex[i])
        d_up = arm @ DOWN
        front = _rotate_about(arm @ FWD, d_up, -side * pose.arm_twist[i])  # internal rotation turns it medially
        d_fore = np.cos(pose.elbow[i]) * d_up + np.sin(pose.elbow[i]) * front
        d_hand = _rotate_about(d_fore, np.cross(d_fore, front) / (np.linalg.norm(np.cross(d_fore, front)) + 1e-9),
                               pose.hand_bend[i])
        p[SHOULDER + i] = shoulder
        p[ELBOW + i] = shoulder + d_up * body.upper_arm
        p[WRIST + i] = p[ELBOW + i] + d_fore * body.forearm
        p[HAND + i] = p[WRIST + i] + d_hand * body.hand
        leg = _rz(side * pose.hip_abd[i]) @ _rx(-pose.hip_flex[i])
        d_thigh, front_leg = leg @ DOWN, leg @ FWD
        d_shin = np.cos(pose.knee[i]) * d_thigh - np.sin(pose.knee[i]) * front_leg
        p[HIP + i] = np.array([side * body.hip, 0, 0])
        p[KNEE + i] = p[HIP + i] + d_thigh * body.thigh
        p[ANKLE + i] = p[KNEE + i] + d_shin * body.shin
        toe_dir = _ry(side * np.radians(10)) @ FWD
        p[TOE + i] = p[ANKLE + i] + toe_dir * body.foot + DOWN * body.ankle * 0.6
        p[HEEL + i] = p[ANKLE + i] - toe_dir * body.foot * 0.15 + DOWN * body.ankle * 0.6
    return p


@dataclass
class Projected:
    """A posed person in image coordinates: points (NUM_POINTS, 2) px, depth (NUM_POINTS,) in height units."""

    xy: np.ndarray
    depth: np.ndarray
    scale: float  # px per unit of standing height
    yaw: float
    torso_half_widths: tuple[float, float, float]  # px at shoulders, waist, hips (silhouette of the torso's girth)
    facing: float  # z of the head's forward direction: > 0 the face is towards the camera


def project(body: Body, pose: Pose, points: np.ndarray, scale: float, centre: np.ndarray, roll: float) -> Projected:
    """Yaw the body, project orthographically, rotate in-plane by roll, scale and quantise to 1/16 px."""
    q = points @ _ry(pose.yaw).T
    xy = np.stack([q[:, 0], -q[:, 1]], 1)
    c, s = np.cos(roll), np.sin(roll)
    xy = xy @ np.array([[c, s], [-s, c]]) * scale + centre
    xy = np.round(xy * 16) / 16  # what cv2's shift=4 drawing can represent exactly
    cy, sy = abs(np.cos(pose.yaw)), abs(np.sin(pose.yaw))
    girth = lambda a, b: scale * float(np.hypot(a * cy, b * sy))  # noqa: E731 - silhouette half-width of an ellipse
    widths = (girth(body.shoulder, body.chest), girth(body.waist, body.chest * 0.9),
              girth(body.hip + body.r_hip * 0.8, body.chest))
    facing = float((_ry(pose.yaw) @ (points[FACE] - points[HEAD_CENTRE]))[2] / (body.head_w * 0.5))
    return Projected(xy=xy, depth=q[:, 2], scale=scale, yaw=pose.yaw, torso_half_widths=widths, facing=facing)
