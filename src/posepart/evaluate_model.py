"""Evaluating a trained model on a dataset: the `Predictor` users run, fed the dataset's images, scored by the
oracle's `Evaluator`.

One prediction path (detectron2's `DatasetEvaluator` + `inference_on_dataset`): every image goes through the
Predictor (aspect-keeping canvas, network, decoding, part labels mapped back to the image) and its `ImageResult` goes
to `DatasetEvaluator.process`. `posepart evaluate --checkpoint`, training validation, the demo and the benchmarks all
score this way, so a reported number is one `posepart predict` reproduces: its keypoints.json scored by pycocotools
and its part PNGs scored against the ground truth give the same metrics (tests/test_evaluate_model.py).

Per-stage metrics. A model has T pose stages (`heatmaps`, `pafs`) and either one part output (an FCN head) or T (the
per-stage segmentation branch); stage t is scored with `ModelOutput.stage(t)`, so an FCN's single segmentation is
repeated on every stage's row and only the pose numbers change along the stages. The top-level `segmentation` /
`pose` entries of the metrics are the LAST stage's (the model's final prediction).
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import asdict, replace
from typing import Any, Callable, Collection, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from posepart.data.format import DatasetError, ImageRecord, PosePartDataset
from posepart.decode import DecodeConfig
from posepart.errors import PosepartWarning
from posepart.evaluate import Evaluator, Prediction
from posepart.heads import HeadMeta
from posepart.inference.predictor import BATCH_SIZE, ImageResult, Predictor
from posepart.schema import Schema


def evaluation_predictor(
    model: nn.Module,
    *,
    input_size: int,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device = "cpu",
    decode_config: DecodeConfig | None = None,
    all_stages: bool = True,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> Predictor:
    """The Predictor evaluation runs: the model's own `HeadMeta`, evaluation decoding (every person the maps support,
    ranked by score: `DecodeConfig.for_evaluation`), no part instances, every stage decoded unless `all_stages` is
    False, test-time `scales` and `flip` as `posepart predict` merges them. It runs a copy of `model`: the caller's
    model keeps its device, mode and weights' layout."""
    head = HeadMeta.of(model)
    return Predictor.from_model(model, head.schema, input_size=input_size, device=str(device), batch_size=batch_size,
                                decode_config=decode_config or DecodeConfig.for_evaluation(), part_instances=False,
                                all_stages=all_stages, scales=scales, flip=flip)


def as_prediction(result: ImageResult, image_id: int) -> Prediction:
    """What the `Evaluator` scores of a Predictor result: its people as COCO results and its part labels."""
    return Prediction(result.coco(image_id), result.parts)


class DatasetEvaluator:
    """Scores Predictor results image by image (detectron2's DatasetEvaluator): `reset()`, `process(record, result,
    gt_parts)` per image, `evaluate()` -> the metrics.json dict, with one `Evaluator` per stage.

    pose / parts False: the model has no such head, so that task is not scored (its key is absent).
    """

    def __init__(self, schema: Schema, *, pose: bool = True, parts: bool = True,
                 labelable_parts: np.ndarray | None = None) -> None:
        self.schema, self.pose, self.parts, self.labelable_parts = schema, pose, parts, labelable_parts
        self.reset()

    def reset(self) -> None:
        self.stages: list[Evaluator] = []  # created at the first result, which shows how many stages it has
        self.images = 0
        self.skipped = 0
        self.failed = 0  # results whose maps held NaN or inf

    def process(self, record: ImageRecord, result: ImageResult, gt_parts: np.ndarray | None) -> None:
        """Score one image: `result` is the Predictor's for `record`'s image (its `stages` the earlier stages'). A
        result whose maps the Predictor could not read (`error`: NaN or inf) is the model's failure, not the file's:
        scored as finding nobody, said, and counted (`maps_not_finite`)."""
        if result.error is not None:
            self.failed += 1
            tqdm.write(f"scored as finding nobody: {record.file_name}: {result.error}")
        by_stage = [*result.stages, result]
        if not self.stages:
            self.stages = [Evaluator(self.schema, pose=self.pose, parts=self.parts,
                                     labelable_parts=self.labelable_parts) for _ in by_stage]
        if len(by_stage) != len(self.stages):
            raise ValueError(f"{record.file_name}: {len(by_stage)} stages, the first image had {len(self.stages)}")
        for evaluator, staged in zip(self.stages, by_stage):
            evaluator.add(record, as_prediction(staged, record.image_id), gt_parts)
        self.images += 1

    def skip(self, message: str) -> None:
        """Count an image that could not be read (scoring it as a miss would blame the model for the file)."""
        self.skipped += 1
        tqdm.write(f"skipped: {message}")

    @property
    def results(self) -> list[dict[str, Any]]:
        """The final stage's COCO keypoint results of the pose-labelled images (what `posepart predict` writes)."""
        return self.stages[-1].results if self.stages else []

    def evaluate(self) -> dict[str, Any]:
        """metrics.json: the last stage's scores at the top level, every stage's under `per_stage`."""
        per_stage = [evaluator.compute() for evaluator in self.stages]
        metrics: dict[str, Any] = dict(per_stage[-1]) if per_stage else {}
        metrics["images"] = self.images
        if self.skipped:
            metrics["skipped"] = self.skipped
        if self.failed:
            metrics["maps_not_finite"] = self.failed
        metrics["per_stage"] = per_stage
        return metrics


