"""Drawing: part colours, skeletons and image grids, all coloured from the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from posepart.errors import OutputError, writing
from posepart.files import write_image
from posepart.schema import IGNORE_LABEL, Schema

_FONT = cv2.FONT_HERSHEY_SIMPLEX
_TEXT = (40, 40, 40)  # dark grey on the white padding


def _text_width(text: str, scale: float) -> int:
    return cv2.getTextSize(text, _FONT, scale, 1)[0][0]


def legend(schema: Schema, width: int, *, scale: float = 0.4) -> np.ndarray:
    """A white strip `width` px wide naming the schema's colours: a swatch per part class (background left out) and
    a dot per joint, wrapped into as many lines as needed. Empty (0 rows) for a schema with neither."""
    entries: list[tuple[str, tuple[int, int, int], bool]] = []  # (name, colour, is_part)
    if schema.has_parts:
        entries += [(name, tuple(int(c) for c in schema.part_colours[i]), True)
                    for i, name in enumerate(schema.part_classes) if i > 0]
    if schema.has_pose:
        entries += [(name, tuple(colour), False) for name, colour in zip(schema.keypoints, schema.joint_colours)]
    if not entries:
        return np.full((0, width, 3), 255, np.uint8)
    line_h, box, gap = int(round(28 * scale)) + 6, int(round(24 * scale)), 10
    lines: list[list[tuple[int, tuple[str, tuple[int, int, int], bool]]]] = [[]]
    x = gap
    for entry in entries:
        w = box + 4 + _text_width(entry[0], scale) + gap
        if x + w > width and lines[-1]:
            lines.append([])
            x = gap
        lines[-1].append((x, entry))
        x += w
    strip = np.full((len(lines) * line_h + 4, width, 3), 255, np.uint8)
    for row, line in enumerate(lines):
        y = 2 + row * line_h + (line_h - box) // 2
        for x0, (name, colour, is_part) in line:
            if is_part:
                cv2.rectangle(strip, (x0, y), (x0 + box, y + box), colour, -1)
            else:
                cv2.circle(strip, (x0 + box // 2, y + box // 2), box // 2, colour, -1, cv2.LINE_AA)
            cv2.putText(strip, name, (x0 + box + 4, y + box - 1), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return strip


LEGEND_MIN_WIDTH = 320  # px: the longest joint names fit a line (a 64 px wide legend cut them, one per line)


def with_legend(image: np.ndarray, schema: Schema) -> np.ndarray:
    """`image` with the schema's `legend` below it; an image narrower than `LEGEND_MIN_WIDTH` is padded white on its
    right to that width, so that the names fit."""
    width = max(image.shape[1], LEGEND_MIN_WIDTH)
    if width > image.shape[1]:
        image = np.pad(image, ((0, 0), (0, width - image.shape[1]), (0, 0)), constant_values=255)
    return np.concatenate([image, legend(schema, width)], axis=0)


def draw_parts(image: np.ndarray, parts: np.ndarray, schema: Schema, alpha: float = 0.55) -> np.ndarray:
    """Blend the schema's part colours over an RGB image; background and ignored pixels stay as they are."""
    out = image.copy()
    if not schema.has_parts:
        return out
    labelled = (parts > 0) & (parts != IGNORE_LABEL) & (parts < schema.num_parts)
    index = parts if parts.dtype == np.uint8 else np.where(labelled, parts, 0).astype(np.uint8)
    table = np.zeros((256, 3), np.uint8)  # background, ignored and unknown labels: no colour (not blended below)
    table[1 : schema.num_parts] = schema.part_colours[1:]
    # uint8 throughout (OpenCV's rounding blend): blending the labelled pixels in float64 took 2.1 GB and 8 s for a
    # 12000 x 9000 photo, four times the rest of its prediction
    blended = cv2.addWeighted(out, 1 - alpha, table[index], alpha, 0)
    np.copyto(out, blended, where=labelled[..., None])
    return out


