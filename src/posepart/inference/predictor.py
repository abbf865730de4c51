"""Inference API: `Predictor` turns images into people, part label maps and part instances in image coordinates.

    from posepart.inference import Predictor
    predictor = Predictor.from_checkpoint("best.ckpt", device="cpu", flip=True)   # or .safetensors/.onnx/.pt
    result = predictor("photo.jpg")              # one input -> ImageResult (raises InputError if unusable)
    results = predictor([array, "b.png", pil])   # a list -> list of ImageResult; a bad one has .error set

Pipeline per image: load (any path/array/PIL image/tensor, grey/RGBA/16-bit converted) -> letterbox into a canvas
whose long side is the input size (short side padded to the stride) -> network (PyTorch, TorchScript or ONNX Runtime;
batched, images of one canvas shape share a batch) -> optional flip/multi-scale merge (`posepart.inference.tta`) ->
decode people (`posepart.decode`) -> part labels (logits upsampled to the canvas, argmax, mapped back to the image as
evaluation does) -> part instances (`posepart.decode.instances`). Everything after the network is numpy: with an ONNX
model nothing imports torch.
"""

from __future__ import annotations

import importlib
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Sequence

import numpy as np

from posepart.data.augment import canvas_size, invert, labels_to_image, letterbox_affine, normalize
from posepart.data.mixing import TASKS
from posepart.decode import DecodeConfig, Person, decode_in_image, people_to_coco
from posepart.decode.instances import INSTANCE_MAX_DISTANCE, assign_part_instances, cell_index
from posepart.errors import PosepartError, UsageError
from posepart.heads import HeadMeta, cell_centre
from posepart.inference.backends import (MAX_INPUT_SIZE, Backend, BackendError, ModelInfo, OnnxBackend,
                                         TorchBackend, TorchScriptBackend, export_kind, head_outputs)
from posepart.inference.preprocess import InputError, describe, is_file_object, is_tensor, letterbox, load_image
from posepart.inference.tta import Maps, View, argmax_channels, flip_maps, merge_views, resize_maps, tta_views
from posepart.schema import Schema

TORCHSCRIPT_SUFFIXES = (".pt", ".ts", ".torchscript", ".jit")
BATCH_SIZE = 8  # canvases per network call unless told (Predictor, evaluate, predict)


@dataclass
class PersonPrediction:
    """One person in image pixels. keypoints (K, 3) float32 [x, y, score]; a joint not found is (0, 0, 0)."""

    keypoints: np.ndarray
    score: float

    @property
    def box(self) -> np.ndarray:
        """[x0, y0, x1, y1] of the found joints (zeros when none)."""
        found = self.keypoints[:, 2] > 0
        if not found.any():
            return np.zeros(4, np.float32)
        xy = self.keypoints[found, :2]
        return np.concatenate([xy.min(0), xy.max(0)]).astype(np.float32)

    def coco(self, image_id: int, category_id: int = 1) -> dict[str, Any]:
        """The COCO keypoint result dict {image_id, category_id, keypoints, score}."""
        return people_to_coco([Person(self.keypoints, self.score)], image_id, category_id=category_id)[0]


