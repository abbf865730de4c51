"""From a dataset record to a model-input sample: the one place pixels, augmentation and targets meet.

Records (what the JSON says) stay separate from the mapper (how a sample is made), as in detectron2: the same records
feed training (random affine + photometric jitter) and the validation loss (a square letterbox: one batch shape), and the
targets are built by the pure functions of `posepart.targets` after the single geometric transform. Metrics are not
computed from Mapper samples: evaluation runs the Predictor (`posepart.evaluate_model`).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from posepart.data.augment import (
    AugmentConfig,
    apply_affine,
    invert,
    letterbox_affine,
    normalize,
    photometric,
    sample_affine,
)
from posepart.data.format import DatasetError, ImageRecord, PosePartDataset
from posepart.heads import INPUT_SIZE, HeadMeta
from posepart.targets import build_targets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TargetConfig:
    """Network input size and the model's `HeadMeta` (target grid, sigma, PAF width; None: a stride-8 pose head's
    defaults for the dataset's schema, e.g. to map images for a model that needs no targets)."""

    input_size: int = INPUT_SIZE
    head: HeadMeta | None = None

    def __post_init__(self) -> None:
        multiple = self.head.input_multiple if self.head is not None else HeadMeta.input_multiple
        if self.input_size % multiple:
            raise ValueError(f"input_size {self.input_size} must be a multiple of {multiple}")


