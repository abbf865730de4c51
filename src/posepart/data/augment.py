"""One geometric transform per sample, applied once to image, part map, ignore mask and keypoints together.

As in detectron2, the transform is sampled first (`sample_affine` for training, `letterbox_affine` for evaluation)
and then applied to every array (`apply_affine`): scale, rotation, crop translation and horizontal flip are composed
into ONE 2x3 matrix, so each array is resampled exactly once. Coordinates follow docs/conventions.md (pixel centres at
integer coordinates, which is also what cv2.warpAffine assumes), so no half-pixel correction terms are needed.

Border rule: image padding is grey 128 (close to the ImageNet mean, as OpenPose pads); pixels that come from outside
the source image are unlabelled: part map 255 and ignore mask True. The part map and ignore mask use nearest
neighbour, the image bilinear. Photometric jitter (`photometric`) touches the image only.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from posepart.schema import IGNORE_LABEL

if TYPE_CHECKING:  # albumentations (which imports torch) is loaded only when photometric jitter is used, so the
    import albumentations as A  # geometry here serves torch-free inference (posepart.inference with ONNX Runtime)

PAD_VALUE = 128  # image border: mid grey
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32) * 255  # the model input convention (`normalize`)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32) * 255


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation ranges.

    scale_min/max multiply the base scale that fits the whole image into the network input; rotate_deg is the
    largest rotation either way; center_jitter moves the crop centre by up to this fraction of the input size
    (each axis, uniform); photometric enables `photometric` colour/noise/blur/JPEG jitter.
    """

    scale_min: float = 0.6
    scale_max: float = 1.4
    rotate_deg: float = 30.0
    flip_prob: float = 0.5
    center_jitter: float = 0.1
    photometric: bool = True

    def __post_init__(self) -> None:
        for name in ("scale_min", "scale_max", "rotate_deg", "flip_prob", "center_jitter"):  # NaN passed the checks
            if not math.isfinite(getattr(self, name)):  # below, and inf failed at the first sample with a traceback
                raise ValueError(f"{name} must be a finite number, got {getattr(self, name)}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob must be in [0, 1], got {self.flip_prob}")
        if self.rotate_deg < 0 or self.center_jitter < 0:
            raise ValueError("rotate_deg and center_jitter must be >= 0")


@dataclass(frozen=True, eq=False)
class Affine:
    """A sampled transform: `matrix` (2, 3) float64 maps original-image pixels to network-input pixels (flip
    included); `flipped` says whether left and right swap (joints and part labels are then permuted)."""

    matrix: np.ndarray
    flipped: bool = False


def _centred(scale: float, angle_deg: float, src: tuple[float, float], dst: tuple[float, float]) -> np.ndarray:
    """(2, 3) matrix: scale and rotate (counter-clockwise on screen, as cv2.getRotationMatrix2D) about `src`, which
    lands on `dst`."""
    a = math.radians(angle_deg)
    c, s = scale * math.cos(a), scale * math.sin(a)
    lin = np.array([[c, s], [-s, c]])
    return np.hstack([lin, (np.asarray(dst) - lin @ np.asarray(src))[:, None]])


def _flip(matrix: np.ndarray, out_w: int) -> np.ndarray:
    """Compose a horizontal flip of the output, x' = out_w - 1 - x, after `matrix`."""
    flipped = matrix.copy()
    flipped[0] = -matrix[0]
    flipped[0, 2] += out_w - 1
    return flipped


def sample_affine(
    rng: np.random.Generator,
    image_hw: tuple[int, int],
    out_hw: tuple[int, int],
    cfg: AugmentConfig,
    center: tuple[float, float] | None = None,
) -> Affine:
    """Random scale/rotation/crop/flip as one matrix; the crop is centred on `center` (e.g. a random person; default
    the image centre) plus jitter. The same rng draws are made whatever the config (reproducible streams)."""
    height, width = image_hw
    out_h, out_w = out_hw
    base = min(out_w / width, out_h / height)  # fits the whole image
    scale = base * rng.uniform(cfg.scale_min, cfg.scale_max)
    angle = rng.uniform(-cfg.rotate_deg, cfg.rotate_deg)
    jitter = rng.uniform(-1.0, 1.0, 2) * cfg.center_jitter * np.array([out_w, out_h])
    flipped = bool(rng.random() < cfg.flip_prob)
    src = ((width - 1) / 2, (height - 1) / 2) if center is None else (float(center[0]), float(center[1]))
    dst = ((out_w - 1) / 2 + jitter[0], (out_h - 1) / 2 + jitter[1])
    matrix = _centred(scale, angle, src, dst)
    return Affine(_flip(matrix, out_w) if flipped else matrix, flipped)


def letterbox_affine(image_hw: tuple[int, int], out_hw: tuple[int, int]) -> Affine:
    """Evaluation transform: scale the whole image to fit, centre it, pad the rest; no rotation or flip."""
    height, width = image_hw
    out_h, out_w = out_hw
    scale = min(out_w / width, out_h / height)
    return Affine(_centred(scale, 0.0, ((width - 1) / 2, (height - 1) / 2), ((out_w - 1) / 2, (out_h - 1) / 2)))


