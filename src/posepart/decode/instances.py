"""Part instances: each foreground part pixel is given to the decoded person whose skeleton it belongs to.

The network predicts one merged part map and, separately, people as skeletons. A part pixel belongs to the person
with the nearest skeleton element of a kind that can carry that part: a limb (the segment between two found joints)
or, for a joint that no found limb touches, the joint itself. Which limbs carry which part comes from the names
(`part_limb_compatibility`): "upper_arm" pixels go to shoulder-elbow limbs, "head" to limbs of head/neck joints,
"left_leg" only to left hip-knee-ankle limbs; a person without any limb of the class competes with all of its
elements, so a missed elbow does not hand that person's arm to a neighbour. A pixel farther than `max_distance` x the
person's size from its nearest person is left unassigned (instance 0).

Cost: distances are computed once per (part class, output cell) pair that occurs in the label map — at the network's
output stride, not per pixel — and only to the elements allowed for that class, then looked up for every pixel
through the pixel -> cell index. A compiled pass (numba) does this in one sweep over the pixels; the vectorised numpy
path (one loop step per part class present) is its reference and the fallback without numba: same maps.
"""

from __future__ import annotations

import functools

import numpy as np

from posepart.data.label_maps import PARTS_TO_PASCAL, as_table_row, spellings
from posepart.decode import compiled
from posepart.heads import cell_centre
from posepart.names import name_key, split_side
from posepart.schema import PASCAL_PART_CLASSES, Schema

# Where a joint sits on the body, by name (side prefixes stripped): the body region of a limb is read off its two ends.
_JOINT_KIND = {
    "head": "head", "head_top": "head", "nose": "head", "eye": "head", "ear": "head", "upper_neck": "neck",
    "neck": "neck", "thorax": "neck", "shoulder": "shoulder", "elbow": "elbow", "wrist": "wrist", "hand": "wrist",
    "pelvis": "hip", "hip": "hip", "knee": "knee", "ankle": "ankle", "foot": "ankle", "heel": "ankle",
    "big_toe": "ankle", "small_toe": "ankle",
}
# Body region of a limb by its (unordered) joint kinds; a pair not listed belongs to no region (only "all" parts).
_LIMB_REGION = {
    frozenset({"head"}): "head", frozenset({"head", "neck"}): "head", frozenset({"neck"}): "head",
    frozenset({"head", "shoulder"}): "head",
    frozenset({"neck", "shoulder"}): "torso", frozenset({"neck", "hip"}): "torso",
    frozenset({"shoulder", "hip"}): "torso", frozenset({"shoulder"}): "torso", frozenset({"hip"}): "torso",
    frozenset({"shoulder", "elbow"}): "upper_arm", frozenset({"elbow", "wrist"}): "lower_arm",
    frozenset({"wrist"}): "lower_arm", frozenset({"hip", "knee"}): "upper_leg",
    frozenset({"knee", "ankle"}): "lower_leg", frozenset({"ankle"}): "lower_leg",
}


def _regions(base: str) -> tuple[str, ...] | None:
    """The PASCAL-Person-Part regions (head, torso, upper/lower arm and leg) a part class of this side-less name
    covers: the table that maps parsing classes into PASCAL's (`PARTS_TO_PASCAL`, one answer for both jobs, its
    sided rows for the side-less name: 'arm' as 'left_arm'), PASCAL's own classes; None for an unknown name (it may
    lie on any limb)."""
    for key in (*spellings(base), *as_table_row(base)):  # "hands", "socks", "arm" (as "left_arm")
        if key in PARTS_TO_PASCAL:
            return PARTS_TO_PASCAL[key]
        if key in PASCAL_PART_CLASSES[1:]:
            return (key,)
    return None


def _split(name: str) -> tuple[str | None, str]:
    """'left_upper_arm' -> ('left', 'upper_arm'); 'Head' -> (None, 'head'); 'LeftUpperArm' -> ('left',
    'upper_arm'): names compared in the form `name_key` gives them, as the label maps compare them."""
    return split_side(name_key(name))


