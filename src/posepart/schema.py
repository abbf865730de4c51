"""What a dataset annotates: joints, skeleton, flip pairs, OKS sigmas, part classes and colours.

One `Schema` object is read from a dataset's people's category (`categories[0]` as a rule) and handed to everything
downstream (targets, model heads, losses, decoder, metrics, drawing), so channel counts and left/right pairs are never
written twice.
"""

from __future__ import annotations

import colorsys
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from posepart.errors import PosepartWarning
from posepart.names import (default_sigmas, flip_permutation, head_and_neck, name_key, numbered_names, split_side,
                            unpaired_sided_names)

IGNORE_LABEL = 255  # the uint8 part-label value of an unlabelled pixel: in part PNGs, targets, losses and metrics


# PASCAL-Person-Part pose (Xia et al. 2017, 14 joints) and parts (Chen et al. 2014, 6 parts). "head" is the top of the
# head, as MPII's head_top. The first 13 limbs are Xia's: neck to head, shoulders and hips, then down each arm and leg.
# The last 4 are redundant torso limbs of ours (shoulder-hip per side, shoulder-shoulder, hip-hip), like the redundant
# ear-shoulder PAFs of OpenPose's COCO model: in Xia's star every path runs through the neck, so a person whose neck is
# out of the image or hidden would fall apart into four limbs; with them the oracle AP on the synthetic benchmark goes
# from 0.91 to 0.96.
PASCAL_KEYPOINTS = (
    "head", "neck", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
PASCAL_SKELETON_NAMES = (
    ("neck", "head"),
    ("neck", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
    ("neck", "right_shoulder"), ("right_shoulder", "right_elbow"), ("right_elbow", "right_wrist"),
    ("neck", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("neck", "right_hip"), ("right_hip", "right_knee"), ("right_knee", "right_ankle"),
    ("left_shoulder", "left_hip"), ("right_shoulder", "right_hip"),
    ("left_shoulder", "right_shoulder"), ("left_hip", "right_hip"),
)
PASCAL_PART_CLASSES = ("background", "head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")

COCO_KEYPOINTS = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle",
    "right_ankle",
)
COCO_SKELETON_1BASED = (
    (16, 14), (14, 12), (17, 15), (15, 13), (12, 13), (6, 12), (7, 13), (6, 7), (6, 8), (7, 9), (8, 10), (9, 11),
    (2, 3), (1, 2), (1, 3), (2, 4), (3, 5), (4, 6), (5, 7),
)

# MPII's 16 joints in the release order (also LIP's pose order) and the usual 15-edge skeleton.
MPII_KEYPOINTS = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle", "pelvis", "thorax",
    "upper_neck", "head_top", "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist",
)
MPII_SKELETON_NAMES = (
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("right_hip", "pelvis"),
    ("pelvis", "left_hip"), ("left_hip", "left_knee"), ("left_knee", "left_ankle"),
    ("pelvis", "thorax"), ("thorax", "upper_neck"), ("upper_neck", "head_top"),
    ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"), ("right_shoulder", "thorax"),
    ("thorax", "left_shoulder"), ("left_shoulder", "left_elbow"), ("left_elbow", "left_wrist"),
)

# Limbs by joint name, from the built-in skeletons: what a dataset whose own skeleton is unusable is given
# (`limbs_by_name`). PASCAL-Person-Part's joints are also CrowdPose's, whose JSON carries COCO's 17-joint skeleton.
_KNOWN_LIMBS = (
    *PASCAL_SKELETON_NAMES,
    *((COCO_KEYPOINTS[a - 1], COCO_KEYPOINTS[b - 1]) for a, b in COCO_SKELETON_1BASED),
    *MPII_SKELETON_NAMES,
)

# The 20 human-parsing classes of LIP and CIHP (ids 0..19). They agree except id 10: LIP labels jumpsuits there, CIHP
# bare torso skin.
_PARSING_CLASSES = (
    "background", "hat", "hair", "glove", "sunglasses", "upper_clothes", "dress", "coat", "socks", "pants",
    "<10>", "scarf", "skirt", "face", "left_arm", "right_arm", "left_leg", "right_leg", "left_shoe", "right_shoe",
)
LIP_PART_CLASSES = tuple("jumpsuits" if c == "<10>" else c for c in _PARSING_CLASSES)
CIHP_PART_CLASSES = tuple("torso_skin" if c == "<10>" else c for c in _PARSING_CLASSES)


def limbs_by_name(keypoints: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """The limbs of the built-in skeletons (PASCAL-Person-Part's, COCO's, MPII's) between joints of these names, as
    0-based index pairs in their first order, each once."""
    index: dict[str, int] = {}
    for i, name in enumerate(keypoints):
        index.setdefault(name_key(name), i)
    limbs: dict[frozenset[int], tuple[int, int]] = {}
    for a, b in _KNOWN_LIMBS:
        if a in index and b in index:
            limbs.setdefault(frozenset((index[a], index[b])), (index[a], index[b]))
    return tuple(limbs.values())


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, (n, 3) uint8 RGB: index 0 black, 1 (128,0,0), 2 (0,128,0), ..."""
    palette = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def _hue_colours(n: int) -> tuple[tuple[int, int, int], ...]:
    """n well-separated saturated RGB colours (for joints and limbs)."""
    return tuple(
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb(i / max(n, 1), 0.9, 1.0)) for i in range(n)  # type: ignore[misc]
    )


@dataclass(frozen=True)
class Schema:
    """Joints, skeleton and part classes of one dataset; the single source of every channel count.

    `skeleton` holds 0-based joint index pairs (the JSON stores COCO's 1-based pairs). `part_classes` includes
    "background" at index 0, or is empty for a pose-only dataset. An empty `keypoints` means a parts-only dataset.
    `flip_pairs` (0-based; the JSON's 1-based "flip_pairs") pair joints as mirror images whatever their names say;
    the others pair by their names' sides.
    """

    keypoints: tuple[str, ...]
    skeleton: tuple[tuple[int, int], ...]
    part_classes: tuple[str, ...] = ()
    sigmas: tuple[float, ...] = ()
    name: str = "person"
    flip_pairs: tuple[tuple[int, int], ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    # whether `sigmas` were given (a file's "sigmas"), not the names' defaults: a file's own score it when it is read
    # in a model's schema (`MappedSource.scoring_schema`), even where they equal the defaults
    sigmas_given: bool = field(init=False, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        k = len(self.keypoints)
        for kind, names in (("keypoint", self.keypoints), ("part class", self.part_classes)):
            if repeated := sorted({name for name in names if names.count(name) > 1}):
                raise ValueError(f"{kind} names must differ: {', '.join(map(repr, repeated))} more than once")
        for a, b in self.skeleton:
            if not (0 <= a < k and 0 <= b < k) or a == b:
                raise ValueError(f"skeleton edge ({a}, {b}) is not a pair of distinct joints among {k} keypoints")
        paired = [j for pair in self.flip_pairs for j in pair]
        if any(not 0 <= j < k for j in paired) or any(a == b for a, b in self.flip_pairs):
            raise ValueError(f"flip pairs {list(self.flip_pairs)} must pair two distinct joints among {k} keypoints")
        if repeated := sorted({self.keypoints[j] for j in paired if paired.count(j) > 1}):
            raise ValueError(f"flip pairs pair each joint once: {', '.join(map(repr, repeated))} more than once")
        if self.part_classes and self.part_classes[0] != "background":
            raise ValueError(f"part_classes[0] must be 'background', got {self.part_classes[0]!r}")
        if len(self.part_classes) > IGNORE_LABEL:
            raise ValueError(f"at most {IGNORE_LABEL - 1} part classes fit a uint8 label map with "
                             f"{IGNORE_LABEL} = ignore")
        object.__setattr__(self, "sigmas_given", bool(self.sigmas))
        if not self.sigmas:
            object.__setattr__(self, "sigmas", default_sigmas(self.keypoints))
        elif len(self.sigmas) != k:
            raise ValueError(f"{len(self.sigmas)} sigmas for {k} keypoints")

    # -- sizes -------------------------------------------------------------------------------------------------
    @property
    def num_joints(self) -> int:
        return len(self.keypoints)

    @property
    def num_limbs(self) -> int:
        return len(self.skeleton)

    @property
    def num_parts(self) -> int:
        """Number of segmentation classes including background (0 for a pose-only dataset)."""
        return len(self.part_classes)

    @property
    def heatmap_channels(self) -> int:
        """One heatmap per joint plus the background channel."""
        return self.num_joints + 1

    @property
    def measures_head_size(self) -> bool:
        """Whether the schema has a head (top) and a neck joint: PCKh's head size is their distance."""
        return None not in head_and_neck(self.keypoints)

    def head_neck_sizes(self, keypoints: np.ndarray) -> np.ndarray:
        """(N,) PCKh head size of each person of keypoints (N, K, 3): head (top) to neck, the joints found by
        `name_key` (MHP's 'Head-top', 'Upper-neck' too); NaN where the schema or the person lacks either."""
        head, neck = head_and_neck(self.keypoints)
        keypoints = np.asarray(keypoints, np.float64).reshape(-1, self.num_joints, 3)
        if head is None or neck is None:
            return np.full(len(keypoints), np.nan)
        ok = (keypoints[:, head, 2] > 0) & (keypoints[:, neck, 2] > 0)
        return np.where(ok, np.linalg.norm(keypoints[:, head, :2] - keypoints[:, neck, :2], axis=-1), np.nan)

    @property
    def paf_channels(self) -> int:
        """An (x, y) field per skeleton edge."""
        return 2 * self.num_limbs

    @property
    def has_pose(self) -> bool:
        return self.num_joints > 0

    @property
    def has_parts(self) -> bool:
        return self.num_parts > 1

    # -- flips -------------------------------------------------------------------------------------------------
    @property
    def flip_perm(self) -> tuple[int, ...]:
        """Joint order after a horizontal flip: left and right joints swap (their names' sides, `split_side`, or
        `flip_pairs`)."""
        return flip_permutation(self.keypoints, self.flip_pairs)

    @property
    def part_flip_perm(self) -> tuple[int, ...]:
        """Part class order after a horizontal flip (identity for side-less parts such as PASCAL's)."""
        return flip_permutation(self.part_classes)

    @property
    def limb_flip(self) -> tuple[tuple[int | None, bool], ...]:
        """For each limb, the limb it becomes after a flip and whether its direction reverses.

        A flipped limb (a, b) is (perm[a], perm[b]); if the skeleton stores it as (perm[b], perm[a]) instead, its PAF
        vectors point the other way. None where the skeleton lacks that edge (a skeleton that is not mirror-symmetric,
        e.g. a head joined to the right foot only): a mirrored view then tells nothing about the limb.
        """
        perm = self.flip_perm
        where = {edge: i for i, edge in enumerate(self.skeleton)}
        out: list[tuple[int | None, bool]] = []
        for a, b in self.skeleton:
            fa, fb = perm[a], perm[b]
            if (fa, fb) in where:
                out.append((where[(fa, fb)], False))
            elif (fb, fa) in where:
                out.append((where[(fb, fa)], True))
            else:
                out.append((None, False))
        return tuple(out)

    def describe(self) -> str:
        """The schema in messages: its name and sizes ("'person' (14 joints, 7 part classes)"); COCO's category name
        is "person" in several schemas, so the name alone does not tell them apart."""
        return f"{self.name!r} ({self.num_joints} joints, {len(self.part_classes)} part classes)"

    @property
    def skeleton_groups(self) -> tuple[tuple[int, ...], ...]:
        """The joints the limbs connect, in their connected groups (each sorted, by first joint); joints in no limb
        are in none. One group for every human skeleton: the decoder assembles a person along the limbs, so a person
        of a skeleton in two groups comes out as two."""
        group = list(range(self.num_joints))  # union-find over the limbs

        def root(j: int) -> int:
            while group[j] != j:
                group[j] = group[group[j]]
                j = group[j]
            return j

        for a, b in self.skeleton:
            group[root(a)] = root(b)
        joints = sorted({j for edge in self.skeleton for j in edge})
        return tuple(tuple(j for j in joints if root(j) == r) for r in dict.fromkeys(root(j) for j in joints))

    def concerns(self) -> tuple[str, ...]:
        """What in the schema likely does not do what its author meant, in words for `inspect` and `train`: joint or
        part names that say left or right but that flips leave in place (`names.unpaired_sided_names`), joints in no
        limb, a skeleton whose limbs join the joints in separate groups, numbered joint names that say no side (an
        annotation tool's defaults), a skeleton without limbs or with a limb listed twice, and "flip_pairs" that pair
        joints their names pair otherwise (the same side, or each to another mirror: a 0-based list)."""
        notes = [f"the {kind} names {', '.join(map(repr, lone))} say left or right, but a horizontal flip (training's "
                 f"augmentation, --flip) leaves them in place: no mirror name pairs them (name the pairs e.g. "
                 f"left_x / right_x, x_left / x_right, lX / rX, or list them in the category's \"flip_pairs\")"
                 for kind, names in (("joint", self.keypoints), ("part class", self.part_classes))
                 if (lone := unpaired_sided_names(names, self.flip_pairs if kind == "joint" else ()))]
        by_names = flip_permutation(self.keypoints)
        sides = [split_side(name)[0] for name in self.keypoints]
        crossed = [f"[{a + 1}, {b + 1}] ({self.keypoints[a]!r}, {self.keypoints[b]!r})" for a, b in self.flip_pairs
                   if by_names[a] not in (a, b) or by_names[b] not in (a, b) or sides[a] is not None and
                   sides[a] == sides[b]]
        if crossed:  # before: taken as given (a 0-based list pairs each joint's neighbour)
            notes.append(f"\"flip_pairs\" pairs {', '.join(crossed)}, joints whose names say otherwise (the same "
                         f"side, or another mirror): the pairs count the keypoints from 1, as the skeleton's do")
        k = self.num_joints
        if k > 1 and not self.flip_pairs and numbered_names(self.keypoints):
            # (only numbered names: a hand's or a midline's joints, or Horse-10's near / off sides, rightly stay)
            notes.append(f"the joint names are numbers ({', '.join(map(repr, self.keypoints[:4]))}"
                         f"{' ...' if k > 4 else ''}; an annotation tool's defaults?) and no \"flip_pairs\" are "
                         f"given: nothing says which joints mirror each other, so a horizontal flip (training's "
                         f"augmentation, --flip) leaves every joint in place; if the body has sides, name them "
                         f"(left_x / right_x, x_left / x_right, lX / rX) or list them in \"flip_pairs\"")
        if k > 1 and not self.skeleton:
            notes.append("the skeleton lists no limbs: people are assembled along their limbs (part affinity "
                         "fields), so no pose model trains on this schema and its decoder finds each joint as a "
                         "person of its own (the oracle scores AP 0); list them in \"skeleton\" (1-based pairs)")
        groups = self.skeleton_groups
        limbed = {j for group in groups for j in group}
        if self.skeleton and (alone := [name for j, name in enumerate(self.keypoints) if j not in limbed]):
            shown = ", ".join(map(repr, alone[:8])) + (f" and {len(alone) - 8} more" if len(alone) > 8 else "")
            notes.append(f"the joints {shown} are in no limb: the decoder gives such a joint to a person that "
                         f"lacks it, the nearest relative to that person's size, by distance alone (no field along a "
                         f"limb says whose it is); a limb to a joint near it groups it as the others are")
        seen: dict[frozenset[int], int] = {}
        twice = [f"[{a + 1}, {b + 1}] ({self.keypoints[a]!r}, {self.keypoints[b]!r})" for i, (a, b)
                 in enumerate(self.skeleton) if seen.setdefault(frozenset((a, b)), i) != i]
        if twice:  # before: taken silently, a second PAF channel pair trained on the same limb
            notes.append(f"the skeleton lists {', '.join(twice)} a second time (in either order): each listing is "
                         f"a limb of its own, with its own part affinity field; list each limb once")
        if len(groups) > 1:
            listed = "; ".join(", ".join(self.keypoints[j] for j in g) for g in groups)
            notes.append(f"the skeleton's limbs join the joints in {len(groups)} separate groups ({listed}): the "
                         f"decoder assembles a person along the limbs, so each group is found as a person of its "
                         f"own; a limb between the groups joins them")
        return tuple(notes)

    # -- lookup ------------------------------------------------------------------------------------------------
    def joint(self, name: str) -> int:
        """Index of a joint by name; KeyError lists the known names."""
        try:
            return self.keypoints.index(name)
        except ValueError:
            raise KeyError(f"no joint {name!r} in schema {self.name!r}: {', '.join(self.keypoints)}") from None

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, np.float64)

    # -- colours -----------------------------------------------------------------------------------------------
    @property
    def joint_colours(self) -> tuple[tuple[int, int, int], ...]:
        return _hue_colours(self.num_joints)

    @property
    def limb_colours(self) -> tuple[tuple[int, int, int], ...]:
        return _hue_colours(self.num_limbs)

    @property
    def part_colours(self) -> np.ndarray:
        """(num_parts, 3) uint8 RGB, the VOC palette (the colours PASCAL part PNGs are drawn in)."""
        return voc_palette(max(self.num_parts, 1))

    # -- (de)serialisation -------------------------------------------------------------------------------------
    @classmethod
    def from_category(cls, category: dict[str, Any]) -> Schema:
        """Read the schema from a COCO category: `keypoints`, 1-based `skeleton`, optional `part_classes`/`sigmas`.
        Types are checked (a ValueError names the field): a string where a list belongs would otherwise be read
        character by character."""
        if not isinstance(category, dict):
            raise ValueError(f"a schema is a mapping (a COCO category), got {type(category).__name__}")

        def strings(key: str) -> tuple[str, ...]:
            value = category.get(key) or []
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{key} must be a list of names, got {value!r}")
            return tuple(value)

        def integer(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool)

        keypoints = strings("keypoints")
        skeleton_1based = category.get("skeleton") or []
        if not isinstance(skeleton_1based, (list, tuple)) or not all(
            isinstance(e, (list, tuple)) and len(e) == 2 and all(integer(v) for v in e) for e in skeleton_1based
        ):
            raise ValueError(f"skeleton must be a list of [a, b] 1-based pairs, got {skeleton_1based!r}")
        skeleton = tuple((a - 1, b - 1) for a, b in skeleton_1based)
        k = len(keypoints)
        if (loop := next((pair for pair in skeleton_1based if pair[0] == pair[1]), None)) is not None:
            joint = f" joins {keypoints[loop[0] - 1]!r} to itself" if 1 <= loop[0] <= k else " joins a joint to itself"
            raise ValueError(f"skeleton pair {list(loop)}{joint}: a limb is a pair of two joints")
        coco = {frozenset(edge) for edge in COCO_SKELETON_1BASED}
        if (k != len(COCO_KEYPOINTS) and any(not (0 <= a < k and 0 <= b < k) for a, b in skeleton)
                and all(frozenset(edge) in coco for edge in skeleton_1based) and limbs_by_name(keypoints)):
            # COCO's skeleton over other joints (CrowdPose's JSON carries it for its 14): no reading of it is right,
            # so the joints are joined by name as the built-in skeletons join them (before: the file was refused,
            # and CrowdPose could not be read). Any other skeleton naming a joint the file lacks stays an error.
            skeleton = limbs_by_name(keypoints)
            warnings.warn(f"the skeleton {list(map(list, skeleton_1based))} is COCO's, for its 17 joints, not these "
                          f"{k}; the limbs are taken by joint name from the built-in skeletons instead: "
                          f"{', '.join(f'{keypoints[a]}-{keypoints[b]}' for a, b in skeleton)}", PosepartWarning,
                          stacklevel=2)
        elif (outside := next((pair for pair in skeleton_1based if not all(1 <= v <= k for v in pair)), None)):
            zero = (" (this one holds a 0: 0-based pairs?)" if 0 in outside else
                    " (a tool's own point ids, left as they were after a point was deleted? the pairs give each "
                    "joint's position in \"keypoints\")" if max(outside) > k else "")
            raise ValueError(f"skeleton pair {list(outside)} names a joint outside 1..{k}: COCO skeleton pairs count "
                             f"the keypoints from 1{zero}")
        flip_1based = category.get("flip_pairs") or []
        if not isinstance(flip_1based, (list, tuple)) or not all(
            isinstance(e, (list, tuple)) and len(e) == 2 and all(integer(v) and 1 <= v <= k for v in e)
            for e in flip_1based
        ):
            raise ValueError(f"flip_pairs must be a list of [a, b] 1-based pairs of joints among 1..{k}, got "
                             f"{flip_1based!r}")
        sigmas = category.get("sigmas") or []
        if not isinstance(sigmas, (list, tuple)) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 and math.isfinite(v) for v in sigmas
        ):  # an infinite sigma made every prediction match that joint (OKS 1 at any distance)
            raise ValueError(f"sigmas must be a list of positive, finite numbers, got {sigmas!r}")
        known = {"id", "name", "supercategory", "keypoints", "skeleton", "part_classes", "sigmas", "flip_pairs"}
        return cls(
            keypoints=keypoints,
            skeleton=skeleton,
            part_classes=strings("part_classes"),
            sigmas=tuple(float(v) for v in sigmas),
            name=str(category.get("name", "person")),
            flip_pairs=tuple((a - 1, b - 1) for a, b in flip_1based),
            extra={k: v for k, v in category.items() if k not in known},
        )

    def to_category(self, category_id: int = 1) -> dict[str, Any]:
        """The COCO category dict that `from_category` reads back to an equal schema."""
        category: dict[str, Any] = {"id": category_id, "name": self.name, "supercategory": "person"}
        category["keypoints"] = list(self.keypoints)
        category["skeleton"] = [[a + 1, b + 1] for a, b in self.skeleton]
        if self.part_classes:
            category["part_classes"] = list(self.part_classes)
        if self.sigmas_given:
            category["sigmas"] = list(self.sigmas)
        if self.flip_pairs:
            category["flip_pairs"] = [[a + 1, b + 1] for a, b in self.flip_pairs]
        return category

    # -- the built-in schemas ----------------------------------------------------------------------------------
    @classmethod
    def pascal_person_part(cls) -> Schema:
        """14 joints and 6 parts of PASCAL-Person-Part: the synthetic data's schema and the paper's."""
        return cls.from_names(PASCAL_KEYPOINTS, PASCAL_SKELETON_NAMES, PASCAL_PART_CLASSES)

    @classmethod
    def coco(cls) -> Schema:
        """COCO's 17 keypoints and 19-edge skeleton, no parts."""
        return cls(keypoints=COCO_KEYPOINTS, skeleton=tuple((a - 1, b - 1) for a, b in COCO_SKELETON_1BASED))

    @classmethod
    def from_names(
        cls, keypoints: Sequence[str], skeleton: Sequence[tuple[str, str]], part_classes: Sequence[str] = (), **kw: Any
    ) -> Schema:
        """A schema whose skeleton is given by joint names instead of indices."""
        index = {n: i for i, n in enumerate(keypoints)}
        return cls(keypoints=tuple(keypoints), skeleton=tuple((index[a], index[b]) for a, b in skeleton),
                   part_classes=tuple(part_classes), **kw)

    @classmethod
    def mpii(cls) -> Schema:
        """MPII Human Pose: 16 joints in the release order, no parts."""
        return cls.from_names(MPII_KEYPOINTS, MPII_SKELETON_NAMES, name="mpii")

    @classmethod
    def lip(cls) -> Schema:
        """LIP: MPII's 16 joints (single person) and the 20 LIP parsing classes."""
        return cls.from_names(MPII_KEYPOINTS, MPII_SKELETON_NAMES, LIP_PART_CLASSES, name="lip")

    @classmethod
    def cihp(cls) -> Schema:
        """CIHP: multi-person parsing with 20 classes, no pose."""
        return cls(keypoints=(), skeleton=(), part_classes=CIHP_PART_CLASSES, name="cihp")


# `data.schema`'s names for the built-in schemas (a config names one; nothing else spells them)
BUILTIN_SCHEMAS: dict[str, Callable[[], Schema]] = {
    "pascal_person_part": Schema.pascal_person_part, "coco": Schema.coco, "mpii": Schema.mpii, "lip": Schema.lip,
    "cihp": Schema.cihp,
}
