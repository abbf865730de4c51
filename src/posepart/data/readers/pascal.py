"""PASCAL-Person-Part: VOC JPEGs, 6-part label maps (index or VOC-colour PNGs), split lists, and pose from Xia et al.
2017 (`pose_annotations/<id>.mat`) or the Berkeley/poselets PASCAL keypoint XMLs.

```
ROOT/JPEGImages/<id>.jpg
ROOT/SegmentationPart/<id>.png     0..6 index PNG (grey or palette mode) or VOC-palette colour PNG (RGB/RGBA)
ROOT/list/{train,val}_id.txt       optional split lists
ROOT/pose_annotations/<id>.mat     optional Xia et al. pose: `joints` = 1xN cell of 14x3 [x, y, v] (v 1 visible,
                                   2 occluded, NaN missing); `boxes` 4xN [x1 y1 x2 y2] (optional)
BERKELEY/<id>_<k>.xml              optional Berkeley keypoints, one person per file (--berkeley DIR)
```
Everything is written in the native `Schema.pascal_person_part()` (14 joints, 6 parts). Which source id means which
part is configurable (`PART_ORDERS`) because public releases disagree; see docs/datasets.md.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from posepart.data.format import DatasetError
from posepart.data.records import keypoints_outside
from posepart.errors import UsageError
from posepart.data.readers.common import (
    ConvertResult,
    Person,
    Sample,
    SampleError,
    Skips,
    find_split_list,
    nearest_colours,
    read_id_list,
    read_label_png,
    source_paths,
    write_samples,
)
from posepart.schema import IGNORE_LABEL, Schema, voc_palette

# Part names of source ids 1..6. "observed" is what the VOC-colour PNGs of the fixture show when checked against the
# Berkeley keypoints (palette index 3 yellow lies on forearms, 4 blue on upper arms, 5 magenta on shins, 6 cyan on
# thighs); "common" is the naming most public code prints for the index PNGs (upper before lower).
PART_ORDERS: dict[str, tuple[str, ...]] = {
    "observed": ("head", "torso", "lower_arm", "upper_arm", "lower_leg", "upper_leg"),
    "common": ("head", "torso", "upper_arm", "lower_arm", "upper_leg", "lower_leg"),
}
VOC_VOID = (224, 224, 192)  # VOC's boundary/void colour (palette index 255) -> ignore
COLOUR_TOLERANCE = 24  # max per-channel distance to a palette colour (the fixture's PNGs are off by 1-2)

# Xia et al.'s 14 joints: 0 head, 1 neck, then shoulder/elbow/wrist of one arm, hip/knee/ankle of one leg, and the
# same for the other side. Which side comes first is not documented: `first_side` chooses.
_XIA_LIMB_JOINTS = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")

# Berkeley/poselets keypoint names -> PASCAL joints. Not mapped: B_Head is the BACK of the head (it lies behind the
# ear in profile views, between the ears in back views), not the top of the head that PASCAL's "head" means, so the
# head stays unlabelled; Nose/Eyes/Ears/Toes have no PASCAL joint. The neck is the midpoint of the two shoulders.
BERKELEY_TO_PASCAL = {f"{side[0].upper()}_{joint.capitalize()}": f"{side}_{joint}"  # L_Shoulder -> left_shoulder
                      for side in ("left", "right") for joint in _XIA_LIMB_JOINTS}


def xia_joint_names(first_side: str = "right") -> tuple[str, ...]:
    """The PASCAL joint name of each of Xia's 14 rows, with `first_side` ('right' or 'left') for rows 2-7."""
    if first_side not in ("right", "left"):
        raise ValueError(f"first_side must be 'right' or 'left', got {first_side!r}")
    second = "left" if first_side == "right" else "right"
    arm, leg = _XIA_LIMB_JOINTS[:3], _XIA_LIMB_JOINTS[3:]
    return ("head", "neck", *(f"{first_side}_{j}" for j in arm), *(f"{first_side}_{j}" for j in leg),
            *(f"{second}_{j}" for j in arm), *(f"{second}_{j}" for j in leg))