@functools.lru_cache(maxsize=16)
def part_limb_compatibility(schema: Schema) -> np.ndarray:
    """(num_parts, L + K) bool: may part class c lie on limb l (column l) or on a lone joint j (column L + j)?

    Row 0 (background) is all False. A class whose name is not known, or whose regions no limb of the schema has,
    may lie on every element.
    """
    joints = [_split(n) for n in schema.keypoints]
    kinds = [_JOINT_KIND.get(base) for _, base in joints]
    limb_region, limb_sides = [], []
    for a, b in schema.skeleton:
        region = _LIMB_REGION.get(frozenset({kinds[a], kinds[b]})) if kinds[a] and kinds[b] else None
        limb_region.append(region)
        limb_sides.append({joints[a][0], joints[b][0]} - {None})
    n_l, k = schema.num_limbs, schema.num_joints
    table = np.ones((max(schema.num_parts, 1), n_l + k), bool)
    table[0] = False
    for c, name in enumerate(schema.part_classes[1:], start=1):
        side, base = _split(name)
        regions = _regions(base)
        if regions is None:
            continue
        row = np.array([r in regions and (side is None or not s or s == {side}) for r, s in zip(limb_region,
                                                                                                limb_sides)], bool)
        if not row.any():
            continue
        table[c, :n_l] = row
        for j in range(k):  # a lone joint carries the class if one of its limbs does (or it has no limb at all)
            touching = [l_ for l_, (a, b) in enumerate(schema.skeleton) if j in (a, b)]
            table[c, n_l + j] = row[touching].any() if touching else True
    return table


def _elements(keypoints: np.ndarray, schema: Schema) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton elements of all people: segment starts (E, 2), ends (E, 2), owner person (E,), kind (E,) = limb index,
    or L + joint index for a found joint that no found limb touches (a point: start == end)."""
    found = keypoints[:, :, 2] > 0  # (N, K)
    sk = np.asarray(schema.skeleton, np.int64).reshape(-1, 2)
    limb_ok = found[:, sk[:, 0]] & found[:, sk[:, 1]]  # (N, L)
    pn, pl = np.nonzero(limb_ok)
    touched = np.zeros_like(found)
    touched[pn, sk[pl, 0]] = True
    touched[pn, sk[pl, 1]] = True
    lone = found & ~touched
    jn, jk = np.nonzero(lone)
    xy = keypoints[:, :, :2].astype(np.float32)
    starts = np.concatenate([xy[pn, sk[pl, 0]], xy[jn, jk]])
    ends = np.concatenate([xy[pn, sk[pl, 1]], xy[jn, jk]])
    return starts, ends, np.concatenate([pn, jn]), np.concatenate([pl, schema.num_limbs + jk])


def _squared_distances(cells: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(E, U) squared distance from each cell centre (U, 2) to each segment (points when start == end)."""
    d = ends - starts  # (E, 2)
    dx, dy = d[:, 0:1], d[:, 1:2]
    inv = 1.0 / np.maximum(dx * dx + dy * dy, np.float32(1e-12))  # (E, 1)
    rx = cells[None, :, 0] - starts[:, 0:1]  # (E, U)
    ry = cells[None, :, 1] - starts[:, 1:2]
    t = rx * dx
    t += ry * dy
    t *= inv
    np.maximum(t, 0.0, out=t)  # (np.clip is several times slower)
    np.minimum(t, 1.0, out=t)
    rx -= t * dx
    ry -= t * dy
    rx *= rx
    ry *= ry
    rx += ry
    return rx