class _Images(torch.utils.data.Dataset):
    """A dataset's images and part maps by index, decoded in DataLoader workers when asked: (index, RGB image or None,
    part labels or None, error). A broken part map is an error of its sample, as a broken image is (before: it ended
    the evaluation, which the oracle and training's validation skip and count)."""

    def __init__(self, dataset: PosePartDataset, *, parts: bool = True) -> None:
        self.dataset, self.parts = dataset, parts  # parts False: not scored, so not read (nor a reason to skip)

    def __len__(self) -> int:
        return len(self.dataset.records)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray | None, np.ndarray | None, str | None]:
        record = self.dataset.records[index]
        try:
            parts = self.dataset.load_parts(record) if self.parts else None
            return index, self.dataset.load_image(record), parts, None
        except DatasetError as err:
            return index, None, None, str(err)


def _as_is(sample: Any) -> Any:
    """The DataLoader's per-sample conversion, left out: the Predictor takes numpy images."""
    return sample


def inference_on_dataset(
    predictor: Predictor,
    dataset: PosePartDataset,
    evaluator: DatasetEvaluator,
    *,
    workers: int = 0,
    progress: bool = True,
) -> Iterator[tuple[ImageRecord, np.ndarray, ImageResult]]:
    """Run `predictor` over every image of `dataset` and feed `evaluator` (detectron2's `inference_on_dataset`);
    yields (record, image, result) per image for callers that also draw. An unreadable image or part map is skipped
    and counted, not replaced by another (that would score an image twice)."""
    images_and_parts = _Images(dataset, parts=evaluator.parts)
    loader = torch.utils.data.DataLoader(images_and_parts, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_as_is)
    # images handed to the predictor, whose results are due: (index, image, part labels)
    pending: deque[tuple[int, np.ndarray, np.ndarray | None]] = deque()

    def images() -> Iterator[np.ndarray]:
        for index, image, parts, error in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            if error is not None:
                evaluator.skip(error)
                continue
            pending.append((index, image, parts))
            yield image

    for result in predictor.stream(images()):
        index, image, parts = pending.popleft()
        record = dataset.records[index]
        evaluator.process(record, result, parts)
        yield record, image, result


