"""Network runners for inference: a PyTorch model, a TorchScript file or an ONNX Runtime session, one interface.

Each backend takes a normalised (B, 3, H, W) float32 numpy batch and returns the FINAL stage's maps as numpy
(`posepart.inference.tta.Maps` with a batch axis), so everything after the network is shared numpy code. torch is
imported only by the torch backends and onnxruntime only by the ONNX one: `OnnxBackend` runs where torch is not
installed.
Exported files carry a `ModelInfo` JSON (schema, strides, input size, output names) so they are self-describing.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from posepart.data.mixing import TASKS
from posepart.errors import PosepartError, PosepartWarning
from posepart.files import newer_format
from posepart.heads import INPUT_SIZE, HeadMeta, HeadMetaError
from posepart.inference.tta import Maps
from posepart.schema import Schema

EXPORT_FORMAT = "posepart-export-v1"
METADATA_KEY = "posepart"  # ONNX metadata_props key / TorchScript extra file name (+ ".json")
RECORD_KEY = f"{METADATA_KEY}_record"  # the same, for what made an exported model (`engine.export`): not for inference
OUTPUT_NAMES: tuple[str, ...] = Maps._fields  # heatmaps, pafs, parts: the exports' output names, in order
MAX_INPUT_SIZE = 8192  # an export's input side past this is metadata no real model has (1e300: OpenCV's crash)
DEFAULT_OPSET = 17  # the ONNX opset `posepart export` writes unless told (here, not in engine.export: the CLI reads it)
# The lowest opset every posepart model exports at faithfully. The models take image sizes from tensor shapes (dynamic
# H and W): opset 9 has no Slice or ceil-mode pooling for sizes known only at run time (torch's exporter fails on the
# joint and FCN models, after printing its whole Torch IR graph); opset 10 exports, but its Resize does not compute
# PyTorch's bilinear interpolation (torch's exporter says so: it matches from opset 11), so FCN part heads fail the
# parity check (by ~3e-3). The highest is torch's exporter's (`engine.export.opset_range`).
MIN_OPSET = 11


def head_outputs(head: HeadMeta) -> tuple[str, ...]:
    """The outputs, in `OUTPUT_NAMES` order, of a network whose heads `head` describes."""
    return (("heatmaps", "pafs") if head.has_pose else ()) + (("parts",) if head.has_parts else ())


class BackendError(PosepartError, RuntimeError):
    """A model file cannot be run (missing runtime, not a posepart export, unknown device)."""


@dataclass(frozen=True)
class ModelInfo:
    """What inference needs to know about a network besides its weights: its `HeadMeta` (schema, strides, sigma),
    the input size it was trained at and its outputs."""

    head: HeadMeta
    input_size: int = INPUT_SIZE
    outputs: tuple[str, ...] = OUTPUT_NAMES  # the network's outputs, in order: a subset of OUTPUT_NAMES
    name: str = ""
    # The tasks its weights learnt (its training sources'; None: not recorded, every head's). A head of another task
    # (the joint network trained on pose alone) holds its random initial weights: its output is not used.
    tasks: tuple[str, ...] | None = None

    @property
    def schema(self) -> Schema:
        return self.head.schema

    @property
    def stride(self) -> int:
        """The pose maps' stride (the grid of drawings and part instances)."""
        return self.head.stride

    @property
    def parts_stride(self) -> int:
        return self.head.parts_stride or 1

    @property
    def input_multiple(self) -> int:
        """Network inputs must have heights and widths that are multiples of this."""
        return self.head.input_multiple

    @property
    def has_pose(self) -> bool:
        return "heatmaps" in self.outputs

    @property
    def has_parts(self) -> bool:
        return "parts" in self.outputs

    def trained(self, task: str) -> bool:
        """Whether the network has a head for `task` ("pose" or "parts") that learnt it."""
        return self._has(task) and (self.tasks is None or task in self.tasks)

    @property
    def untrained(self) -> tuple[str, ...]:
        """The tasks whose head the network has but never trained (their outputs are not used)."""
        return tuple(task for task in TASKS if self._has(task) and not self.trained(task))

    def deployed(self) -> ModelInfo:
        """This description without the heads its weights never learnt (`untrained`): what an export outputs. Why:
        such a head's maps are never used, yet an export that kept them would compute them in every call and hand
        random maps to whoever runs the file without posepart."""
        drop = self.untrained
        if not drop or all(not self._has(task) or task in drop for task in TASKS):
            return self  # nothing to drop, or nothing would be left (a file whose sources taught none of its heads)
        head = replace(self.head, pose_stride=None if "pose" in drop else self.head.pose_stride,
                       parts_stride=None if "parts" in drop else self.head.parts_stride)
        return replace(self, head=head, outputs=head_outputs(head))

    @property
    def left_out(self) -> tuple[str, ...]:
        """The tasks whose head `deployed()` leaves out."""
        kept = self.deployed()
        return tuple(task for task in TASKS if self._has(task) and not kept._has(task))

    def _has(self, task: str) -> bool:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {list(TASKS)}")
        return self.has_pose if task == "pose" else self.has_parts

    def to_json(self) -> str:
        tasks = {} if self.tasks is None else {"tasks": list(self.tasks)}
        return json.dumps({"format": EXPORT_FORMAT, "head": self.head.to_dict(), "input_size": self.input_size,
                           "outputs": list(self.outputs), "name": self.name, **tasks})

    @classmethod
    def from_json(cls, text: str | bytes | None, where: str) -> ModelInfo:
        """Parse the metadata of an exported file; a clear BackendError when it is absent or foreign."""
        if not text:
            raise BackendError(f"{where}: no posepart metadata (export it with `posepart export`)")
        try:
            data = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as err:  # RecursionError: nested past any real metadata
            raise BackendError(f"{where}: malformed posepart metadata: {type(err).__name__}") from None
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise BackendError(f"{where}: {newer_format(found, EXPORT_FORMAT) or 'not a posepart export'} (metadata "
                               f"format {found!r}, expected {EXPORT_FORMAT!r})")
        outputs = data.get("outputs")
        if not (isinstance(outputs, list) and outputs and all(isinstance(o, str) for o in outputs)
                and set(outputs) <= set(OUTPUT_NAMES)):
            raise BackendError(f"{where}: bad output list {str(outputs)[:80]} in the metadata")
        outputs = tuple(outputs)
        size = data.get("input_size")
        if not (isinstance(size, int) and not isinstance(size, bool) and 0 < size <= MAX_INPUT_SIZE):
            raise BackendError(f"{where}: bad input_size {str(size)[:40]} in the metadata (an integer in 1.."
                               f"{MAX_INPUT_SIZE})")
        try:
            if "head" in data:
                head = HeadMeta.from_dict(data["head"], where)
            else:  # exports written before HeadMeta: decoded then with sigma 7 and PAFs 1 cell wide, pinned here
                # (not HeadMeta's defaults, which may move)
                head = HeadMeta(Schema.from_category(data["schema"]),
                                pose_stride=int(data["stride"]) if "heatmaps" in outputs else None,
                                parts_stride=int(data["parts_stride"]) if "parts" in outputs else None,
                                sigma=7.0, paf_width=1.0)
                if head.has_pose:  # a model trained with another sigma decodes its joints up to pixels off
                    warnings.warn(f"{where}: exported before posepart recorded a model's heatmaps (2026-12-02): "
                                  f"decoded as then, with sigma 7 px and PAFs 1 cell wide, whatever it was trained "
                                  f"with; export it again from its checkpoint (`posepart export`) to decode it with "
                                  f"its own", PosepartWarning, stacklevel=2)
        except (HeadMetaError, KeyError, TypeError, ValueError, ArithmeticError) as err:
            detail = str(err).removeprefix(f"{where}: ")  # HeadMetaError names the file already
            raise BackendError(f"{where}: bad posepart metadata: {detail}") from None
        if head.has_pose != ("heatmaps" in outputs) or head.has_parts != ("parts" in outputs):
            raise BackendError(f"{where}: the outputs {list(outputs)} contradict the head description")
        tasks = data.get("tasks")
        if tasks is not None and not (isinstance(tasks, list) and all(isinstance(t, str) for t in tasks)
                                      and set(tasks) <= set(TASKS)):
            raise BackendError(f"{where}: bad task list {str(tasks)[:80]} in the metadata")
        return cls(head, size, outputs, str(data.get("name", "")), None if tasks is None else tuple(tasks))


