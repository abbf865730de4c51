"""Type and range checks of the values an annotation file holds. Each check returns the value in the form the reader
uses or raises `DatasetError` naming the field, so a broken file is refused where it is read (with what is wrong and
where) instead of surfacing later as a traceback in training, or not at all.

JSON has no integer/float distinction worth trusting and Python's bool is an int, so "a number" here is an int or a
float that is not a bool, and "an integer" an int that is not a bool. Strings that look like numbers are refused:
a file that writes "12.5" for a coordinate is broken, and guessing would hide it.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from posepart.errors import PosepartError


class DatasetError(PosepartError, ValueError):
    """A dataset file or record is malformed; the message names the file and the record."""


class PathEscapeError(DatasetError):
    """A file name of the annotation file leads out of the dataset: the whole file is refused, never one record
    reported and the rest read (`inspect` lists broken records, not hostile ones)."""


_NUMBER_TYPES = {int, float}  # JSON's numbers; bool is its own type, so `type(v) in` excludes it


def is_integer(value: Any) -> bool:
    return type(value) is int


def is_number(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES


def integer(value: Any, label: str, *, minimum: int | None = None) -> int:
    """An integer (not a bool, not a string), at least `minimum`."""
    if not is_integer(value):
        raise DatasetError(f"{label}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DatasetError(f"{label}: must be >= {minimum}, got {value}")
    return int(value)


def numbers(value: Any, label: str, *, length: int | None = None) -> np.ndarray:
    """A list of finite numbers (float64), of `length` when given."""
    if not isinstance(value, list) or not set(map(type, value)) <= _NUMBER_TYPES:
        raise DatasetError(f"{label}: expected a list of numbers, got {_short(value)}")
    if length is not None and len(value) != length:
        raise DatasetError(f"{label}: expected {length} numbers, got {len(value)}")
    try:
        array = np.asarray(value, np.float64)
    except OverflowError:
        raise DatasetError(f"{label}: a number is too large") from None
    if not np.isfinite(array).all():
        raise DatasetError(f"{label}: contains NaN or infinity")
    return array


def number_rows(values: Sequence[Any], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Many values checked as `numbers(value, length=length)` at once: (N, length) float64 rows and (N,) bool, True
    where values[i] is a list of `length` finite numbers (its row holds them; the other rows are 0). Why: one by
    one, a list costs a few small numpy calls, seconds over COCO's train set; here the whole file is one array. The
    rows that fail are for the one-by-one checks, whose errors name the field."""
    ok = np.fromiter((type(v) is list and len(v) == length and set(map(type, v)) <= _NUMBER_TYPES for v in values),
                     bool, len(values))
    rows = np.zeros((len(values), length))
    if ok.any():
        try:
            rows[ok] = np.array([v for v, good in zip(values, ok) if good], np.float64)
        except OverflowError:  # an integer beyond any float: every row to the one-by-one checks
            ok[:] = False
            rows[:] = 0
        ok &= np.isfinite(rows).all(1)
    return rows, ok


