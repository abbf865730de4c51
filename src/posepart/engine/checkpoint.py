"""Checkpoints: weights-only (never pickle-executing) loads, self-describing models, safetensors export.

Training writes checkpoints atomically through `engine.trainer.AtomicCheckpointIO`, which loads them with
`load_checkpoint` here (`torch.load(..., weights_only=True)` whatever the caller asks), so Lightning's own resume path
is safe too. Nothing here imports Lightning: loading a model for inference costs torch and posepart's model code.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from posepart.engine.builders import build_from_config
from posepart.engine.config import config_from_dict
from posepart.data.mixing import trained_tasks
from posepart.engine.settings import Config
from posepart.errors import MissingFileError, PosepartError, UsageError
from posepart import files
from posepart.files import atomic_write, code_digest, newer_format
from posepart.heads import HeadMeta, HeadMetaError
from posepart.inference.backends import export_kind, one_thread_in_forked_children, parse_record
from posepart.schema import Schema

CHECKPOINT_KEY = "posepart"
# The layout of a checkpoint's CHECKPOINT_KEY entry: a later version's file is refused as one (files written before
# the tag have this layout)
CHECKPOINT_FORMAT = "posepart-checkpoint-v1"
SAFETENSORS_FORMAT = "posepart-weights-v1"


class CheckpointError(PosepartError, RuntimeError):
    """A checkpoint file cannot be loaded safely or does not describe a posepart model."""


def load_checkpoint(path: str | Path, map_location: Any = "cpu", *, mmap: bool = False) -> dict[str, Any]:
    """`torch.load(path, weights_only=True)`: plain containers, tensors, numbers and strings only (`mmap`: tensors
    are mapped from the file, not read, for a look at names and shapes).

    A file that needs arbitrary unpickling (a pickled object whose __reduce__ could run code) is refused with a
    CheckpointError naming the file; nothing in it is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"{path}: checkpoint not found (or not a file)")
    export = export_kind(path)
    if export is not None:
        raise CheckpointError(f"{path}: {export}, not a training checkpoint: this needs a .ckpt (from "
                              f"`posepart train`) or a .safetensors (`posepart export-weights`); exports run with "
                              f"`posepart predict --checkpoint {path}` or `Predictor.from_checkpoint`")
    head = _file_head(path)
    try:  # mmap reads torch's zip format alone: anything else loads without it, so its error is torch's reason
        checkpoint = torch.load(path, map_location=map_location, weights_only=True,
                                mmap=mmap and (head is None or head.startswith(_ZIP)))
    except Exception as err:  # noqa: BLE001 - UnpicklingError, RuntimeError (zip), EOFError, ...
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        unsafe = next((line for line in lines if "unsupported global" in line.lower()), None)
        if unsafe is None and head is not None and not head.startswith((_ZIP, _PICKLE)):
            # a YAML, an image, a renamed ONNX file: torch's "Unsupported operand" comes under a banner advising
            # weights_only=False, which is wrong for a file that is no pickle at all (and unsafe advice for any)
            raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_load_failure(err, lines)}); posepart "
                                  f"reads {ACCEPTED_MODEL_FILES}") from None
        detail = (unsafe or _torch_reason(lines)).rstrip(".")
        raise CheckpointError(
            f"{path}: refusing to load this checkpoint: it is not a plain weights-only file (it needs objects that "
            f"torch.load(weights_only=True) will not unpickle, or it is corrupt): {type(err).__name__}: {detail}. "
            f"posepart never loads checkpoints with arbitrary unpickling."
        ) from None
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(checkpoint).__name__}")
    entry = checkpoint.get(CHECKPOINT_KEY)
    if not mmap and isinstance(entry, dict) and isinstance(checkpoint.get("state_dict"), dict):
        check_weights(entry.get(DIGEST_KEY), checkpoint["state_dict"], path)
    return checkpoint


# A model file's record of its weights (`weights_digest`): the entry in a .ckpt's CHECKPOINT_KEY, a .safetensors'
# metadata key
DIGEST_KEY = "weights_sha256"


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over named tensors (each one's name, dtype, shape and bytes, in name order), which a model file
    records so that its loader can tell the weights it reads from those written. Why by hand: torch.load reads its
    zip without checking the entries' CRCs and safetensors checks no data, so a bit flipped on a disk or in a copy
    loaded and ran as another model (tested)."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(state[name].shape)}\0".encode())
        digest.update(tensor.view(torch.uint8).numpy())
    return digest.hexdigest()


