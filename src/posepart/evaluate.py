"""Scoring predictions against a dataset, and the oracle that scores decoded ground-truth targets.

Every prediction is expressed in ORIGINAL image coordinates before scoring, so the numbers are comparable across
input sizes and models. `metrics.json` layout (fractions in [0, 1]; a task the dataset lacks is absent):
`{"segmentation": {pixel_accuracy, mean_accuracy, mean_iou, frequency_weighted_iou, iou_per_class},
  "pose": {ap, ap50, ap75, ap_small, ap_medium, ap_large, ar, pckh, pckh_per_joint: {joint: pckh}, pck_dist,
           pck_dist_px, pck_dist_px_per_joint: {joint: px}}, "images", "skipped"
  (when any)}`; a trained model's metrics add "per_stage" (`posepart.evaluate_model`). On posepart's synthetic data
`pose` adds `slices`: {"view": {"front": {people, ap, ap50}, ...}, "pose": {"walk": ...}}, each slice's people
scored alone (`Evaluator.slices`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from tqdm import tqdm

from posepart.data.augment import apply_affine, canvas_size, invert, labels_to_image, letterbox_affine
from posepart.data.format import DatasetError, ImageRecord, PosePartDataset, region_mask
from posepart.data.records import keypoint_box
from posepart.data.label_maps import scoring_labels
from posepart.data.synth import MADE_KEY, SLICES
from posepart.decode import DecodeConfig, decode_in_image, people_to_coco
from posepart.heads import INPUT_SIZE, HeadMeta
from posepart.metrics import ConfusionMatrix, coco_keypoint_ap, pck_dist, pckh_counts
from posepart.metrics.oks import coco_ground_truth
from posepart.schema import IGNORE_LABEL, Schema
from posepart.targets import Targets, build_targets


# Each task's headline metric, as (metrics.json section, key): what the demo's curves, the study's tables and Δm,
# and training's advice on `train.best_metric` follow.
HEADLINE = {"pose": ("pose", "ap"), "parts": ("segmentation", "mean_iou")}
LOG_GROUP = {"segmentation": "seg", "pose": "pose"}  # metrics.json section -> the group training logs it in
PER_JOINT = "_per_joint"  # a metric given per joint type, {name: value}


def logged_name(section: str, key: str, prefix: str = "val") -> str:
    """The name training logs a metrics.json entry under: ("segmentation", "mean_iou") -> "val/seg/mean_iou"."""
    return f"{prefix}/{LOG_GROUP[section]}/{key}"


def metric_names(schema: Schema) -> set[str]:
    """Every metric name an evaluation in `schema` can report, flat as training logs them without the `val/` prefix
    ("seg/mean_iou", "seg/iou/head", "pose/ap", "pose/pckh/neck", "pose/ap/view/back"): what `train.best_metric`
    may follow. Taken from the metric functions themselves (on no input), so it cannot drift from them."""
    names = {f"seg/{key}" for key in ConfusionMatrix(max(len(schema.part_classes), 1)).compute()
             if key != "iou_per_class"} | {f"seg/iou/{name}" for name in schema.part_classes}
    pose = [*coco_keypoint_ap([], [], [], schema.sigmas), "pckh", *pck_dist([], [], schema)]
    names |= {f"pose/{key}" for key in pose if not key.endswith(PER_JOINT)}  # (the tables: metrics.json's)
    names |= {f"pose/pckh/{joint}" for joint in schema.keypoints}
    return names | {f"pose/ap/{field}/{kind}" for field, kinds in SLICES.items() for kind in kinds}


@dataclass
class Prediction:
    """One image's prediction in original image coordinates."""

    results: list[dict[str, Any]]  # COCO keypoint results
    parts: np.ndarray | None  # (H, W) uint8 part labels
    # (P, P) int64 pixel counts (true, predicted) of `parts` already scored against the image's ground truth
    # (`scored_parts`), in place of the map: what training's validation keeps of each image until the epoch ends
    part_counts: np.ndarray | None = None