def _as_float32(rows: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Checked float64 rows as the float32 the readers keep; a row with a number beyond float32 (inf there) is left to
    the one-by-one check, which keeps it as that check does."""
    with np.errstate(over="ignore"):
        rows = rows.astype(np.float32)
    return rows, ok & np.isfinite(rows).all(axis=tuple(range(1, rows.ndim)))


def keypoint_rows(values: Sequence[Any], num_joints: int) -> tuple[np.ndarray, np.ndarray]:
    """`keypoints` of many annotations' lists at once: (N, K, 3) float32 and (N,) bool, True where values[i] passes
    `keypoints` and its row holds the same array (`number_rows`: the others are for the one-by-one check)."""
    rows, ok = number_rows(values, 3 * num_joints)
    kp = rows.reshape(len(values), num_joints, 3)
    v = kp[..., 2]  # compared in float64, as `keypoints` does: 1.00000001 is no visibility
    return _as_float32(kp, ok & ((v == 0) | (v == 1) | (v == 2)).all(1))


def box_rows(values: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
    """`box` of many values at once: (N, 4) float32 and (N,) bool, True where values[i] passes `box` and its row holds
    the same array (`number_rows`: the others are for the one-by-one check)."""
    rows, ok = number_rows(values, 4)
    return _as_float32(rows, ok & (rows[:, 2:] >= 0).all(1))  # in float64: -1e-46 is a negative width


def number(value: Any, label: str, *, positive: bool = False) -> float:
    """One finite number, >= 0 (or > 0 with `positive`)."""
    if not is_number(value) or not math.isfinite(float(value)):
        raise DatasetError(f"{label}: expected a finite number, got {value!r}")
    if value < 0 or (positive and value == 0):
        raise DatasetError(f"{label}: must be {'> 0' if positive else '>= 0'}, got {value}")
    return float(value)


def keypoints(value: Any, num_joints: int, label: str, names: Sequence[str] = ()) -> np.ndarray:
    """COCO's flat [x1, y1, v1, ...] -> (K, 3) float32; v must be 0 (unlabelled), 1 (occluded) or 2 (visible).
    `names`: the joints', for the error."""
    if isinstance(value, list) and len(value) != 3 * num_joints:
        nested = bool(value) and all(isinstance(v, (list, tuple)) for v in value)  # [[x, y, v], ...]: (K, 3)
        flat = " (a list of [x, y, v] lists: COCO's is flat, [x1, y1, v1, x2, ...])" if nested else ""
        raise DatasetError(f"{label}: {len(value)} keypoint values{flat}, expected 3 x {num_joints}")
    flat = numbers(value, f"{label}: keypoints")
    kp = flat.reshape(num_joints, 3)
    v = kp[:, 2]
    bad = (v != 0.0) & (v != 1.0) & (v != 2.0)
    if bad.any():
        j = int(np.flatnonzero(bad)[0])
        joint = f"joint {names[j]!r}" if j < len(names) else f"joint {j + 1}"
        raise DatasetError(f"{label}: keypoint visibility must be 0, 1 or 2, got {kp[j, 2]:g} for {joint} (the "
                           f"annotation's keypoints[{3 * j + 2}])")
    return kp.astype(np.float32)


def annotation_keypoints(value: Any, num_joints: int, label: str, names: Sequence[str] = ()
                         ) -> tuple[np.ndarray, Any]:
    """`keypoints` of an annotation's list -> (K, 3), and the list to keep: `value` itself, or a copy whose
    unlabelled joints (v = 0) without coordinates, NaN or null (as DeepLabCut's and SLEAP's converters write them),
    are 0 (before: refused as "contains NaN or infinity"). The copy is made only where `value` is refused as it is:
    a large file's annotations are read at the plain list's speed."""
    try:
        return keypoints(value, num_joints, label, names), value
    except DatasetError:
        if not isinstance(value, list) or len(value) != 3 * num_joints:
            raise
        filled = [0.0 if i % 3 < 2 and value[i - i % 3 + 2] == 0 and _no_number(v) else v for i, v in enumerate(value)]
        if filled == value:
            raise
        return keypoints(filled, num_joints, label, names), filled


def _no_number(value: Any) -> bool:
    """null, NaN or infinity: what a tool writes for a coordinate it does not have."""
    return value is None or isinstance(value, float) and not math.isfinite(value)


def box(value: Any, label: str) -> np.ndarray:
    """[x, y, w, h] with w, h >= 0 -> (4,) float32."""
    xywh = numbers(value, label, length=4)
    if (xywh[2:] < 0).any():
        raise DatasetError(f"{label}: width and height must be >= 0, got {value}")
    return xywh.astype(np.float32)


def head_box(value: Any, label: str) -> np.ndarray:
    """MPII's head box [x1, y1, x2, y2] with x2 > x1 and y2 > y1."""
    x1, y1, x2, y2 = numbers(value, label, length=4)
    if not (x2 > x1 and y2 > y1):
        raise DatasetError(f"{label}: expected [x1, y1, x2, y2] with x2 > x1 and y2 > y1, got {value}")
    return np.array([x1, y1, x2, y2])


def region(value: Any, height: int, width: int, label: str) -> Any:
    """A COCO segmentation (polygons, RLE with string or list counts) or an [x, y, w, h] box that `region_mask` can
    rasterise for an image of height x width; None when it holds only degenerate polygons (fewer than 3 points,
    which cover nothing: COCO has some, and pycocotools would read a 4-number one as a box).
    pycocotools decodes RLE without bounds checks (garbage counts read or write past the mask), so the counts are
    checked here first."""
    if isinstance(value, dict):
        size = value.get("size")
        if not (isinstance(size, list) and len(size) == 2 and all(is_integer(v) for v in size)):
            raise DatasetError(f"{label}: RLE needs 'size': [height, width], got {_short(size)}")
        if tuple(size) != (height, width):
            raise DatasetError(f"{label}: RLE size {size} differs from the image's [{height}, {width}]")
        counts = value.get("counts")
        runs = compressed_rle_counts(counts, label) if isinstance(counts, str) else _run_lengths(counts)
        if runs is None:
            raise DatasetError(f"{label}: RLE 'counts' must be a COCO string or a list of run lengths >= 0")
        if sum(runs) != height * width:
            raise DatasetError(f"{label}: RLE runs cover {sum(runs)} pixels, the image has {height * width}")
        return value
    if isinstance(value, list) and value and all(isinstance(p, list) for p in value):
        # pycocotools rasterises polygons in native code that crashes the process (SIGSEGV) on coordinates of 1e8
        # and more: refuse any far outside the image (COCO's own stray a few pixels past its border)
        reach = 4 * max(height, width) + 16
        for polygon in value:
            coordinates = numbers(polygon, f"{label}: polygon")
            if len(coordinates) % 2:
                raise DatasetError(f"{label}: a polygon has an odd number ({len(polygon)}) of coordinates")
            if len(coordinates) and np.abs(coordinates).max() > reach:  # (a Python loop here: 13 s over COCO)
                far = coordinates[np.argmax(np.abs(coordinates) > reach)]
                raise DatasetError(f"{label}: polygon coordinate {far:g} lies far outside the {width}x{height} image")
        polygons = [polygon for polygon in value if len(polygon) >= 6]
        return polygons or None
    if isinstance(value, list) and len(value) == 4:
        return box(value, label).tolist()
    raise DatasetError(f"{label}: expected polygons, an RLE dict or an [x, y, w, h] box, got {_short(value)}")


def _run_lengths(counts: Any) -> list[int] | None:
    """An uncompressed RLE's counts as Python ints, or None unless a list of integers >= 0 (checked in C: COCO's
    crowds hold 13 million of them, which a generator took 4 s to check)."""
    if not isinstance(counts, list) or not set(map(type, counts)) <= {int}:
        return None
    try:
        runs = np.asarray(counts, np.int64)
    except OverflowError:  # a run past 2**63 - 1: no image has that many pixels, which the caller's sum check says
        return None if any(c < 0 for c in counts) else list(counts)
    return None if (runs < 0).any() else runs.tolist()


def compressed_rle_counts(text: str, label: str) -> list[int]:
    """The run lengths of COCO's compressed RLE string (pycocotools' rleFrString, checked): each run is a sequence
    of characters 48 + (5 payload bits | 0x20 continuation), sign-extended from bit 0x10, and runs after the second
    are stored as differences to the run two before."""
    runs: list[int] = []
    value = shift = 0
    for char in text:
        c = ord(char) - 48
        if not 0 <= c < 64:
            raise DatasetError(f"{label}: RLE counts hold a character {char!r} outside COCO's alphabet")
        value |= (c & 0x1F) << shift
        shift += 5
        if c & 0x20:
            continue
        if c & 0x10:
            value -= 1 << shift
        if len(runs) > 2:
            value += runs[-2]
        if value < 0:
            raise DatasetError(f"{label}: RLE counts decode to a negative run")
        runs.append(value)
        value = shift = 0
    if shift:
        raise DatasetError(f"{label}: RLE counts end inside a run")
    return runs


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