def check_weights(recorded: Any, state: dict[str, Any], path: Path) -> None:
    """A CheckpointError unless the weights read from `path` are those its `recorded` digest describes (files
    written before the digest have none: not checked)."""
    if recorded is None:
        return
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        return  # not a state dict: the loaders' own checks say so
    if weights_digest(state) != recorded:
        raise CheckpointError(f"{path}: its weights are not those it was written with (their sha256 differs from the "
                              f"{DIGEST_KEY} it records): the file is damaged, by a disk or a copy; use another copy "
                              f"(a file whose tensors were edited on purpose loads once that record is removed)")


# What posepart takes as a model file, for errors about one that is none of them
ACCEPTED_MODEL_FILES = ("a .ckpt written by `posepart train`, a .safetensors written by `posepart export-weights`, "
                        "or an .onnx or TorchScript .pt / .ts written by `posepart export` (an .onnx also runs with "
                        "`posepart predict --onnx FILE`, without torch)")
# Lines of torch's weights-only refusal that advise rather than explain: loading with weights_only=False (which runs
# whatever the file holds), filing an issue, reading the docs. The reason is what is left.
_TORCH_ADVICE = ("weights only load failed", "please file an issue", "check the documentation", "(1) ", "(2) ")


_ZIP, _PICKLE = b"PK\x03\x04", b"\x80"  # how torch.save's files start: a zip (since 1.6), a pickle (protocol >= 2)


def _file_head(path: Path) -> bytes | None:
    """The first bytes of `path` (None if it cannot be read now: torch.load then says why). A file that starts as
    neither of torch.save's formats (text, an image, a protobuf) is no PyTorch checkpoint at all, whatever torch.load
    says about it; a truncated zip is a corrupt one."""
    try:
        with open(path, "rb") as f:
            return f.read(4)
    except OSError:
        return None


def _torch_reason(lines: list[str]) -> str:
    """The line of a torch.load error that says what failed ("Unsupported operand 109"), not its advice."""
    reasons = [line.split("WeightsUnpickler error:", 1)[-1].strip() for line in lines
               if not line.lower().startswith(_TORCH_ADVICE)]
    return next((line for line in reasons if line), lines[0] if lines else "")


def _load_failure(err: Exception, lines: list[str]) -> str:
    """torch.load's exception type and reason, for an error message ("EOFError: the file is empty")."""
    reason = _torch_reason(lines).rstrip(".")
    if not reason and isinstance(err, EOFError):  # torch.load of an empty file: an EOFError without a word
        reason = "the file is empty"
    return f"{type(err).__name__}: {reason}" if reason else type(err).__name__


@dataclass
class LoadedModel:
    """A model rebuilt from a checkpoint or exported weights, in eval mode, with what it needs to run."""

    model: torch.nn.Module
    schema: Schema
    config: Config
    input_size: int
    sources: list[dict[str, Any]] = field(default_factory=list)  # what each training source fed (`describe()`)
    provenance: dict[str, Any] | None = None  # what trained it (`provenance`; None: the file records none)

    @property
    def head(self) -> HeadMeta:
        """The model's `HeadMeta`: what its maps are (strides, sigma, PAF width, schema)."""
        return self.model.meta

    @property
    def tasks(self) -> tuple[str, ...] | None:
        """The tasks its weights learnt (`data.mixing.trained_tasks` of its sources; None for a file that does not
        record them). The joint network trained on pose alone has a part head it never trained."""
        return trained_tasks(self.sources)


def describe_checkpoint(checkpoint: dict[str, Any], path: Path) -> tuple[Schema, Config]:
    """(schema, config) a checkpoint records; a CheckpointError naming `path` when it records none or a foreign one."""
    info = checkpoint.get(CHECKPOINT_KEY)
    if not isinstance(info, dict) or "schema" not in info or "config" not in info:
        raise CheckpointError(f"{path}: not a posepart checkpoint (no {CHECKPOINT_KEY!r} schema/config entry)")
    found = info.get("format", CHECKPOINT_FORMAT)
    if found != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: {newer_format(found, CHECKPOINT_FORMAT) or 'not a posepart checkpoint'} "
                              f"(format {found!r})")
    try:
        return Schema.from_category(info["schema"]), config_from_dict(info["config"])
    except (KeyError, TypeError, ValueError, ArithmeticError, RecursionError) as err:  # an edited or foreign entry
        raise CheckpointError(f"{path}: its {CHECKPOINT_KEY!r} entry does not describe a posepart model: "
                              f"{err}{_other_code(info.get('provenance'))}") from None


