"""Evaluating a trained model on a dataset, stage by stage, with overlays of its predictions.

The model sees each image letterboxed by the evaluation `Mapper`; its maps are decoded per image and every prediction
is mapped back to ORIGINAL image coordinates (people through the inverse letterbox affine, part labels through
`parts_to_image`) before it is scored by the same `Evaluator` as the oracle, so model and oracle numbers compare.

Per-stage metrics. A model has T pose stages (`heatmaps`, `pafs`) and either one part output (an FCN head: one logits
tensor at input resolution, `parts_stride` 1) or T (the per-stage segmentation branch at stride 8). Stage t is scored
with heatmaps[t], pafs[t] and parts[min(t, len(parts) - 1)]: an FCN's single segmentation is repeated on every stage's
row, so only the pose numbers change along the stages. A model without pose has one stage per part output. The
top-level `segmentation` / `pose` entries of the metrics are the LAST stage's (the model's final prediction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from posepart.data.format import DatasetError, ImageRecord, PosePartDataset
from posepart.data.mapper import Mapper, TargetConfig
from posepart.decode import DecodeConfig, decode, people_to_coco
from posepart.evaluate import Evaluator, Prediction, parts_to_image
from posepart.heads import HeadMeta
from posepart.losses.seg import upsample_logits
from posepart.models import ModelOutput
from posepart.schema import Schema

OVERLAY_MIN_SCORE = 0.3  # joints with a weaker peak are not drawn on overlays (they still count in the metrics)


@dataclass
class BatchMeta:
    """What maps a batch's predictions back to the original images."""

    image_ids: list[int]
    to_image: np.ndarray  # (B, 2, 3) float64: network-input pixels -> original-image pixels
    sizes: list[tuple[int, int]]  # (height, width) of each original image


class _EvalSamples(torch.utils.data.Dataset):
    """The evaluation Mapper (letterbox, no randomness) over a dataset's records.

    Unlike training's `MappedDataset`, a broken sample is not replaced by its neighbour (that would score an image
    twice): it comes back as None, and `_collate` drops and counts it.
    """

    def __init__(self, mapper: Mapper) -> None:
        self.mapper = mapper
        self.records = mapper.dataset.records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            sample = self.mapper(self.records[index])
        except DatasetError as err:
            return {"index": index, "error": str(err)}
        return {"index": index, "image": sample["image"], "to_image": sample["to_image"]}