def cell_index(image_to_canvas: np.ndarray, image_hw: tuple[int, int], grid_hw: tuple[int, int],
               stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Output-grid row (H,) and column (W,) of every image row / column under an axis-aligned image -> canvas map."""
    m = np.asarray(image_to_canvas, np.float64)
    if abs(m[0, 1]) > 1e-9 or abs(m[1, 0]) > 1e-9:
        raise ValueError("cell_index needs an axis-aligned (scale + shift) image -> canvas transform")
    half = cell_centre(stride)
    cx = np.rint((m[0, 0] * np.arange(image_hw[1]) + m[0, 2] - half) / stride)
    cy = np.rint((m[1, 1] * np.arange(image_hw[0]) + m[1, 2] - half) / stride)
    return (np.clip(cy, 0, grid_hw[0] - 1).astype(np.int64), np.clip(cx, 0, grid_hw[1] - 1).astype(np.int64))


INSTANCE_MAX_DISTANCE = 0.5  # `assign_part_instances`' default: in person sizes


def assign_part_instances(
    labels: np.ndarray,
    keypoints: np.ndarray,
    schema: Schema,
    rows: np.ndarray,
    cols: np.ndarray,
    grid_hw: tuple[int, int],
    *,
    max_distance: float = INSTANCE_MAX_DISTANCE,
    jit: bool | None = None,
) -> np.ndarray:
    """(H, W) uint16 instance map: 0 = background or unassigned, i = person i - 1 (the order of `keypoints`).

    labels: (H, W) part labels; keypoints: (N, K, 3) people in OUTPUT-CELL coordinates, score > 0 = found;
    rows (H,), cols (W,): the output cell of each image row / column (`cell_index`); grid_hw: the output grid size.
    max_distance: pixels farther from their person's nearest element than this x the person's size (the longer side
    of its joints' bounding box, at least 2 cells) stay 0.
    jit: use the compiled pass (`_assign_compiled`; default: when numba is available) or the vectorised numpy one;
    both give identical maps.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be an (H, W) part label map, got shape {labels.shape}")
    keypoints = np.asarray(keypoints, np.float32).reshape(-1, schema.num_joints, 3)
    starts, ends, owner, kind = _elements(keypoints, schema)
    if not len(owner) or labels.size == 0:
        return np.zeros(labels.shape, np.uint16)
    compat = part_limb_compatibility(schema)[:, kind]  # (C, E)
    onehot = (owner[:, None] == np.arange(len(keypoints))[None, :]).astype(np.float32)  # (E, N)
    has_any = compat.astype(np.float32) @ onehot > 0  # (C, N): has person p an element that may carry class c?
    allowed = compat | ~has_any[:, owner]  # (C, E): a person without a compatible element competes with all of its own
    found = keypoints[:, :, 2] > 0
    lo = np.where(found[:, :, None], keypoints[:, :, :2], np.inf).min(1)
    hi = np.where(found[:, :, None], keypoints[:, :, :2], -np.inf).max(1)
    size = np.maximum(np.where(found.any(1), (hi - lo).max(1), 0.0), 2.0)  # (N,) in cells
    reach = ((max_distance * size) ** 2).astype(np.float32)  # squared distance limit per person
    rows, cols = np.asarray(rows, np.int64), np.asarray(cols, np.int64)
    if compiled.use_compiled(jit):
        return _assign_compiled(np.ascontiguousarray(labels), rows, cols, grid_hw[1], grid_hw[0] * grid_hw[1],
                                allowed, starts, ends, owner, reach)
    return _assign_numpy(labels, rows, cols, grid_hw, allowed, starts, ends, owner, reach)


def _assign_numpy(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid_hw: tuple[int, int],
                  allowed: np.ndarray, starts: np.ndarray, ends: np.ndarray, owner: np.ndarray,
                  reach: np.ndarray) -> np.ndarray:
    """`assign_part_instances` vectorised over (class, cell) pairs: the reference for the compiled pass."""
    h, w = grid_hw
    n_cells = h * w
    n_classes = allowed.shape[0]
    flat = labels.reshape(-1)
    fg = np.flatnonzero((flat > 0) & (flat < n_classes))  # part pixels (ignore / unknown labels are background)
    if not len(fg):
        return np.zeros(labels.shape, np.uint16)
    y, x = np.divmod(fg, labels.shape[1])
    key = flat[fg].astype(np.int64) * n_cells + rows[y] * w + cols[x]  # (class, output cell) of each part pixel
    present = np.flatnonzero(np.bincount(key, minlength=n_classes * n_cells))
    table = np.zeros(n_classes * n_cells, np.uint16)
    cls, cells = np.divmod(present, n_cells)  # sorted by class (present is sorted by key)
    gy, gx = np.divmod(cells, w)
    centres = np.stack([gx, gy], 1).astype(np.float32)  # (pairs, 2) cell (x, y)
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(cls)) + 1, [len(cls)]])
    instance = np.zeros(len(present), np.uint16)
    for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist()):  # one pass per part class: its allowed elements
        elements = np.flatnonzero(allowed[cls[a]])
        dist = _squared_distances(centres[a:b], starts[elements], ends[elements])  # (E_c, U_c)
        best = dist.argmin(0)
        person = owner[elements[best]]
        near = np.take_along_axis(dist, best[None], 0)[0] <= reach[person]
        instance[a:b] = np.where(near, person + 1, 0)
    table[present] = instance
    out = np.zeros(labels.size, np.uint16)
    out[fg] = np.take(table, key)
    return out.reshape(labels.shape)


