"""From a user's image to network input, without torch: loading, canvas sizing and letterboxing (the normalisation
is `posepart.data.augment.normalize`, shared with training).

Prediction and evaluation keep the image's aspect ratio: the long side is scaled to the input size and the short side
padded (grey, centred) up to the next multiple of the stride (`posepart.data.augment.canvas_size`), so a 16:9 frame
costs a 368x208 canvas rather than 368x368. Everything here is numpy and OpenCV, so the ONNX Runtime path
(`posepart.inference` with an `.onnx` model) runs without torch installed.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from posepart.data.augment import PAD_VALUE, letterbox_affine
from posepart.data.format import DatasetError
from posepart.data.images import decode_image, exif_orientation, float_to_uint8, read_image, to_rgb8, upright
from posepart.errors import PosepartError

# the containers OpenCV's FFmpeg backend reads (before: a phone's .3gp or a broadcast .ts given by name was "not a
# decodable image")
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".ts",
                            ".mts", ".m2ts", ".flv", ".ogv"})
_MAX_SINGLE_WARP_SHRINK = 2.0  # shrink more than this: INTER_AREA first, so big frames are not aliased


class InputError(PosepartError, ValueError):
    """An input cannot be used as an image; the message names the input and says why."""


def describe(item: Any) -> str:
    """A short name for an input in messages: the path (a file object's name), or the array's type and shape."""
    if isinstance(item, (str, Path)):
        return str(item)
    if is_file_object(item) and isinstance(getattr(item, "name", None), str):
        return item.name
    shape = getattr(item, "shape", None)
    if shape is not None:
        return f"<{type(item).__name__} {tuple(shape)} {getattr(item, 'dtype', '')}>".replace(" >", ">")
    size = getattr(item, "size", None)
    return f"<{type(item).__name__} {size}>" if size is not None else f"<{type(item).__name__}>"


def _array_to_rgb8(array: np.ndarray, name: str) -> np.ndarray:
    """An RGB-ordered array (grey (H, W) or (H, W, 1), RGB, RGBA; uint8, uint16, bool or float in [0, 1]; other
    integer types holding 0..255) -> RGB8. The scale comes from the dtype, never from the values: an int32 image with
    one pixel at 256, or a float image in 0..255, is an InputError, not an image made black or white."""
    if array.dtype.kind not in "buif":
        raise InputError(f"{name}: unsupported array dtype {array.dtype} (give uint8, uint16 or float in [0, 1])")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InputError(f"{name}: expected an image of shape (H, W), (H, W, 3) or (H, W, 4), got {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise InputError(f"{name}: zero-size image ({array.shape[1]}x{array.shape[0]})")
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        try:
            array = float_to_uint8(array, name, " (divide a 0..255 image by 255, or pass it as uint8)")
        except DatasetError as err:
            raise InputError(str(err)) from None
    elif array.dtype not in (np.uint8, np.uint16):
        if array.min() < 0 or array.max() > 255:
            raise InputError(f"{name}: {array.dtype} values outside 0..255 (give 8-bit values, or a uint16 array "
                             f"for 16-bit ones)")
        array = array.astype(np.uint8)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2RGB)
    return array[:, :, :3].copy() if array.shape[2] == 4 else array


def _pil_to_rgb8(image: Any, name: str) -> np.ndarray:
    """A PIL image -> RGB8 (`_pil_pixels`); PIL decodes lazily, so a truncated file or a closed image fails here: an
    InputError for this image (before, its OSError or AssertionError ended the whole list)."""
    try:
        return _pil_pixels(image, name)
    except InputError:
        raise
    except (OSError, ValueError, AssertionError, SyntaxError) as err:
        raise InputError(f"{name}: PIL could not read the image ({type(err).__name__}: {err})") from None


def _pil_pixels(image: Any, name: str) -> np.ndarray:
    """A PIL image -> RGB8. 16-bit modes ("I;16...") are scaled like 16-bit PNGs. "I" (32-bit) and "F" (float) state
    no range: PIL's own is 0..255 (what `convert("I")` / `convert("F")` of an 8-bit image give), so values up to 255
    are 8-bit; an "I" image above 255 is 16-bit (older Pillows open 16-bit PNGs as "I"), and an "F" image within
    [0, 1] is in numpy's float convention (in PIL's 0..255 it would be black, so that reading loses nothing). Other
    values: InputError.
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return _array_to_rgb8(np.asarray(image).astype(np.uint16), name)
    if image.mode in ("I", "F"):
        array = np.asarray(image).astype(np.float64)
        if array.size and not np.isfinite(array).all():
            raise InputError(f"{name}: image contains NaN or inf")
        low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
        if image.mode == "F" and low >= 0.0 and high <= 1.0:
            return _array_to_rgb8(array.astype(np.float32), name)
        top = 65535 if image.mode == "I" else 255
        if low < 0 or high > top:
            raise InputError(f"{name}: a PIL {image.mode!r} image holds values in 0..{top}, this one {low:g}..{high:g}")
        if high > 255:
            return _array_to_rgb8(array.astype(np.uint16), name)
        return _array_to_rgb8(np.rint(array).astype(np.uint8), name)
    if image.width == 0 or image.height == 0:
        raise InputError(f"{name}: zero-size image ({image.width}x{image.height})")
    return np.asarray(image.convert("RGB"))


