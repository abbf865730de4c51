"""Initialise the trunk (and an FCN head's conv5/fc6/fc7) from a torchvision VGG16 state-dict file: a local path,
or `imagenet` for torchvision's `VGG16_Weights.IMAGENET1K_V1` in torch's hub cache (`resolve_weights`).

Modules that can take VGG16 weights expose `vgg16_keys()`: own layer name -> torchvision layer name. The FCN head's
fc6/fc7 are VGG's classifier.0/classifier.3 reshaped into convolutions, as in the FCN paper: (4096, 25088) ->
(4096, 512, 7, 7) (torchvision flattens pool5 as c*49 + y*7 + x, so a plain view is the right reshape) and
(4096, 4096) -> (4096, 4096, 1, 1). Only `imagenet` may download (into the hub cache, where the network allows).
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn

from posepart.errors import MissingFileError, PosepartError, PosepartWarning


class PretrainedError(PosepartError, ValueError):
    """A pretrained-weights file cannot be read or does not fit the network; the message names the file and keys."""


IMAGENET = "imagenet"  # `model.pretrained: imagenet`: torchvision's VGG16_Weights.IMAGENET1K_V1


def check_fits(pretrained: Path | str | None, *, width: float, batch_norm: bool = False) -> None:
    """VGG16's weights fit the plain network at width 1.0 only; a PretrainedError naming the settings otherwise. The
    one statement of the rule: the config, the model builders (before building) and the loader ask it."""
    if pretrained is None:
        return
    if width != 1.0:
        raise PretrainedError(f"pretrained VGG16 weights need width=1.0, got {width:g} ({pretrained}): set "
                              f"width=1.0 (model.width=1.0) or pretrained=None (model.pretrained=null)")
    if batch_norm:
        raise PretrainedError(f"pretrained VGG16 weights ({pretrained}) are for the plain network: set "
                              f"batch_norm=False (model.batch_norm=false) or pretrained=None (model.pretrained=null)")


def resolve_weights(pretrained: Path | str) -> Path:
    """The local file `model.pretrained` names: the path itself, or for `imagenet` (when no file of that name exists)
    torchvision's VGG16_Weights.IMAGENET1K_V1 file in torch's hub cache, downloaded there by torch.hub (hash-checked,
    as torchvision does) when it is missing and the network allows. Offline, a MissingFileError says where to put it.
    Why not torchvision's own `weights.get_state_dict()`: it unpickles without weights_only; here the file is read
    by `read_state_dict`, weights-only like every file posepart loads."""
    path = Path(pretrained)
    if str(pretrained) != IMAGENET or path.exists():
        return path
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
    if cached.is_file():
        return cached
    match = re.search(torch.hub.HASH_REGEX, cached.name)  # torchvision's files carry a sha256 prefix in their name
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(cached), hash_prefix=match.group(1) if match else None)
    except Exception as err:  # noqa: BLE001 - URLError/OSError offline, RuntimeError on a bad hash: all mean "not here"
        raise MissingFileError(
            f"model.pretrained: {IMAGENET}: torchvision's VGG16 ImageNet weights are not in torch's hub cache "
            f"({cached}) and could not be downloaded ({type(err).__name__}: {err}); fetch {url} where the network "
            f"allows and put it at {cached}, or set model.pretrained to a local weights file") from None
    return cached


def read_state_dict(path: Path | str) -> dict[str, Tensor]:
    """A state dict from a `.pth`/`.pt` (torch.load, weights_only) or `.safetensors` file; a file that cannot be
    read as one is a PretrainedError naming it."""
    path = Path(path)
    if not path.is_file():
        raise MissingFileError(f"no VGG16 weights file at {path}")
    try:
        if path.suffix.lower() == ".safetensors":  # VGG.SAFETENSORS too, as every model file is read
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - UnpicklingError, SafetensorError, RuntimeError (zip), EOFError, ...
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
        raise PretrainedError(f"{path}: cannot read VGG16 weights from it (a weights-only .pth/.pt or .safetensors "
                              f"file expected): {type(err).__name__}: {first}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a checkpoint wrapping the weights
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise PretrainedError(f"{path} does not hold a state dict of tensors (torchvision vgg16 layout expected)")
    return state


def load_vgg16_weights(module: nn.Module, path: Path | str) -> list[str]:
    """Copy torchvision vgg16 weights from `path` into every VGG-compatible submodule of `module`; return the keys used.

    Required: `features.N.weight/bias` for every conv a submodule maps. Optional: `classifier.0/3.*` (fc6/fc7 of an
    FCN head); they are skipped with a warning when absent or when the head's fc_width is not 4096. Raises ValueError
    when a width-scaled module is present, when keys are missing, or when shapes disagree, naming the keys.
    """
    targets = [(name, m) for name, m in module.named_modules() if hasattr(m, "vgg16_keys")]
    if not targets:
        raise PretrainedError(f"{type(module).__name__} has no VGG16-compatible submodule (VGGTrunk or FCNHead)")
    for _, m in targets:
        check_fits(path, width=float(getattr(m, "width", 1.0)), batch_norm=bool(getattr(m, "batch_norm", False)))
    state = read_state_dict(path)

    copies: list[tuple[Tensor, Tensor, str]] = []  # (destination parameter, source value, source key)
    missing: list[str] = []
    mismatched: list[str] = []
    skipped: list[str] = []
    for mod_name, m in targets:
        for own, src in m.vgg16_keys().items():
            layer = m.get_submodule(own)
            optional = src.startswith("classifier.")  # fc6/fc7: only FCN heads want them, and only at 4096 wide
            for attr in ("weight", "bias"):
                key, dest = f"{src}.{attr}", getattr(layer, attr)
                dest_name = ".".join(p for p in (mod_name, own, attr) if p)
                if key not in state:
                    (skipped if optional else missing).append(f"{key} (for {dest_name}: absent)")
                    continue
                value = state[key]
                if optional and value.numel() == dest.numel():
                    value = value.reshape(dest.shape)  # fully-connected -> convolution
                if value.shape != dest.shape:
                    why = f"{key} {tuple(value.shape)} vs {dest_name} {tuple(dest.shape)}"
                    (skipped if optional else mismatched).append(why)
                    continue
                copies.append((dest, value, key))
    if missing:
        raise PretrainedError(
            f"{path} lacks VGG16 keys (torchvision layout `features.N.weight/bias` expected): " + ", ".join(missing)
        )
    if mismatched:
        raise PretrainedError(f"{path}: VGG16 weights of the wrong shape: " + "; ".join(mismatched))
    with torch.no_grad():
        for dest, value, _ in copies:
            dest.copy_(value.to(dtype=dest.dtype, device=dest.device))
    if skipped:
        warnings.warn(
            "VGG16 fc6/fc7 not loaded, those layers keep their random init: " + "; ".join(skipped), PosepartWarning,
            stacklevel=2)
    return [key for _, _, key in copies]