def scored_parts(prediction: Prediction, gt_parts: np.ndarray | None, num_parts: int) -> Prediction:
    """`prediction` with its part map scored against `gt_parts` into `part_counts` and dropped: a (P, P) matrix is
    what an image's parts add to the metrics, where its map is as large as the image (held by every DDP rank until
    the epoch ends, over thousands of validation images). Counts only when both maps exist. Set-valued labels (a
    coarser source's "some arm part", values >= P) name no single class: not scored."""
    counts = None
    if prediction.parts is not None and gt_parts is not None:
        confusion = ConfusionMatrix(num_parts)
        confusion.update(prediction.parts, scoring_labels(gt_parts, num_parts))
        counts = confusion.mat
    return Prediction(prediction.results, None, counts)


class Evaluator:
    """Accumulates predictions image by image; `compute()` returns the metrics.json dict."""

    def __init__(self, schema: Schema, *, pose: bool = True, parts: bool = True,
                 labelable_parts: np.ndarray | None = None) -> None:
        """`pose` / `parts` False: the predictor has no such head, so that task is not scored (key absent).
        `labelable_parts`: the part classes the data can label alone (`PosePartDataset.labelable_parts`; default
        all), the classes mean IU averages over."""
        self.schema = schema
        self.labelable_parts = labelable_parts
        self.score_pose = pose and schema.has_pose
        self.confusion = ConfusionMatrix(schema.num_parts) if schema.has_parts and parts else None
        self.images: list[dict[str, Any]] = []
        self.ground_truth: list[dict[str, Any]] = []
        self.made: list[Mapping[str, Any] | None] = []  # per ground truth: how a synthetic person was made (MADE_KEY)
        self.results: list[dict[str, Any]] = []
        self.gt_people: list[np.ndarray] = []
        self.pred_people: list[np.ndarray] = []
        self.head_sizes: list[np.ndarray] = []
        self.part_images = 0

    def add(self, record: ImageRecord, prediction: Prediction, gt_parts: np.ndarray | None) -> None:
        if record.pose_labeled and self.score_pose:
            self.images.append(record.image_info())
            for ann in record.annotations:
                gt = _gt_annotation(ann, record, len(self.ground_truth) + 1, self.schema.num_joints)
                if gt is None:
                    continue
                self.ground_truth.append(gt)
                made = ann.get(MADE_KEY)
                self.made.append(made if isinstance(made, Mapping) else None)
            self.results.extend(prediction.results)
            k = self.schema.num_joints
            pred = np.asarray([r["keypoints"] for r in prediction.results], np.float32).reshape(-1, k, 3)
            self.gt_people.append(record.keypoints)
            self.pred_people.append(pred)
            self.head_sizes.append(record.head_sizes)
        if self.confusion is not None:
            counts = prediction.part_counts  # scored in advance, else here: both through `scored_parts`
            if counts is None:
                counts = scored_parts(prediction, gt_parts, self.schema.num_parts).part_counts
            if counts is not None:
                self.confusion.mat += counts
                self.part_images += 1

    def compute(self) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if self.confusion is not None and self.part_images:  # its classes named (iou_per_class is in their order)
            metrics["segmentation"] = {**self.confusion.compute(self.labelable_parts),
                                       "classes": list(self.schema.part_classes)}
        if self.images:
            pose = coco_keypoint_ap(self.images, self.ground_truth, self.results, self.schema.sigmas)
            heads = self.head_sizes if any(np.isfinite(h).any() for h in self.head_sizes) else None
            counts = pckh_counts(self.gt_people, self.pred_people, heads, self.schema)
            pose["pckh"], pose["pckh_per_joint"] = counts.pooled(), counts.per_joint(self.schema)
            pose.update(pck_dist(self.gt_people, self.pred_people, self.schema))
            slices: dict[str, dict[str, dict[str, Any]]] = {}
            for field, groups in self.slices().items():
                slices[field] = {}
                for value, people in groups.items():
                    score = coco_keypoint_ap(self.images, self.ground_truth, self.results, self.schema.sigmas,
                                             people=people, small=False)  # AP and AP50 alone: no fourth range
                    slices[field][value] = {"people": len(people), "ap": score["ap"], "ap50": score["ap50"]}
            if slices:
                pose["slices"] = slices
            metrics["pose"] = pose
        return metrics

    def slices(self) -> dict[str, dict[str, set[int]]]:
        """The labelled people's ground-truth ids by how posepart's synthetic data made them, {"view": {"front": ids,
        ...}, "pose": {"walk": ids, ...}}, in `SLICES` order: which kinds of people a model fails on. Empty for data
        whose annotations do not say (every other dataset)."""
        found: dict[str, dict[str, set[int]]] = {field: {} for field in SLICES}
        for made, gt in zip(self.made, self.ground_truth):
            if made is not None and not gt["iscrowd"] and gt["num_keypoints"] > 0:
                for field, groups in found.items():
                    if made.get(field) in SLICES[field]:
                        groups.setdefault(made[field], set()).add(gt["id"])
        return {field: {value: groups[value] for value in SLICES[field] if value in groups}
                for field, groups in found.items() if groups}


