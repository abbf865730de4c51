"""How datasets spell joint and part names, read in one place: a name's side in any spelling (`split_side`), its
mirror image (`mirror_name`, `flip_permutation`), the key two schemas' names are matched by (`name_key`), and what
a joint's name tells: its OKS sigma (`default_sigmas`) and whether it is PCKh's head or neck (`head_and_neck`).
Below `schema`, which builds its flip permutations and name lookups from them."""

from __future__ import annotations

import functools
import re
from typing import Sequence

# The one left/right parser of joint and part names, in the spellings datasets use: a prefix with a separator
# ("left_knee", "Right Hand", "l_ankle", "R-Elbow"), camel case (OpenPose's "LShoulder", "RightHip", MoveNet's
# "leftShoulder", "lKnee"), a suffix ("knee_left", "hand_r", Blender's "hand.L", Kinect's "ShoulderLeft", "kneeL"),
# and a word inside the name (DeepLabCut's quadrupeds' "front_left_paw"). Before, only "left_"/"right_" prefixes
# were read: other spellings were never swapped under a horizontal flip (training flips mirrored people with their
# labels unswapped) and were stripped of no side. A side run into a lower-case word ("leftear", BODY_25's names in
# lower case "lshoulder", PASCAL-Part's "leye", Vicon's "LSHO") is not read as a side on its own: "leftover" would be
# one too; `flip_permutation` pairs such a name with its mirror spelling where the schema has both
# (`_loose_mirrors`).
_SEP = r"[_\-. ]"
_SIDES = (
    re.compile(rf"^(?P<side>left|right|l|r){_SEP}(?P<rest>.+)$", re.IGNORECASE),
    re.compile(r"^(?P<side>Left|Right|LEFT|RIGHT|L|R)(?P<rest>[A-Z][a-z].*)$"),  # not LOWER_ARM, ROOT
    re.compile(r"^(?P<side>left|right|l|r)(?P<rest>[A-Z].*)$"),
    re.compile(rf"^(?P<rest>.+?){_SEP}(?P<side>left|right|l|r)$", re.IGNORECASE),
    re.compile(r"^(?P<rest>.*[a-z])(?P<side>Left|Right|L|R)$"),  # after a lower-case letter: not HEAD_TOP, ROOT
    re.compile(rf"^(?P<pre>.+?)(?P<sep>{_SEP})(?P<side>left|right){_SEP}(?P<post>.+)$", re.IGNORECASE),
)
_LOOKS_SIDED = re.compile(r"left|right", re.IGNORECASE)
_OTHER_SIDE = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _other_side(side: str) -> str:
    """'left' -> 'right', 'L' -> 'R', 'Right' -> 'Left': the other side in the same case."""
    other = _OTHER_SIDE[side.lower()]
    return other.upper() if side.isupper() else other.capitalize() if side[0].isupper() else other


def _side_match(name: str) -> re.Match[str] | None:
    return next((match for match in (pattern.match(name) for pattern in _SIDES) if match), None)


def normal_name(name: str) -> str:
    """'Upper-clothes' -> 'upper_clothes', 'Right Shoulder' -> 'right_shoulder': the form names are compared in."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def name_key(name: str) -> str:
    """The form joint and part names of two schemas are matched in: `normal_name`, its side (any spelling
    `split_side` reads) first and camel-case words apart: 'LShoulder', 'l_shoulder', 'shoulder_left' and 'Left
    Shoulder' are 'left_shoulder'; OpenPose's 'LBigToe' is COCO-WholeBody's 'left_big_toe'; 'FrontLeftPaw' is
    'front_left_paw''s 'left_front_paw' (the side a word inside the name once the camel case is apart)."""
    side, rest = split_side(name.strip())
    words = normal_name(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name if side is None else rest))
    if side is None:  # a side word inside camel case ('FrontLeftPaw'): read once the words are apart
        side, words = split_side(words)
    return words if side is None else f"{side}_{words}"


def split_side(name: str) -> tuple[str | None, str]:
    """'left_upper_arm' -> ('left', 'upper_arm'); 'Right Hand' -> ('right', 'Hand'); 'LShoulder' -> ('left',
    'Shoulder'); 'knee_r' -> ('right', 'knee'); 'front_left_paw' -> ('left', 'front_paw'); 'head' -> (None, 'head').
    The side is 'left' or 'right'; the rest keeps its spelling (callers normalise it as they compare)."""
    match = _side_match(name)
    if not match:
        return None, name
    side, parts = match.group("side").lower(), match.groupdict()
    rest = parts["rest"] if parts.get("rest") is not None else parts["pre"] + parts["sep"] + parts["post"]
    return ("left" if side in ("left", "l") else "right"), rest