def export_kind(path: str | Path) -> str | None:
    """"an ONNX export" or "a TorchScript export" when `path` is a `posepart export` file, not a checkpoint. Why:
    torch.load's own error for these (an unpickling failure, after a warning) reads as a corrupt or unsafe file.
    An ONNX file is a protobuf (known by its name); a TorchScript archive is a zip holding `constants.pkl`, which
    torch.save's checkpoints do not."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return "an ONNX export"
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            if any(name.endswith("/constants.pkl") for name in archive.namelist()):
                return "a TorchScript export"
    return None


def parse_record(text: str | bytes | None) -> dict[str, Any] | None:
    """A JSON object of a model file's metadata (an export's record, RECORD_KEY; a weights file's provenance), or None
    where it has none or it does not parse: it informs, the file runs without it."""
    try:
        record = json.loads(text) if text else None
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


def drop_unused_heads(model: Any, info: ModelInfo) -> None:
    """Remove from `model` (in place) the modules of the heads whose maps `info.deployed()` does not output, so that
    neither an export nor the PyTorch backend computes or stores what is never used. `info` may be deployed already
    (an export's) or not (a backend's): deploying twice changes nothing."""
    outputs = info.deployed().outputs
    if hasattr(model, "drop_heads"):
        model.drop_heads(pose="heatmaps" not in outputs, parts="parts" not in outputs)


def _maps(named: dict[str, np.ndarray]) -> Maps:
    """Batched Maps from {output name: array}, float32."""
    return Maps(*(None if named.get(n) is None else np.asarray(named[n], np.float32) for n in OUTPUT_NAMES))


class Backend:
    """Runs the network: __call__((B, 3, H, W) float32) -> batched Maps; `info` describes it."""

    info: ModelInfo
    device: str = "cpu"
    # an export's record of what made it (config, sources, provenance: `posepart.engine.export`), None where it has
    # none (a model in memory, an export written before 2026-12-07); `posepart evaluate` reads it
    record: dict[str, Any] | None = None

    def __call__(self, batch: np.ndarray) -> Maps:  # pragma: no cover - interface
        raise NotImplementedError

    def stages(self, batch: np.ndarray) -> list[Maps]:
        """Every stage's batched maps, first to last (per-stage evaluation). An export holds the final stage only."""
        return [self(batch)]


