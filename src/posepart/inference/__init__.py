"""Running trained models: `Predictor` (images -> people, part maps, part instances), TTA, drawing, media.

Modules: `predictor` (the API), `preprocess` (load + letterbox), `backends` (PyTorch / TorchScript / ONNX Runtime),
`tta` (flip and multi-scale merging), `inputs` (what `posepart predict` runs on: folders, videos, webcams), `media`
(running it and writing its files), `outputs` (which files those are, and an earlier run's),
`draw` (overlays). Nothing here imports torch at module level, so an ONNX model runs with onnxruntime alone.
Training validates with this Predictor (the call users run), so `posepart.engine` sits above this package: writing
ONNX / TorchScript files from a checkpoint is `posepart.engine.export`, the verbs are `posepart.predict_cli`.
"""

from posepart.inference.predictor import ImageResult, ModelOutputError, PersonPrediction, Predictor
from posepart.inference.preprocess import InputError

__all__ = ["ImageResult", "InputError", "ModelOutputError", "PersonPrediction", "Predictor"]