def draw_people(
    image: np.ndarray,
    keypoints: np.ndarray,
    schema: Schema,
    *,
    thickness: int | None = None,
    min_score: float = 0.0,
    scores: bool = False,
) -> np.ndarray:
    """Draw skeletons: limbs in the schema's limb colours, joints as dots (hollow when occluded, v == 1).

    `keypoints` is (N, K, 3) with v (ground truth) or, with `scores`, a score (predictions: never occluded; before,
    a joint scored exactly 1.0 was drawn hollow) in the last column; joints with a last value <= min_score are not
    drawn.
    """
    out = np.ascontiguousarray(image.copy())
    scale = max(out.shape[:2]) / 400
    thickness = thickness or max(1, int(round(2 * scale)))
    radius = max(2, int(round(3 * scale)))
    shift = 4  # sub-pixel drawing: coordinates in 1/16 px
    for person in np.asarray(keypoints, np.float32).reshape(-1, schema.num_joints, 3):
        present = person[:, 2] > min_score
        pts = np.round(person[:, :2] * (1 << shift)).astype(np.int64)
        for (a, b), colour in zip(schema.skeleton, schema.limb_colours):
            if present[a] and present[b]:
                cv2.line(out, tuple(pts[a]), tuple(pts[b]), colour, thickness, cv2.LINE_AA, shift)
        for j in np.flatnonzero(present):
            occluded = not scores and person[j, 2] == 1
            fill = 1 if occluded else -1
            cv2.circle(out, tuple(pts[j]), radius << shift, schema.joint_colours[j], fill, cv2.LINE_AA, shift)
    return out


def overlay(
    image: np.ndarray, schema: Schema, *, parts: np.ndarray | None = None, keypoints: np.ndarray | None = None,
    min_score: float = 0.0, scores: bool = False,
) -> np.ndarray:
    """Image with translucent part colours and skeletons on top (`scores`: the keypoints are predictions, as in
    `draw_people`)."""
    out = draw_parts(image, parts, schema) if parts is not None else image.copy()
    if keypoints is not None and schema.has_pose:
        out = draw_people(out, keypoints, schema, min_score=min_score, scores=scores)
    return out


def grid(images: Sequence[np.ndarray], columns: int, cell: int = 256, pad: int = 4, *,
         row_labels: Sequence[str] | None = None, schema: Schema | None = None) -> np.ndarray:
    """Tile RGB images (each letterboxed into a cell x cell square) into one image, white padding. `row_labels`: a
    name written left of each row (e.g. the model that predicted it, or "ground truth"); `schema`: its colour
    `legend` below the grid."""
    rows = max(1, -(-len(images) // columns))
    scale = 0.45
    label_w = max((_text_width(t, scale) for t in row_labels or ()), default=0)
    left = label_w + 2 * pad if row_labels else 0
    canvas = np.full((rows * (cell + pad) + pad, left + columns * (cell + pad) + pad, 3), 255, np.uint8)
    for i, img in enumerate(images):
        h, w = img.shape[:2]
        s = cell / max(h, w)
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        r, c = divmod(i, columns)
        y0 = pad + r * (cell + pad) + (cell - small.shape[0]) // 2
        x0 = left + pad + c * (cell + pad) + (cell - small.shape[1]) // 2
        canvas[y0 : y0 + small.shape[0], x0 : x0 + small.shape[1]] = small
    for r, text in enumerate((row_labels or [])[:rows]):
        cv2.putText(canvas, text, (pad, pad + r * (cell + pad) + cell // 2), _FONT, scale, _TEXT, 1, cv2.LINE_AA)
    return with_legend(canvas, schema) if schema is not None else canvas


def fit_within(image: np.ndarray, side: int) -> np.ndarray:
    """`image` shrunk (area-averaged) so that its longer side is at most `side` pixels; itself when it already is."""
    h, w = image.shape[:2]
    if max(h, w) <= side:
        return image
    s = side / max(h, w)
    small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return small[..., None] if image.ndim == 3 and small.ndim == 2 else small  # OpenCV drops a single channel


def save_rgb(path: str | Path, image: np.ndarray) -> Path:
    """Write an RGB uint8 image (PNG/JPEG by extension), creating folders."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            write_image(path, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        except cv2.error:  # no encoder for the suffix
            raise OutputError(f"cannot write {path}: OpenCV has no image format for {path.suffix or 'no suffix'!r}; "
                              f"use .png or .jpg") from None
    return path