def canvas_size(image_hw: tuple[int, int], size: int, stride: int) -> tuple[int, int]:
    """(H', W') of the network canvas of prediction and evaluation: long side `size` (rounded to the stride), short
    side scaled and padded up to a multiple of the stride, so a 16:9 frame costs a 368x208 canvas, not 368x368."""
    height, width = image_hw
    long_side = max(stride, int(round(size / stride)) * stride)
    scale = long_side / max(height, width)
    out_h = max(stride, math.ceil(height * scale / stride - 1e-6) * stride)
    out_w = max(stride, math.ceil(width * scale / stride - 1e-6) * stride)
    return out_h, out_w


def labels_to_image(labels: np.ndarray, to_image: np.ndarray, image_hw: tuple[int, int]) -> np.ndarray:
    """A canvas-resolution label map back to the original image: nearest neighbour, 0 (background) outside."""
    height, width = image_hw
    return cv2.warpAffine(labels, to_image, (width, height), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0)


def invert(aff: Affine | np.ndarray) -> np.ndarray:
    """(2, 3) float64 matrix from network-input pixels back to the original image (for predictions)."""
    matrix = aff.matrix if isinstance(aff, Affine) else np.asarray(aff, np.float64)
    return cv2.invertAffineTransform(matrix.astype(np.float64))


def transform_points(matrix: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) matrix to (..., 2) points."""
    xy = np.asarray(xy, np.float64)
    return xy @ matrix[:, :2].T + matrix[:, 2]


def apply_affine(
    aff: Affine,
    image: np.ndarray,
    parts: np.ndarray | None,
    ignore: np.ndarray | None,
    keypoints: np.ndarray,
    out_hw: tuple[int, int],
    flip_perm: Sequence[int],
    part_flip_perm: Sequence[int],
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """Warp everything with one matrix -> (image (H', W', C), parts (H', W') uint8 or None, ignore (H', W') bool,
    keypoints (N, K, 3) float32).

    Outside the source: image grey, parts 255, ignore True (`ignore=None` means nothing ignored inside the image).
    Keypoints keep v (a joint moved off the input still anchors the part of its Gaussian/limb that is visible). When
    `aff.flipped`, joints are reordered by `flip_perm` and part labels remapped by `part_flip_perm`.
    """
    out_h, out_w = out_hw
    matrix = np.asarray(aff.matrix, np.float64)
    dsize = (out_w, out_h)
    channels = 1 if image.ndim == 2 else image.shape[2]
    warped = cv2.warpAffine(image, matrix, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                            borderValue=(PAD_VALUE,) * min(channels, 4))
    if image.ndim == 3 and warped.ndim == 2:  # OpenCV drops a single channel axis
        warped = warped[:, :, None]
    out_parts = None
    if parts is not None:
        out_parts = cv2.warpAffine(np.ascontiguousarray(parts, np.uint8), matrix, dsize, flags=cv2.INTER_NEAREST,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=IGNORE_LABEL)
        if aff.flipped and len(part_flip_perm):
            lut = np.arange(256, dtype=np.uint8)
            lut[: len(part_flip_perm)] = np.asarray(part_flip_perm, np.uint8)
            out_parts = lut[out_parts]
    source = np.zeros(image.shape[:2], np.uint8) if ignore is None else np.asarray(ignore, bool).view(np.uint8)
    out_ignore = cv2.warpAffine(np.ascontiguousarray(source), matrix, dsize, flags=cv2.INTER_NEAREST,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=1).astype(bool)
    kp = np.array(keypoints, np.float32, copy=True)  # (N, K, 3)
    if kp.ndim == 2:
        kp = kp[None]
    kp[..., :2] = transform_points(matrix, kp[..., :2])
    if aff.flipped and kp.shape[1]:
        kp = kp[:, np.asarray(flip_perm, np.intp)]
    return warped, out_parts, out_ignore, kp


@functools.lru_cache(maxsize=1)
def _photometric_pipeline() -> A.Compose:
    """Colour, blur, noise and JPEG jitter (image only). Built once per process and reseeded on every call, so
    concurrent calls from threads of one process must not share it (DataLoader workers are processes: fine)."""
    import albumentations as A

    return A.Compose([
        A.ColorJitter(brightness=(0.7, 1.3), contrast=(0.7, 1.3), saturation=(0.7, 1.3), hue=(-0.05, 0.05), p=0.8),
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5), p=1.0), A.MotionBlur(blur_limit=(3, 5), p=1.0)], p=0.2),
        A.GaussNoise(std_range=(0.01, 0.05), p=0.2),
        A.ImageCompression(quality_range=(40, 95), p=0.2),
    ])


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> jittered copy; deterministic given rng's state (the pipeline is reseeded from it)."""
    pipeline = _photometric_pipeline()
    pipeline.set_random_seed(int(rng.integers(0, 2**31 - 1)))
    return pipeline(image=image)["image"]


def normalize(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (3, H, W) float32 ImageNet-normalised: the model input, for training and inference.
    Computed plane by plane into the output (6x faster than broadcasting over HWC, then transposing: 0.29 against
    1.7 ms at 368x368), with the same float32 operations, so bit-identical to it."""
    out = np.empty((3,) + image.shape[:2], np.float32)
    for i, plane in enumerate(cv2.split(np.ascontiguousarray(image))):
        np.subtract(plane, IMAGENET_MEAN[i], out=out[i], dtype=np.float32)
        np.divide(out[i], IMAGENET_STD[i], out=out[i])
    return out