@dataclass
class Mapper:
    """Turns a record into a dict of arrays (see docs/conventions.md, "Batches"); random when `augment` is given.

    `joint_mask` marks the joints the source annotates (default: `PosePartDataset.annotated_joints`, those some
    person of it labels, so a joint its schema lacks and one it leaves unlabelled alike); a source with no pose or no
    parts yields `has_pose` / `has_parts` False, and its targets are masked in the loss rather than dropped.
    With `views` (a self-training run) every sample also carries `weak_image` and `unlabelled`: for an `unlabelled`
    source, `weak_image` is the view the teacher labels (the geometric augmentation alone) and `image` the strong
    view the student learns from (the same geometry, always with photometric jitter), so pseudo-labels need no
    warping; for a labelled one, `weak_image` is `image` (one batch layout for mixed batches). An unlabelled source's
    crops are centred as an image without people's are: its labels, when the file has them, stay unseen.
    With `original` (training's validation) every sample also carries `original`: the record's decoded image (H, W, 3)
    uint8, which the Predictor scores, and its part labels (H, W) uint8 or None, which score it: decoded once, in the
    loader's workers (`collate` keeps them a list).
    """

    dataset: PosePartDataset
    targets: TargetConfig = field(default_factory=TargetConfig)
    augment: AugmentConfig | None = None
    joint_mask: np.ndarray | None = None
    views: bool = False
    unlabelled: bool = False
    original: bool = False

    def __post_init__(self) -> None:
        if self.joint_mask is None:  # once, here: the Mapper goes to the loader's workers with it
            self.joint_mask = self.dataset.annotated_joints

    def __call__(self, record: ImageRecord, rng: np.random.Generator | None = None) -> dict[str, Any]:
        schema = self.dataset.schema
        size = self.targets.input_size
        out_hw = (size, size)
        image = self.dataset.load_image(record)
        parts = self.dataset.load_parts(record)
        original = {"original": (image, parts)} if self.original else {}
        ignore = record.ignore_mask()
        if self.augment is not None:
            rng = rng if rng is not None else np.random.default_rng()
            center = None
            if record.num_people and not self.unlabelled:  # an unlabelled source's people are not known to it
                box = record.boxes[rng.integers(record.num_people)]
                center = (float(box[0] + box[2] / 2), float(box[1] + box[3] / 2))
            affine = sample_affine(rng, (record.height, record.width), out_hw, self.augment, center)
        else:
            affine = letterbox_affine((record.height, record.width), out_hw)
        image, parts, ignore, keypoints = apply_affine(
            affine, image, parts, ignore, record.keypoints, out_hw, schema.flip_perm, self.dataset.label_flip_perm
        )
        weak = image
        if self.augment is not None and (self.augment.photometric or self.unlabelled):
            image = photometric(image, rng)
        head = self.targets.head if self.targets.head is not None else HeadMeta(schema)
        built = build_targets(keypoints, ignore, parts, head)
        assert self.joint_mask is not None  # set by __post_init__
        model_input = normalize(image)
        views = {"weak_image": normalize(weak) if weak is not image else model_input,
                 "unlabelled": np.bool_(self.unlabelled)} if self.views else {}
        return {
            **views,
            **original,
            "image": model_input,
            "heatmaps": built.heatmaps,
            "pafs": built.pafs,
            "pose_mask": built.pose_mask,
            "parts": built.parts,  # uint8 (255 = ignore): 8x less to copy between processes than int64
            "has_pose": np.bool_(record.pose_labeled and schema.has_pose),
            "has_parts": np.bool_(parts is not None),
            "joint_mask": self.joint_mask.astype(bool),
            "image_id": np.int64(record.image_id),
            "to_image": invert(affine),  # (2, 3) float64: predictions map back to exact original coordinates
        }


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of samples: torch's `default_collate`, but `original` (a `Mapper(original=True)` sample's: sizes
    differ, parts may be None) stays a list of (image, parts) numpy pairs."""
    originals = [sample.pop("original") for sample in samples if "original" in sample]
    if len(originals) not in (0, len(samples)):  # a shorter list would pair images with other samples' indices
        raise ValueError(f"{len(originals)} of {len(samples)} samples carry their original image")
    batch = torch.utils.data.default_collate(samples)
    return {**batch, "original": originals} if originals else batch


class MappedDataset(torch.utils.data.Dataset):
    """A torch Dataset over records. A broken sample never crashes an epoch: it is replaced by the next good one and
    counted in the sample's `skipped` field (summed by the training loop, so counts survive worker processes); the
    first broken file of each kind (truncated JPEG, size mismatch, ...) is named in the log, once per process.

    Augmentation randomness is a pure function of (seed, epoch, index): resumed runs and any worker count see the
    same samples.
    """

    def __init__(self, mapper: Mapper, *, seed: int = 0, max_skips: int = 16, split: str = "train") -> None:
        self.mapper = mapper
        self.split = split  # what the log calls it: broken samples are counted in <split>/skipped
        self.records = mapper.dataset.records
        self.seed = seed
        self.epoch = 0
        self.max_skips = max_skips
        self._reported: set[str] = set()  # kinds of breakage already logged by this process

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.draw(index, index)

    def draw(self, index: int, stream: int) -> dict[str, Any]:
        """Sample `index` with augmentation seeded by (seed, epoch, stream): a weighted mix of sources draws one
        sample several times an epoch on distinct streams (`posepart.data.mixing.SourcePlan`); `self[i]` is stream i.
        """
        errors = []
        for attempt in range(min(self.max_skips, len(self.records))):
            i = (index + attempt) % len(self.records)
            rng = np.random.default_rng([self.seed, self.epoch, stream + i - index])
            try:
                sample = self.mapper(self.records[i], rng)
            except DatasetError as err:
                errors.append(str(err))
                self._report(str(err))
                continue
            # 1 when the drawn sample itself was broken: summed, the broken samples drawn (before: every broken one
            # tried on the way, so three in a row counted 3 + 2 + 1)
            sample["skipped"] = np.int64(attempt > 0)
            sample["record"] = np.int64(i)  # the record it was made from (validation scores that one's labels)
            return sample
        raise DatasetError(f"{len(errors)} consecutive broken samples from index {index}; last: {errors[-1]}")

    def _report(self, message: str) -> None:
        """Log the first broken sample of each kind: the message without its file name and numbers."""
        kind = re.sub(r"\d+", "#", message.partition(": ")[2])
        if kind not in self._reported:
            self._reported.add(kind)
            log.warning("skipped a broken sample (the first of its kind; all are counted in %s/skipped): %s",
                        self.split, message)
