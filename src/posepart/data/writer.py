"""Writing datasets in the posepart format (see `posepart.data.format` for the layout and the reader)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from posepart.data.format import ANNOTATIONS_FILE, IMAGES_DIR, PARTS_DIR, DatasetError
from posepart.data.images import first_label_outside
from posepart.data.validate import keypoints as validate_keypoints
from posepart.errors import OutputError, writing
from posepart.files import LOCK_FILE, fsync_dir, lock_output, write_image, write_json_atomic
from posepart.schema import IGNORE_LABEL, Schema

CONVERSION_FILE = "conversion.json"  # a converter's record beside annotations.json (ignored by the format reader)
_WRITING, _REPLACED = ".writing-dataset-", ".replaced-dataset-"  # `DatasetWriter`'s hidden folders in a root


def claim_dataset_folder(root: str | Path, *, overwrite: bool, inputs: Sequence[Path] = ()) -> None:
    """Refuse a folder that already holds a dataset (its annotations.json, or files in its images/ or parts/) unless
    `overwrite`, whose writer replaces its images/ and parts/ whole when it closes (`DatasetWriter`): stale part maps
    would otherwise attach to the new images of the same names, and other files would join the dataset. `inputs`,
    the files and folders the new dataset is made from, must not lie in what it replaces (a release whose images are
    ROOT/images/, converted into ROOT: `--overwrite` would delete them)."""
    root = Path(root)
    replaced = [(root / name).resolve() for name in (ANNOTATIONS_FILE, IMAGES_DIR, PARTS_DIR)]
    for given in inputs:
        inside = next((r for r in replaced if given.resolve().is_relative_to(r)), None)
        if inside is not None:
            raise DatasetError(f"{given}: an input of the conversion lies in {inside}, which writing the dataset "
                               f"into {root} replaces; choose another output folder")
    held = [root / name for name in (ANNOTATIONS_FILE, IMAGES_DIR, PARTS_DIR)
            if (root / name).is_file() or ((root / name).is_dir() and any((root / name).iterdir()))]
    linked = next((root / name for name in (IMAGES_DIR, PARTS_DIR) if (root / name).is_symlink()
                   and (overwrite or (root / name).is_dir() and any((root / name).iterdir()))), None)
    if linked is not None:  # before: rmtree refused the link silently and the writer filled its target
        raise OutputError(f"{linked} is a link ({linked.resolve()}); a dataset written into {root} would write "
                          f"there: remove the link or choose another output folder")
    if held and not overwrite:  # an images/ folder without annotations too: its files would be overwritten or mixed
        raise DatasetError(f"{held[0]} exists; pass --overwrite to replace the dataset")


class DatasetWriter:
    """Write a dataset in the posepart format. A folder that already holds a dataset is refused unless `overwrite`
    (`claim_dataset_folder`: its part maps would attach to new images; `inputs` may not lie in what it replaces).

    Everything is written into a hidden folder in `root` (`folder`) and takes its place on `close()`, an earlier
    dataset's images/, parts/ and conversion record going then, annotations.json last: a write that fails (an error,
    Ctrl-C) leaves `root` as it was, an earlier dataset included (before: a conversion that failed half-way left
    images without annotations, or an --overwrite's old annotations over a few new images). The writer holds
    `root`'s lock (`lock_output`) from start to end, so a second writer into `root` is refused, and it removes the
    hidden folders a killed writer (SIGTERM, kill -9) left there. `--overwrite` needs room for both datasets until
    `close()`. Other files written into `folder` before `close()` take their places too (a conversion's record).

    >>> with DatasetWriter(root, schema) as writer:
    ...     writer.add(image_rgb, annotations, parts)
    """

    def __init__(self, root: str | Path, schema: Schema, *, overwrite: bool = False,
                 inputs: Sequence[Path] = (), info: dict[str, Any] | None = None) -> None:
        self.root = Path(root)
        self.schema = schema
        # annotations.json's COCO `info`: what made the dataset (`posepart synth` records its arguments there)
        self.info = {"description": "posepart dataset", **(info or {})}
        self.images: list[dict[str, Any]] = []
        self.annotations: list[dict[str, Any]] = []
        self._made_root = not os.path.lexists(self.root)
        self._lock = contextlib.ExitStack()
        self._locked = False  # this writer holds `root`'s lock
        self._done = False
        self.folder = self.root / f"{_WRITING}{uuid.uuid4().hex[:8]}"  # hidden: not part of the dataset
        try:
            self._lock.enter_context(lock_output(self.root))  # creates `root`
            self._locked = True
            claim_dataset_folder(self.root, overwrite=overwrite, inputs=inputs)  # `inputs`: what it is made from
            with writing(self.root):
                for leftover in self.root.iterdir():  # a killed writer's (none is alive: the lock is ours)
                    if leftover.name.startswith((_WRITING, _REPLACED)) and leftover.is_dir() \
                            and not leftover.is_symlink():
                        shutil.rmtree(leftover)
                (self.folder / IMAGES_DIR).mkdir(parents=True)
                if schema.has_parts:
                    (self.folder / PARTS_DIR).mkdir()
        except BaseException:
            self.discard()
            raise

    def _write_to(self, relative: Path) -> Path:
        """Where `add` writes `relative` (under `folder`); an error once the writer is closed or its folder gone."""
        if self._done or not self.folder.is_dir():  # before: a closed writer's images went to a new hidden folder
            raise OutputError(f"{self.root}: this dataset writer is closed, or its folder {self.folder.name} was "
                              f"removed by another process")
        return self.folder / relative

    def add(
        self,
        image: np.ndarray,
        annotations: Sequence[dict[str, Any]],
        parts: np.ndarray | None = None,
        *,
        file_name: str | None = None,
        jpeg_quality: int = 90,
        **image_fields: Any,
    ) -> int:
        """Write one RGB image, uint8 (H, W, 3) or grey (H, W) (+ an optional uint8 (H, W) part map), and record its
        annotations (COCO dicts; numpy values are written as JSON numbers); returns the image id. Wrong input is a
        DatasetError here, before anything of the image is written."""
        image_id = len(self.images) + 1
        file_name = file_name or f"{image_id:06d}.jpg"
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or not (
                image.ndim == 2 or image.ndim == 3 and image.shape[2] == 3):  # before: 0..1 floats written black
            kind = getattr(image, "dtype", type(image).__name__)
            shape = getattr(image, "shape", ())
            rgba, single = len(shape) == 3 and shape[2] == 4, len(shape) == 3 and 1 in (shape[0], shape[2])
            how = ("scale floats in [0, 1] by 255 and round first" if kind != np.uint8 else
                   "drop the alpha channel, image[..., :3]" if rgba else
                   "a grey image is (H, W): image.squeeze()" if single else
                   "channels last: image.transpose(1, 2, 0)" if len(shape) == 3 and shape[0] == 3 else "")
            how = f" ({how})" if how else ""
            raise DatasetError(f"{file_name}: DatasetWriter writes uint8 RGB (H, W, 3) or grey (H, W) images, got "
                               f"{kind} of shape {shape or '?'}{how}")
        height, width = image.shape[:2]
        if parts is not None and not (isinstance(parts, np.ndarray) and parts.shape == (height, width)
                                      and parts.dtype == np.uint8):
            raise DatasetError(f"{file_name}: part map must be uint8 {height}x{width}, got "
                               f"{getattr(parts, 'shape', type(parts).__name__)} {getattr(parts, 'dtype', '')}")
        classes = self.schema.num_parts  # before: written, and refused only when the dataset was read
        if parts is not None and (outside := first_label_outside(parts, classes)) is not None:
            x, y = outside
            allowed = (f"the schema's classes 0..{classes - 1} {list(self.schema.part_classes)}" if classes
                       else "the schema, which has no part classes")
            raise DatasetError(f"{file_name}: part label {int(parts[y, x])} at (x={x}, y={y}) is not in "
                               f"{allowed}; {IGNORE_LABEL} (ignored) is the only other allowed value")
        annotations = [_plain(ann) for ann in annotations]  # before: numpy values failed in close(), images written
        for ann in annotations:
            if ann.get("keypoints") not in (None, []):
                validate_keypoints(ann["keypoints"], self.schema.num_joints, f"{file_name}: annotation keypoints")
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR) if image.ndim == 3 else image
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)] if file_name.lower().endswith((".jpg", ".jpeg")) else []
        _write_encoded(self._write_to(Path(IMAGES_DIR) / file_name), bgr, params)
        if parts is not None:
            _write_encoded(self._write_to(Path(PARTS_DIR) / Path(file_name).with_suffix(".png")), parts, [])
        self.images.append({"id": image_id, "file_name": file_name, "width": width, "height": height, **image_fields})
        for ann in annotations:
            self.annotations.append(
                {**ann, "id": len(self.annotations) + 1, "image_id": image_id, "category_id": 1}
            )
        return image_id

    def close(self) -> Path:
        """Write annotations.json, put the new dataset in `root`'s place (see the class) and return the JSON's path.
        A close that fails puts back what it had moved and removes what was written. Once only."""
        if self._done:
            raise OutputError(f"{self.root}: this dataset writer is closed already")
        data = {
            "info": self.info,
            "images": self.images,
            "annotations": self.annotations,
            "categories": [self.schema.to_category()],
        }
        earlier = self.root / f"{_REPLACED}{uuid.uuid4().hex[:8]}"
        moved: list[tuple[Path, Path]] = []  # (from, to), in order
        try:
            write_json_atomic(self._write_to(Path(ANNOTATIONS_FILE)), data)
            with writing(self.root):
                earlier.mkdir()
                for name in (IMAGES_DIR, PARTS_DIR, CONVERSION_FILE):  # whole: stale part maps would attach
                    if os.path.lexists(self.root / name):
                        os.replace(self.root / name, earlier / name)
                        moved.append((self.root / name, earlier / name))
                for entry in sorted(self.folder.iterdir(), key=lambda e: e.name == ANNOTATIONS_FILE):
                    os.replace(entry, self.root / entry.name)
                    moved.append((entry, self.root / entry.name))
        except BaseException:
            for source, target in reversed(moved):  # the earlier dataset as it was
                with contextlib.suppress(OSError):
                    os.replace(target, source)
            shutil.rmtree(earlier, ignore_errors=True)
            self.discard()
            raise
        self._done = True
        shutil.rmtree(earlier, ignore_errors=True)
        shutil.rmtree(self.folder, ignore_errors=True)
        fsync_dir(self.root)
        self._lock.close()
        return self.root / ANNOTATIONS_FILE

    def discard(self) -> None:
        """Remove what was written (an earlier dataset stays), and `root` when this writer made it; release it."""
        self._done = True
        shutil.rmtree(self.folder, ignore_errors=True)
        if self._made_root and self._locked and self.root.is_dir() and not self.root.is_symlink():
            with contextlib.suppress(OSError):  # the lock file while it is held: a writer refused leaves another's
                (self.root / LOCK_FILE).unlink(missing_ok=True)
                self.root.rmdir()
        self._lock.close()

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if self._done:  # closed inside the block
            return
        if exc_type is None:
            self.close()
        else:
            self.discard()


def _plain(annotation: dict[str, Any]) -> dict[str, Any]:
    """A copy of an annotation with numpy arrays and scalars as JSON lists and numbers (Python values unchanged)."""
    def convert(value: Any) -> Any:
        if isinstance(value, (np.ndarray, np.generic)):
            return value.tolist()
        raise DatasetError(f"annotation value {value!r} ({type(value).__name__}) cannot be written as JSON")

    return json.loads(json.dumps(dict(annotation), default=convert))


def _write_encoded(path: Path, array: np.ndarray, params: list[int]) -> None:
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_image(path, array, params)