def is_file_object(item: Any) -> bool:
    """A binary file object (an open file, `io.BytesIO`, an upload's stream): one image's bytes, not a batch of lines
    (before, iterating one gave a list of thousands of failed results)."""
    return callable(getattr(item, "read", None)) and not is_pil_image(item)


def is_pil_image(item: Any) -> bool:
    """A PIL image (it has a `read` of its own), told without importing PIL."""
    return hasattr(item, "mode") and hasattr(item, "convert")


def _decode_bytes(item: Any, name: str) -> np.ndarray:
    """An image file's bytes (bytes, bytearray, memoryview, a binary file object) -> RGB8, decoded and turned upright
    as a path is: what a service receives, without writing it to a file first."""
    data = item.read() if is_file_object(item) else bytes(item)
    if not isinstance(data, (bytes, bytearray)):
        raise InputError(f"{name}: a file object gives an image's bytes when open in binary mode ('rb'), this one "
                         f"gave {type(data).__name__}")
    try:
        image = decode_image(np.frombuffer(data, np.uint8), name)
    except DatasetError as err:
        raise InputError(str(err)) from None
    return upright(image, exif_orientation(io.BytesIO(data)))


def load_image(item: Any) -> np.ndarray:
    """Any supported input -> (H, W, 3) uint8 RGB; raises InputError naming the input.

    Paths, and an image file's bytes (bytes, or a binary file object such as `io.BytesIO`), are decoded by OpenCV
    like dataset images (grey, RGBA, 16-bit, truncated JPEGs caught) and turned upright by their EXIF orientation, as
    photo viewers show them (a phone photo tagged as sideways). numpy arrays are taken as RGB (or grey/RGBA), uint8,
    uint16, or float in [0, 1]; PIL images in any mode; torch tensors as torchvision lays them out, (C, H, W). All
    three are taken as given.
    """
    name = describe(item)
    if isinstance(item, (bytes, bytearray, memoryview)) or is_file_object(item):
        return _decode_bytes(item, name)
    if isinstance(item, os.PathLike) and not isinstance(item, Path):
        item = Path(item)
    if isinstance(item, (str, Path)):
        if not str(item):  # Path("") is "." (before: "is a folder, not an image")
            raise InputError("an empty path")
        path = Path(item)
        if not path.exists():
            raise InputError(f"{path}: no such file")
        if path.is_dir():
            raise InputError(f"{path}: is a folder, not an image")
        if path.suffix.lower() in VIDEO_SUFFIXES:  # before: "not a decodable image"
            raise InputError(f"{path}: is a video: give the Predictor its frames (cv2.VideoCapture, converted with "
                             f"bgr_to_rgb; Predictor.stream for long ones), or run `posepart predict` on it")
        try:
            return upright(read_image(path), exif_orientation(path))
        except DatasetError as err:
            raise InputError(str(err)) from None
    if isinstance(item, np.ndarray):
        return _array_to_rgb8(item, name)
    if is_pil_image(item):
        return _pil_to_rgb8(item, name)
    if is_tensor(item):
        return _tensor_to_rgb8(item, name)
    raise InputError(f"{name}: unsupported input type {type(item).__name__} (give a path, an image file's bytes, a "
                     f"numpy array, a PIL image or a torch tensor)")