RUNS_ON = ("cpu", "cuda", "mps")  # the torch device types a model runs on here


def unavailable_hardware(kind: str) -> str | None:
    """What a device kind (`cuda`, `mps`, or Lightning's `gpu`) needs and this machine lacks ("CUDA", "MPS",
    "CUDA or MPS"); None when it is there or the kind needs no accelerator (`cpu`, `auto`)."""
    import torch

    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    needs = {"cuda": ("CUDA", cuda), "gpu": ("CUDA or MPS", cuda or mps), "mps": ("MPS", mps)}
    name, present = needs.get(str(kind).lower(), (None, True))
    return None if present else name


def torch_device(device: str, option: str = "--device") -> Any:
    """`torch.device(device)`, refused with a BackendError naming `option` when it is not a device name or names a
    CUDA / MPS device this machine does not have (checked before any model is loaded or moved)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise BackendError(f"{option} {device!r}: not a device name; use cpu, cuda[:N] or mps") from None
    if dev.type not in RUNS_ON:  # before: xpu's assertion or meta's empty weights, as tracebacks
        raise BackendError(f"{option} {device!r}: posepart runs on cpu, cuda[:N] or mps")
    missing = unavailable_hardware(dev.type)
    if missing:
        raise BackendError(f"{option} {device!r}: {missing} is not available on this machine (torch finds no such "
                           f"device); use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise BackendError(f"{option} {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


_forks_guarded = False  # `one_thread_in_forked_children` registered its hook


def one_thread_in_forked_children() -> None:
    """From now on, a process forked from this one runs torch on one thread (called where posepart loads or builds a
    model to run: building one already starts torch's thread pool). Why: the OpenMP thread pool of torch's CPU
    kernels does not survive fork(), so a child that runs torch after its parent did (gunicorn --preload, a "fork"
    process pool given a Predictor) waited forever, with no error; one thread in the child is what torch's own
    DataLoader workers use. A child started by spawn is not affected."""
    global _forks_guarded
    if not _forks_guarded and hasattr(os, "register_at_fork"):
        import torch

        os.register_at_fork(after_in_child=lambda: torch.set_num_threads(1))
        _forks_guarded = True


class TorchBackend(Backend):
    """A `PosePartNet` (or any module returning a `ModelOutput`), in eval mode, under torch.inference_mode, with its
    BatchNorms folded into the convolutions and channels_last weights and inputs, oneDNN's and cuDNN's fast
    convolution layout: on one CPU core the w0.25 joint model's forward takes 63-68 ms instead of 95-103
    (`benchmarks/bench_network.py`). It runs a copy: the caller's model (its device, mode, weight layout and, during
    training, its optimizer state) is left as it was."""

    def __init__(self, model: Any, info: ModelInfo, device: str = "cpu", *, copy: bool = True) -> None:
        """copy=False: run `model` itself (a module loaded for this backend alone)."""
        import copy as copying

        from posepart.models import channels_last_, fold_batch_norm

        one_thread_in_forked_children()
        self.device = str(device)
        self._dev = torch_device(self.device)
        folded = fold_batch_norm(model)  # a copy when there is a norm to fold
        if folded is model and copy:
            folded = copying.deepcopy(model)
        self.model = channels_last_(folded.eval().to(self._dev))
        drop_unused_heads(self.model, info)  # a head never trained: its maps are not used
        self.info = info

    def _forward(self, batch: np.ndarray) -> Any:
        import torch

        x = torch.from_numpy(np.ascontiguousarray(batch, np.float32)).to(self._dev)
        with torch.inference_mode():
            return self.model(x.contiguous(memory_format=torch.channels_last))

    def _named(self, out: Any, all_stages: bool) -> list[dict[str, Any]]:
        """Per stage (the final one alone unless `all_stages`): {output name: tensor or None}."""
        return [out.stage(t) for t in (range(out.num_stages) if all_stages else (-1,))]

    def __call__(self, batch: np.ndarray) -> Maps:
        return _numpy(self._named(self._forward(batch), all_stages=False)[-1])

    def stages(self, batch: np.ndarray) -> list[Maps]:
        return [_numpy(named) for named in self._named(self._forward(batch), all_stages=True)]


def _numpy(named: dict[str, Any]) -> Maps:
    """Torch maps -> float32 numpy Maps. They come back in the channels_last layout: made C-contiguous for the
    decoder's flat views."""
    return _maps({k: None if v is None else v.float().contiguous().cpu().numpy() for k, v in named.items()})


