"""The posepart dataset format: read, validate and write.

```
ROOT/annotations.json   COCO person-keypoints JSON (images, annotations, categories)
ROOT/images/<file_name>
ROOT/parts/<stem>.png   optional uint8 label map: 0 background, i = categories[0]["part_classes"][i], 255 ignore
```
(categories[0], or the first category that lists keypoints or part classes: `person_category`.)
The COCO release layout (`person_keypoints_*.json` + an image folder) is read as it is. Records hold what the JSON says
(cheap to load, no pixels; `posepart.data.records` validates each entry); images and part maps are decoded on demand
by `PosePartDataset.load_*`, which raise `DatasetError` naming the file and the record when something is wrong.
"""

from __future__ import annotations

import functools
import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Sequence

import numpy as np
from tqdm import tqdm

from posepart.data import validate
from posepart.data.images import (MAX_DECODED_PIXELS, SIDES_SWAPPED, exif_orientation, read_image, read_label_png,
                                  turned_note, upright)
from posepart.data.records import (ImageRecord, PackedRecords, check_annotations, read_record, region_mask,
                                    spelled_otherwise)
from posepart.data.validate import DatasetError, PathEscapeError
from posepart.schema import Schema

__all__ = ["DatasetError", "ImageRecord", "PosePartDataset", "person_category", "read_image", "read_json",
           "region_mask"]

ANNOTATIONS_FILE = "annotations.json"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jfif", ".jpe", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                            ".pbm"})  # (.jfif, .jpe: JPEGs as browsers and Windows save some)
IMAGES_DIR = "images"
PARTS_DIR = "parts"
LARGE_ANNOTATIONS = 64 * 2**20  # bytes: an annotation file this large takes seconds to read, and says so


def hidden(path: Path, root: Path) -> bool:
    """Whether `path` is a dot file or lies in a dot folder under `root`: left out of every folder read as images, as
    the shell's `*` leaves them (macOS's `._IMG.jpg` companions on a USB drive are no images; `.git`, `.cache`)."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


class RecordLabels(NamedTuple):
    """Which labels a dataset's records carry, read in one pass over them: each read of a packed record unpickles
    it, and a pass over COCO's train set takes seconds."""

    pose: np.ndarray  # (N,) bool: pose-labelled images
    parts: np.ndarray  # (N,) bool: images with a part map
    joints: np.ndarray  # (K,) bool: the joints some person of a pose-labelled image labels
    annotations: int  # people annotated in the pose-labelled images (not crowds), with labelled joints or not
    largest: float  # the largest coordinate of a labelled joint, in pixels (-1 where none is labelled)