def _gt_annotation(ann: dict[str, Any], record: ImageRecord, new_id: int, num_joints: int) -> dict[str, Any] | None:
    """A COCOeval ground-truth dict: category 1, a fresh id, and, when the file gives no box, the box the reader
    reads: a person's labelled joints' (before, the whole image, which made OKS lenient on such files), an ignore
    region's segmentation's. Where the file gives neither box nor area and the joints span no area, OKS's scale is
    the square of their longer side (joints on a line), else the whole image (one joint: no scale at all; area 0
    would make the person unmatchable). None for an annotation with neither joints, box nor segmentation: the
    reader reads nothing there, and a whole-image ignore box would hide every false positive of the image. A file's
    own box and area are used as given, as pycocotools uses them, but for an area of 0 (some converters write it):
    OKS's scale would be 0 and no detection could match the person (pycocotools scores such a file 0), so the
    box's area stands in."""
    out = {k: v for k, v in ann.items() if k in ("keypoints", "bbox", "area", "iscrowd", "num_keypoints",
                                                  "segmentation")}
    out.update(id=new_id, image_id=record.image_id)
    out["keypoints"] = out.get("keypoints") or []  # absent or null: no joints, as the reader reads it
    if out.get("bbox") is None:
        joints = np.asarray(out["keypoints"], np.float32).reshape(-1, 3)
        if (joints[:, 2] > 0).any():
            out["bbox"] = keypoint_box(joints)
            w, h = out["bbox"][2:]
            if w * h == 0 and not out.get("area"):
                out["area"] = max(w, h) ** 2 or float(record.width * record.height)
        elif out.get("segmentation") and (region := region_mask(out["segmentation"], record.height,
                                                                  record.width)).any():
            rows, cols = np.nonzero(region)
            out["bbox"] = [float(cols.min()), float(rows.min()), float(np.ptp(cols) + 1), float(np.ptp(rows) + 1)]
        else:
            return None
    if not out.get("area"):
        out["area"] = float(out["bbox"][2] * out["bbox"][3])
    return coco_ground_truth(out, num_joints)  # the fields COCOeval reads (category, iscrowd, num_keypoints)


def ground_truth_targets(
    dataset: PosePartDataset, record: ImageRecord, parts: np.ndarray | None, *, input_size: int, head: HeadMeta
) -> tuple[Targets, np.ndarray]:
    """The targets of `record` (with its part labels `parts`) on the Predictor's canvas for it (long side
    `input_size`), built exactly as for training with the geometry of `head` -> (targets, (2, 3) canvas pixels ->
    image pixels)."""
    schema = dataset.schema
    image_hw = (record.height, record.width)
    out_hw = canvas_size(image_hw, input_size, head.input_multiple)
    affine = letterbox_affine(image_hw, out_hw)
    # The oracle needs no pixels, but it must not score an image a model could not read (a truncated JPEG, a size
    # that contradicts the JSON): reading it raises the same DatasetError training and evaluation would.
    image = dataset.load_image(record)
    _, parts_in, ignore_in, keypoints_in = apply_affine(
        affine, image, parts, record.ignore_mask(), record.keypoints, out_hw, schema.flip_perm,
        schema.part_flip_perm,
    )
    return build_targets(keypoints_in, ignore_in, parts_in, head), invert(affine)