def part_names(order: str | Sequence[str]) -> tuple[str, ...]:
    """Part names of source ids 1, 2, ...: a `PART_ORDERS` key, a comma-separated string or a sequence of names."""
    if isinstance(order, str):
        return PART_ORDERS.get(order) or tuple(n.strip() for n in order.split(",") if n.strip())
    return tuple(order)


def part_lut(order: str | Sequence[str], schema: Schema) -> np.ndarray:
    """(256,) uint8 look-up table: source id -> schema part index (0 -> 0, 255 -> 255, unused ids -> 255).

    `order` is a `PART_ORDERS` key or the part names of source ids 1, 2, ... in order (see `part_names`).
    """
    names = part_names(order)
    parts = schema.part_classes[1:]
    unknown = [n for n in names if n not in parts]
    if unknown or len(set(names)) != len(names) or len(names) != len(parts):
        # every part once: a shorter order would drop every pixel of the ids it leaves out, image by image
        missing = [n for n in parts if n not in names]
        raise UsageError(f"--part-order {list(names)}: name each of the {len(parts)} parts once, in the order of "
                         f"their ids 1..{len(parts)} (unknown: {unknown}, missing: {missing}, repeated: "
                         f"{sorted({n for n in names if names.count(n) > 1})}); use {' or '.join(PART_ORDERS)} or "
                         f"names from {list(parts)}")
    lut = np.full(256, IGNORE_LABEL, np.uint8)
    lut[0] = 0
    for i, name in enumerate(names, start=1):
        lut[i] = schema.part_classes.index(name)
    return lut


def colour_to_index(rgb: np.ndarray, num_ids: int, path: Path) -> np.ndarray:
    """(H, W, 3) VOC-palette colours -> (H, W) palette indices 0..num_ids, void colour -> 255.

    Each distinct colour is matched to the nearest palette colour (per-channel distance <= COLOUR_TOLERANCE); a colour
    matching none raises SampleError naming the file, the colour and one pixel.
    """
    palette = np.vstack([voc_palette(num_ids + 1), VOC_VOID]).astype(np.int32)  # (num_ids + 2, 3)
    palette_ids = np.append(np.arange(num_ids + 1), IGNORE_LABEL)
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    colours, inverse = np.unique(packed.reshape(-1), return_inverse=True)
    unique_rgb = np.stack([(colours >> 16) & 255, (colours >> 8) & 255, colours & 255], 1)  # (U, 3)
    nearest, distance = nearest_colours(unique_rgb, palette)
    bad = distance > COLOUR_TOLERANCE
    if bad.any():
        u = int(np.flatnonzero(bad)[0])
        y, x = divmod(int(np.flatnonzero(inverse == u)[0]), rgb.shape[1])
        raise SampleError(f"{path}: unknown colour {tuple(int(c) for c in unique_rgb[u])} ({int((inverse == u).sum())}"
                          f" px, first at x={x}, y={y}); known: the VOC palette 0..{num_ids} and void",
                          "unknown colour in part PNG")
    codes = palette_ids[nearest].astype(np.uint8)
    return codes[inverse].reshape(rgb.shape[:2])


def read_part_png(path: Path, lut: np.ndarray) -> np.ndarray:
    """A PASCAL part PNG (index or VOC-colour) -> (H, W) uint8 schema part indices, 255 ignore."""
    from PIL import Image

    num_ids = int((lut[1:255] != IGNORE_LABEL).sum())
    try:
        with Image.open(path) as image:
            colour = np.asarray(image.convert("RGBA")) if image.mode in ("RGB", "RGBA", "LA") else None
    except FileNotFoundError:
        raise SampleError(f"{path}: part label PNG not found", "missing part PNG") from None
    except OSError as err:
        raise SampleError(f"{path}: cannot read part label PNG: {err}", "bad part PNG") from None
    if colour is None:
        ids = read_label_png(path, num_ids + 1)  # index PNG (grey or palette mode): values checked there
    else:
        ids = colour_to_index(colour[..., :3], num_ids, path)
        ids[colour[..., 3] == 0] = IGNORE_LABEL  # transparent = unlabelled
    return lut[ids]