class _Reopened:
    """Pickling of a backend whose runtime object cannot be pickled (an ONNX Runtime session, a TorchScript module):
    it travels as the file and options it was opened with and opens the file again where it is unpickled (a worker
    process of the same machine). Before, sending such a Predictor to a process pool was a TypeError."""

    _opened_with: tuple[tuple[Any, ...], dict[str, Any]]  # the constructor's arguments

    def __getstate__(self) -> dict[str, Any]:
        return {"opened_with": self._opened_with}

    def __setstate__(self, state: dict[str, Any]) -> None:
        args, kwargs = state["opened_with"]
        self.__init__(*args, **kwargs)  # type: ignore[misc]


class TorchScriptBackend(_Reopened, TorchBackend):
    """A file written by `posepart export --format torchscript` (a traced module returning `info.outputs`)."""

    def __init__(self, path: str | Path, device: str = "cpu") -> None:
        import warnings

        import torch

        if not Path(path).is_file():  # before: "not a TorchScript file (... does not exist)"
            raise BackendError(f"{path}: TorchScript model not found")
        self._opened_with = ((os.path.abspath(path), str(device)), {})  # what a pickled copy opens (`_Reopened`)
        extra = {f"{METADATA_KEY}.json": "", f"{RECORD_KEY}.json": ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated in favour of torch.export
            try:
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            except Exception as err:  # noqa: BLE001 - RuntimeError for anything that is not a TorchScript archive
                # torch's words for a torch.save archive say "your checkpoint file is corrupted": it is not. Such
                # an archive holds no code/ folder, which every TorchScript file has (a damaged one keeps torch's)
                saved = False
                if zipfile.is_zipfile(path):
                    with zipfile.ZipFile(path) as archive:
                        saved = not any("/code/" in name for name in archive.namelist())
                reason = "an archive without a traced model: torch.save's, of a state dict?" if saved else (
                    str(err).splitlines()[0])
                raise BackendError(f"{path}: not a TorchScript file ({reason}); a .pt model is what `posepart export "
                                   f"--format torchscript` writes, and posepart.engine.checkpoint.save_weights saves a "
                                   f"model of one's own loop") from None
        super().__init__(module, ModelInfo.from_json(extra[f"{METADATA_KEY}.json"], str(path)), device, copy=False)
        self.record = parse_record(extra[f"{RECORD_KEY}.json"])

    def _named(self, out: Any, all_stages: bool) -> list[dict[str, Any]]:
        """The traced module's outputs: the final stage (`all_stages` cannot give more)."""
        out = out if isinstance(out, (tuple, list)) else (out,)
        return [dict(zip(self.info.outputs, out))]


class OnnxBackend(_Reopened, Backend):
    """An `.onnx` file written by `posepart export`, run by ONNX Runtime (no torch)."""

    def __init__(self, path: str | Path, device: str = "cpu", *, threads: int | None = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise BackendError("ONNX models need onnxruntime: pip install onnxruntime (or onnxruntime-gpu)") from None
        path = Path(path)
        if not path.is_file():
            raise BackendError(f"{path}: ONNX model not found")
        self._opened_with = ((os.path.abspath(path), str(device)), {"threads": threads})
        self.device = str(device)  # (a torch.device prints as its name)
        kind, _, index = self.device.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index not in ("", "0")):
            raise BackendError(f"unknown device {device!r} for ONNX Runtime (cpu or cuda[:N])")
        if kind == "cpu":
            providers = ["CPUExecutionProvider"]
        else:
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendError("device 'cuda' requested but this onnxruntime has no CUDAExecutionProvider "
                                   "(pip install onnxruntime-gpu)")
            providers = [("CUDAExecutionProvider", {"device_id": int(index or 0)}), "CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
            hint = ""  # before: Protobuf's parse error alone for a checkpoint given as --onnx
            if path.suffix.lower() in (".ckpt", ".safetensors", ".pt", ".ts", ".pth"):
                hint = f" ({path.suffix} is a PyTorch model file: pass it as --checkpoint, or export it to ONNX " \
                       f"with `posepart export`)"
            raise BackendError(f"{path}: ONNX Runtime cannot load it{hint}: {str(err).splitlines()[0]}") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        self.info = ModelInfo.from_json(meta.get(METADATA_KEY), str(path))
        self.record = parse_record(meta.get(RECORD_KEY))
        self.input_name = self.session.get_inputs()[0].name
        names = [o.name for o in self.session.get_outputs()]
        if names != list(self.info.outputs):
            raise BackendError(f"{path}: outputs {names} do not match the metadata's {list(self.info.outputs)}")

    def __call__(self, batch: np.ndarray) -> Maps:
        arrays = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, np.float32)})
        return _maps(dict(zip(self.info.outputs, arrays)))