def _other_code(made: Any) -> str:
    """For an error reading a model file's config: which code wrote it, where that is not this code (a setting this
    version does not know is most likely a newer version's)."""
    code = made.get("code") if isinstance(made, dict) else None
    if not isinstance(code, str) or code == code_digest():
        return ""
    return (f" (the file was written by posepart {made.get('posepart')} at code {code[:12]}, this is code "
            f"{code_digest()[:12]}: if that code is newer, update posepart to read the file)")


def provenance(precision: str | None, world_size: int | None = None) -> dict[str, Any]:
    """What made a checkpoint, beside its config: the versions of the code and libraries (OpenCV and
    albumentations warp the training images), the CPU (`cpu_kind`), the threads, processes and precision it trained
    with (the precision as run: `auto` resolved), and the command line with the folder it ran in (its paths may be
    relative). The weights depend on each of them."""
    import cv2
    import lightning
    import numpy

    from posepart import __version__

    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the folder it was launched in, deleted since: the save must not fail for it
        cwd = None
    return {"posepart": __version__, "code": code_digest(), "torch": str(torch.__version__),
            "lightning": lightning.__version__, "numpy": numpy.__version__, "opencv": cv2.__version__,
            # its version from the metadata: importing albumentations asks PyPI for a newer one (a warning offline)
            "albumentations": importlib.metadata.version("albumentations"), "python": platform.python_version(),
            "cpu": cpu_kind(), "threads": torch.get_num_threads(), "precision": precision, "world_size": world_size,
            "command": files.invoked_as or [str(arg) for arg in sys.argv], "cwd": cwd}  # (Paths in a launcher's argv)


def cpu_kind() -> dict[str, Any]:
    """What of the CPU the numbers depend on (README, "Reproducibility"): torch's own kernels' instruction set, whether
    oneDNN runs bfloat16 natively (AVX512-BF16 or AMX), and a cap set on oneDNN's instruction set (`ONEDNN_MAX_CPU_ISA`:
    the capability torch reports does not see it, though it changes oneDNN's kernels and their sums)."""
    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "bf16": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
            "onednn_max_isa": os.environ.get("ONEDNN_MAX_CPU_ISA")}


def recorded_sources(path: str | Path) -> list[dict[str, Any]]:
    """The training sources a checkpoint file records (memory-mapped: its tensors are not read)."""
    return _sources(load_checkpoint(path, mmap=True))


def _sources(checkpoint: dict[str, Any]) -> list[dict[str, Any]]:
    """The training sources a checkpoint records (older checkpoints: none)."""
    sources = checkpoint.get(CHECKPOINT_KEY, {}).get("sources")
    return list(sources) if isinstance(sources, list) else []


def _checked_sources(sources: Any, path: Path) -> list[dict[str, Any]]:
    """Recorded sources as `trained_tasks` and the reports read them: dicts whose tasks are a list of names."""
    if not isinstance(sources, list) or not all(isinstance(s, dict) and isinstance(s.get("tasks", []), list)
                                                and all(isinstance(t, str) for t in s.get("tasks", []))
                                                for s in sources):
        raise CheckpointError(f"{path}: its recorded training sources are not a list of sources")
    return sources


def model_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's own weights from a Lightning checkpoint ("model." prefix stripped, loss parameters dropped)."""
    return {k[len("model."):]: v for k, v in checkpoint["state_dict"].items() if k.startswith("model.")}