@dataclass
class PosePartDataset:
    """A dataset in the posepart format (or the COCO release layout): schema + records + what was skipped."""

    schema: Schema
    records: Sequence[ImageRecord]  # PackedRecords when opened: shared by DataLoader workers, not copied
    annotation_file: Path
    image_dir: Path
    parts_dir: Path | None
    skipped: Counter = field(default_factory=Counter)  # reason -> count (e.g. "missing image")
    skipped_examples: dict[str, str] = field(default_factory=dict)  # reason -> first offending file
    broken: list[str] = field(default_factory=list)  # records left out, why (opened with `list_broken` only)
    category_id: int = 1  # the people's category id in the file: the COCO results written for its tools carry it
    # The parsed annotation file, kept only when opened with `keep_json` (`posepart split` writes subsets of it: on
    # COCO's train set, parsing it again took 9 s); None otherwise, so that an open dataset does not hold it twice.
    annotations_json: dict[str, Any] | None = field(default=None, repr=False, compare=False)

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
        quiet: bool = False,
        list_broken: bool = False,
        keep_json: bool = False,
    ) -> PosePartDataset:
        """Open `ROOT` in the posepart format, or a COCO release layout given as `annotations=` + `images=`.

        Images listed in the JSON but absent on disk are an error in the posepart format (the dataset is broken) and
        skipped with a count in the COCO release layout (its JSONs list every image of a split); override with
        `skip_missing_images`. A large file is announced on stderr with a progress bar, unless `quiet` (a DDP
        rank other than the first: one line per run, not per process). `list_broken` (what `inspect` opens with):
        an image record that cannot be read (its image missing, its keypoints malformed or far outside...) is left
        out and its error kept in `broken`, so that every such record is found in one pass; otherwise the first is
        raised. The file's structure and a file name leading out of the dataset are raised either way. `keep_json`:
        the parsed file stays on `annotations_json`.
        """
        if root is not None:
            root = Path(root)
            if root.is_file() and root.suffix.lower() == ".json":
                raise DatasetError(f"{root}: an annotation file, not a dataset root: give a COCO file with its image "
                                   f"folder (--annotations FILE --images DIR; in a config {{annotations: FILE, "
                                   f"images: DIR}})")
            if not root.is_dir():  # (a walkthrough: a moved folder was "not a directory")
                what = "dataset root is not a directory" if root.exists() else "no such folder (moved or deleted?)"
                raise DatasetError(f"{root}: {what}")
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
        size = annotation_file.stat().st_size if annotation_file.is_file() else 0
        large = size > LARGE_ANNOTATIONS and not quiet
        if large:  # before: half a minute without a word for COCO's train set (JSON 14 s, records 16 s)
            print(f"reading {annotation_file} ({size / 1e6:.0f} MB)", file=sys.stderr, flush=True)
        data = read_json(annotation_file)
        dataset = cls._from_json(data, annotation_file, image_dir, parts_dir, skip, progress=large,
                                 list_broken=list_broken)
        if keep_json:
            dataset.annotations_json = data
        return dataset

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
        def image_file(p: Path) -> bool:
            return p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not hidden(p, folder)

        files = sorted(filter(image_file, folder.iterdir()))
        nested = list(filter(image_file, folder.glob("*/**/*")))
        if not files:
            inside = f"; {len(nested)} in its subfolders, which are not read: give each folder of images as a " \
                     f"source of its own" if nested else ""
            raise DatasetError(f"{folder}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) at its top level{inside}")
        k = schema.num_joints
        dataset, records = cls(schema, [], folder / ANNOTATIONS_FILE, folder, None), []
        for path in nested[:10000]:  # before: left out without a word
            dataset._skip("image in a subfolder (not read: give the folder as a source of its own)", str(path))
        for image_id, path in enumerate(files, start=1):
            try:
                with Image.open(path) as image:
                    width, height = image.size
            except Image.DecompressionBombError:  # more pixels than PIL's guard, not than OpenCV decodes: decoded
                try:
                    height, width = read_image(path).shape[:2]
                except DatasetError as err:
                    dataset._skip("unreadable image", str(err))
                    continue
            except (OSError, ValueError) as err:
                dataset._skip("unreadable image", f"{path}: {err}")
                continue
            orientation = exif_orientation(path)  # a phone photo is read upright, as `predict` reads it
            if orientation in SIDES_SWAPPED:
                width, height = height, width
            records.append(ImageRecord(
                image_id, path.name, path, width, height, np.zeros((0, k, 3), np.float32), np.zeros((0, 4), np.float32),
                np.zeros(0, np.float32), (), None, False, (), orientation))
        if not records:
            raise DatasetError(f"{folder}: none of its {len(files)} images could be read")
        dataset.records = PackedRecords(records)
        return dataset

    @classmethod
    def _from_json(
        cls, data: dict[str, Any], annotation_file: Path, image_dir: Path, parts_dir: Path | None, skip_missing: bool,
        progress: bool = False, list_broken: bool = False,
    ) -> PosePartDataset:
        where = str(annotation_file)
        for key in ("images", "annotations", "categories"):
            if not isinstance(data.get(key), list):
                raise DatasetError(f"{where}: missing or non-list '{key}'")
        if not data["categories"]:
            raise DatasetError(f"{where}: 'categories' is empty; categories[0] must describe the person")
        if not all(isinstance(c, dict) for c in data["categories"]):
            raise DatasetError(f"{where}: every entry of 'categories' must be an object")
        person = person_category(data["categories"])
        try:
            schema = Schema.from_category(data["categories"][person])
        except ValueError as err:
            raise DatasetError(f"{where}: categories[{person}]: {err}") from None
        categories = [validate.integer(c.get("id", 1), f"{where}: categories[{i}] id")
                      for i, c in enumerate(data["categories"])]
        category_id = categories[person]
        same_kind, other_skeletons = people_categories(data["categories"], categories, person)

        images: dict[int, int] = {}  # image id -> index in `images`
        sizes = np.full((len(data["images"]), 2), np.nan)  # width, height where `read_record` accepts them (else
        for i, info in enumerate(data["images"]):  # the record is refused before its people are read)
            if not isinstance(info, dict):
                raise DatasetError(f"{where}: images[{i}] is not an object")
            image_id = validate.integer(info.get("id"), f"{where}: images[{i}] id")
            if image_id in images:
                raise DatasetError(f"{where}: images[{i}] repeats the id {image_id} of images[{images[image_id]}]")
            images[image_id] = i
            width, height = info.get("width"), info.get("height")
            if validate.is_integer(width) and validate.is_integer(height) and width > 0 and height > 0 and \
                    width * height <= MAX_DECODED_PIXELS:
                sizes[i] = width, height
        people: list[dict[str, Any]] = []
        people_images: list[int] = []  # each person's index in `images`
        by_image: dict[int, list[int]] = {}  # image id -> its people's indices in `people`
        dataset_skips: list[tuple[str, str]] = []
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
            if category in same_kind:  # other categories (COCO's 80) are not people
                by_image.setdefault(image_id, []).append(len(people))
                people.append(ann)
                people_images.append(images[image_id])
            elif category in other_skeletons:  # before: dropped without a word (a CVAT project of two skeletons)
                dataset_skips.append((f"annotation of another keypoint category (one is read: "
                                      f"{schema.name!r})", f"{label}: category {other_skeletons[category]!r}"))

        checked = check_annotations(people, schema.num_joints, sizes[np.asarray(people_images, np.int64)])
        dataset = cls(schema, [], annotation_file, image_dir, parts_dir, category_id=category_id)
        for reason, example in dataset_skips:
            dataset._skip(reason, example)
        bar = None if progress else True  # None: a bar only where stderr is a terminal (no \r lines in logs)
        owners: dict[Path, str] = {}  # a part map is found by its image's name without the extension

        def read(i: int, info: dict[str, Any]) -> ImageRecord | None:
            """images[i] as a record, or None where it is skipped (a missing image in the COCO layout)."""
            dropped: list[tuple[str, str]] = []  # counted once the image is known to be there
            record = read_record(info, by_image.get(info["id"], []), checked, schema, image_dir, parts_dir, where, i,
                                 lambda reason, example: dropped.append((reason, example)))
            if not record.image_path.is_file():
                hint = spelled_otherwise(image_dir, record.file_name)
                if not skip_missing:
                    raise DatasetError(f"{record.image_path}: image missing (images[{i}], id {record.image_id}, listed "
                                       f"in {where}){hint}")
                dataset._skip("missing image", f"{record.image_path}{hint}")
                return None
            if record.parts_path is not None and owners.setdefault(record.parts_path, record.file_name) != \
                    record.file_name:
                raise DatasetError(f"{where}: images {owners[record.parts_path]!r} and {record.file_name!r} would "
                                   f"share the part map {record.parts_path} (found by the image's name without "
                                   f"its extension): rename one of them")
            for reason, example in dropped:
                dataset._skip(reason, example)
            return record

        def records() -> Iterator[ImageRecord]:  # packed one by one: the records are never all held as objects
            for i, info in enumerate(tqdm(data["images"], desc="records", unit="img", leave=False, disable=bar)):
                try:
                    record = read(i, info)
                except PathEscapeError:
                    raise
                except DatasetError as err:
                    if not list_broken:
                        raise
                    dataset.broken.append(str(err))
                    continue
                if record is not None:
                    yield record

        dataset.records = PackedRecords(records())
        return dataset

    def _skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        self.skipped_examples.setdefault(reason, example)

    # -- pixels ----------------------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[ImageRecord]:
        return iter(self.records)

    @functools.cached_property
    def record_labels(self) -> RecordLabels:
        """Which labels each record carries (one pass over the records, kept: they do not change once opened)."""
        n, k = len(self.records), self.schema.num_joints
        pose, parts, joints = np.zeros(n, bool), np.zeros(n, bool), np.zeros(k, bool)
        annotations, largest = 0, -1.0
        for i, record in enumerate(self.records):
            pose[i], parts[i] = record.pose_labeled, record.parts_path is not None
            if record.pose_labeled:
                labelled = record.keypoints[..., 2] > 0
                joints |= labelled.any(0)
                annotations += sum(not ann.get("iscrowd") for ann in record.annotations)
                if labelled.any():
                    largest = max(largest, float(record.keypoints[..., :2][labelled].max()))
        return RecordLabels(pose, parts, joints, annotations, largest)

    def unread_parts(self, remedy: str) -> str | None:
        """What to say where its annotation file lists part classes but no part folder was given or found (its parts
        then go neither counted, trained nor scored), with `remedy` (how the caller's user gives one) and a `parts/`
        folder beside the images or the file, if there is one; None otherwise."""
        if not self.schema.has_parts or self.parts_dir is not None:
            return None
        folders = (self.image_dir.parent, self.annotation_file.parent)
        beside = [d / PARTS_DIR for d in folders if (d / PARTS_DIR).is_dir()]
        hint = f" ({beside[0]}?)" if beside else ""
        return (f"{self.annotation_file} lists part classes, but no part maps are read without {remedy}{hint}: the "
                f"parts are neither counted, trained nor scored")

    def label_concerns(self, *, unlabelled_joints: bool = True) -> list[str]:
        """What the labels say that is likely a mistake, in words (`inspect` notes them, `train` warns): joints
        given in 0..1 instead of pixels, people who label no joint (each an ignore region), and, with
        `unlabelled_joints`, joints no person labels (their channels are not trained from it)."""
        labels, concerns = self.record_labels, []
        if 0 <= labels.largest <= 1.0 and any(min(r.width, r.height) > 4 for r in self.records[:100]):
            concerns.append(f"every labelled joint lies within 1 px of its image's top-left corner (the largest "
                            f"coordinate is {labels.largest:g}): are they normalised to 0..1? The format's keypoints "
                            f"are pixels")
        if not labels.joints.any() and labels.annotations:
            concerns.append(f"none of its {labels.annotations} people (annotations of pose-labelled images) labels "
                            f"a joint (v > 0): each is an ignore region, and the pose task learns only where nobody "
                            f"is")
        elif unlabelled_joints and labels.joints.any() and not labels.joints.all():
            missing = [name for name, given in zip(self.schema.keypoints, labels.joints) if not given]
            them = "them" if len(missing) > 1 else "it"
            concerns.append(f"no person labels {', '.join(missing)}: a model neither learns {them} from it (the "
                            f"channels are masked) nor is scored on {them} there")
        return concerns

    @property
    def has_parts(self) -> bool:
        """Whether any record carries a part label map (and the schema names part classes)."""
        return self.schema.has_parts and bool(self.record_labels.parts.any())

    @property
    def has_people(self) -> bool:
        """Whether any pose-labelled record holds a person with a labelled joint: what OKS AP and PCKh score."""
        return bool(self.labelled_joints.any())

    @property
    def labelled_joints(self) -> np.ndarray:
        """(K,) bool: the joints some pose-labelled person of the dataset has labelled. One no person has is a joint
        the dataset does not annotate (PASCAL's Berkeley keypoints have no head top): training masks its channels
        as it does a source's joints that its schema lacks, instead of teaching "no such joint anywhere"."""
        return self.record_labels.joints

    @property
    def annotated_joints(self) -> np.ndarray:
        """(K,) bool: the joints whose channels this dataset's samples supervise (`joint_mask`): those some person
        labels; every joint when no person labels any (pose-labelled images without people teach "nobody here")."""
        labelled = self.labelled_joints
        return labelled if labelled.any() else np.ones(self.schema.num_joints, bool)

    @property
    def scoring_schema(self) -> Schema:
        """The schema its predictions are scored in: its own (a dataset read in another schema, `MappedSource`, keeps
        the OKS sigmas its file gives)."""
        return self.schema

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
        """(H, W, 3) uint8 RGB, turned by the record's `orientation` (an unlabelled photo's EXIF tag; 1 for annotated
        images). Raises DatasetError for unreadable/truncated files or a size mismatch."""
        turned = record.orientation in SIDES_SWAPPED
        stored = (record.width, record.height) if turned else (record.height, record.width)
        return upright(read_image(record.image_path, expect_hw=stored, record=record.image_id), record.orientation)

    def load_parts(self, record: ImageRecord) -> np.ndarray | None:
        """(H, W) uint8 part labels, or None when the image has no part annotation."""
        if record.parts_path is None:
            return None
        path = record.parts_path
        parts = read_label_png(path, self.schema.part_classes, record=record.image_id)
        if parts.shape != (record.height, record.width):
            raise DatasetError(
                f"{path}: part map is {parts.shape[1]}x{parts.shape[0]} but image id {record.image_id} is "
                f"{record.width}x{record.height}"
                f"{turned_note(record.image_path, (record.height, record.width), parts.shape, 'its part map')}"
            )
        return parts