def read_xia_mat(path: Path, first_side: str = "right", skips: Skips | None = None) -> list[Person]:
    """People of one Xia et al. pose file; empty or all-NaN people become counted skips (ignore boxes if `boxes`)."""
    from scipy.io import loadmat

    try:
        mat = loadmat(path, squeeze_me=True, struct_as_record=False)
    except Exception as err:  # noqa: BLE001 - scipy's MatReadError, NotImplementedError (v7.3), OSError, ...: one
        # file's problem, never a traceback (before: truncated and v7.3 files were)
        raise SampleError(f"{path}: cannot read MATLAB file: {type(err).__name__}: {err}", "bad pose file") from None
    if "joints" not in mat:
        raise SampleError(f"{path}: no variable 'joints' (found {sorted(k for k in mat if not k.startswith('__'))})",
                          "bad pose file")
    joints = mat["joints"]
    people = list(joints.reshape(-1)) if isinstance(joints, np.ndarray) and joints.dtype == object else [joints]
    boxes = np.asarray(mat.get("boxes", np.zeros((4, 0))), np.float64)  # documented 4 x N; N x 4 accepted
    if boxes.ndim == 2 and boxes.shape[1] == 4 and boxes.shape[0] == len(people) != 4:
        boxes = boxes.T
    boxes = boxes.reshape(4, -1) if boxes.size and boxes.size % 4 == 0 else np.zeros((4, 0))
    schema = Schema.pascal_person_part()
    order = [schema.joint(n) for n in xia_joint_names(first_side)]
    out: list[Person] = []
    for n, raw in enumerate(people):
        box = None
        if n < boxes.shape[1] and np.isfinite(boxes[:, n]).all() and (boxes[2:, n] > boxes[:2, n]).all():
            box = [float(boxes[0, n]), float(boxes[1, n]), float(boxes[2, n] - boxes[0, n]),
                   float(boxes[3, n] - boxes[1, n])]
        try:
            arr = np.asarray(raw, np.float64)
        except (TypeError, ValueError) as err:  # text or ragged arrays: before, a fatal error naming no file
            raise SampleError(f"{path}: person {n} joints are not a numeric array ({err})", "bad pose file") from None
        if arr.size == 0 or not np.isfinite(arr).any():
            if skips is not None:
                skips.add("person without joints (ignore region if boxed)", f"{path}: person {n}")
            if box is not None:
                out.append(Person(np.zeros((schema.num_joints, 3), np.float32), bbox=box))
            continue
        arr = arr.T if arr.shape == (3, 14) else arr  # stored transposed
        if arr.shape != (14, 3):
            raise SampleError(f"{path}: person {n} joints have shape {arr.shape}, expected (14, 3)", "bad pose file")
        kp = np.zeros((schema.num_joints, 3), np.float32)
        ok = np.isfinite(arr).all(1)
        v = np.where(arr[:, 2] == 2, 1, 2)  # Xia: 1 visible, 2 occluded -> COCO 2, 1
        kp[order] = np.where(ok[:, None], np.column_stack([arr[:, :2], v]), 0)
        out.append(Person(kp, bbox=box))
    return out


def read_berkeley_xml(path: Path) -> tuple[str, Person]:
    """(image id, person) of one Berkeley keypoint XML, mapped to the PASCAL joints (`BERKELEY_TO_PASCAL`).

    `visible="1"` -> v 2, `"0"` (annotated, occluded) -> v 1; the neck is added with the image (`_with_neck`);
    `visible_bounds` gives the bbox and the `foreground` polygon, when present, the segmentation and area.
    """
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise DatasetError(f"{path}: cannot parse keypoint XML: {err}") from None
    image = (root.findtext("image") or "").strip()
    if not image:
        raise DatasetError(f"{path}: no <image> element")
    schema = Schema.pascal_person_part()
    kp = np.zeros((schema.num_joints, 3), np.float32)
    for point in root.iter("keypoint"):
        name = BERKELEY_TO_PASCAL.get(point.get("name", ""))
        if name is None:
            continue
        try:
            x, y, vis = float(point.get("x", "")), float(point.get("y", "")), int(float(point.get("visible", "1")))
        except ValueError:
            raise DatasetError(f"{path}: keypoint {point.get('name')} has a non-numeric x/y/visible") from None
        kp[schema.joint(name)] = (x, y, 2 if vis else 1)
    bbox = None
    bounds = root.find("visible_bounds")
    if bounds is not None:
        bbox = [float(bounds.get(k, "nan")) for k in ("xmin", "ymin", "width", "height")]
        bbox = bbox if np.isfinite(bbox).all() else None
    segmentation = None
    for segment in root.iter("segment"):
        if segment.get("name") == "foreground":
            xs, ys = segment.get("x", "").split(), segment.get("y", "").split()
            if len(xs) == len(ys) >= 3:
                segmentation = [[float(c) for xy in zip(xs, ys) for c in xy]]
    return image, Person(kp, bbox=bbox, segmentation=segmentation)


