"""The posepart dataset format: read, validate and write.

```
ROOT/annotations.json   COCO person-keypoints JSON (images, annotations, categories)
ROOT/images/<file_name>
ROOT/parts/<stem>.png   optional uint8 label map: 0 background, i = categories[0]["part_classes"][i], 255 ignore
```
The COCO release layout (`person_keypoints_*.json` + an image folder) is read as it is. Records hold what the JSON says
(cheap to load, no pixels); images and part maps are decoded on demand by `PosePartDataset.load_*`, which raise
`DatasetError` naming the file and the record when something is wrong.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
from pycocotools import mask as mask_utils

from posepart.data import validate
from posepart.data.images import read_image, read_label_png
from posepart.data.validate import DatasetError
from posepart.schema import IGNORE_LABEL, Schema

__all__ = ["DatasetError", "ImageRecord", "PosePartDataset", "read_image", "read_json", "region_mask"]

ANNOTATIONS_FILE = "annotations.json"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"})
IMAGES_DIR = "images"
PARTS_DIR = "parts"
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
    areas: np.ndarray  # (N,) float32
    head_sizes: np.ndarray  # (N,) float32 PCKh normaliser from "head_size" or MPII "head_box"; NaN when absent
    ignore_regions: tuple[Any, ...]  # COCO segmentations (polygon lists / RLE dicts) or [x, y, w, h] boxes
    parts_path: Path | None
    pose_labeled: bool
    # the COCO dicts as read (the ground truth for COCOeval): the file's, with the joints past the border dropped
    annotations: tuple[dict[str, Any], ...] = field(repr=False)

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


@dataclass
class PosePartDataset:
    """A dataset in the posepart format (or the COCO release layout): schema + records + what was skipped."""

    schema: Schema
    records: list[ImageRecord]
    annotation_file: Path
    image_dir: Path
    parts_dir: Path | None
    skipped: Counter = field(default_factory=Counter)  # reason -> count (e.g. "missing image")
    skipped_examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending file

    # -- opening ---------------------------------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        root: str | Path | None = None,
        *,
        annotations: str | Path | None = None,
        images: str | Path | None = None,
        parts: str | Path | None = None,
        skip_missing_images: bool | None = None,
    ) -> PosePartDataset:
        """Open `ROOT` in the posepart format, or a COCO release layout given as `annotations=` + `images=`.

        Images listed in the JSON but absent on disk are an error in the posepart format (the dataset is broken) and
        skipped with a count in the COCO release layout (its JSONs list every image of a split); override with
        `skip_missing_images`.
        """
        if root is not None:
            root = Path(root)
            if root.is_file() and root.suffix.lower() == ".json":
                raise DatasetError(f"{root}: an annotation file, not a dataset root: give a COCO file with its image "
                                   f"folder (--annotations FILE --images DIR; in a config {{annotations: FILE, "
                                   f"images: DIR}})")
            if not root.is_dir():
                raise DatasetError(f"{root}: dataset root is not a directory")
            if not annotations and not (root / ANNOTATIONS_FILE).exists():
                raise DatasetError(f"{root / ANNOTATIONS_FILE}: annotation file not found: a posepart dataset root "
                                   f"holds it (`posepart convert` makes one from a PASCAL, MPII, LIP or CIHP "
                                   f"release; a COCO file is given as --annotations FILE --images DIR)")
            annotation_file = Path(annotations) if annotations else root / ANNOTATIONS_FILE
            image_dir = Path(images) if images else root / IMAGES_DIR
            parts_dir: Path | None = Path(parts) if parts else root / PARTS_DIR
            skip = bool(skip_missing_images)
        elif annotations is not None and images is not None:
            annotation_file, image_dir = Path(annotations), Path(images)
            parts_dir = Path(parts) if parts else None
            skip = True if skip_missing_images is None else skip_missing_images
        else:
            raise DatasetError("give a dataset ROOT, or both --annotations FILE and --images DIR")
        if parts and not Path(parts).is_dir():  # before: a mistyped --parts made a pose-only dataset
            raise DatasetError(f"{parts}: the part-map folder given is not a directory")
        if parts_dir is not None and not parts_dir.is_dir():  # ROOT/parts absent: a dataset without part maps
            parts_dir = None
        data = read_json(annotation_file)
        return cls._from_json(data, annotation_file, image_dir, parts_dir, skip)

    @classmethod
    def from_images(cls, folder: str | Path, schema: Schema) -> PosePartDataset:
        """A folder of images without labels (an unlabelled source, `train: {images: DIR}`), in `schema`: one record
        per image file at its top level (sorted by name; sizes read from the file headers, not decoded), no people,
        no part maps. Subfolders are not read: a dataset's root would bring its part label maps and its validation
        images in as photos. Images in them are counted among the skipped ones, so the run's log says so."""
        from PIL import Image  # reads only the header for the size

        folder = Path(folder)
        if not folder.is_dir():
            raise DatasetError(f"{folder}: image folder is not a directory")
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        nested = [p for p in folder.glob("*/**/*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
        if not files:
            inside = f"; {len(nested)} in its subfolders, which are not read: give each folder of images as a " \
                     f"source of its own" if nested else ""
            raise DatasetError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) at its top level{inside}")
        k = schema.num_joints
        dataset = cls(schema, [], folder / ANNOTATIONS_FILE, folder, None)
        for path in nested[:10000]:  # before: left out without a word
            dataset._skip("image in a subfolder (not read: give the folder as a source of its own)", str(path))
        for image_id, path in enumerate(files, start=1):
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except (OSError, ValueError) as err:
                dataset._skip("unreadable image", f"{path}: {err}")
                continue
            dataset.records.append(ImageRecord(
                image_id, path.name, path, width, height, np.zeros((0, k, 3), np.float32), np.zeros((0, 4), np.float32),
                np.zeros(0, np.float32), np.zeros(0, np.float32), (), None, False, ()))
        if not dataset.records:
            raise DatasetError(f"{folder}: none of its {len(files)} images could be read")
        return dataset

    @classmethod
    def _from_json(
        cls, data: dict[str, Any], annotation_file: Path, image_dir: Path, parts_dir: Path | None, skip_missing: bool
    ) -> PosePartDataset:
        where = str(annotation_file)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DatasetError(f"{where}: missing or non-list '{key}'")
        if not data["categories"]:
            raise DatasetError(f"{where}: 'categories' is empty; categories[0] must describe the person")
        if not all(isinstance(c, dict) for c in data["categories"]):
            raise DatasetError(f"{where}: every entry of 'categories' must be an object")
        try:
            schema = Schema.from_category(data["categories"][0])
        except ValueError as err:
            raise DatasetError(f"{where}: categories[0]: {err}") from None
        categories = [validate.integer(c.get("id", 1), f"{where}: categories[{i}] id")
                      for i, c in enumerate(data["categories"])]
        category_id = categories[0]

        images: dict[int, int] = {}  # image id -> index in `images`
        for i, info in enumerate(data["images"]):
            if not isinstance(info, dict):
                raise DatasetError(f"{where}: images[{i}] is not an object")
            image_id = validate.integer(info.get("id"), f"{where}: images[{i}] id")
            if image_id in images:
                raise DatasetError(f"{where}: images[{i}] repeats the id {image_id} of images[{images[image_id]}]")
            images[image_id] = i
        by_image: dict[int, list[dict[str, Any]]] = {}
        for i, ann in enumerate(data["annotations"]):
            label = f"{where}: annotations[{i}]"
            if not isinstance(ann, dict):
                raise DatasetError(f"{label} is not an object")
            image_id = validate.integer(ann.get("image_id"), f"{label} image_id")
            if image_id not in images:
                raise DatasetError(f"{label}: image_id {image_id} is not among the images")
            category = validate.integer(ann.get("category_id", category_id), f"{label} category_id")
            if category not in categories:
                raise DatasetError(f"{label}: category_id {category} is not among the categories {categories}")
            if category == category_id:  # other categories (COCO's 80) are not people
                by_image.setdefault(image_id, []).append(ann)

        dataset = cls(schema, [], annotation_file, image_dir, parts_dir)
        for i, info in enumerate(data["images"]):
            dropped: list[tuple[str, str]] = []  # counted once the image is known to be there
            record = _read_record(info, by_image.get(info["id"], []), schema, image_dir, parts_dir, where, i,
                                  lambda reason, example: dropped.append((reason, example)))
            if not record.image_path.is_file():
                if not skip_missing:
                    raise DatasetError(
                        f"{record.image_path}: image missing (images[{i}], id {record.image_id}, listed in {where})"
                    )
                dataset._skip("missing image", str(record.image_path))
                continue
            for reason, example in dropped:
                dataset._skip(reason, example)
            dataset.records.append(record)
        owners: dict[Path, str] = {}  # a part map is found by its image's name without the extension
        for record in dataset.records:
            if record.parts_path is not None and owners.setdefault(record.parts_path, record.file_name) != \
                    record.file_name:
                raise DatasetError(f"{where}: images {owners[record.parts_path]!r} and {record.file_name!r} would "
                                   f"share the part map {record.parts_path} (found by the image's name without its "
                                   f"extension): rename one of them")
        return dataset

    def _skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        self.skipped_examples.setdefault(reason, example)

    # -- pixels ----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    @property
    def has_parts(self) -> bool:
        """Whether any record carries a part label map (and the schema names part classes)."""
        return self.schema.has_parts and any(r.parts_path is not None for r in self.records)

    @property
    def has_people(self) -> bool:
        """Whether any pose-labelled record holds a person with a labelled joint: what OKS AP and PCKh score."""
        return bool(self.labelled_joints.any())

    @functools.cached_property
    def labelled_joints(self) -> np.ndarray:
        """(K,) bool: the joints some pose-labelled person of the dataset has labelled. One no person has is a joint
        the dataset does not annotate (PASCAL's Berkeley keypoints have no head top): training masks its channels
        as it does a source's joints that its schema lacks, instead of teaching "no such joint anywhere"."""
        return _labelled_joints([r.keypoints for r in self.records if r.pose_labeled], self.schema.num_joints)

    @property
    def annotated_joints(self) -> np.ndarray:
        """(K,) bool: the joints whose channels this dataset's samples supervise (`joint_mask`): those some person
        labels; every joint when no person labels any (pose-labelled images without people teach "nobody here")."""
        labelled = self.labelled_joints
        return labelled if labelled.any() else np.ones(self.schema.num_joints, bool)

    @property
    def labelable_parts(self) -> np.ndarray:
        """(P,) bool: the part classes a pixel of this dataset can be labelled as alone: all of them where it has
        part maps, none without (a coarser dataset read in another schema, `MappedSource`, labels some only within a
        set). Scoring averages over these; validation pooled over sources, over any source's."""
        return np.full(self.schema.num_parts, self.has_parts)

    @property
    def label_flip_perm(self) -> tuple[int, ...]:
        """Part label values after a horizontal flip (a dataset mapped into another schema adds set-valued labels)."""
        return self.schema.part_flip_perm

    def load_image(self, record: ImageRecord) -> np.ndarray:
        """(H, W, 3) uint8 RGB. Raises DatasetError for unreadable/truncated files or a size mismatch."""
        return read_image(record.image_path, expect_hw=(record.height, record.width), record=record.image_id)

    def load_parts(self, record: ImageRecord) -> np.ndarray | None:
        """(H, W) uint8 part labels, or None when the image has no part annotation."""
        if record.parts_path is None:
            return None
        path = record.parts_path
        parts = read_label_png(path, record=record.image_id)
        if parts.shape != (record.height, record.width):
            raise DatasetError(
                f"{path}: part map is {parts.shape[1]}x{parts.shape[0]} but image id {record.image_id} is "
                f"{record.width}x{record.height}"
            )
        bad = (parts >= self.schema.num_parts) & (parts != IGNORE_LABEL)
        if bad.any():
            raise DatasetError(
                f"{path}: label value {int(parts[bad].max())} above the classes 0..{self.schema.num_parts - 1} "
                f"{list(self.schema.part_classes)} (image id {record.image_id}); {IGNORE_LABEL} is the only other "
                f"allowed value"
            )
        return parts


def read_json(path: Path, expect: type = dict,
              expected: str = "a JSON object with images/annotations/categories") -> Any:
    """Parse a JSON file whose top level must be an `expect` (described as `expected` in the error); errors name the
    file and the line/column."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"{path}: annotation file not found") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder, expected a JSON file") from None
    except OSError as err:
        raise DatasetError(f"{path}: cannot read: {err.strerror}") from None
    except UnicodeDecodeError as err:
        raise DatasetError(f"{path}: not UTF-8 text (byte {err.start}): JSON files are UTF-8") from None
    except json.JSONDecodeError as err:
        raise DatasetError(f"{path}: malformed JSON at line {err.lineno} column {err.colno}: {err.msg}") from None
    except RecursionError:
        raise DatasetError(f"{path}: JSON nested too deeply to be an annotation file") from None
    if not isinstance(data, expect):
        raise DatasetError(f"{path}: expected {expected}")
    return data


def _inside(folder: Path, relative: str, label: str) -> Path:
    """folder / relative, which must stay inside `folder`: an empty or absolute name, `..` that climbs out or a
    symlink that leads out is a DatasetError naming the record (an annotation file must not make us read /etc/passwd
    or another dataset's files). Symlinks that stay inside are fine."""
    if not relative.strip() or Path(relative).is_absolute() or "\0" in relative or Path(relative).name in ("", "."):
        raise DatasetError(f"{label}: file name {relative!r} must be a path to a file, relative to {folder}")
    path = folder / relative
    try:
        inside = path.resolve().is_relative_to(_resolved(folder))
    except (OSError, RuntimeError) as err:  # a symlink loop (RuntimeError before Python 3.13)
        raise DatasetError(f"{label}: file name {relative!r} cannot be resolved: {err}") from None
    if not inside:
        raise DatasetError(f"{label}: file name {relative!r} resolves outside {folder}")
    return path


@functools.lru_cache(maxsize=16)
def _resolved(folder: Path) -> Path:
    """A dataset folder's real path, resolved once for all its records rather than once per record."""
    return folder.resolve()


def _read_record(
    info: dict[str, Any],
    annotations: list[dict[str, Any]],
    schema: Schema,
    image_dir: Path,
    parts_dir: Path | None,
    where: str,
    index: int,
    skip: Callable[[str, str], None],
) -> ImageRecord:
    """Validate one `images` entry and its annotations into an ImageRecord; `skip(reason, example)` counts what is
    dropped (a joint outside the image)."""
    image_id = info["id"]  # checked by the caller
    file_name = info.get("file_name")
    if not isinstance(file_name, str):
        raise DatasetError(f"{where}: images[{index}] (id {image_id}) needs a string file_name, got {file_name!r}")
    width = validate.integer(info.get("width"), f"{where}: images[{index}] ({file_name}) width", minimum=1)
    height = validate.integer(info.get("height"), f"{where}: images[{index}] ({file_name}) height", minimum=1)
    pose_labeled = info.get("pose_labeled", True)
    if not isinstance(pose_labeled, bool):
        raise DatasetError(f"{where}: images[{index}] ({file_name}) pose_labeled must be true or false, got "
                           f"{pose_labeled!r}")
    k = schema.num_joints
    keypoints, boxes, areas, head_sizes, ignore = [], [], [], [], []
    read: list[dict[str, Any]] = []
    for ann in annotations:
        label = f"{where}: annotation id {ann.get('id')} (image {file_name})"
        crowd = ann.get("iscrowd", 0)
        if crowd not in (0, 1):  # True/False compare equal to 1/0
            raise DatasetError(f"{label}: iscrowd must be 0 or 1, got {crowd!r}")
        raw = ann.get("keypoints")
        kp = np.zeros((k, 3), np.float32) if raw is None or raw == [] else validate.keypoints(raw, k, label)
        box = validate.box(ann["bbox"], f"{label}: bbox") if ann.get("bbox") is not None else None
        area = validate.number(ann["area"], f"{label}: area") if ann.get("area") is not None else None
        outside = keypoints_outside(kp, width, height) & (not crowd)  # a crowd's joints are never read
        if outside.any():
            far = (np.abs(kp[:, :2] - [width / 2, height / 2]) > [1.5 * width, 1.5 * height]).any(1) & outside
            if far.any():  # a whole image's size away: wrong coordinates (x and y swapped, another image's), no click
                j = int(np.argmax(far))
                raise DatasetError(f"{label}: keypoint {schema.keypoints[j]!r} at ({kp[j, 0]:g}, {kp[j, 1]:g}) lies "
                                   f"far outside the {width}x{height} image")
            for j in np.flatnonzero(outside):
                skip(JOINT_OUTSIDE, f"{file_name}: {schema.keypoints[j]!r} at ({kp[j, 0]:g}, {kp[j, 1]:g}) "
                                    f"(annotation id {ann.get('id')})")
            kp = kp.copy()
            kp[outside] = 0
            # what evaluation scores and a schema mapping maps is what training reads (before, each dropped them again)
            ann = {**ann, "keypoints": kp.reshape(-1).tolist(), "num_keypoints": int((kp[:, 2] > 0).sum())}
        read.append(ann)
        labelled = kp[:, 2] > 0
        if crowd or not labelled.any() or not k:  # an ignore region: its segmentation, else its box
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
        areas.append(area if area else float(box[2] * box[3]))
        head_sizes.append(_head_size(ann, label))
    image_path = _inside(image_dir, file_name, f"{where}: images[{index}] (id {image_id})")
    parts_path = None
    if parts_dir is not None and schema.has_parts:
        candidate = _inside(parts_dir, str(Path(file_name).with_suffix(".png")), f"{where}: images[{index}] (id "
                            f"{image_id}) part map")
        if candidate.is_file():
            parts_path = candidate
        elif candidate.exists() or candidate.is_symlink():  # a folder, a dangling link: not "no part annotation"
            raise DatasetError(f"{candidate}: part map is not a readable file (images[{index}], id {image_id})")
    return ImageRecord(
        image_id=image_id,
        file_name=file_name,
        image_path=image_path,
        width=width,
        height=height,
        keypoints=np.stack(keypoints) if keypoints else np.zeros((0, k, 3), np.float32),
        boxes=np.stack(boxes) if boxes else np.zeros((0, 4), np.float32),
        areas=np.asarray(areas, np.float32),
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


def _labelled_joints(people: list[np.ndarray], k: int) -> np.ndarray:
    """(K,) bool: the joints labelled (v > 0) in any of the (N, K, 3) keypoint arrays."""
    kp = np.concatenate([p.reshape(-1, k, 3) for p in people]) if people else np.zeros((0, k, 3), np.float32)
    return (kp[..., 2] > 0).any(0)


def mpii_head_size(x1: float, y1: float, x2: float, y2: float) -> float:
    """MPII's PCKh normaliser: 0.6 x the diagonal of the head box [x1, y1, x2, y2]."""
    return 0.6 * float(np.hypot(x2 - x1, y2 - y1))


def keypoint_box(kp: np.ndarray) -> list[float]:
    """[x, y, w, h] around a person's labelled joints (K, 3): the box of an annotation that gives none."""
    xy = kp[kp[:, 2] > 0, :2]
    x0, y0 = xy.min(0)
    x1, y1 = xy.max(0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]
