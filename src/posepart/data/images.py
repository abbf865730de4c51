"""Reading image files and arrays into (H, W, 3) uint8 RGB, and part label PNGs into (H, W) uint8: what the dataset
reader, the converters and the Predictor share. A file that cannot be used is a DatasetError naming it (a truncated
JPEG is reported as such, not padded with grey as libjpeg would)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import cv2
import numpy as np

from posepart.data.validate import DatasetError
from posepart.schema import IGNORE_LABEL


# The most pixels OpenCV decodes in one image (its CV_IO_MAX_IMAGE_PIXELS, 2**30 unless the environment says more)
MAX_DECODED_PIXELS = int(os.environ.get("CV_IO_MAX_IMAGE_PIXELS", 1 << 30))


def jpeg_ends(data: bytes) -> bool:
    """Whether a JPEG's image data is followed by its end-of-image marker, wherever that lies: cameras and phones
    append trailers after it (maker notes, a Motion Photo's video). The header segments before the first scan are
    skipped by their lengths, since an EXIF thumbnail there holds an end-of-image marker of its own; in the scan
    data a 0xFF byte is always stuffed (FF 00) or a restart marker, so the first FF D9 there is the end."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos) != -1
        if marker == 0xFF:  # a fill byte
            pos += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


# EXIF orientation (tag 0x0112) -> how to turn the stored pixels upright, in numpy's terms (TIFF 6.0's table:
# 2 mirrored, 3 upside down, 4 flipped, 5 transposed, 6 stored turned 90 degrees anticlockwise, 7 transversed, 8 stored
# turned clockwise). Written here because `read_image` is shared with datasets, whose annotations refer to the stored
# pixels (it decodes with IMREAD_UNCHANGED, which ignores the tag but for TIFF files, whose decoder applies it), while
# photos given to the Predictor and unlabelled folders are turned upright; PIL's exif_transpose takes PIL images.
_UPRIGHT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.swapaxes(0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, -1)[::-1],
    8: lambda a: np.rot90(a, 1),
}
SIDES_SWAPPED = frozenset({5, 6, 7, 8})  # the orientations stored with width and height exchanged


def exif_orientation(path: Path | BinaryIO) -> int:
    """The EXIF orientation a photo (a file, or its bytes as a binary file object) is tagged with (1 = stored upright,
    also when the file has no tag or no EXIF); PIL reads the header only, not the pixels, so its decompression-bomb
    guard for large photos does not apply."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                if image.format == "TIFF":  # OpenCV's TIFF decoder applies the tag itself (IMREAD_UNCHANGED too)
                    return 1
                if image.format == "PNG" and "exif" not in image.info:  # getexif() would decode every pixel to
                    return 1  # look for an eXIf chunk after them (20 ms a 1080p frame: inspect, unlabelled folders)
                value = image.getexif().get(0x0112, 1)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # PIL cannot parse it: no tag to apply
        return 1
    return value if isinstance(value, int) and value in _UPRIGHT else 1


READ_AS_STORED = ("dataset images are read as stored, as COCO's annotations refer to them; if these were annotated as "
                  "a viewer shows them (turned), save them upright (PIL's ImageOps.exif_transpose)")


def tagged_as_stored(path: Path, orientation: int) -> bool:
    """Whether an image read as stored (`orientation` 1: an annotated one, whose labels refer to the stored pixels)
    carries an EXIF orientation tag, which a viewer and an annotation tool may have applied: `inspect` counts such
    images and a run warns of them (`READ_AS_STORED`)."""
    return orientation == 1 and exif_orientation(path) != 1


def upright(image: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (H, W, ...) -> the image as a viewer shows it under EXIF `orientation` (1..8)."""
    turn = _UPRIGHT.get(orientation)
    return image if turn is None else np.ascontiguousarray(turn(image))


