"""Training engine (PyTorch Lightning): config, data module, LightningModule, checkpoints, `train`.

    from posepart.engine.config import load_config
    from posepart.engine.train import train
    result = train(load_config("demo_cpu_joint.yaml"), "runs/joint")   # TrainResult(last, best, metrics)
    from posepart.engine.checkpoint import load_model
    loaded = load_model(result.best)                                            # LoadedModel(model, schema, ...)

Submodules are imported on demand (Lightning is heavy): `settings` (the dataclasses), `config` (YAML and
validation), `data`, `module`, `checkpoint`, `train`, `run_folder` (the files of a run's folder), `export`
(ONNX / TorchScript files from a checkpoint).
"""