def _with_neck(person: Person, width: int, height: int) -> Person:
    """A Berkeley person with PASCAL's neck, the shoulders' midpoint (v 2 when both are visible), where both shoulders
    lie in the image: one past its border is dropped when the sample is written, and a neck beside it would stand
    where no neck is (as a schema mapping derives none there: `posepart.data.mixing`)."""
    schema = Schema.pascal_person_part()
    kp = person.keypoints.copy()
    shoulders = kp[[schema.joint("left_shoulder"), schema.joint("right_shoulder")]]
    if (shoulders[:, 2] > 0).all() and not keypoints_outside(shoulders, width, height).any():
        kp[schema.joint("neck")] = (*shoulders[:, :2].mean(0), shoulders[:, 2].min())
    return dataclasses.replace(person, keypoints=kp)


def _image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header; None when it cannot be read (the sample's writer counts it)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, ValueError):
        return None


def read_berkeley_dir(folder: Path, skips: Skips, *, strict: bool = False
                      ) -> tuple[dict[str, list[Person]], set[str]]:
    """Every person XML of a Berkeley keypoint folder (the release's person/) -> (people by image id, in file-name
    order; the ids of images one of whose XMLs is unreadable, from the release's `<id>_<k>.xml` names).

    An unreadable XML is an error with `strict`, else a counted skip. Its image keeps no pose labels: a person left
    out would be taught as background where they stand (before: dropped alone)."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: Berkeley keypoint folder not found")
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise DatasetError(f"{folder}: no keypoint XML (*.xml) in this folder: --berkeley takes the release's "
                           f"person/ folder, e.g. .../pascal_berkeley_keypoints/person")
    people: dict[str, list[Person]] = {}
    broken: set[str] = set()
    for path in files:
        try:
            image, person = read_berkeley_xml(path)
        except DatasetError as err:
            if strict:
                raise
            skips.add("bad keypoint XML (its image's pose left out)", str(err))
            broken.add(path.stem.rsplit("_", 1)[0])
            continue
        people.setdefault(image, []).append(person)
    return people, broken


def pascal_samples(
    root: Path,
    ids: Sequence[str] | None = None,
    *,
    part_order: str | Sequence[str] = "observed",
    pose_dir: Path | None = None,
    berkeley_dir: Path | None = None,
    first_side: str = "right",
    skips: Skips,
    strict: bool = False,
) -> Iterator[Sample]:
    """Samples of PASCAL-Person-Part under ROOT (ids: a split, default every part PNG; else every pose id).

    Folders, the part order and the Berkeley XMLs are checked here, before anything is written; the samples are then
    produced lazily. A bad pose file (.mat or XML) is an error with `strict`, else a counted skip whose image keeps
    no pose labels."""
    schema = Schema.pascal_person_part()
    images, parts_dir = root / "JPEGImages", root / "SegmentationPart"
    if not images.is_dir():
        raise DatasetError(f"{root}: no JPEGImages folder (expected ROOT/JPEGImages/<id>.jpg)")
    if pose_dir is not None and not pose_dir.is_dir():
        raise DatasetError(f"{pose_dir}: pose annotation folder not found")
    pose_dir = pose_dir if pose_dir is not None else (root / "pose_annotations")
    has_pose_dir = pose_dir.is_dir()
    berkeley, broken = (read_berkeley_dir(berkeley_dir, skips, strict=strict) if berkeley_dir is not None
                        else ({}, set()))
    if ids is None:
        if parts_dir.is_dir():
            ids = sorted(p.stem for p in parts_dir.glob("*.png"))
        else:
            ids = sorted({p.stem for p in pose_dir.glob("*.mat")} if has_pose_dir else set()) or sorted(berkeley)
        if not ids:
            raise DatasetError(f"{root}: no SegmentationPart/*.png, pose .mat or Berkeley XML to convert")
    lut = part_lut(part_order, schema)
    xia_joint_names(first_side)  # validates the side
    return _pascal_iter(images, parts_dir, pose_dir if has_pose_dir else None, berkeley, broken, ids, lut, first_side,
                        skips, strict)


def _pascal_iter(images: Path, parts_dir: Path, pose_dir: Path | None, berkeley: dict[str, list[Person]],
                 broken: set[str], ids: Sequence[str], lut: np.ndarray, first_side: str, skips: Skips, strict: bool
                 ) -> Iterator[Sample]:
    """One sample per id: Xia's .mat when there is one, else the Berkeley people (none for an image one of whose
    XMLs was unreadable: `broken`); partial samples are counted once."""
    for image_id in ids:
        image_path = images / f"{image_id}.jpg"
        part_path = parts_dir / f"{image_id}.png"
        loader = (lambda p=part_path: read_part_png(p, lut)) if part_path.is_file() else None
        mat = pose_dir / f"{image_id}.mat" if pose_dir is not None else None
        people: list[Person] = []
        labelled, counted = False, image_id in broken  # a bad pose file is counted as such, once
        if mat is not None and mat.is_file():
            try:
                people, labelled = read_xia_mat(mat, first_side, skips), True
            except SampleError as err:
                if strict:
                    raise
                skips.add(err.reason, str(err))
                counted = True
        elif image_id in berkeley and not counted:
            people, labelled = berkeley[image_id], True
            size = _image_size(image_path)
            if size is not None:  # else no sample is written: the image is missing or unreadable, and counted so
                people = [_with_neck(person, *size) for person in people]
        if image_path.is_file():  # (a missing image is counted when the sample is written)
            if loader is None and not labelled:
                skips.add("neither part PNG nor pose annotation (image skipped)", image_id)
                continue
            if loader is None:
                skips.add("no part PNG (image kept as pose-only)", str(part_path))
            if not labelled and not counted and (pose_dir is not None or berkeley):
                skips.add("no pose annotation (image kept as parts-only)", image_id)
        yield Sample(image_path, image_path.name, people, loader, pose_labeled=labelled, parts_file=part_path)


def convert_pascal(
    root: str | Path,
    out: str | Path,
    *,
    split: str | None = None,
    id_list: str | Path | None = None,
    part_order: str | Sequence[str] = "observed",
    pose_dir: str | Path | None = None,
    berkeley_dir: str | Path | None = None,
    first_side: str = "right",
    strict: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> ConvertResult:
    """Convert PASCAL-Person-Part (parts + Xia or Berkeley pose) at ROOT to a posepart dataset at OUT."""
    root = Path(root)
    skips = Skips()
    ids = None
    if id_list is not None:
        ids = read_id_list(Path(id_list))
    elif split is not None:
        ids = read_id_list(find_split_list(root, split))
    samples = pascal_samples(root, ids, part_order=part_order, pose_dir=Path(pose_dir) if pose_dir else None,
                             berkeley_dir=Path(berkeley_dir) if berkeley_dir else None, first_side=first_side,
                             skips=skips, strict=strict)
    source = {"reader": "pascal-person-part", "split": split, "part_order": list(part_names(part_order)),
              "first_side": first_side,
              **source_paths(root=root, list=id_list, pose_dir=pose_dir, berkeley_dir=berkeley_dir)}
    return write_samples(out, Schema.pascal_person_part(), samples, skips, strict=strict, overwrite=overwrite,
                         source=source, progress=progress)
