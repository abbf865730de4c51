"""Export a trained model for deployment: ONNX (dynamic batch and image size) or TorchScript, self-describing.

The exported graph is `ExportWrapper(model)`: image (B, 3, H, W), ImageNet-normalised, H and W multiples of the
stride -> the FINAL stage's heatmaps (B, K+1, H/s, W/s), PAFs (B, 2L, H/s, W/s) and part logits (B, P, H/ps, W/ps),
only those the model has (a pose-only model exports two outputs, a segmentation-only one a single `parts`).
A `ModelInfo` JSON (schema, strides, input size, output names) rides along — ONNX `metadata_props["posepart"]`,
TorchScript extra file `posepart.json` — so `posepart predict --onnx FILE` needs nothing else. What made the model
rides along too, as the .safetensors export keeps it: its config, training sources, `provenance` and the file it was
exported from (name, sha1), under RECORD_KEY (ONNX metadata, TorchScript extra file `posepart_record.json`).

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter needs onnxscript, which posepart
does not depend on, and the traced graph keeps H, W and B symbolic (the model takes image sizes from tensor shapes
without int()). The file is written under a temporary name beside `out` and checked (ONNX Runtime, or the
TorchScript loader, against PyTorch at the export size and at a second batch size and image size) before it takes its
name: a failed export leaves no file, and an earlier one at `out` as it was.
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch import Tensor, nn

from posepart.engine.checkpoint import LoadedModel, load_model
from posepart.errors import PosepartError, UsageError
from posepart.files import atomic_write, file_sha1
from posepart.inference.backends import (DEFAULT_OPSET, MAX_INPUT_SIZE, METADATA_KEY, MIN_OPSET, RECORD_KEY,
                                        ModelInfo, drop_unused_heads)
from posepart.inference.predictor import model_info

ExportFormat = Literal["onnx", "torchscript"]
# Largest |exported - PyTorch| allowed, relative to each output's scale (its largest |value|, at least 1): float32
# rounding grows with the magnitude, and part logits or untrained maps reach tens, where 1e-4 absolute is noise.
PARITY_TOL = 1e-4


class ExportError(PosepartError, RuntimeError):
    """An export cannot be written or does not reproduce the PyTorch model (a missing package, a parity failure)."""


class ExportWrapper(nn.Module):
    """model(image) -> tuple of the final-stage maps named by `info.outputs` (a flat tuple: what exporters take)."""

    def __init__(self, model: nn.Module, info: ModelInfo) -> None:
        super().__init__()
        # a copy on the CPU in eval mode: exporting leaves the caller's model as it was (before, a model in training,
        # or on a GPU, came back in eval mode on the CPU)
        self.model = copy.deepcopy(model).eval().cpu()
        self.outputs = info.outputs
        drop_unused_heads(self.model, info)  # maps not output: neither computed nor stored

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        named = self.model(image).stage(-1)  # the final maps by name (ModelOutput)
        return tuple(named[n] for n in self.outputs)  # type: ignore[misc]


def _dummy(info: ModelInfo, size: int | None, batch: int = 1) -> Tensor:
    side = int(size or info.input_size)
    side = max(info.input_multiple, side // info.input_multiple * info.input_multiple)
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


def export_onnx(model: nn.Module, info: ModelInfo, out: str | Path, *, input_size: int | None = None,
                opset: int = DEFAULT_OPSET, verify: bool = True, record: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    """Write `out` (.onnx) with dynamic batch/height/width; returns {"path", "max_diff"} (`max_difference`, None if not
    verified). Raises ExportError when ONNX Runtime disagrees with PyTorch by more than PARITY_TOL, or cannot run (is
    not installed): `out` is then not written (`_write_checked`). `record`: what made the model (`export_model`'s),
    as JSON under the metadata key RECORD_KEY (inference reads METADATA_KEY's alone)."""
    import io

    try:
        import onnx
    except ImportError:
        # the extra of the checkout (posepart is installed from it, not from an index, where that name is not ours)
        raise ExportError("ONNX export needs the onnx package: pip install onnx (in the posepart checkout: pip "
                          "install '.[onnx]', with onnxruntime to check the file)") from None
    _check_opset(opset)
    if verify:  # before the export, not after it: without the runtime there is nothing to check the file with
        try:
            importlib.import_module("onnxruntime")  # only its presence is checked here
        except ImportError:
            raise ExportError("checking the ONNX export against PyTorch needs onnxruntime: pip install onnxruntime, "
                              "or pass --no-verify (verify=False) to write it unchecked") from None
    wrapper = ExportWrapper(model, info).eval()
    x = _dummy(info, input_size)
    dynamic: dict[str, dict[int, str]] = {"image": {0: "batch", 2: "height", 3: "width"}}
    for name in info.outputs:
        full = name == "parts" and info.parts_stride == 1
        dynamic[name] = {0: "batch", 2: "height" if full else f"{name}_height", 3: "width" if full else f"{name}_width"}
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tracing warns that shape checks become constants (by design), and that the
        warnings.simplefilter("ignore")  # TorchScript-based exporter is deprecated
        try:
            torch.onnx.export(wrapper, (x,), buffer, dynamo=False, input_names=["image"],
                              output_names=list(info.outputs), dynamic_axes=dynamic, opset_version=opset,
                              do_constant_folding=True)
        except torch.onnx.OnnxExporterError as err:  # an operator the opset cannot express
            raise ExportError(f"--opset {opset}: the ONNX exporter cannot export this model at that opset: "
                              f"{_exporter_reason(err)}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    for key, value in ((METADATA_KEY, info.to_json()), (RECORD_KEY, None if record is None else json.dumps(record))):
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    proto.doc_string = f"posepart {info.name or 'model'}: image (B,3,H,W) -> {', '.join(info.outputs)}"
    data = proto.SerializeToString()

    def check(staged: Path) -> float:
        from posepart.inference.backends import OnnxBackend

        return _parity(wrapper, OnnxBackend, staged, info, x, Path(out), "ONNX Runtime")

    return _write_checked(Path(out), lambda f: f.write(data), check if verify else None)


def opset_range() -> tuple[int, int]:
    """(lowest, highest) ONNX opset `posepart export` writes: MIN_OPSET, and the highest of torch's exporter."""
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET as highest
    except ImportError:  # private constant moved: torch 2.14's value
        highest = 20
    return MIN_OPSET, highest


def _check_opset(opset: int) -> None:
    """An opset outside `opset_range`: a UsageError naming the range, before anything is exported."""
    lowest, highest = opset_range()
    if not lowest <= opset <= highest:
        raise UsageError(f"--opset {opset}: posepart exports ONNX opsets {lowest} to {highest}")


def _exporter_reason(err: Exception) -> str:
    """The lines of torch's export error that say what failed, and where in posepart's model: not the Torch IR
    values and Python stack it appends (tens of lines)."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    reason = lines[0].split("[Caused by", 1)[0].strip() if lines else type(err).__name__
    package = str(Path(__file__).parents[1])  # as the stack names posepart's files: the path they were imported by
    origin = next((line for line in lines if line.startswith(package + os.sep) and Path(__file__).name not in line),
                  None)
    where = f" (at {Path(origin).relative_to(package).as_posix()})" if origin else ""  # "models/trunk.py(156): forward"
    return f"{reason[:300]}{where}"


def _write_checked(out: Path, write: Callable[[Any], None], check: Callable[[Path], float] | None) -> dict[str, Any]:
    """Write an export through `write` and run `check` on it (-> `max_diff`) before it takes `out`'s name
    (`atomic_write`): a file that fails its check, or cannot be checked, never stands at `out`, and an earlier file
    there is kept. Returns {"path", "max_diff"} (None unchecked)."""
    diffs: list[float] = []
    path = atomic_write(out, write, None if check is None else lambda staged: diffs.append(check(staged)))
    return {"path": path, "max_diff": diffs[0] if diffs else None}


def _parity(wrapper: nn.Module, backend: Callable[[Path], Any], staged: Path, info: ModelInfo, x: Tensor, out: Path,
            runtime: str) -> float:
    """`max_difference` against PyTorch of `backend(staged)`, running the export meant for `out` under its temporary
    name; ExportError above PARITY_TOL, or where the runtime cannot load or run it (named as `out`)."""
    from posepart.inference.backends import BackendError

    not_written = "the export was not written (`--no-verify` writes it unchecked)"
    try:
        worst = max_difference(wrapper, backend(staged), info, x, out)
    except (BackendError, ExportError) as err:
        reason = str(err).removeprefix(f"{staged}: ").removeprefix(f"{out}: ")
        raise ExportError(f"{out}: the {runtime} check failed: {reason}; {not_written}") from None
    if worst > PARITY_TOL:
        raise ExportError(f"{out}: {runtime} differs from PyTorch by {worst:.2e} of the output's scale "
                          f"(> {PARITY_TOL:g}); {not_written}")
    return worst


def export_torchscript(model: nn.Module, info: ModelInfo, out: str | Path, *, input_size: int | None = None,
                       verify: bool = True, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write a traced TorchScript module (sizes stay dynamic) with `posepart.json` metadata (and `record` as the
    extra file RECORD_KEY.json); checked against PyTorch as `export_onnx` is (ExportError above PARITY_TOL), before it
    takes `out`'s name."""
    wrapper = ExportWrapper(model, info).eval()
    x = _dummy(info, input_size)
    with warnings.catch_warnings():  # see export_onnx; torch.jit is also deprecated in favour of torch.export
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, (x,), check_trace=False)

        def write(f: Any) -> None:
            extra = {f"{METADATA_KEY}.json": info.to_json(), **({} if record is None else
                                                                 {f"{RECORD_KEY}.json": json.dumps(record)})}
            torch.jit.save(traced, f, _extra_files=extra)

        def check(staged: Path) -> float:
            from posepart.inference.backends import TorchScriptBackend

            return _parity(wrapper, TorchScriptBackend, staged, info, x, Path(out), "TorchScript")

        return _write_checked(Path(out), write, check if verify else None)


def parity_error(reference: np.ndarray, exported: np.ndarray) -> float:
    """Max |exported - reference| / scale, the scale being the reference's largest |value|, at least 1: what
    PARITY_TOL bounds."""
    scale = max(1.0, float(np.abs(reference).max()))
    return float(np.abs(reference - exported).max()) / scale


def max_difference(wrapper: nn.Module, backend: Any, info: ModelInfo, x: Tensor, path: Path) -> float:
    """Max `parity_error` over every output, at the export input and at batch 2 with another image size."""
    worst = 0.0
    for batch in (x, _other_input(info, x)):
        with torch.inference_mode():
            expected = wrapper(batch)
        got = [m for m in backend(batch.numpy()) if m is not None]
        for name, e, g in zip(info.outputs, expected, got):
            if tuple(e.shape) != g.shape:
                raise ExportError(f"{path}: exported output {name} has shape {g.shape}, PyTorch {tuple(e.shape)}")
            worst = max(worst, parity_error(e.numpy(), g))
    return worst


def _other_input(info: ModelInfo, x: Tensor) -> Tensor:
    """Batch 2 at another, non-square size: proves the exported graph is not tied to the tracing input."""
    h, w = x.shape[-2:]
    m = info.input_multiple
    return torch.randn(2, 3, max(m, h - 2 * m), w + 2 * m,
                       generator=torch.Generator().manual_seed(1))


def export_model(checkpoint: str | Path | LoadedModel, fmt: ExportFormat, out: str | Path, *,
                 input_size: int | None = None, opset: int = DEFAULT_OPSET, verify: bool = True) -> dict[str, Any]:
    """Export a checkpoint (.ckpt / .safetensors, loaded weights-only) or a `LoadedModel` as `fmt` to `out` ->
    {"path", "max_diff" (None unverified), "left_out": the tasks whose untrained head the export leaves out}."""
    if fmt == "onnx":  # refused before the model is loaded
        _check_opset(opset)
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint, map_location="cpu")
    if (input_size or loaded.input_size) > MAX_INPUT_SIZE:  # its metadata would be refused by every loader
        raise UsageError(f"export --input-size {input_size or loaded.input_size}: at most {MAX_INPUT_SIZE} pixels")
    full = model_info(loaded.model, loaded.schema, input_size or loaded.input_size, loaded.config.model.name,
                      loaded.tasks)
    info = full.deployed()  # a head its training never taught is left out (never used)
    # what made it, as the .safetensors export keeps it (before: an export named no run, config or code)
    record = {"config": loaded.config.to_dict(), "sources": loaded.sources, "provenance": loaded.provenance,
              **({} if isinstance(checkpoint, LoadedModel) else
                 {"exported_from": {"file": Path(checkpoint).name, "sha1": file_sha1(checkpoint)}})}
    if fmt == "onnx":
        result = export_onnx(loaded.model, info, out, input_size=input_size, opset=opset, verify=verify,
                             record=record)
    elif fmt == "torchscript":
        result = export_torchscript(loaded.model, info, out, input_size=input_size, verify=verify, record=record)
    else:
        raise UsageError(f"unknown export format {fmt!r}: onnx or torchscript")
    return {**result, "left_out": full.left_out}