def evaluate_model(
    model: nn.Module,
    dataset: PosePartDataset,
    *,
    input_size: int,
    batch_size: int = BATCH_SIZE,
    device: str | torch.device = "cpu",
    decode_config: DecodeConfig | None = None,
    progress: bool = True,
    overlays: int = 0,
    workers: int = 0,
    tasks: Collection[str] | None = None,
    results: list[dict[str, Any]] | None = None,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Score `model` on `dataset` -> (metrics.json dict, the first `overlays` overlay images (H, W, 3) uint8 RGB).

    The dict has the oracle's keys (`segmentation`, `pose` of the last stage, `images`, `skipped` when any image was
    unreadable) plus `per_stage`: one {"segmentation", "pose"} dict per stage. The maps are read as the model's own
    `meta` describes them; the caller's model is not changed (the Predictor runs a copy). `tasks` ("pose", "parts"):
    score and draw only these (a head trained with its task masked predicts noise); None: every head the model has.
    `results`, when given, receives the final stage's COCO keypoint results that were scored. `scales`, `flip`:
    test-time augmentation (`posepart.inference.tta`); the metrics then record it under `test_time`.
    """
    predictor = evaluation_predictor(model, input_size=input_size, batch_size=batch_size, device=device,
                                     decode_config=decode_config, scales=scales, flip=flip)
    return evaluate_predictor(predictor, dataset, progress=progress, overlays=overlays, workers=workers, tasks=tasks,
                              results=results)


def evaluate_predictor(
    predictor: Predictor, dataset: PosePartDataset, *, progress: bool = True, overlays: int = 0, workers: int = 0,
    tasks: Collection[str] | None = None, results: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """`evaluate_model` for any Predictor (an export too: ONNX and TorchScript give the final stage only). A Predictor
    that decodes otherwise than evaluation does (`DecodeConfig.for_evaluation`; `Predictor.from_checkpoint`'s default
    is OpenPose's, which drops people of under 3 joints) is scored as it decodes, warned of, and its decoding recorded
    under `decode` (before: other AP and PCKh than `posepart evaluate`'s for the same model, unsaid)."""
    from posepart.inference.draw import draw_result

    if dataset.schema != predictor.schema:  # its labels would be scored as the model's joints and classes
        raise DatasetError(f"{dataset.annotation_file}: its schema {dataset.schema.describe()} is not the model's "
                           f"{predictor.schema.describe()}: read it in the model's first "
                           f"(posepart.data.mixing.map_dataset, as `posepart evaluate` does)")
    pose = predictor.info.trained("pose") and (tasks is None or "pose" in tasks)
    parts = predictor.info.trained("parts") and (tasks is None or "parts" in tasks)
    check_scorable(dataset, pose=pose, parts=parts)
    evaluator = DatasetEvaluator(dataset.scoring_schema, pose=pose, parts=parts,
                                 labelable_parts=dataset.labelable_parts)
    drawn: list[np.ndarray] = []
    for _, image, result in inference_on_dataset(predictor, dataset, evaluator, workers=workers, progress=progress):
        if len(drawn) < overlays:
            shown = replace(result, people=result.people if pose else [], parts=result.parts if parts else None)
            drawn.append(draw_result(image, shown, predictor.schema))
    if results is not None:
        results.extend(evaluator.results)
    metrics = evaluator.evaluate()
    # what `posepart compare` needs of a metrics.json written from Python as of one the CLI wrote (an API walkthrough:
    # refused, for "an older posepart")
    metrics["input_size"] = predictor.input_size
    metrics["schema"] = dataset.schema.to_category()
    scales = sorted({view.scale for view in predictor.views})
    flip = any(view.flip for view in predictor.views)
    if flip or scales != [1.0]:  # a score with test-time augmentation says so
        metrics["test_time"] = {"scales": scales, "flip": flip}
    if pose and predictor.decode_config != DecodeConfig.for_evaluation():  # so does one with other decoding
        metrics["decode"] = decoding = predictor.settings()["decode"]
        usual = asdict(DecodeConfig.for_evaluation())
        differ = ", ".join(f"{key} {value} (evaluation's {usual[key]})" for key, value in decoding.items()
                           if value != usual[key])
        warnings.warn(f"scored with other decoding than evaluation's: {differ}; its AP and PCKh are not those of "
                      f"`posepart evaluate` (a Predictor built with decode_config=DecodeConfig.for_evaluation() "
                      f"scores as it does); metrics record it under 'decode'", PosepartWarning, stacklevel=2)
    return metrics, drawn


def check_scorable(dataset: PosePartDataset, *, pose: bool, parts: bool) -> None:
    """A DatasetError unless the dataset labels something the model is scored on (`pose`, `parts`: its heads that
    evaluation reads). Before: a table of "–" and exit status 0 (also for pose-labelled images without people)."""
    labels = {"pose": dataset.has_people, "parts": dataset.has_parts}
    if not (pose and labels["pose"] or parts and labels["parts"]):
        predicts = " and ".join(task for task, on in (("pose", pose), ("parts", parts)) if on) or "nothing trained"
        labelled = (" and ".join(task for task, on in labels.items() if on)
                    or "nothing in the model's schema (no labelled person; no part map, or parts in classes the "
                    "model does not have)")
        raise DatasetError(f"{dataset.annotation_file}: nothing to score: the model predicts {predicts}, the "
                           f"dataset labels {labelled}")


def evaluate_sources(
    model: nn.Module, datasets: dict[str, PosePartDataset], schema: Schema, *,
    part_tables: Mapping[str, Mapping[str, Any]] | None = None,
    results: dict[str, list[dict[str, Any]]] | None = None,
    on_mapped: Callable[[str, PosePartDataset], None] | None = None, **options: Any
) -> tuple[dict[str, dict[str, Any]], list[np.ndarray]]:
    """Score `model` on each named dataset, each read in the model's `schema` by joint name and part table
    (`posepart.data.mixing.map_dataset`) -> ({name: metrics.json dict}, overlays of every source); `options` go to
    `evaluate_model`. `part_tables`: {name: {"part_map": ..., "ignore_parts": ...}}, the tables a training source of
    that name was read with (its run's `data.sources`), so its scores are those of training validation. Set-valued
    part labels of coarser sources are not scored. `results`, when given, receives {name: the COCO keypoint results
    scored on that source} (each source numbers its own images). `on_mapped(name, dataset)`, when given, sees each
    source as read in `schema` before any is scored (the CLI's notes of joints it cannot score)."""
    from posepart.data.mixing import map_dataset

    mapped_sets = {name: map_dataset(dataset, schema, name=name, **(part_tables or {}).get(name, {}))
                   for name, dataset in datasets.items()}
    if on_mapped is not None:
        for name, mapped in mapped_sets.items():
            on_mapped(name, mapped)
    tasks = options.get("tasks")
    for mapped in mapped_sets.values():  # every source before any is scored: one that cannot be is refused first
        check_scorable(mapped, pose=getattr(model, "has_pose", False) and (tasks is None or "pose" in tasks),
                       parts=getattr(model, "has_parts", False) and (tasks is None or "parts" in tasks))
    rows: dict[str, dict[str, Any]] = {}
    drawn: list[np.ndarray] = []
    for name, mapped in mapped_sets.items():
        scored = results.setdefault(name, []) if results is not None else None
        rows[name], overlays = evaluate_model(model, mapped, results=scored, **options)
        drawn += overlays
    return rows, drawn
