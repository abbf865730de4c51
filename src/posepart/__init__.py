"""posepart: multi-person pose estimation learned jointly with human part segmentation.

The names a program most often needs are importable from the package itself, each from the module that defines it
on first use (PEP 562), so `import posepart` stays light (no torch: the ONNX-only install and the command line's
start import none):

    from posepart import Predictor, load_model, train, load_config, build_model, Schema, PosePartDataset
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers and IDEs read (else every name below is Any); kept equal to _EXPORTS by a test
    from posepart.data.format import PosePartDataset
    from posepart.data.writer import DatasetWriter
    from posepart.engine.checkpoint import load_model
    from posepart.engine.config import load_config
    from posepart.engine.train import train
    from posepart.heads import HeadMeta
    from posepart.inference import Predictor
    from posepart.models import build_model
    from posepart.schema import Schema

# name -> the module that defines it (the one place each lives; the docs name these modules too). Not
# `evaluate_model`: the package's submodule of that name takes the attribute once imported.
_EXPORTS = {
    "Schema": "posepart.schema",
    "HeadMeta": "posepart.heads",
    "PosePartDataset": "posepart.data.format",
    "DatasetWriter": "posepart.data.writer",
    "build_model": "posepart.models",
    "load_config": "posepart.engine.config",
    "train": "posepart.engine.train",
    "load_model": "posepart.engine.checkpoint",
    "Predictor": "posepart.inference",
}
# written out (not derived from _EXPORTS): what pyflakes and mypy's strict re-export check read; a test keeps it equal
__all__ = ["__version__", "Schema", "HeadMeta", "PosePartDataset", "DatasetWriter", "build_model", "load_config",
           "train", "load_model", "Predictor"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'posepart' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
