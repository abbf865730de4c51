"""One image's annotations: a COCO `images` entry and its person annotations, validated into an `ImageRecord`.

What the JSON says, checked entry by entry with errors that name the file and the entry; no pixels are read. A
joint clicked just past the border is dropped with a count; file names stay inside the dataset's folders.
"""

from __future__ import annotations

import functools
import operator
import os
import pickle
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, overload

import numpy as np
from pycocotools import mask as mask_utils

from posepart.data import validate
from posepart.data.images import MAX_DECODED_PIXELS
from posepart.data.validate import DatasetError, PathEscapeError
from posepart.schema import Schema

KEYPOINT_TOLERANCE = 1.0  # px: labelled keypoints may sit up to this far outside [0, W] x [0, H] (rounding)
JOINT_OUTSIDE = "keypoint outside the image (joint dropped)"  # the skip reason of readers and converters alike


def keypoints_outside(keypoints: np.ndarray, width: int, height: int) -> np.ndarray:
    """(K,) bool: which labelled joints of one person's (K, 3) keypoints lie more than KEYPOINT_TOLERANCE outside
    [0, W] x [0, H]. Readers and converters drop them with a count: an annotator's click past the border of a person
    cut by it (PASCAL-Person-Part's own XMLs hold five) is no reason to refuse a dataset."""
    x, y, v = keypoints[:, 0], keypoints[:, 1], keypoints[:, 2]
    return (v > 0) & ((x < -KEYPOINT_TOLERANCE) | (y < -KEYPOINT_TOLERANCE) | (x > width + KEYPOINT_TOLERANCE)
                      | (y > height + KEYPOINT_TOLERANCE))


@dataclass(frozen=True)
class ImageRecord:
    """One image's annotations as read from the JSON (no pixels).

    `keypoints` holds the labelled people (not crowd, at least one labelled joint); crowds and people without labelled
    joints are `ignore_regions` for the pose targets (segmentation when present, else their bbox).
    """

    image_id: int
    file_name: str
    image_path: Path
    width: int
    height: int
    keypoints: np.ndarray  # (N, K, 3) float32 [x, y, v]
    boxes: np.ndarray  # (N, 4) float32 xywh
    head_sizes: np.ndarray  # (N,) float32 PCKh normaliser from "head_size" or MPII "head_box"; NaN when absent
    ignore_regions: tuple[Any, ...]  # COCO segmentations (polygon lists / RLE dicts) or [x, y, w, h] boxes
    parts_path: Path | None
    pose_labeled: bool
    # the COCO dicts as read (the ground truth for COCOeval): the file's, with the joints past the border dropped
    annotations: tuple[dict[str, Any], ...] = field(repr=False)
    # EXIF orientation the image is read under: 1 (as stored) for annotated images, whose labels refer to the stored
    # pixels; an unlabelled folder's photo is turned upright, as the Predictor reads it (width, height: upright)
    orientation: int = 1

    @property
    def num_people(self) -> int:
        return len(self.keypoints)

    def image_info(self) -> dict[str, Any]:
        """The COCO `images` entry of this record."""
        return {"id": self.image_id, "file_name": self.file_name, "width": self.width, "height": self.height}

    def ignore_mask(self) -> np.ndarray:
        """(H, W) bool, True where the pose targets must not supervise (crowds, unlabelled people)."""
        mask = np.zeros((self.height, self.width), bool)
        for region in self.ignore_regions:
            mask |= region_mask(region, self.height, self.width)
        return mask


class PackedRecords(Sequence[ImageRecord]):
    """Records pickled into one numpy byte buffer and unpickled on access (each access returns a fresh copy).

    Why not a list: COCO's train set opens into about a million Python objects (polygons, COCO dicts, arrays), and a
    DataLoader worker forked from the process writes to the pages of every object it reads (reference counts), so
    each worker copies its share of them over an epoch (0.7 GB per worker on COCO's train set). A numpy buffer holds
    no objects: the workers share it. detectron2's `DatasetFromList(serialize=True)` does the same; pickle is safe
    here, as the bytes are the ones this process wrote.
    """

    def __init__(self, records: Iterable[ImageRecord] = ()) -> None:
        packed, ends = bytearray(), []
        for record in records:
            packed += pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL)
            ends.append(len(packed))
        self._ends = np.asarray(ends, np.int64)  # (N,) where record i ends in the buffer
        self._bytes = np.frombuffer(packed, np.uint8)
        self._bytes.flags.writeable = False

    def __len__(self) -> int:
        return len(self._ends)

    @overload
    def __getitem__(self, index: int) -> ImageRecord: ...

    @overload
    def __getitem__(self, index: slice) -> list[ImageRecord]: ...

    def __getitem__(self, index: int | slice) -> ImageRecord | list[ImageRecord]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        i = operator.index(index)
        i += len(self) if i < 0 else 0
        if not 0 <= i < len(self):
            raise IndexError(f"record {index} of {len(self)}")
        start = int(self._ends[i - 1]) if i else 0
        return pickle.loads(self._bytes[start : int(self._ends[i])].data)

    def __iter__(self) -> Iterator[ImageRecord]:
        return (self[i] for i in range(len(self)))