def oracle_prediction(
    dataset: PosePartDataset,
    record: ImageRecord,
    *,
    input_size: int = INPUT_SIZE,
    head: HeadMeta | None = None,
    config: DecodeConfig | None = None,
) -> tuple[Prediction, np.ndarray | None]:
    """`ground_truth_targets` (with `head`, default a stride-8 head for the dataset's schema) decoded like a network
    output -> (prediction, the ground-truth part labels)."""
    schema = dataset.schema
    head = head if head is not None else HeadMeta(schema)
    parts = dataset.load_parts(record)
    targets, to_image = ground_truth_targets(dataset, record, parts, input_size=input_size, head=head)
    results: list[dict[str, Any]] = []
    if schema.has_pose and record.pose_labeled:
        people, _ = decode_in_image(targets.heatmaps, targets.pafs, head, config or DecodeConfig.for_evaluation(),
                                    to_image, (record.height, record.width))  # as the Predictor decodes a model's
        results = people_to_coco(people, record.image_id)
    pred_parts = None
    if parts is not None:
        # A model never predicts "ignore": the letterbox padding (255) next to the image edge, which nearest-neighbour
        # warping can pull back into the first or last image column, is predicted as background.
        labels = np.where(targets.parts == IGNORE_LABEL, 0, targets.parts).astype(np.uint8)
        pred_parts = labels_to_image(labels, to_image, (record.height, record.width))
    return Prediction(results, pred_parts), parts


def evaluate_oracle(dataset: PosePartDataset, *, input_size: int = INPUT_SIZE,
                    stride: int = HeadMeta.pose_stride,  # type: ignore[assignment]  # the default head's: 8
                    sigma: float = HeadMeta.sigma, paf_width: float = HeadMeta.paf_width,
                    progress: bool = True) -> dict[str, Any]:
    """The upper bound of the pipeline at a pose stride: score decoded ground-truth targets drawn with `sigma` and
    `paf_width` (output cells). Broken samples are skipped and counted."""
    evaluator = Evaluator(dataset.schema)
    head = HeadMeta(dataset.schema, pose_stride=stride, sigma=sigma, paf_width=paf_width)
    skipped = 0
    for record in tqdm(dataset.records, desc="oracle", disable=not progress, leave=False):
        try:
            prediction, gt_parts = oracle_prediction(dataset, record, input_size=input_size, head=head)
        except DatasetError as err:
            skipped += 1
            tqdm.write(f"skipped: {err}")
            continue
        evaluator.add(record, prediction, gt_parts)
    metrics = evaluator.compute()
    metrics["images"] = len(dataset) - skipped
    # what was decoded, so a figure says how to reproduce it
    metrics["targets"] = {"input_size": input_size, "pose_stride": stride, "sigma": sigma, "paf_width": paf_width}
    if skipped:
        metrics["skipped"] = skipped
    return metrics


def format_metrics(metrics: dict[str, Any]) -> str:
    """A plain-text table of the headline numbers (and the AP of each synthetic slice: `ap/view/back`)."""
    rows = []
    for task in ("pose", "segmentation"):
        for name, value in metrics.get(task, {}).items():
            if isinstance(value, (int, float)) and value is not None:
                shown = f"{value:.4f}" if isinstance(value, float) else str(value)
                rows.append(f"{task:<13} {name:<24} {shown}")
        for field, groups in metrics.get(task, {}).get("slices", {}).items():
            for value, score in groups.items():
                if score["ap"] is not None:
                    people = f"{score['people']} {'person' if score['people'] == 1 else 'people'}"
                    rows.append(f"{task:<13} {f'ap/{field}/{value}':<24} {score['ap']:.4f}  ({people})")
    return "\n".join(rows)