@compiled.jit
def _assign_compiled(labels: np.ndarray, rows: np.ndarray, cols: np.ndarray, grid_w: int, n_cells: int,
                     allowed: np.ndarray, starts: np.ndarray, ends: np.ndarray, owner: np.ndarray,
                     reach: np.ndarray) -> np.ndarray:
    """`assign_part_instances` as one pass over the pixels: a (class, cell) pair is resolved when its first pixel is
    met and remembered, so each pair costs one scan of its class's elements (packed contiguously first). The same
    float32 operations as `_squared_distances` in the same order, and the first of equal minima as argmin: the same
    map as `_assign_numpy`, without its (pixels,) and (elements, cells) temporaries (2-3x faster)."""
    n_classes, n_elements = allowed.shape
    tiny, zero, one = np.float32(1e-12), np.float32(0.0), np.float32(1.0)
    offsets = np.zeros(n_classes + 1, np.int64)  # class c's elements: packed[offsets[c]:offsets[c + 1]]
    for c in range(1, n_classes):
        offsets[c + 1] = offsets[c] + allowed[c].sum()
    m = offsets[n_classes]
    sx, sy = np.empty(m, np.float32), np.empty(m, np.float32)
    dx, dy = np.empty(m, np.float32), np.empty(m, np.float32)
    inv, person = np.empty(m, np.float32), np.empty(m, np.int64)
    k = 0
    for c in range(1, n_classes):
        for e in range(n_elements):
            if allowed[c, e]:
                sx[k], sy[k] = starts[e, 0], starts[e, 1]
                dx[k], dy[k] = ends[e, 0] - starts[e, 0], ends[e, 1] - starts[e, 1]
                inv[k] = one / max(dx[k] * dx[k] + dy[k] * dy[k], tiny)
                person[k] = owner[e]
                k += 1
    table = np.zeros(n_classes * n_cells, np.uint16)  # instance of each (class, cell) pair, once resolved
    resolved = np.zeros(n_classes * n_cells, np.bool_)
    h, w = labels.shape
    out = np.zeros((h, w), np.uint16)
    for y in range(h):
        row_start = rows[y] * grid_w
        for x in range(w):
            c = labels[y, x]
            if c <= 0 or c >= n_classes:  # background, ignore and unknown labels
                continue
            cell = row_start + cols[x]
            key = c * n_cells + cell
            if not resolved[key]:
                gx, gy = np.float32(cell % grid_w), np.float32(cell // grid_w)
                best, arg = np.float32(np.inf), offsets[c]
                for e in range(offsets[c], offsets[c + 1]):
                    rx, ry = gx - sx[e], gy - sy[e]
                    t = rx * dx[e]
                    t = t + ry * dy[e]
                    t = min(max(t * inv[e], zero), one)
                    rx, ry = rx - t * dx[e], ry - t * dy[e]
                    d = rx * rx + ry * ry
                    if d < best:
                        best, arg = d, e
                p = person[arg]
                table[key] = p + 1 if best <= reach[p] else 0
                resolved[key] = True
            out[y, x] = table[key]
    return out