def person_category(categories: list[Any]) -> int:
    """The index of the category that describes the people: the first that lists `keypoints` or `part_classes`
    (categories[0] in COCO's files and posepart's), 0 where none does. Why not always the first: Roboflow exports
    a placeholder category first, Label Studio appends its keypoint category last and CVAT lists its labels in the
    project's order; before, such a file read as a schema of 0 joints, every person dropped without a word."""
    return next((i for i, c in enumerate(categories)
                 if isinstance(c, dict) and (c.get("keypoints") or c.get("part_classes"))), 0)


def people_categories(categories: list[dict[str, Any]], ids: list[int], person: int) -> tuple[set[int], dict[int, Any]]:
    """The ids of the categories read as people (`ids[i]` is categories[i]'s), and the names by id of the keypoint
    categories that are not: the people's category `person` (`person_category`) and every category of the same joints
    and limbs, one kind of body (AP-10K's 54 species share one list); another skeleton's people are skipped with a
    count by the callers (before: dropped without a word)."""
    kind = categories[person]
    same_kind = {ids[i] for i, c in enumerate(categories) if c.get("keypoints") and
                 (c.get("keypoints"), c.get("skeleton")) == (kind.get("keypoints"), kind.get("skeleton"))}
    same_kind.add(ids[person])
    return same_kind, {ids[i]: c.get("name") for i, c in enumerate(categories)
                       if c.get("keypoints") and ids[i] not in same_kind}


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