@dataclass(frozen=True)
class CheckedAnnotations:
    """A file's person annotations with their keypoints and boxes checked in one numpy pass (`check_annotations`):
    row i is annotations[i]. Where `keypoints_ok` (`boxes_ok`) is False, `read_record` checks the value one by one,
    for the error that names it (or the copy that fills an unlabelled joint's null coordinates)."""

    annotations: Sequence[dict[str, Any]]
    keypoints: np.ndarray  # (N, K, 3) float32, as `validate.keypoints` reads each list
    keypoints_ok: np.ndarray  # (N,) bool
    boxes: np.ndarray  # (N, 4) float32, as `validate.box` reads each bbox
    boxes_ok: np.ndarray  # (N,) bool
    labelled: np.ndarray  # (N,) bool: a joint of the row is labelled
    inside: np.ndarray  # (N,) bool: `keypoints_ok` and no joint `keypoints_outside` the image's size as listed


def check_annotations(annotations: Sequence[dict[str, Any]], num_joints: int, sizes: np.ndarray
                      ) -> CheckedAnnotations:
    """Check every annotation's keypoints and box at once; `sizes` (N, 2) is the width and height of each one's image
    (NaN where the image lists no integer size: its record is refused before its people are read). Why: one by
    one, each person costs about fifteen small numpy calls, 17 s over COCO's train set."""
    keypoints, keypoints_ok = validate.keypoint_rows([ann.get("keypoints") for ann in annotations], num_joints)
    boxes, boxes_ok = validate.box_rows([ann.get("bbox") for ann in annotations])
    labelled = keypoints[..., 2] > 0  # (N, K)
    xy = keypoints[..., :2]  # (N, K, 2)
    within = (xy >= -KEYPOINT_TOLERANCE) & (xy <= sizes[:, None].astype(np.float32) + KEYPOINT_TOLERANCE)
    inside = keypoints_ok & (within.all(2) | ~labelled).all(1)
    return CheckedAnnotations(annotations, keypoints, keypoints_ok, boxes, boxes_ok, labelled.any(1), inside)


def region_mask(region: Any, height: int, width: int) -> np.ndarray:
    """Rasterise a COCO segmentation (polygons, RLE, uncompressed RLE) or an [x, y, w, h] box to (H, W) bool."""
    if isinstance(region, dict) or (isinstance(region, list) and region and isinstance(region[0], list)):
        if isinstance(region, dict) and isinstance(region.get("counts"), list):
            rle = mask_utils.frPyObjects(region, height, width)
        elif isinstance(region, dict):
            rle = region
        else:
            rle = mask_utils.merge(mask_utils.frPyObjects(region, height, width))
        return mask_utils.decode(rle).astype(bool)
    x, y, w, h = (float(v) for v in region)
    mask = np.zeros((height, width), bool)
    mask[max(int(np.floor(y)), 0) : int(np.ceil(y + h)), max(int(np.floor(x)), 0) : int(np.ceil(x + w))] = True
    return mask