def _collate(samples: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Stack the good samples; return the error messages of the broken ones."""
    good = [s for s in samples if "error" not in s]
    errors = [s["error"] for s in samples if "error" in s]
    batch: dict[str, Any] = {"index": [s["index"] for s in good]}
    if good:
        batch["image"] = torch.from_numpy(np.stack([s["image"] for s in good]))  # (B, 3, H, W)
        batch["to_image"] = np.stack([s["to_image"] for s in good]).astype(np.float64)  # (B, 2, 3)
    return batch, errors


def model_head(model: nn.Module) -> HeadMeta:
    """The `HeadMeta` a model carries; a clear error for a model built without a schema."""
    head = getattr(model, "meta", None)
    if not isinstance(head, HeadMeta):
        raise ValueError("the model carries no HeadMeta (`model.meta`): build it with a schema")
    return head


def predict_maps(model: nn.Module, images: Tensor) -> ModelOutput:
    """The model's per-stage maps for a (B, 3, H, W) batch, without autograd bookkeeping."""
    with torch.inference_mode():
        return model(images)


def num_stages(output: ModelOutput) -> int:
    """Rows of the per-stage table: the pose stages, or the part outputs of a segmentation-only model."""
    return max(len(output.heatmaps), len(output.parts))


def stage_part_labels(output: ModelOutput, stage: int) -> np.ndarray | None:
    """(B, H, W) uint8 argmax labels at network-input resolution from parts[min(stage, len - 1)], or None."""
    if not output.parts:
        return None
    logits = output.parts[min(stage, len(output.parts) - 1)].float()
    h, w = logits.shape[-2:]
    size = (int(h) * output.parts_stride, int(w) * output.parts_stride)
    return upsample_logits(logits, size).argmax(1).to(torch.uint8).cpu().numpy()


def predictions_from_output(
    output: ModelOutput,
    stage: int,
    meta: BatchMeta,
    head: HeadMeta,
    decode_config: DecodeConfig | None = None,
) -> list[Prediction]:
    """One `Prediction` per image of the batch from stage `stage` (see the module docstring), in original coords;
    `head` is the model's `HeadMeta` (schema, stride and sigma of its maps)."""
    config = decode_config if decode_config is not None else DecodeConfig.for_evaluation()
    schema = head.schema
    labels = stage_part_labels(output, stage)
    heatmaps = pafs = None
    if output.heatmaps and schema.has_pose:
        t = min(stage, len(output.heatmaps) - 1)
        heatmaps = output.heatmaps[t].float().cpu().numpy()  # (B, K+1, h, w)
        pafs = output.pafs[t].float().cpu().numpy()  # (B, 2L, h, w)
    predictions = []
    for i, (image_id, (height, width)) in enumerate(zip(meta.image_ids, meta.sizes)):
        results: list[dict[str, Any]] = []
        if heatmaps is not None and pafs is not None:
            people = decode(heatmaps[i], pafs[i], head, config)
            results = people_to_coco(people, image_id, meta.to_image[i])
        parts = None if labels is None else parts_to_image(labels[i], meta.to_image[i], height, width)
        predictions.append(Prediction(results, parts))
    return predictions


def draw_prediction(image: np.ndarray, prediction: Prediction, schema: Schema) -> np.ndarray:
    """The original RGB image with the predicted parts and people (joints below OVERLAY_MIN_SCORE hidden)."""
    from posepart.viz import overlay

    keypoints = None
    if prediction.results:
        keypoints = np.asarray([r["keypoints"] for r in prediction.results], np.float32)
        keypoints = keypoints.reshape(-1, schema.num_joints, 3)
    return overlay(image, schema, parts=prediction.parts, keypoints=keypoints, min_score=OVERLAY_MIN_SCORE)


class _StageScores:
    """One Evaluator per stage, created when the first batch reveals how many stages the model has."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        self.evaluators: list[Evaluator] = []

    def add(
        self, records: list[ImageRecord], stages: list[list[Prediction]], gt_parts: list[np.ndarray | None],
        output: ModelOutput,
    ) -> None:
        """Score one batch: stages[t][i] is image i's prediction from stage t; tasks without a head are not scored."""
        if not self.evaluators:
            heads = dict(pose=bool(output.heatmaps), parts=bool(output.parts))
            self.evaluators = [Evaluator(self.schema, **heads) for _ in stages]
        for evaluator, predictions in zip(self.evaluators, stages):
            for record, prediction, parts in zip(records, predictions, gt_parts):
                evaluator.add(record, prediction, parts)

    def compute(self) -> list[dict[str, Any]]:
        return [evaluator.compute() for evaluator in self.evaluators]


def evaluate_model(
    model: nn.Module,
    dataset: PosePartDataset,
    *,
    input_size: int,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    decode_config: DecodeConfig | None = None,
    progress: bool = True,
    overlays: int = 0,
    workers: int = 0,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Score `model` on `dataset` -> (metrics.json dict, the first `overlays` overlay images (H, W, 3) uint8 RGB).

    The dict has the oracle's keys (`segmentation`, `pose` of the last stage, `images`, `skipped` when any sample was
    broken) plus `per_stage`: one {"segmentation", "pose"} dict per stage. The model is moved to `device` and run in
    eval mode (its training flag is restored afterwards). The maps are read as the model's own `meta` describes them.
    """
    schema = dataset.schema
    head = model_head(model)
    mapper = Mapper(dataset, TargetConfig(input_size=input_size, head=head))
    loader = torch.utils.data.DataLoader(_EvalSamples(mapper), batch_size=batch_size, shuffle=False,
                                         num_workers=workers, collate_fn=_collate)
    was_training = model.training
    model.to(device).eval()
    scores, drawn, skipped = _StageScores(schema), [], 0
    try:
        for batch, errors in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            skipped += len(errors)
            for error in errors:
                tqdm.write(f"skipped: {error}")
            if not batch["index"]:
                continue
            records = [dataset.records[i] for i in batch["index"]]
            output = predict_maps(model, batch["image"].to(device))
            meta = BatchMeta([r.image_id for r in records], batch["to_image"],
                             [(r.height, r.width) for r in records])
            stages = [predictions_from_output(output, t, meta, head, decode_config)
                      for t in range(num_stages(output))]
            scores.add(records, stages, [dataset.load_parts(r) for r in records], output)
            for record, prediction in zip(records, stages[-1]):
                if len(drawn) < overlays:
                    drawn.append(draw_prediction(dataset.load_image(record), prediction, schema))
    finally:
        model.train(was_training)
    return _assemble(scores.compute(), len(dataset) - skipped, skipped), drawn


def _assemble(per_stage: list[dict[str, Any]], images: int, skipped: int) -> dict[str, Any]:
    """metrics.json: the last stage's scores at the top level, every stage's under `per_stage`."""
    metrics: dict[str, Any] = dict(per_stage[-1]) if per_stage else {}
    metrics["images"] = images
    if skipped:
        metrics["skipped"] = skipped
    metrics["per_stage"] = per_stage
    return metrics


def evaluate_sources(
    model: nn.Module, datasets: dict[str, PosePartDataset], schema: Schema, **options: Any
) -> tuple[dict[str, dict[str, Any]], list[np.ndarray]]:
    """Score `model` on each named dataset, each read in the model's `schema` by joint name and part table
    (`posepart.data.mixing.map_dataset`) -> ({name: metrics.json dict}, overlays of every source); `options` go to
    `evaluate_model`. Set-valued part labels of coarser sources are not scored."""
    from posepart.data.mixing import map_dataset

    results: dict[str, dict[str, Any]] = {}
    drawn: list[np.ndarray] = []
    for name, dataset in datasets.items():
        results[name], overlays = evaluate_model(model, map_dataset(dataset, schema, name=name), **options)
        drawn += overlays
    return results, drawn