def mirror_name(name: str) -> str:
    """'left_knee' -> 'right_knee', in the name's own spelling ('Right Hand' -> 'Left Hand', 'LShoulder' ->
    'RShoulder', 'knee_l' -> 'knee_r'); names without a side map to themselves."""
    match = _side_match(name)
    if not match:
        return name
    return name[:match.start("side")] + _other_side(match.group("side")) + name[match.end("side"):]


def flip_permutation(names: Sequence[str], pairs: Sequence[tuple[int, int]] = ()) -> tuple[int, ...]:
    """Index of each name's mirror image: its own spelling with the other side ("hand.L" -> "hand.R"), else the name
    of the other side with the same rest compared as `normal_name` does ("left_eye" pairs with "Right_eye",
    "left_hand" with "hand_right"); itself when it has no side, when its partner is absent, or when the pairing is not
    mutual (several spellings of one joint): a flip permutation is its own inverse. `pairs` (0-based, disjoint: a
    schema's `flip_pairs`) pair joints whatever their names say (face landmarks numbered round the jaw); a joint a
    name paired with one of them is then its own mirror."""
    return _flip_permutation(tuple(names), tuple(map(tuple, pairs)))


@functools.lru_cache(maxsize=64)
def _flip_permutation(names: tuple[str, ...], pairs: tuple[tuple[int, int], ...]) -> tuple[int, ...]:
    """`flip_permutation`, cached: `Schema.flip_perm` is read for every training sample, and parsing the sides of
    the names (a few regular expressions each) took about 90 us for COCO's 17, six times the single-pattern parse."""
    exact = {name: i for i, name in enumerate(names)}
    sided = [split_side(name) for name in names]
    by_rest: dict[tuple[str, str], int] = {}
    for i, (side, rest) in enumerate(sided):
        if side:
            by_rest.setdefault((side, normal_name(rest)), i)
    candidate = [exact.get(mirror_name(name), by_rest.get((_OTHER_SIDE[side], normal_name(rest)), i)) if side else i
                 for i, (name, (side, rest)) in enumerate(zip(names, sided))]
    perm = [j if candidate[j] == i else i for i, j in enumerate(candidate)]
    for i, name in enumerate(names):  # names no side spelling reads, paired where their mirror spelling is there too
        if perm[i] == i:
            j = next((exact[m] for m in _loose_mirrors(name) if exact.get(m, i) != i and perm[exact[m]] == exact[m]),
                     i)
            perm[i], perm[j] = j, i
    for a, b in pairs:
        for joint in (a, b):
            perm[perm[joint]] = perm[joint]  # its partner by name, if any, is left unpaired
        perm[a], perm[b] = b, a
    return tuple(perm)


# a joint name that is only a number, bare or after a generic word: CVAT's defaults ("1", "2", ...), "kp_3", "point 4"
_NUMBERED = re.compile(r"(?:(?:key)?points?|kp|joints?|landmarks?|lm|p|j)?[ _-]*\d+", re.IGNORECASE)


def numbered_names(names: Sequence[str]) -> bool:
    """Whether every name is only a number (an annotation tool's defaults): nothing in them says which joints mirror
    each other."""
    return all(_NUMBERED.fullmatch(name.strip()) for name in names)


def unpaired_sided_names(names: Sequence[str], pairs: Sequence[tuple[int, int]] = ()) -> list[str]:
    """The names that say "left" or "right" but that a horizontal flip leaves in place: a side `split_side` does not
    read ("leftear"), or one whose mirror name is absent ("left_knee" without a right knee). Flips, the training
    augmentation's and test-time ones, then mirror such a joint's place without swapping it to its other side.
    `pairs`: as `flip_permutation`'s."""
    perm = flip_permutation(names, pairs)
    return [name for i, name in enumerate(names) if perm[i] == i and _LOOKS_SIDED.search(name)]