def read_image(path: Path, *, expect_hw: tuple[int, int] | None = None, record: Any = None) -> np.ndarray:
    """Decode an image file to (H, W, 3) uint8 RGB (grey, RGBA and 16-bit inputs converted).

    A JPEG missing its end-of-image marker is reported as truncated rather than silently padded with grey, which is
    what libjpeg would otherwise do.
    """
    what = f" (image id {record})" if record is not None else ""
    try:
        raw = np.fromfile(path, np.uint8)
    except OSError as err:
        raise DatasetError(f"{path}: cannot read{what}: {err.strerror}") from None
    image = decode_image(raw, path, what)
    if expect_hw is not None and image.shape[:2] != tuple(expect_hw):
        raise DatasetError(
            f"{path}: image is {image.shape[1]}x{image.shape[0]} but the annotations say "
            f"{expect_hw[1]}x{expect_hw[0]}{what}{turned_note(path, image.shape[:2], expect_hw, 'annotations')}"
        )
    return image


def decode_image(raw: np.ndarray, name: Path | str, what: str = "") -> np.ndarray:
    """An image file's bytes (uint8) -> (H, W, 3) uint8 RGB, as `read_image` decodes a file (`name`, `what`: for
    messages); a DatasetError for an empty, truncated or undecodable one."""
    if raw.size == 0:
        raise DatasetError(f"{name}: empty file{what}")
    if raw[:2].tobytes() == b"\xff\xd8" and b"\xff\xd9" not in raw[-64:].tobytes() and not jpeg_ends(raw.tobytes()):
        raise DatasetError(f"{name}: truncated JPEG (no end-of-image marker){what}")
    try:
        image = cv2.imdecode(raw, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:  # e.g. a header of more pixels than OpenCV decodes (MAX_DECODED_PIXELS)
        reason = err.err if getattr(err, "err", None) else str(err).strip().splitlines()[-1]
        raise DatasetError(f"{name}: OpenCV cannot decode it{what}: {reason}") from None
    if image is None or image.size == 0:
        raise DatasetError(f"{name}: not a decodable image{what}")
    return to_rgb8(image, name)


def turned_note(path: Path, stored_hw: Sequence[int], labelled_hw: Sequence[int], labels: str) -> str:
    """Why an image's labels (`labels`: "annotations", "its part map") have its size turned, where its EXIF
    orientation swaps its sides (else ""): they were made on the photo as viewers show it, and a dataset's images
    are read as stored."""
    stored, labelled = tuple(stored_hw), tuple(labelled_hw)
    if stored == labelled or stored != labelled[::-1] or (tag := exif_orientation(path)) not in SIDES_SWAPPED:
        return ""
    return (f"; its EXIF orientation {tag} shows it turned, as {labelled[1]}x{labelled[0]}: {labels} made on the "
            f"photo as viewers show it? Dataset images are read as stored (COCO's annotations refer to the stored "
            f"pixels): save such photos upright (PIL's ImageOps.exif_transpose)")


def first_label_outside(labels: np.ndarray, classes: int) -> tuple[int, int] | None:
    """(x, y) of the first pixel whose label is neither a class (0..classes - 1) nor IGNORE_LABEL; None if none. The
    one rule part label maps follow, read (`read_label_png`) or written (`DatasetWriter.add`)."""
    bad = ((labels >= classes) & (labels != IGNORE_LABEL)) | (labels < 0)
    if not bad.any():
        return None
    y, x = np.argwhere(bad)[0]
    return int(x), int(y)


def read_label_png(path: Path, classes: int | Sequence[str], *, record: Any = None, wide: bool = False
                   ) -> np.ndarray:
    """Decode a part label map: a single-channel 8-bit PNG, or an indexed (palette) one, whose indices are the labels
    (PASCAL VOC's convention, and what `posepart predict` writes) -> (H, W) uint8, every value below `classes` (a
    count, or the class names) or IGNORE_LABEL. `wide`: also 16- and 32-bit grey PNGs (some datasets' own label
    files; a converter's).
    Pillow, not OpenCV: OpenCV expands a palette to colours, losing the labels."""
    from PIL import Image

    what = f" (image id {record})" if record is not None else ""
    try:
        with Image.open(path) as image:
            image.load()  # a truncated file raises here
            mode, labels = image.mode, np.array(image)  # a writable copy
    except (OSError, ValueError, Image.DecompressionBombError) as err:  # UnidentifiedImageError is an OSError
        raise DatasetError(f"{path}: cannot read part label PNG{what}: {err}") from None
    if mode not in ("L", "P", *(("I", "I;16") if wide else ())):
        hint = "" if wide else ("; convert colour PNGs with `posepart convert masks` (a table of their colours, as "
                                "CVAT's labelmap.txt) or `posepart convert pascal-person-part`")  # (not inside one)
        raise DatasetError(f"{path}: part labels must be a single-channel {'' if wide else 'uint8 '}or palette PNG, "
                           f"got mode {mode} {labels.shape}{what}{hint}")
    count = classes if isinstance(classes, int) else len(classes)
    if (outside := first_label_outside(labels, count)) is not None:
        x, y = outside
        named = "" if isinstance(classes, int) else f" {list(classes)}"
        raise DatasetError(f"{path}: label value {int(labels[y, x])} at (x={x}, y={y}) above the classes "
                           f"0..{count - 1}{named}{what}; {IGNORE_LABEL} is the only other allowed value")
    return labels.astype(np.uint8, copy=False)


RAMP_NOTE_SHARE = 0.12  # a label map with more of its edge pixels on ramps than this looks interpolated (`label_ramps`)
RAMP_MIN_EDGES = 50  # ... and at least this many edge pixels (a few thin parts are no evidence)


def looks_interpolated(labels: np.ndarray) -> float | None:
    """The share of a label map's edge pixels on ramps (`label_ramps`) where it is enough to say the map was resized
    with interpolation, else None."""
    ramps, edges = label_ramps(labels)
    return ramps / edges if edges >= RAMP_MIN_EDGES and ramps > RAMP_NOTE_SHARE * edges else None


def label_ramps(labels: np.ndarray) -> tuple[int, int]:
    """(ramp pixels, edge pixels) of a label map, along rows and columns: an edge pixel has two different labels on
    either side, a ramp pixel lies strictly between them (3 between 0 and 6). A label map resized with linear, area or
    cubic interpolation (PIL's default for a grey image) has such ramps all along its edges, where each in-between
    value is another class: 22-36 % of the edge pixels of real CIHP and ATR maps resized so, 0.1-0.5 % of the same
    maps as released and under 1 % resized with nearest-neighbour interpolation (a one-pixel-wide part between two
    others is rare: the synthetic benchmark's smallest people give up to 6 %). Pixels of IGNORE_LABEL take no part
    in either count."""
    counts = [0, 0]
    for lines in (labels, labels.T):
        before, at, after = (lines[:, i : lines.shape[1] - 2 + i] for i in range(3))  # views: compared only
        known = (before != IGNORE_LABEL) & (at != IGNORE_LABEL) & (after != IGNORE_LABEL)
        edge = known & (before != after)
        counts[0] += int((edge & ((before < at) == (at < after)) & (at != before) & (at != after)).sum())
        counts[1] += int(edge.sum())
    return counts[0], counts[1]


# How far a float image may stray outside [0, 1], clipped: cubic or Lanczos resampling, sharpening and colour
# conversions of a [0, 1] image overshoot by a few percent (before, 1e-3: a resized photo was refused as if it held
# 0..255); a 0..255 image lies far beyond it.
FLOAT_SLACK = 0.1


def float_to_uint8(image: np.ndarray, name: str, hint: str = "") -> np.ndarray:
    """A float image in [0, 1] -> uint8 (a file's or a caller's array alike); a DatasetError naming it, with `hint`
    appended, when it holds NaN, inf or values outside [0, 1]."""
    if not np.isfinite(image).all():
        raise DatasetError(f"{name}: image contains NaN or inf")
    low, high = float(image.min()), float(image.max())
    if low < -FLOAT_SLACK or high > 1.0 + FLOAT_SLACK:
        raise DatasetError(f"{name}: a float image holds values in [0, 1], this one {low:g}..{high:g}{hint}")
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def to_rgb8(image: np.ndarray, path: Path | str = "image") -> np.ndarray:
    """OpenCV-decoded array (grey / BGR / BGRA; 8, 16 or 32 bit, float in [0, 1]) -> (H, W, 3) uint8 RGB. The scale
    comes from the dtype, as for arrays given to the Predictor: a float file holds [0, 1] (a float TIFF's
    convention); one outside it is refused, not clipped to black or white. `path` names it in that error."""
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    elif np.issubdtype(image.dtype, np.floating):
        image = float_to_uint8(image, str(path))
    elif image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
