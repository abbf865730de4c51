"""Running trained models: `Predictor` (images -> people, part maps, part instances), TTA, export, `posepart predict`.

Modules: `predictor` (the API), `preprocess` (load + letterbox), `backends` (PyTorch / TorchScript / ONNX Runtime),
`tta` (flip and multi-scale merging), `export` (ONNX / TorchScript files; imports torch), `media` (folders, videos,
webcams and the files `posepart predict` writes), `draw` (overlays), `cli` (the verbs). Nothing here but `export`
imports torch at module level, so an ONNX model runs with onnxruntime alone.
"""

from posepart.inference.predictor import ImageResult, PersonPrediction, Predictor
from posepart.inference.preprocess import InputError

__all__ = ["ImageResult", "InputError", "PersonPrediction", "Predictor"]