def _checked_state(checkpoint: dict[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """`model_state`, refused unless the file's state_dict maps names to tensors (an edited file: a traceback)."""
    state = checkpoint.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path}: its state_dict is not a mapping of names to tensors")
    return model_state(checkpoint)


def _stored_head(stored: Any, path: Path) -> HeadMeta | None:
    """The HeadMeta a model file records (files written before it existed: None)."""
    if stored is None:
        return None
    try:
        return HeadMeta.from_dict(json.loads(stored) if isinstance(stored, str) else stored, str(path))
    except (HeadMetaError, json.JSONDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path}: {err}") from None


def _rebuild(schema: Schema, config: Config, state: dict[str, torch.Tensor], map_location: Any, path: Path,
             sources: list[dict[str, Any]] | None = None, head: HeadMeta | None = None,
             provenance: Any = None) -> LoadedModel:
    bad = [name for name, tensor in state.items() if tensor.is_floating_point() and not bool(tensor.isfinite().all())]
    if bad:  # a model that predicts NaN everywhere would score 0 without a word
        raise CheckpointError(f"{path}: refusing non-finite weights (NaN or inf) in {len(bad)} tensor(s), the first "
                              f"{bad[0]!r}")
    _check_builds(schema, config, state, path)
    model = build_from_config(config, schema, pretrained=False)
    if head is not None and head != model.meta:
        raise CheckpointError(f"{path}: the recorded head {head.to_dict()} differs from the one its config builds "
                              f"{model.meta.to_dict()}; the file was edited or written by another version")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:  # missing, unexpected or mis-shaped tensors
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise CheckpointError(f"{path}: its weights do not fit the model its config builds: {first}") from None
    model.to(map_location).eval()
    return LoadedModel(model, schema, config, config.data.input_size, list(sources or []),
                       provenance if isinstance(provenance, dict) else None)


def _check_builds(schema: Schema, config: Config, state: dict[str, torch.Tensor], path: Path | str
                  ) -> torch.nn.Module:
    """The model `config` builds for `schema`, on the meta device (shapes without memory, so a config edited to width
    200 is refused, not built); a CheckpointError unless its tensors are `state`'s (names, shapes)."""
    try:
        with torch.device("meta"):
            built = build_from_config(config, schema, pretrained=False)
        shapes = {k: tuple(v.shape) for k, v in built.state_dict().items()}
    except (ValueError, TypeError, ArithmeticError) as err:  # the recorded schema and config do not make a model
        raise CheckpointError(f"{path}: its schema and config do not build a model: {err}") from None
    wrong = next((k for k in sorted(shapes.keys() | state.keys())
                  if shapes.get(k) != (tuple(state[k].shape) if k in state else None)), None)
    if wrong is not None:
        raise CheckpointError(f"{path}: its weights do not fit the model its config builds: {wrong!r} is "
                              f"{tuple(state[wrong].shape) if wrong in state else 'absent'} in the file, "
                              f"{shapes.get(wrong, 'unexpected')} in the model")
    return built


def load_model(path: str | Path, map_location: Any = "cpu") -> LoadedModel:
    """Rebuild the model of a training checkpoint (.ckpt) or of exported weights (.safetensors)."""
    one_thread_in_forked_children()  # building it starts torch's thread pool, which a forked child cannot use
    path = Path(path)
    if path.suffix.lower() == ".safetensors":  # as export_weights and the Predictor read it (W.SAFETENSORS too)
        return _load_safetensors(path, map_location)
    checkpoint = load_checkpoint(path)
    schema, config = describe_checkpoint(checkpoint, path)
    return _rebuild(schema, config, _checked_state(checkpoint, path), map_location, path,
                    _checked_sources(_sources(checkpoint), path),
                    _stored_head(checkpoint[CHECKPOINT_KEY].get("head"), path),
                    checkpoint[CHECKPOINT_KEY].get("provenance"))


def _load_safetensors(path: Path, map_location: Any) -> LoadedModel:
    """Exported weights: the tensors plus the JSON metadata `export_weights` writes. A file that is not readable
    safetensors, or whose metadata lacks or garbles a key, is a CheckpointError naming the file."""
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise MissingFileError(f"{path}: weights file not found (or not a file)")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {name: f.get_tensor(name) for name in f.keys()}
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable .safetensors file: {err}") from None
    if metadata.get("format") != SAFETENSORS_FORMAT:
        found = metadata.get("format")
        raise CheckpointError(f"{path}: {newer_format(found, SAFETENSORS_FORMAT) or 'not posepart weights'} "
                              f"(metadata format {found!r})")
    check_weights(metadata.get(DIGEST_KEY), state, path)
    try:
        schema = Schema.from_category(json.loads(metadata["schema"]))
        config = config_from_dict(json.loads(metadata["config"]))
        sources = _checked_sources(json.loads(metadata.get("sources", "[]")), path)
        made = json.loads(metadata.get("provenance", "null"))
    except KeyError as err:
        raise CheckpointError(f"{path}: metadata lacks {err}") from None
    except (ValueError, TypeError, ArithmeticError, RecursionError) as err:  # JSON, or a config that does not hold
        raise CheckpointError(f"{path}: metadata does not describe a posepart model: {err}"
                              f"{_other_code(parse_record(metadata.get('provenance')))}") from None
    return _rebuild(schema, config, state, map_location, path, sources, _stored_head(metadata.get("head"), path),
                    made)


def export_weights(checkpoint_path: str | Path, out: str | Path) -> Path:
    """Write the model weights of a checkpoint as safetensors, with the schema and config as JSON metadata."""
    checkpoint_path, out = Path(checkpoint_path), Path(out)
    if out.suffix.lower() != ".safetensors":  # loaders tell formats apart by the extension; nor is it the .ckpt
        raise UsageError(f"export-weights --out {out}: the file must end in .safetensors")
    if checkpoint_path.suffix.lower() == ".safetensors":
        raise UsageError(f"export-weights --checkpoint {checkpoint_path}: these are exported weights already; give "
                         f"the .ckpt of `posepart train`")
    checkpoint = load_checkpoint(checkpoint_path)
    schema, config = describe_checkpoint(checkpoint, checkpoint_path)
    extra = {key: checkpoint[CHECKPOINT_KEY][key] for key in ("head", "provenance")  # (older checkpoints: neither)
             if checkpoint[CHECKPOINT_KEY].get(key) is not None}
    return _write_weights(out, model_state(checkpoint), schema, config, sources=_sources(checkpoint), **extra)


def save_weights(model: torch.nn.Module, out: str | Path, *, config: Config) -> Path:
    """Write a model trained in one's own loop (references/train_plain.py) as `export-weights` writes a run's: a
    .safetensors file with its schema, `config` and head as metadata, which `posepart evaluate`, `predict`, `export`,
    `model.init` and `Predictor.from_checkpoint` read. `config` is the Config whose `build_from_config(config,
    model.meta.schema)` built `model` (the loaders rebuild it so); one that builds another model is refused here, not
    when the file is read. A `torch.compile`d or DDP-wrapped model is saved as the model it wraps. Before, such a
    loop could only save a bare state dict, which every verb refused."""
    out = Path(out)
    if out.suffix.lower() != ".safetensors":  # loaders tell formats apart by the extension
        raise UsageError(f"save_weights: {out} must end in .safetensors")
    while (inner := getattr(model, "_orig_mod", None) or (  # torch.compile's wrapper, DDP's: their names prefixed
            model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else None)) is not None:
        model = inner
    if not hasattr(model, "meta"):
        raise UsageError(f"save_weights: {type(model).__name__} is not a posepart model (no `meta`: build it with "
                         f"posepart.engine.builders.build_from_config)")
    schema = model.meta.schema
    state = model.state_dict()
    try:
        built = _check_builds(schema, config, state, "model")
    except CheckpointError as err:  # "model: its weights do not fit the model its config builds: ..."
        raise UsageError(f"save_weights: {err} (a model no config builds, such as "
                         f"one on a trunk of one's own, is saved with safetensors or exported to ONNX: "
                         f"docs/training.md, \"A trunk of one's own\")") from None
    if built.meta != model.meta:
        raise UsageError(f"save_weights: config builds a model whose maps are {built.meta.to_dict()}, not the "
                         f"model's {model.meta.to_dict()} (data.sigma, data.paf_width, model.pose_stride...)")
    # Layers without weights (activations, pools, the heatmaps' sigmoid) change what the model computes but not its
    # tensors: compared by the modules' descriptions. Before, a SiLU model saved with a ReLU config reloaded as another
    # network without a word.
    ours, theirs = _layers(model), _layers(built)
    differ = next(((name, ours.get(name, "absent"), theirs.get(name, "absent")) for name in {**theirs, **ours}
                   if ours.get(name) != theirs.get(name)), None)
    if differ is not None:
        raise UsageError(f"save_weights: config builds another network than the model: {differ[0] or 'the model'} "
                         f"is {differ[1]} in the model, {differ[2]} in config's (model.activation, model.pool, "
                         f"loss.heatmap...)")
    return _write_weights(out, state, schema, config, head=model.meta.to_dict())


def _layers(model: torch.nn.Module) -> dict[str, str]:
    """{name: kind and settings} of every module, in order, for telling two networks with the same tensors apart:
    layers without weights (activations, pools, the heatmaps' sigmoid) change what a model computes. A normalisation
    layer is told by its name alone: `SyncBatchNorm` (a DDP recipe's conversion) computes BatchNorm's function."""
    return {name: "a normalisation" if isinstance(module, torch.nn.modules.batchnorm._NormBase)
            else f"{type(module).__name__}({module.extra_repr()})" for name, module in model.named_modules()}


def _write_weights(out: Path, state: dict[str, torch.Tensor], schema: Schema, config: Config, *,
                   sources: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    """The posepart weights file (`SAFETENSORS_FORMAT`): the tensors, and schema, config, sources and `extra` (head,
    provenance) as JSON metadata; written atomically."""
    from safetensors.torch import save

    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    metadata = {"format": SAFETENSORS_FORMAT, DIGEST_KEY: weights_digest(tensors),
                "schema": json.dumps(schema.to_category()),
                "config": json.dumps(config.to_dict()), "sources": json.dumps(list(sources or [])),
                **{key: json.dumps(value) for key, value in extra.items()}}
    data = save(tensors, metadata=metadata)
    return atomic_write(out, lambda f: f.write(data))
