"""How one dataset's labels are read in another dataset's schema: joints by name, part classes by table.

Pure numpy, no I/O. A training run picks ONE target schema; every source maps into it:

- Joints (`JointMap`): a target joint takes the source joint of the same name, else the first rule of
  `JOINT_ALIASES` the source can provide: another name for the same point, or the midpoint of two joints (used per
  person only when both are labelled; its visibility is the smaller of the two). A target joint with no rule for this
  source is absent: its heatmap channel and the PAFs of limbs touching it are masked (`JointMap.present`).
  Applying a map is one gather per priority level over all people and joints at once.
- Part classes (`part_sets`, `PartLabelSpace`): each source class becomes a SET of target classes. A singleton is a
  plain label; a larger set is a set-valued label (value P + row of `allowed_sets`, trained with -log of the summed
  probability of the allowed classes, `posepart.losses.SegLoss`); an empty set is "ignore" (255). Sources finer than
  the target are merged (several source classes onto one target class); coarser ones become sets. A class that no
  rule covers is an error naming it, unless the source lists it in `ignore`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from posepart.errors import PosepartError
from posepart.names import name_key, split_side
from posepart.schema import IGNORE_LABEL, PASCAL_PART_CLASSES, Schema


# Target joint -> how a source WITHOUT a joint of that exact name provides it, tried in order. A string is another
# name for the same point; a pair is the midpoint of two joints. Why each row (docs/training.md, "Mixing datasets"):
# - head <-> head_top: PASCAL-Person-Part's "head" joint is the top of the head, exactly MPII/LIP's head_top. COCO has
#   no head top (nose/eyes/ears are on the face), so for COCO the PASCAL head channel is masked.
# - neck <- thorax, not upper_neck: PASCAL's (and OpenPose's) neck is the base of the neck between the shoulders, the
#   hub of the neck-shoulder and neck-hip limbs. MPII's thorax is annotated there; MPII's upper_neck is the top of the
#   neck under the chin, a neck length higher, which would bend every limb leaving the neck.
# - neck <- midpoint(left_shoulder, right_shoulder): COCO has no neck; OpenPose derives it the same way.
# - pelvis <- midpoint(left_hip, right_hip): for an MPII-style target fed by sources without a pelvis joint.
JOINT_ALIASES: dict[str, tuple[str | tuple[str, str], ...]] = {
    "head": ("head_top",),
    "head_top": ("head",),
    "neck": ("thorax", ("left_shoulder", "right_shoulder")),
    "thorax": ("neck", ("left_shoulder", "right_shoulder")),
    "pelvis": (("left_hip", "right_hip"),),
}

# Source part class -> the PASCAL-Person-Part classes it may be (background, head, torso, upper_arm, lower_arm,
# upper_leg, lower_leg). PASCAL-Person-Part merges hands into lower arms and feet into lower legs. Classes are read
# with `name_key` names (lower case, the side first, '-' and ' ' as '_'), so CIHP's "upper-clothes" is "upper_clothes".
_LIMBS = ("torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg")
PARTS_TO_PASCAL: dict[str, tuple[str, ...]] = {
    # human parsing (LIP, CIHP, ATR): head accessories and skin are head
    "hat": ("head",), "hair": ("head",), "sunglasses": ("head",), "sunglass": ("head",), "face": ("head",),
    "scarf": ("head", "torso"),  # worn round the neck (PASCAL's head includes the neck) or over the chest
    "glove": ("lower_arm",),  # hands belong to the lower arms
    "upper_clothes": ("torso", "upper_arm", "lower_arm"),  # sleeveless to long-sleeved
    "torso_skin": ("torso",),  # CIHP: bare chest/belly
    "belt": ("torso",),  # ATR
    "coat": _LIMBS,  # any sleeve length, down to the thighs or the ankles
    "dress": _LIMBS,  # sleeveless to long-sleeved, mini to maxi
    "jumpsuits": _LIMBS,  # LIP
    "pants": ("upper_leg", "lower_leg"),  # shorts or trousers (the waistband counts as leg, as in PASCAL's hips)
    "trousers": ("upper_leg", "lower_leg"), "jeans": ("upper_leg", "lower_leg"), "shorts": ("upper_leg",),
    "shirt": ("torso", "upper_arm", "lower_arm"), "t_shirt": ("torso", "upper_arm", "lower_arm"),
    "jacket": ("torso", "upper_arm", "lower_arm"), "feet": ("lower_leg",),
    "skirt": ("upper_leg", "lower_leg"),
    "socks": ("lower_leg",), "left_shoe": ("lower_leg",), "right_shoe": ("lower_leg",),  # feet: lower legs
    "left_arm": ("upper_arm", "lower_arm"), "right_arm": ("upper_arm", "lower_arm"),  # no upper/lower split
    "left_leg": ("upper_leg", "lower_leg"), "right_leg": ("upper_leg", "lower_leg"),
    "bag": (),  # ATR: carried objects are not body parts; PASCAL labels what they hide, which is unknown -> ignore
    # finer body-part spaces (PASCAL-Part style): sides are merged by the generic left_/right_ rule; these join
    # parts PASCAL-Person-Part merged
    "neck": ("head",), "hand": ("lower_arm",), "foot": ("lower_leg",), "upper_body": ("torso",),
}

# Built-in tables by target part-class list; other targets map identical (or side-stripped) names, plus a run's own
# `part_map` rows.
PART_TABLES: dict[tuple[str, ...], Mapping[str, tuple[str, ...]]] = {PASCAL_PART_CLASSES: PARTS_TO_PASCAL}


# -- joints ----------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)  # holds arrays: compared by identity
class JointMap:
    """Source keypoints (N, Ks, 3) -> target keypoints (N, Kt, 3) by name (see module docstring).

    `levels[r]` holds the rank-r rules as a (3, M) int array of (target joint, source a, source b); a copy has a == b.
    Rules of one level have distinct targets; lower ranks win, so levels are applied from the last to the first.
    """

    source: tuple[str, ...]
    target: tuple[str, ...]
    levels: tuple[np.ndarray, ...]
    rules: tuple[str, ...]  # per target joint, how it is read ("" = absent), for docs and reports

    @classmethod
    def build(cls, source: Sequence[str], target: Sequence[str],
              aliases: Mapping[str, Sequence[str | tuple[str, str]]] = JOINT_ALIASES) -> JointMap:
        # names compare as part classes do (`name_key`): AIC's "Right Shoulder" and OpenPose's "RShoulder" are
        # "right_shoulder" (before: exact spelling only, then `normal_name`, so such a source fed no pose or only
        # its unsided joints)
        index: dict[str, int] = {}
        for i, name in enumerate(source):
            index.setdefault(name_key(name), i)
        aliases = {name_key(name): options for name, options in aliases.items()}
        per_level: list[list[tuple[int, int, int]]] = []
        described = []
        for t, name in enumerate(target):
            options = [name, *aliases.get(name_key(name), ())]
            usable = []
            for option in options:
                a, b = (option, option) if isinstance(option, str) else option
                ia, ib = index.get(name_key(a)), index.get(name_key(b))
                if ia is not None and ib is not None:
                    usable.append((ia, ib, source[ia] if ia == ib else f"mid({source[ia]}, {source[ib]})"))
            for rank, (a, b, _) in enumerate(usable):
                while len(per_level) <= rank:
                    per_level.append([])
                per_level[rank].append((t, a, b))
            described.append(" | ".join(u[2] for u in usable))
        levels = tuple(np.asarray(rows, np.intp).T.reshape(3, -1) for rows in per_level)
        return cls(tuple(source), tuple(target), levels, tuple(described))

    @property
    def present(self) -> np.ndarray:
        """(Kt,) bool: target joints this source can label (the others are masked per channel)."""
        out = np.zeros(len(self.target), bool)
        for level in self.levels:
            out[level[0]] = True
        return out

    @property
    def copied(self) -> np.ndarray:
        """(Kt,) int: the source joint each target joint is a copy of by its first rule, -1 where it is read some
        other way (a midpoint of two) or not at all: whose OKS sigma scores it (`MappedSource.scoring_schema`)."""
        out = np.full(len(self.target), -1, np.intp)
        for t, a, b in reversed(self.levels):  # lower ranks last: they overwrite
            out[t] = np.where(a == b, a, -1)
        return out

    @property
    def is_identity(self) -> bool:
        return self.source == self.target

    def apply(self, keypoints: np.ndarray) -> np.ndarray:
        """(N, Ks, 3) float32 [x, y, v] -> (N, Kt, 3) float32; absent or unlabelled joints are [0, 0, 0]."""
        kp = np.asarray(keypoints, np.float32)
        kp = kp[None] if kp.ndim == 2 else kp
        if kp.ndim != 3 or kp.shape[1:] != (len(self.source), 3):
            raise ValueError(f"keypoints {kp.shape} are not (N, {len(self.source)}, 3) for this joint map")
        if self.is_identity:
            return kp.copy()
        out = np.zeros((kp.shape[0], len(self.target), 3), np.float32)
        for t, a, b in reversed(self.levels):  # lower ranks last: they overwrite
            pa, pb = kp[:, a], kp[:, b]  # (N, M, 3)
            ok = (pa[..., 2] > 0) & (pb[..., 2] > 0)  # (N, M): every input of the rule labelled
            value = np.concatenate([(pa[..., :2] + pb[..., :2]) * 0.5, np.minimum(pa[..., 2:], pb[..., 2:])], -1)
            out[:, t] = np.where(ok[..., None], value, out[:, t])
        return out


# -- part classes ------------------------------------------------------------------------------------------------------
class PartMapError(PosepartError, ValueError):
    """A source part class has no target class: the message names it and how to map or ignore it. `unmapped`: a
    class of the data that no table maps (not a mistake in a part table given)."""

    def __init__(self, message: str, *, unmapped: bool = False) -> None:
        super().__init__(message)
        self.unmapped = unmapped


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") and not word.endswith("ss") and len(word) > 3 else word


def spellings(name: str) -> tuple[str, ...]:
    """The keys a part class's name (in `name_key` form) is looked up by, in order: itself, singular with its side
    ("right_shoes" -> "right_shoe", "gloves"), without its side ("left_hand" -> "hand"), and that singular. Before,
    plurals had "no target class"."""
    side, base = split_side(name)
    return tuple(dict.fromkeys((name, f"{side}_{_singular(base)}" if side else _singular(base), base,
                                _singular(base))))


def as_table_row(name: str) -> tuple[str, ...]:
    """A side-less name as a part table's sided rows spell it ("arm" -> "left_arm", "shoes" -> "left_shoe"), whose
    regions are side-free (PASCAL's arm and leg parts): looked up in a table only, never as a target class (that
    would give it one side); () for a name with a side."""
    side, base = split_side(name)
    return () if side else tuple(dict.fromkeys((f"left_{base}", f"left_{_singular(base)}")))


def part_sets(
    source: Sequence[str],
    target: Sequence[str],
    overrides: Mapping[str, Sequence[str]] | None = None,
    ignore: Sequence[str] = (),
    *,
    source_name: str = "source",
) -> list[frozenset[int]]:
    """For each source class, the set of target class indices it may be (empty = ignore).

    Resolution order per class: `ignore` -> empty set; `overrides` (source class -> target class names); the built-in
    table for this target (`PART_TABLES`); the same name in the target; then the last two for the other `spellings`
    of the name (without its side, singular, as a sided row spells it).
    """
    tindex = {name_key(n): i for i, n in enumerate(target)}
    table = {name_key(k): v for k, v in PART_TABLES.get(tuple(target), {}).items()}
    table.update({name_key(k): tuple(v) for k, v in (overrides or {}).items()})
    ignored = {name_key(n) for n in ignore}
    known = {name_key(n) for n in source}
    for name in (*ignored, *(name_key(k) for k in (overrides or {}))):
        if name not in known:
            raise PartMapError(f"{source_name}: part class {name!r} is not one of its classes {list(source)}")
    out = []
    for raw in source:
        name = name_key(raw)
        if name in ignored:
            out.append(frozenset())
            continue
        found = next((c for c in spellings(name) if c in table or c in tindex), None) or \
            next((c for c in as_table_row(name) if c in table), None)
        if found is None:
            raise PartMapError(
                f"{source_name}: part class {raw!r} has no target class among {list(target)}; map it with "
                f"part_map: {{{raw}: [...]}} or drop it with ignore_parts: [{raw}]", unmapped=True)
        names = table.get(found, (found,))
        missing = [n for n in names if name_key(n) not in tindex]
        if missing:
            raise PartMapError(f"{source_name}: part class {raw!r} maps to {missing}, not among {list(target)}",
                               unmapped=name not in {name_key(k) for k in overrides or {}})
        out.append(frozenset(tindex[name_key(n)] for n in names))
    return out


class PartLabelSpace:
    """The target label values of a run: P plain classes, then one value per set-valued label (`allowed_sets` rows).

    Sets are registered as sources are mapped (rows only ever appended, so earlier lookup tables stay valid); every
    set's mirror image under the target's left/right flip is registered with it, so a flipped sample's set-valued
    labels have a value too (`flip_perm`).
    """

    def __init__(self, target: Schema) -> None:
        self.num_classes = target.num_parts
        self._class_flip = np.asarray(target.part_flip_perm, np.intp)
        self.sets: list[frozenset[int]] = []

    def value(self, classes: frozenset[int]) -> int:
        """The label value of a set of target classes (a single class is itself; empty is IGNORE_LABEL)."""
        if not classes:
            return IGNORE_LABEL
        if len(classes) == 1:
            return next(iter(classes))
        for candidate in (classes, frozenset(int(self._class_flip[c]) for c in classes)):
            if candidate not in self.sets:
                self.sets.append(candidate)
        if self.num_classes + len(self.sets) >= IGNORE_LABEL:
            raise PartMapError(f"{self.num_classes} classes + {len(self.sets)} set-valued labels do not fit below "
                               f"{IGNORE_LABEL} (the uint8 ignore value)")
        return self.num_classes + self.sets.index(classes)

    def lookup(self, sets: Sequence[frozenset[int]]) -> np.ndarray:
        """(256,) uint8 table: source label value -> target label value (255 and unknown values stay IGNORE_LABEL)."""
        lut = np.full(256, IGNORE_LABEL, np.uint8)
        for i, classes in enumerate(sets):
            lut[i] = self.value(classes)
        return lut

    @property
    def allowed_sets(self) -> np.ndarray | None:
        """(S, P) bool for `SegLoss(allowed_sets=...)`, or None when every label is a plain class."""
        if not self.sets:
            return None
        table = np.zeros((len(self.sets), self.num_classes), bool)
        for row, classes in enumerate(self.sets):
            table[row, sorted(classes)] = True
        return table

    @property
    def flip_perm(self) -> tuple[int, ...]:
        """Label value order after a horizontal flip, over classes and set values (P + S entries)."""
        mirrored = [self.sets.index(frozenset(int(self._class_flip[c]) for c in s)) for s in self.sets]
        return tuple(int(v) for v in self._class_flip) + tuple(self.num_classes + r for r in mirrored)

    def describe(self, value: int, target: Schema) -> str:
        """'upper_arm' or '{upper_arm, lower_arm}' or 'ignore', for docs and error messages."""
        if value == IGNORE_LABEL:
            return "ignore"
        if value < self.num_classes:
            return target.part_classes[value]
        return "{" + ", ".join(target.part_classes[c] for c in sorted(self.sets[value - self.num_classes])) + "}"


def scoring_labels(labels: np.ndarray | None, num_classes: int) -> np.ndarray | None:
    """Ground truth for the confusion matrix: set-valued labels (>= P) become ignore; they name no single class."""
    if labels is None or not ((labels >= num_classes) & (labels != IGNORE_LABEL)).any():
        return labels
    return np.where(labels >= num_classes, IGNORE_LABEL, labels).astype(labels.dtype)