@dataclass
class ImageResult:
    """One input's predictions in its own pixel coordinates, or the reason it failed (`error`).

    people: sorted by descending score. parts: (H, W) uint8 part labels (None without a part head).
    instances: (H, W) uint16, 0 = background/unassigned, i = people[i - 1] (None unless the model predicts both).
    maps: the merged network maps on the canvas grid, kept when the predictor has `keep_maps=True`;
    to_image: (2, 3) canvas pixels -> image pixels.
    stages: the results of the earlier stages, first to last but one, when the predictor has `all_stages=True` (a
    diagnostic: how the prediction improves along the refinement stages).
    """

    source: str
    height: int = 0
    width: int = 0
    num_joints: int = 0
    people: list[PersonPrediction] = field(default_factory=list)
    parts: np.ndarray | None = None
    instances: np.ndarray | None = None
    error: str | None = None
    # whose failure `error` is: "input" (unreadable, not an image) or "model" (its maps hold NaN or inf): a service
    # answers the first as the client's mistake, the second as its own
    error_kind: Literal["input", "model"] | None = None
    maps: Maps | None = None
    to_image: np.ndarray | None = None
    schema: Schema | None = None  # the predicting model's: names and colours for `plot`
    stages: list[ImageResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    def __repr__(self) -> str:
        """What it holds, in one line (the dataclass's own printed every array: thousands of lines in a notebook)."""
        if not self.ok:
            return f"ImageResult(source={self.source!r}, error={self.error!r}, error_kind={self.error_kind!r})"
        held = [f"{len(self.people)} {'person' if len(self.people) == 1 else 'people'}"
                + (f" (best score {self.people[0].score:.3f})" if self.people else "")]
        held += [f"{name} {array.dtype}{tuple(array.shape)}" for name, array in (("parts", self.parts),
                                                                               ("instances", self.instances))
                 if array is not None]
        held += ["maps"] * (self.maps is not None) + [f"{len(self.stages)} earlier stages"] * bool(self.stages)
        return f"ImageResult(source={self.source!r}, {self.width}x{self.height}, {', '.join(held)})"

    @property
    def keypoints(self) -> np.ndarray:
        """(N, K, 3) keypoints of all people (N may be 0)."""
        if not self.people:
            return np.zeros((0, self.num_joints, 3), np.float32)
        return np.stack([p.keypoints for p in self.people])

    def coco(self, image_id: int, category_id: int = 1) -> list[dict[str, Any]]:
        """COCO keypoint results for every person (the format of COCO's loadRes / `--out keypoints.json`)."""
        return [p.coco(image_id, category_id) for p in self.people]

    def plot(self, image: Any = None, *, legend: bool = True) -> np.ndarray:
        """(H', W', 3) uint8 RGB: the image with this result's part colours and skeletons, and the colour legend
        below (`legend=False`: without; with it, an image narrower than 320 px is padded white to that width, so the
        names fit: W' = max(W, 320)). `image` is the input as given to the Predictor (array, PIL image or path);
        by default `source` is read again when it is a file. As ultralytics' `Results.plot()`: show it with
        `matplotlib.pyplot.imshow(result.plot())`, save it with `posepart.viz.save_rgb`."""
        from posepart.inference.draw import draw_result
        from posepart.viz import with_legend

        if self.schema is None or not self.ok:
            raise UsageError(f"{self.source}: nothing to plot ({self.error or 'a result without its schema'})")
        if image is None:
            if not Path(self.source).is_file():
                raise UsageError(f"{self.source}: not a file to read again; pass the image: result.plot(image)")
            image = self.source
        rgb = load_image(image)
        if rgb.shape[:2] != (self.height, self.width):
            raise UsageError(f"{self.source}: the image given is {rgb.shape[1]}x{rgb.shape[0]}, the result's "
                             f"{self.width}x{self.height}")
        drawn = draw_result(rgb, self, self.schema)
        return with_legend(drawn, self.schema) if legend else drawn

    def person_mask(self, index: int) -> np.ndarray:
        """(H, W) bool: the part pixels of people[index]."""
        if self.instances is None:
            raise ValueError(f"{self.source}: no part instances (they need a trained pose head and part head, and "
                             f"a Predictor with part_instances=True)")
        if not -len(self.people) <= index < len(self.people):
            raise IndexError(f"{self.source}: person {index} of {len(self.people)}")
        return self.instances == index % len(self.people) + 1


class ModelOutputError(PosepartError, RuntimeError):
    """The model's maps for an input hold NaN or infinite values (a diverged model, an overflow in reduced
    precision): the model's failure, not the input's (before, an InputError)."""


def _is_batch(inputs: Any) -> bool:
    """A list/tuple, an iterator or generator, a (B, H, W, C) array or a (B, C, H, W) tensor: several inputs (a file
    object is an iterator of lines, but one image's bytes)."""
    return (isinstance(inputs, (list, tuple, Iterator)) and not is_file_object(inputs)) or (
        (isinstance(inputs, np.ndarray) or is_tensor(inputs)) and inputs.ndim == 4)


class Predictor:
    """Runs a posepart network on images (see the module docstring).

    input_size: canvas long side (default: the model's training input size); scales: multipliers of it for
    multi-scale test-time augmentation; flip: also run the mirrored image; batch_size: canvases per network call;
    decode_config: decoder thresholds (default OpenPose's); part_instances: assign part pixels to people;
    instance_max_distance: see `assign_part_instances`; keep_maps: keep the merged maps on each result;
    all_stages: also decode every earlier refinement stage (`ImageResult.stages`; a PyTorch model, not an export).
    `timings` accumulates seconds per stage over all calls (and `timings["images"]` counts images).
    """

    def __init__(
        self,
        backend: Backend,
        *,
        input_size: int | None = None,
        scales: Sequence[float] = (1.0,),
        flip: bool = False,
        batch_size: int = BATCH_SIZE,
        decode_config: DecodeConfig | None = None,
        part_instances: bool = True,
        instance_max_distance: float = INSTANCE_MAX_DISTANCE,
        keep_maps: bool = False,
        all_stages: bool = False,
    ) -> None:
        if not isinstance(backend, Backend):  # before: AttributeError: 'str' object has no attribute 'info'
            raise UsageError(f"Predictor takes a backend, got {type(backend).__name__}: open a model file with "
                             f"Predictor.from_checkpoint(path), a model in memory with Predictor.from_model(model)")
        for name, value in (("flip", flip), ("part_instances", part_instances), ("keep_maps", keep_maps),
                            ("all_stages", all_stages)):  # a string from a config or the environment: "false" is true
            if not isinstance(value, (bool, np.bool_)):
                raise UsageError(f"{name} must be True or False, got {value!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
            raise UsageError(f"batch size must be an integer >= 1, got {batch_size!r}")  # (2.5 ran as 2)
        if not (isinstance(instance_max_distance, Real) and instance_max_distance > 0):  # NaN fails too
            raise UsageError(f"instance_max_distance must be a number > 0 (times the person's size), got "
                             f"{instance_max_distance!r}")
        if decode_config is not None and not isinstance(decode_config, DecodeConfig):  # a dict: AttributeError later
            raise UsageError(f"decode_config must be a DecodeConfig, got {type(decode_config).__name__}")
        self.backend = backend
        self.info: ModelInfo = backend.info
        size = int(self.info.input_size if input_size is None else input_size)  # before, 0 meant the model's
        if not self.info.input_multiple <= size <= MAX_INPUT_SIZE:
            raise UsageError(f"input size {size} is outside {self.info.input_multiple}..{MAX_INPUT_SIZE} (the "
                             f"network's input multiple .. the largest an export takes)")
        if size % self.info.input_multiple:  # as the CLI's --input-size (before: 100 ran at 96)
            raise UsageError(f"input size {size} is not a multiple of the network's {self.info.input_multiple}")
        self.input_size = size
        try:
            self.views: list[View] = tta_views(scales, bool(flip))
        except ValueError as err:
            raise UsageError(str(err)) from None
        for view in self.views:  # the canvas side each view runs at, checked as the input size is
            side = round(size * view.scale)
            if not self.info.input_multiple <= side <= MAX_INPUT_SIZE:
                raise UsageError(f"scale {view.scale:g} makes a {side} px canvas of the {size} px input, outside "
                                 f"{self.info.input_multiple}..{MAX_INPUT_SIZE}")
        self.batch_size = int(batch_size)
        self.decode_config = decode_config if decode_config is not None else DecodeConfig()
        self.part_instances = bool(part_instances)
        self.instance_max_distance = float(instance_max_distance)
        self.keep_maps = bool(keep_maps)
        self.all_stages = bool(all_stages)
        self.timings: dict[str, float] = defaultdict(float)

    def settings(self) -> dict[str, Any]:
        """What these predictions depend on besides the model's weights, as plain data (a run's record): the input
        size, the test-time views, the decoder's thresholds and the part-instance options."""
        return {"input_size": self.input_size,
                "test_time": {"scales": list(dict.fromkeys(view.scale for view in self.views)),
                              "flip": any(view.flip for view in self.views)},
                "decode": {key: value.item() if isinstance(value, np.generic) else value  # DecodeConfig takes numpy
                           for key, value in asdict(self.decode_config).items()},
                "part_instances": self.part_instances,
                "instance_max_distance": self.instance_max_distance}

    # -- construction --------------------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu", threads: int | None = None,
                        **kwargs: Any) -> Predictor:
        """From a training checkpoint (.ckpt), exported weights (.safetensors), an ONNX (.onnx) or TorchScript
        (.pt/.ts) export. Checkpoints load weights-only (`posepart.engine.checkpoint.load_model`). `threads`: CPU
        threads of the network (ONNX Runtime's session's; for PyTorch, torch's, which are the whole process's, as
        `posepart predict --threads` sets them)."""
        suffix = Path(path).suffix.lower()
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise UsageError(f"threads must be an integer >= 1, got {threads!r}")
        if suffix == ".onnx":
            return cls.from_onnx(path, device=device, threads=threads, **kwargs)
        try:  # every other kind of model file runs on PyTorch
            torch = importlib.import_module("torch")
        except ImportError:
            raise BackendError(f"{path}: a {suffix or 'checkpoint'} model needs PyTorch, which is not installed (the "
                               f"ONNX Runtime install runs .onnx files: export this one with `posepart export` where "
                               f"PyTorch is)") from None
        if threads is not None:  # before: a TypeError for every file but an .onnx one
            torch.set_num_threads(threads)
        if suffix in TORCHSCRIPT_SUFFIXES or export_kind(path) == "a TorchScript export":  # (known by its content
            return cls(TorchScriptBackend(path, device), **kwargs)  # too: before, a .pth went to the checkpoint loader)
        from posepart.engine.checkpoint import load_model

        loaded = load_model(path, map_location="cpu")
        info = model_info(loaded.model, loaded.schema, loaded.input_size, loaded.config.model.name, loaded.tasks)
        return cls(TorchBackend(loaded.model, info, device, copy=False), **kwargs)

    @classmethod
    def from_onnx(cls, path: str | Path, device: str = "cpu", threads: int | None = None, **kwargs: Any) -> Predictor:
        """From an `.onnx` file of `posepart export`, run by ONNX Runtime alone (torch is never imported)."""
        return cls(OnnxBackend(path, device, threads=threads), **kwargs)

    @classmethod
    def from_model(cls, model: Any, schema: Schema | None = None, *, input_size: int, device: str = "cpu",
                   tasks: Sequence[str] | None = None, **kwargs: Any) -> Predictor:
        """From an in-memory `PosePartNet` (its own `schema` unless given); the predictor runs a copy of it.
        `input_size` is required: a module does not record the size it was trained at (before, 368 was assumed, and
        a 128 px model found spurious people there). `tasks`: what its weights learnt (`LoadedModel.tasks`), so that
        a head never trained gives no output, as from a checkpoint (None: every head is taken as trained)."""
        own = getattr(model, "schema", None)
        schema = schema if schema is not None else own
        if schema is None:
            raise ValueError("the model carries no schema: pass schema=")
        sizes = {what: n for what, n, head in (("joints", "num_joints", "has_pose"), ("limbs", "num_limbs", "has_pose"),
                                                ("part classes", "num_parts", "has_parts")) if getattr(model, head, True)}
        wrong = [what for what, n in sizes.items() if own is not None and getattr(schema, n) != getattr(own, n)]
        if wrong:  # before: accepted, and the first image failed inside the decoder on the maps' channel counts
            counts = ", ".join(f"{getattr(schema, sizes[w])} {w}" for w in wrong)
            theirs = ", ".join(f"{getattr(own, sizes[w])} {w}" for w in wrong)
            raise UsageError(f"schema= {schema.name!r} has {counts}; the model predicts {theirs} (its own schema "
                             f"{own.name!r}): leave schema= out")
        if tasks is not None and (isinstance(tasks, str) or not set(tasks) <= set(TASKS)):  # "pose": 4 letters
            raise UsageError(f"tasks must be a list of {list(TASKS)}, got {tasks!r}")
        return cls(TorchBackend(model, model_info(model, schema, input_size, tasks=tasks), device),
                   input_size=input_size, **kwargs)

    @property
    def schema(self) -> Schema:
        return self.info.schema

    # -- running -------------------------------------------------------------------------------------------------
    def __call__(self, inputs: Any) -> ImageResult | list[ImageResult]:
        """One input -> ImageResult (InputError if it cannot be read); a list, tuple, iterator, (B, H, W, C) array or
        (B, C, H, W) tensor -> a list with one result per input, failed ones carrying `error` while the rest are
        processed."""
        if _is_batch(inputs):
            return list(self.stream(inputs))
        (result,) = self.stream([inputs])
        if result.error is not None:
            raise (ModelOutputError if result.error_kind == "model" else InputError)(result.error)
        return result

    def stream(self, inputs: Iterable[Any]) -> Iterator[ImageResult]:
        """Results in input order, `batch_size` inputs at a time (for long lists, folders and video frames)."""
        chunk: list[Any] = []
        for item in inputs:
            chunk.append(item)
            if len(chunk) == self.batch_size:
                yield from self._predict_chunk(chunk)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk)

    def _tick(self, stage: str, start: float) -> float:
        now = time.perf_counter()
        self.timings[stage] += now - start
        return now

    def _predict_chunk(self, items: list[Any]) -> list[ImageResult]:
        info, views = self.info, self.views
        results: list[ImageResult | None] = [None] * len(items)
        jobs: list[tuple[int, int, np.ndarray]] = []  # (item, view, normalised canvas)
        geometry: dict[int, tuple[tuple[int, int], list[np.ndarray]]] = {}  # item -> (image hw, matrix per view)
        t = time.perf_counter()
        for i, item in enumerate(items):
            try:
                image = load_image(item)
            except InputError as err:
                results[i] = ImageResult(describe(item), error=str(err), error_kind="input")
                continue
            t = self._tick("load", t)
            canvases: dict[float, tuple[np.ndarray, np.ndarray]] = {}
            matrices = []
            for v, view in enumerate(views):
                if view.scale not in canvases:
                    hw = canvas_size(image.shape[:2], round(self.input_size * view.scale), info.input_multiple)
                    canvases[view.scale] = letterbox(image, hw)
                canvas, matrix = canvases[view.scale]
                jobs.append((i, v, normalize(canvas[:, ::-1] if view.flip else canvas)))
                matrices.append(matrix)
            geometry[i] = (image.shape[:2], matrices)
            t = self._tick("preprocess", t)
        outputs = self._run_network(jobs)
        for i, (image_hw, matrices) in geometry.items():
            by_stage = zip(*(outputs[(i, v)] for v in range(len(views))))  # per stage: every view's maps
            *earlier, final = [self._finish(describe(items[i]), image_hw, list(maps), matrices) for maps in by_stage]
            final.stages = earlier
            results[i] = final
        self.timings["images"] += len(items)
        return results  # type: ignore[return-value]

    def _run_network(self, jobs: list[tuple[int, int, np.ndarray]]) -> dict[tuple[int, int], list[Maps]]:
        """Batches of equal canvas shape through the backend -> per (item, view) the maps of each stage (the final
        one alone unless `all_stages`), flipped views mirrored back."""
        by_shape: dict[tuple[int, ...], list[tuple[int, int, np.ndarray]]] = defaultdict(list)
        for job in jobs:
            by_shape[job[2].shape].append(job)
        out: dict[tuple[int, int], list[Maps]] = {}
        for group in by_shape.values():
            for start in range(0, len(group), self.batch_size):
                part = group[start : start + self.batch_size]
                t = time.perf_counter()
                batch = np.stack([canvas for _, _, canvas in part])
                stages = self.backend.stages(batch) if self.all_stages else [self.backend(batch)]
                t = self._tick("network", t)
                for b, (i, v, _) in enumerate(part):
                    singles = [Maps(*(None if m is None else m[b] for m in maps)) for maps in stages]
                    out[(i, v)] = [flip_maps(m, self.schema) if self.views[v].flip else m for m in singles]
                self._tick("merge", t)
        return out

    def _finish(self, source: str, image_hw: tuple[int, int], maps: list[Maps], matrices: list[np.ndarray]
                ) -> ImageResult:
        """Merge the views, decode people, label parts, assign instances: everything in image coordinates."""
        info, schema, stride = self.info, self.schema, self.info.stride
        t = time.perf_counter()
        base_hw = canvas_size(image_hw, self.input_size, info.input_multiple)
        base_matrix = letterbox_matrix(image_hw, base_hw)
        merged = merge_views(list(zip(maps, matrices)), base_matrix, base_hw, info.head)
        use_pose, use_parts = info.trained("pose"), info.trained("parts")  # an untrained head's maps are left out
        merged = Maps(merged.heatmaps if use_pose else None, merged.pafs if use_pose else None,
                      merged.parts if use_parts else None)
        to_image = invert(base_matrix)
        t = self._tick("merge", t)
        named = (("heatmaps", merged.heatmaps), ("PAFs", merged.pafs), ("part logits", merged.parts))
        broken = [name for name, maps in named if maps is not None and not np.isfinite(maps).all()]
        if broken:  # before: an inf crashed the decoder (the whole batch lost) or gave people scored inf, and NaN
            # gave nobody without a word, as if the photo were empty
            return ImageResult(source, error=f"the model's {', '.join(broken)} hold NaN or infinite values (a diverged "
                                             f"model, or an overflow in reduced precision): nothing decoded",
                               error_kind="model")
        people: list[PersonPrediction] = []
        cells = np.zeros((0, schema.num_joints, 3), np.float32)
        if merged.heatmaps is not None and merged.pafs is not None and schema.has_pose:
            found, canvas_kp = decode_in_image(merged.heatmaps, merged.pafs, info.head, self.decode_config, to_image,
                                               image_hw)
            cells = canvas_kp.copy()
            cells[..., :2] = (canvas_kp[..., :2] - cell_centre(stride)) / stride
            people = [PersonPrediction(p.keypoints, float(p.score)) for p in found]
        t = self._tick("decode", t)
        parts = instances = None
        if merged.parts is not None and schema.has_parts:
            logits = resize_maps(merged.parts, base_hw)  # (P, H', W') at canvas resolution
            parts = labels_to_image(argmax_channels(logits), to_image, image_hw)
            t = self._tick("parts", t)
            if self.part_instances and use_pose:
                grid_hw = (base_hw[0] // stride, base_hw[1] // stride)
                rows, cols = cell_index(base_matrix, image_hw, grid_hw, stride)
                instances = assign_part_instances(parts, cells, schema, rows, cols, grid_hw,
                                                  max_distance=self.instance_max_distance)
                self._tick("instances", t)
        return ImageResult(source, image_hw[0], image_hw[1], schema.num_joints, people, parts, instances,
                           maps=merged if self.keep_maps else None, to_image=to_image, schema=schema)


def letterbox_matrix(image_hw: tuple[int, int], canvas_hw: tuple[int, int]) -> np.ndarray:
    """(2, 3) image pixels -> canvas pixels of the letterbox (the matrix `preprocess.letterbox` uses)."""
    return letterbox_affine(image_hw, canvas_hw).matrix


def model_info(model: Any, schema: Schema, input_size: int, name: str = "",
               tasks: Sequence[str] | None = None) -> ModelInfo:
    """ModelInfo of a `PosePartNet`: its own `meta` (which heads, their strides and sigma), read in `schema`;
    `tasks`: those its weights learnt, when known (`LoadedModel.tasks`)."""
    head = HeadMeta.of(model)
    if head.schema != schema:
        head = replace(head, schema=schema)
    return ModelInfo(head, int(input_size), head_outputs(head), name, None if tasks is None else tuple(tasks))