def _inside(folder: Path, relative: str, label: str) -> Path:
    """folder / relative, which must stay inside `folder`: an absolute name, `..` that climbs out or a symlink that
    leads out is a PathEscapeError naming the record (an annotation file must not make us read /etc/passwd or another
    dataset's files); a name of no file (empty, `.`) is a DatasetError. Symlinks that stay inside are fine. Any
    anchor is refused: on Windows `\\x` and `C:x` are not absolute, and would not be resolved below."""
    if Path(relative).anchor:  # absolute, or a Windows drive or root
        raise PathEscapeError(f"{label}: file name {relative!r} must be a path to a file, relative to {folder}")
    if not relative.strip() or "\0" in relative or Path(relative).name in ("", "."):  # no file: broken, not hostile
        raise DatasetError(f"{label}: file name {relative!r} must be a path to a file, relative to {folder}")
    path, parts = folder / relative, Path(relative).parts
    if ".." not in parts and not any(os.path.islink(folder.joinpath(*parts[:n])) for n in range(1, len(parts) + 1)):
        return path  # no climbing and no link of its own: inside, in one lstat per part (resolving: 15 s over COCO)
    try:
        inside = path.resolve().is_relative_to(_resolved(folder))
    except (OSError, RuntimeError) as err:  # a symlink loop (RuntimeError before Python 3.13)
        raise PathEscapeError(f"{label}: file name {relative!r} cannot be resolved: {err}") from None
    if not inside:
        link = "" if ".." in parts else (f" (it leads to {path.resolve()} through a symlink: make {folder} itself "
                                         f"a link to the folder that holds the files, or copy them in)")
        raise PathEscapeError(f"{label}: file name {relative!r} resolves outside {folder}{link}")
    return path


def spelled_otherwise(folder: Path, relative: str) -> str:
    """For an image missing under `folder`: a hint naming a file that is there under another spelling of `relative`,
    else "". A Windows tool writes backslashes between folders; macOS stores names decomposed (NFD: e + U+0301) where
    JSON tools write them composed (NFC: U+00E9), two names that print alike. Said, not followed: the name is the
    image's key (its part map is found by it), and one spelling of it should hold throughout."""
    slashes = relative.replace("\\", "/")
    for name, why in ((slashes, "with '/' between folders, not '\\'"),
                      *((unicodedata.normalize(form, slashes), f"in Unicode form {form}, as the file system stores it")
                        for form in ("NFC", "NFD"))):
        try:
            there = name != relative and (folder / name).is_file()
        except (OSError, ValueError):
            continue
        if there:
            return f"; {name!r} is there: write the name {why}"
    return ""


@functools.lru_cache(maxsize=16)
def _resolved(folder: Path) -> Path:
    """A dataset folder's real path, resolved once for all its records rather than once per record."""
    return folder.resolve()