# OKS sigmas by joint name. COCO's 17 come from the COCO keypoint evaluation; head/neck follow CrowdPose's; MPII-style
# names reuse the nearest COCO value. A category may override them with its own "sigmas" list.
SIGMAS_BY_NAME: dict[str, float] = {
    "nose": 0.026, "left_eye": 0.025, "right_eye": 0.025, "left_ear": 0.035, "right_ear": 0.035,
    "left_shoulder": 0.079, "right_shoulder": 0.079, "left_elbow": 0.072, "right_elbow": 0.072,
    "left_wrist": 0.062, "right_wrist": 0.062, "left_hip": 0.107, "right_hip": 0.107,
    "left_knee": 0.087, "right_knee": 0.087, "left_ankle": 0.089, "right_ankle": 0.089,
    "head": 0.079, "head_top": 0.079, "neck": 0.079, "upper_neck": 0.079, "thorax": 0.079, "pelvis": 0.107,
}
DEFAULT_SIGMA = 0.079  # joints with no known sigma are scored like a shoulder
# PCKh's head size: the distance from the top of the head (PASCAL's "head", MPII's "head_top") to the neck (MPII's
# "upper_neck"), as `name_key` spells them
HEAD_NAMES = ("head", "head_top")
NECK_NAMES = ("neck", "upper_neck")


@functools.lru_cache(maxsize=64)
def head_and_neck(keypoints: tuple[str, ...]) -> tuple[int | None, int | None]:
    """The indices of the head (top) and neck among `keypoints` (None where absent): an exact name first, else one
    `name_key` reads as it."""
    keys = [name_key(n) for n in keypoints]

    def find(names: tuple[str, ...]) -> int | None:
        exact = next((keypoints.index(n) for n in names if n in keypoints), None)
        return exact if exact is not None else next((keys.index(n) for n in names if n in keys), None)

    return find(HEAD_NAMES), find(NECK_NAMES)


def default_sigmas(keypoints: Sequence[str]) -> tuple[float, ...]:
    """The OKS sigma of each joint by its name in any spelling `name_key` reads (AIC's 'Right Wrist', MHP's
    'Right-wrist'), or with a side run into it that its mirror name in `keypoints` confirms ('lwrist' beside
    'rwrist', 'leftear' beside 'rightear', as flips pair them); DEFAULT_SIGMA for a name not known."""
    mirror = flip_permutation(keypoints)
    return tuple(_sigma(name, keypoints[mirror[i]]) for i, name in enumerate(keypoints))


def _sigma(name: str, mirror: str) -> float:
    """A joint's OKS sigma by `name`, else by the name less the run-in side that makes it `mirror` (before, 'lwrist'
    was scored as an unknown joint, 0.079 instead of a wrist's 0.062)."""
    sigma = SIGMAS_BY_NAME.get(name_key(name))
    if sigma is None and mirror != name:
        for start, end in _loose_sides(name):
            if name[:start] + _other_side(name[start:end]) + name[end:] == mirror:
                sigma = SIGMAS_BY_NAME.get(name_key(f"left_{name[:start]}{name[end:]}"))
                break
    return DEFAULT_SIGMA if sigma is None else sigma


# a one-letter side inside a name: a capital L or R ("FL_paw", "legL1", "leg_L1"), or a lower-case l or r in a word
# of one or two letters ("paw_fl_1", "leg_l1"; not "world")
_CAPITAL_SIDE = re.compile(r"[LR]")
_SHORT_WORD = re.compile(r"(?<![A-Za-z])[a-z]{1,2}(?![A-Za-z])")


def _loose_sides(name: str) -> list[tuple[int, int]]:
    """Where a side may be run into `name` ([start, end) spans): "left"/"right" anywhere ("leftear",
    "mixamorig:LeftArm", "eyeLeftOuter"), a one-letter side first or last ("lshoulder", "LSHO", "finger1L"), a
    capital one anywhere (the quadrupeds' "FL_paw" / "FR_paw", insects' "legL1" / "legR1") or a lower-case one in a
    word of one or two letters ("paw_fl_1")."""
    spans = [m.span() for m in _LOOKS_SIDED.finditer(name)]
    if len(name) > 1 and name[0].lower() in "lr":
        spans.append((0, 1))
    if len(name) > 1 and name[-1].lower() in "lr":
        spans.append((len(name) - 1, len(name)))
    letters = [m.start() for m in _CAPITAL_SIDE.finditer(name)]
    letters += [i for m in _SHORT_WORD.finditer(name) for i in range(m.start(), m.end()) if name[i] in "lr"]
    return spans + [(i, i + 1) for i in letters if 0 < i < len(name) - 1]


def _loose_mirrors(name: str) -> list[str]:
    """`name` with one side swapped where it is run into the name (`_loose_sides`), each in its own case.
    Only pairs whose both spellings a schema has count (`flip_permutation`): "leftover" has none."""
    return [name[:start] + _other_side(name[start:end]) + name[end:] for start, end in _loose_sides(name)]