def is_tensor(item: Any) -> bool:
    """A torch.Tensor or a subclass of it (torchvision's `tv_tensors.Image`, a Parameter), told without importing torch
    (the ONNX Runtime install has none)."""
    return any(cls.__name__ == "Tensor" and cls.__module__ == "torch" for cls in type(item).__mro__)


def _tensor_to_rgb8(tensor: Any, name: str) -> np.ndarray:
    """A torch tensor in torchvision's layout -> RGB8: (C, H, W) with C = 1, 3 or 4, or grey (H, W); uint8 (as
    `torchvision.io.decode_image` gives) or float in [0, 1] (`ToTensor`, `to_dtype(..., scale=True)`), on any device.
    The channels come first, as everywhere in torch: a channels-last (H, W, 3) tensor is refused rather than read as
    an image 3 pixels wide."""
    if tensor.ndim == 3 and tensor.shape[0] not in (1, 3, 4):
        raise InputError(f"{name}: expected a tensor of shape (C, H, W) with C = 1, 3 or 4 (torchvision's layout), "
                         f"or (H, W); for channels last give tensor.permute(2, 0, 1) or a numpy array")
    tensor = tensor.detach().cpu()
    if tensor.is_floating_point():
        tensor = tensor.float()  # numpy has no bfloat16; float16 is widened too, at no cost to 8-bit output
    array = tensor.numpy()
    return _array_to_rgb8(np.moveaxis(array, 0, -1) if array.ndim == 3 else array, name)


def bgr_to_rgb(frame: np.ndarray) -> np.ndarray:
    """An OpenCV-decoded frame (BGR, BGRA or grey, any depth) -> RGB8."""
    return to_rgb8(frame, describe(frame))


def letterbox(image: np.ndarray, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Scale `image` (H, W, 3) to fit `out_hw`, centred, grey padding -> (canvas (H', W', 3) uint8, matrix (2, 3)
    float64 from image pixels to canvas pixels: `posepart.data.augment.letterbox_affine`, as in evaluation).

    A shrink by more than 2x first goes through cv2.resize(INTER_AREA) so large frames are low-pass filtered rather
    than aliased; the returned matrix accounts for it exactly.
    """
    out_h, out_w = out_hw
    height, width = image.shape[:2]
    matrix = letterbox_affine((height, width), out_hw).matrix
    if (height, width) == (out_h, out_w) and np.array_equal(matrix, np.eye(2, 3)):
        return np.ascontiguousarray(image).copy(), matrix  # already canvas-sized: what the identity warp gives
    source = image
    if matrix[0, 0] < 1.0 / _MAX_SINGLE_WARP_SHRINK:
        # pre-shrink to about twice the final size; cv2.resize maps x -> (x + 0.5) * f - 0.5 per axis
        small_w = max(1, min(width, round(width * matrix[0, 0] * _MAX_SINGLE_WARP_SHRINK)))
        small_h = max(1, min(height, round(height * matrix[1, 1] * _MAX_SINGLE_WARP_SHRINK)))
        source = cv2.resize(image, (small_w, small_h), interpolation=cv2.INTER_AREA)
        fx, fy = small_w / width, small_h / height
        pre = np.array([[fx, 0.0, 0.5 * fx - 0.5], [0.0, fy, 0.5 * fy - 0.5]])
        warp = matrix @ np.linalg.inv(np.vstack([pre, [0.0, 0.0, 1.0]]))  # small image -> canvas
        canvas = cv2.warpAffine(source, warp, (out_w, out_h), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=(PAD_VALUE,) * 3)
        return canvas, matrix
    canvas = cv2.warpAffine(source, matrix, (out_w, out_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(PAD_VALUE,) * 3)
    return canvas, matrix
