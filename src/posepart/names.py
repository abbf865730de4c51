"""How datasets spell joint and part names, read in one place: a name's side in any spelling (`split_side`), its
mirror image (`mirror_name`, `flip_permutation`) and the key two schemas' names are matched by (`name_key`). Below
`schema`, which builds its flip permutations and name lookups from them."""

from __future__ import annotations

import functools
import re
from typing import Sequence

# The one left/right parser of joint and part names, in the spellings datasets use: a prefix with a separator
# ("left_knee", "Right Hand", "l_ankle", "R-Elbow"), camel case (OpenPose's "LShoulder", "RightHip", MoveNet's
# "leftShoulder") and a suffix ("knee_left", "hand_r", Blender's "hand.L"). Before, only "left_"/"right_" prefixes
# were read: other spellings were never swapped under a horizontal flip (training flips mirrored people with their
# labels unswapped) and were stripped of no side.
_SIDES = (
    re.compile(r"^(?P<side>left|right|l|r)[_\-. ](?P<rest>.+)$", re.IGNORECASE),
    re.compile(r"^(?P<side>Left|Right|LEFT|RIGHT|L|R)(?P<rest>[A-Z][a-z].*)$"),  # not LOWER_ARM, ROOT
    re.compile(r"^(?P<side>left|right)(?P<rest>[A-Z].*)$"),
    re.compile(r"^(?P<rest>.+?)[_\-. ](?P<side>left|right|l|r)$", re.IGNORECASE),
)
_OTHER_SIDE = {"left": "right", "right": "left", "l": "r", "r": "l"}


def _side_match(name: str) -> re.Match[str] | None:
    return next((match for match in (pattern.match(name) for pattern in _SIDES) if match), None)


def normal_name(name: str) -> str:
    """'Upper-clothes' -> 'upper_clothes', 'Right Shoulder' -> 'right_shoulder': the form names are compared in."""
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def name_key(name: str) -> str:
    """The form joint and part names of two schemas are matched in: `normal_name`, its side (any spelling
    `split_side` reads) first and camel-case words apart: 'LShoulder', 'l_shoulder', 'shoulder_left' and 'Left
    Shoulder' are 'left_shoulder'; OpenPose's 'LBigToe' is COCO-WholeBody's 'left_big_toe'."""
    side, rest = split_side(name.strip())
    words = normal_name(re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name if side is None else rest))
    return words if side is None else f"{side}_{words}"


def split_side(name: str) -> tuple[str | None, str]:
    """'left_upper_arm' -> ('left', 'upper_arm'); 'Right Hand' -> ('right', 'Hand'); 'LShoulder' -> ('left',
    'Shoulder'); 'knee_r' -> ('right', 'knee'); 'head' -> (None, 'head'). The side is 'left' or 'right'; the rest keeps
    its spelling (callers normalise it as they compare)."""
    match = _side_match(name)
    if not match:
        return None, name
    side = match.group("side").lower()
    return ("left" if side in ("left", "l") else "right"), match.group("rest")


def mirror_name(name: str) -> str:
    """'left_knee' -> 'right_knee', in the name's own spelling ('Right Hand' -> 'Left Hand', 'LShoulder' ->
    'RShoulder', 'knee_l' -> 'knee_r'); names without a side map to themselves."""
    match = _side_match(name)
    if not match:
        return name
    side = match.group("side")
    other = _OTHER_SIDE[side.lower()]
    if side.isupper():
        other = other.upper()
    elif side[0].isupper():
        other = other.capitalize()
    return name[:match.start("side")] + other + name[match.end("side"):]


def flip_permutation(names: Sequence[str]) -> tuple[int, ...]:
    """Index of each name's mirror image: its own spelling with the other side ("hand.L" -> "hand.R"), else the name
    of the other side with the same rest compared as `normal_name` does ("left_eye" pairs with "Right_eye",
    "left_hand" with "hand_right"); itself when it has no side, when its partner is absent, or when the pairing is not
    mutual (several spellings of one joint): a flip permutation is its own inverse."""
    return _flip_permutation(tuple(names))


@functools.lru_cache(maxsize=64)
def _flip_permutation(names: tuple[str, ...]) -> tuple[int, ...]:
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
    return tuple(j if candidate[j] == i else i for i, j in enumerate(candidate))