def read_record(
    info: dict[str, Any],
    rows: Sequence[int],
    checked: CheckedAnnotations,
    schema: Schema,
    image_dir: Path,
    parts_dir: Path | None,
    where: str,
    index: int,
    skip: Callable[[str, str], None],
) -> ImageRecord:
    """Validate one `images` entry and its annotations (`rows` of `checked`) into an ImageRecord; `skip(reason,
    example)` counts what is dropped (a joint outside the image)."""
    image_id = info["id"]  # checked by the caller
    file_name = info.get("file_name")
    if not isinstance(file_name, str):
        raise DatasetError(f"{where}: images[{index}] (id {image_id}) needs a string file_name, got {file_name!r}")
    # the paths first: a name that leads out of the dataset refuses the file whatever else the record holds
    image_path = _inside(image_dir, file_name, f"{where}: images[{index}] (id {image_id})")
    parts_path = None
    if parts_dir is not None and schema.has_parts:
        candidate = _inside(parts_dir, str(Path(file_name).with_suffix(".png")), f"{where}: images[{index}] (id "
                            f"{image_id}) part map")
        if candidate.is_file():
            parts_path = candidate
        elif candidate.exists() or candidate.is_symlink():  # a folder, a dangling link: not "no part annotation"
            raise DatasetError(f"{candidate}: part map is not a readable file (images[{index}], id {image_id})")
    width = validate.integer(info.get("width"), f"{where}: images[{index}] ({file_name}) width", minimum=1)
    height = validate.integer(info.get("height"), f"{where}: images[{index}] ({file_name}) height", minimum=1)
    if width * height > MAX_DECODED_PIXELS:  # no such image can be read; its masks would be allocated at that size
        raise DatasetError(f"{where}: images[{index}] ({file_name}) is {width}x{height}: more pixels than OpenCV "
                           f"decodes ({MAX_DECODED_PIXELS}, its CV_IO_MAX_IMAGE_PIXELS)")
    pose_labeled = info.get("pose_labeled", True)
    if not isinstance(pose_labeled, bool):
        raise DatasetError(f"{where}: images[{index}] ({file_name}) pose_labeled must be true or false, got "
                           f"{pose_labeled!r}")
    k = schema.num_joints
    keypoints, boxes, head_sizes, ignore = [], [], [], []
    read: list[dict[str, Any]] = []
    for row in rows:
        ann = checked.annotations[row]
        label = f"{where}: annotation id {ann.get('id')} (image {file_name})"
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):  # True/False compare equal to 1/0
            raise DatasetError(f"{label}: iscrowd must be 0 or 1, got {crowd!r}")
        raw = ann.get("keypoints")
        if checked.keypoints_ok[row]:
            kp = checked.keypoints[row]
        elif raw is None or raw == []:
            kp = np.zeros((k, 3), np.float32)
        else:
            kp, kept = validate.annotation_keypoints(raw, k, label, schema.keypoints)
            if kept is not raw:  # unlabelled joints' NaN or null coordinates as 0: what evaluation scores too
                ann = {**ann, "keypoints": kept}
        if checked.boxes_ok[row]:
            box = checked.boxes[row]
        else:
            box = validate.box(ann["bbox"], f"{label}: bbox") if ann.get("bbox") is not None else None
        if ann.get("area") is not None:  # checked, not kept: evaluation reads the file's own (`annotations`)
            validate.number(ann["area"], f"{label}: area")
        if checked.inside[row]:  # the common case: no joint to drop, as the file's pass found
            has_joint = bool(checked.labelled[row])
        else:
            outside = keypoints_outside(kp, width, height) & (not crowd)  # a crowd's joints are never read
            if outside.any():
                far = (np.abs(kp[:, :2] - [width / 2, height / 2]) > [1.5 * width, 1.5 * height]).any(1) & outside
                if far.any():  # an image's size away: wrong coordinates (x and y swapped, another image's), no click
                    j = int(np.argmax(far))
                    raise DatasetError(f"{label}: keypoint {schema.keypoints[j]!r} at ({kp[j, 0]:g}, {kp[j, 1]:g}) "
                                       f"lies far outside the {width}x{height} image")
                for j in np.flatnonzero(outside):
                    skip(JOINT_OUTSIDE, f"{file_name}: {schema.keypoints[j]!r} at ({kp[j, 0]:g}, {kp[j, 1]:g}) "
                                        f"(annotation id {ann.get('id')})")
                kp = kp.copy()
                kp[outside] = 0
                # what evaluation scores and a schema mapping maps is what training reads (before, each dropped
                # them again)
                ann = {**ann, "keypoints": kp.reshape(-1).tolist(), "num_keypoints": int((kp[:, 2] > 0).sum())}
            has_joint = bool((kp[:, 2] > 0).any())
        read.append(ann)
        if crowd or not has_joint or not k:  # an ignore region: its segmentation, else its box
            region = ann.get("segmentation")
            region = validate.region(region, height, width, f"{label}: segmentation") if region else None
            if region is None and box is not None:
                region = box.tolist()
            if region is not None:
                ignore.append(region)
            continue
        keypoints.append(kp)
        box = box if box is not None else np.asarray(keypoint_box(kp), np.float32)
        boxes.append(box)
        head_sizes.append(_head_size(ann, label))
    return ImageRecord(
        image_id=image_id,
        file_name=file_name,
        image_path=image_path,
        width=width,
        height=height,
        keypoints=np.stack(keypoints) if keypoints else np.zeros((0, k, 3), np.float32),
        boxes=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        head_sizes=np.asarray(head_sizes, np.float32),
        ignore_regions=tuple(ignore),
        parts_path=parts_path,
        pose_labeled=pose_labeled and schema.has_pose,
        annotations=tuple(read),
    )


def _head_size(ann: dict[str, Any], label: str) -> float:
    """PCKh normaliser of one person: `head_size` (> 0), else MPII's 0.6 x the diagonal of `head_box`
    [x1, y1, x2, y2]; NaN when neither is given."""
    if ann.get("head_size") is not None:
        return validate.number(ann["head_size"], f"{label}: head_size", positive=True)
    if ann.get("head_box") is not None:
        return mpii_head_size(*validate.head_box(ann["head_box"], f"{label}: head_box"))
    return float("nan")


def mpii_head_size(x1: float, y1: float, x2: float, y2: float) -> float:
    """MPII's PCKh normaliser: 0.6 x the diagonal of the head box [x1, y1, x2, y2]."""
    return 0.6 * float(np.hypot(x2 - x1, y2 - y1))


def keypoint_box(kp: np.ndarray) -> list[float]:
    """[x, y, w, h] around a person's labelled joints (K, 3): the box of an annotation that gives none."""
    xy = kp[kp[:, 2] > 0, :2]
    x0, y0 = xy.min(0)
    x1, y1 = xy.max(0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
