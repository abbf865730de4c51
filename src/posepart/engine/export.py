"""Export a trained model for deployment: ONNX (dynamic batch and image size) or TorchScript, self-describing.

The exported graph is `ExportWrapper(model)`: image (B, 3, H, W), ImageNet-normalised, H and W multiples of the
stride -> the FINAL stage's heatmaps (B, K+1, H/s, W/s), PAFs (B, 2L, H/s, W/s) and part logits (B, P, H/ps, W/ps),
only those the model has (a pose-only model exports two outputs, a segmentation-only one a single `parts`).
A `ModelInfo` JSON (schema, strides, input size, output names) rides along — ONNX `metadata_props["posepart"]`,
TorchScript extra file `posepart.json` — so `posepart predict --onnx FILE` needs nothing else.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): the dynamo exporter needs onnxscript, which posepart
does not depend on, and the traced graph keeps H, W and B symbolic (the model takes image sizes from tensor shapes
without int()). After writing, the file is checked with ONNX Runtime against PyTorch at the export size and at a
second batch size and image size.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from posepart.data.writer import atomic_write
from posepart.engine.checkpoint import LoadedModel, load_model
from posepart.errors import PosepartError, UsageError
from posepart.inference.backends import MAX_INPUT_SIZE, METADATA_KEY, ModelInfo
from posepart.inference.predictor import model_info

ExportFormat = Literal["onnx", "torchscript"]
DEFAULT_OPSET = 17
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

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.model(image)
        named = {"heatmaps": out.heatmaps[-1] if out.heatmaps else None, "pafs": out.pafs[-1] if out.pafs else None,
                 "parts": out.parts[-1] if out.parts else None}
        return tuple(named[n] for n in self.outputs)  # type: ignore[misc]


def _dummy(info: ModelInfo, size: int | None, batch: int = 1) -> Tensor:
    side = int(size or info.input_size)
    side = max(info.input_multiple, side // info.input_multiple * info.input_multiple)
    return torch.randn(batch, 3, side, side, generator=torch.Generator().manual_seed(0))


def export_onnx(model: nn.Module, info: ModelInfo, out: str | Path, *, input_size: int | None = None,
                opset: int = DEFAULT_OPSET, verify: bool = True) -> dict[str, Any]:
    """Write `out` (.onnx) with dynamic batch/height/width; returns {"path", "max_diff"} (`max_difference`, None if not
    verified). Raises ExportError when ONNX Runtime disagrees with PyTorch by more than PARITY_TOL."""
    import io

    try:
        import onnx
    except ImportError:
        raise ExportError("ONNX export needs the onnx package: pip install 'posepart[onnx]'") from None
    wrapper = ExportWrapper(model, info).eval()
    x = _dummy(info, input_size)
    dynamic: dict[str, dict[int, str]] = {"image": {0: "batch", 2: "height", 3: "width"}}
    for name in info.outputs:
        full = name == "parts" and info.parts_stride == 1
        dynamic[name] = {0: "batch", 2: "height" if full else f"{name}_height", 3: "width" if full else f"{name}_width"}
    _check_opset(opset)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # tracing warns that shape checks become constants (by design), and that the
        warnings.simplefilter("ignore")  # TorchScript-based exporter is deprecated
        try:
            torch.onnx.export(wrapper, (x,), buffer, dynamo=False, input_names=["image"],
                              output_names=list(info.outputs), dynamic_axes=dynamic, opset_version=opset,
                              do_constant_folding=True)
        except torch.onnx.OnnxExporterError as err:  # an operator the opset cannot express
            raise ExportError(f"--opset {opset}: the ONNX exporter cannot export this model at that opset: "
                              f"{str(err).splitlines()[0][:300]}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, info.to_json()
    proto.doc_string = f"posepart {info.name or 'model'}: image (B,3,H,W) -> {', '.join(info.outputs)}"
    path = atomic_write(out, lambda f: f.write(proto.SerializeToString()))
    diff = verify_onnx(wrapper, path, info, x) if verify else None
    return {"path": path, "max_diff": diff}


def _check_opset(opset: int) -> None:
    """An opset outside the range torch's TorchScript-based exporter writes: a UsageError naming it."""
    try:
        from torch.onnx._constants import ONNX_MIN_OPSET, ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET
    except ImportError:  # private constants moved: leave the check to the exporter
        return
    if not ONNX_MIN_OPSET <= opset <= ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET:
        raise UsageError(f"--opset {opset}: torch exports opsets "
                         f"{ONNX_MIN_OPSET}..{ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET}")


def verify_onnx(wrapper: nn.Module, path: Path, info: ModelInfo, x: Tensor) -> float:
    """`max_difference` of ONNX Runtime against PyTorch; ExportError above PARITY_TOL."""
    from posepart.inference.backends import OnnxBackend

    worst = max_difference(wrapper, OnnxBackend(path), info, x, path)
    if worst > PARITY_TOL:
        raise ExportError(f"{path}: ONNX Runtime differs from PyTorch by {worst:.2e} of the output's scale "
                          f"(> {PARITY_TOL:g})")
    return worst


def export_torchscript(model: nn.Module, info: ModelInfo, out: str | Path, *, input_size: int | None = None,
                       verify: bool = True) -> dict[str, Any]:
    """Write a traced TorchScript module (sizes stay dynamic) with `posepart.json` metadata."""
    wrapper = ExportWrapper(model, info).eval()
    x = _dummy(info, input_size)
    with warnings.catch_warnings():  # see export_onnx; torch.jit is also deprecated in favour of torch.export
        warnings.simplefilter("ignore")
        with torch.no_grad():
            traced = torch.jit.trace(wrapper, (x,), check_trace=False)

        def write(f: Any) -> None:
            torch.jit.save(traced, f, _extra_files={f"{METADATA_KEY}.json": info.to_json()})

        path = atomic_write(out, write)
    diff = None
    if verify:
        from posepart.inference.backends import TorchScriptBackend

        diff = max_difference(wrapper, TorchScriptBackend(path), info, x, path)
    return {"path": path, "max_diff": diff}


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
    """Export a checkpoint (.ckpt / .safetensors, loaded weights-only) or a `LoadedModel` as `fmt` to `out`."""
    loaded = checkpoint if isinstance(checkpoint, LoadedModel) else load_model(checkpoint, map_location="cpu")
    if (input_size or loaded.input_size) > MAX_INPUT_SIZE:  # its metadata would be refused by every loader
        raise UsageError(f"export --input-size {input_size or loaded.input_size}: at most {MAX_INPUT_SIZE} pixels")
    info = model_info(loaded.model, loaded.schema, input_size or loaded.input_size, loaded.config.model.name,
                      loaded.tasks)
    if fmt == "onnx":
        return export_onnx(loaded.model, info, out, input_size=input_size, opset=opset, verify=verify)
    if fmt == "torchscript":
        return export_torchscript(loaded.model, info, out, input_size=input_size, verify=verify)
    raise UsageError(f"unknown export format {fmt!r}: onnx or torchscript")
