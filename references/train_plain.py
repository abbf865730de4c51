"""Train a joint pose + parts model in a plain PyTorch loop: posepart's pieces without `posepart train`.

For researchers who want the loop in their own hands (a new loss, another sampler, their own logging), as torchvision's
`references/` are for its models. The pieces are the ones `posepart train` runs (its Lightning module adds resume,
DDP, checkpoints, validation curves and mixed sources on top):

    PosePartDataset (records) -> Mapper (pixels, augmentation, targets) -> MappedDataset -> DataLoader(collate)
    -> joint_vgg16 (ModelOutput: per-stage heatmaps, PAFs, part logits) -> PosePartLoss (masked, weighted) -> AdamW
    -> evaluate_model (the Predictor users run, scored with OKS AP and mean IU)

    python references/train_plain.py --train runs/synth_train --val runs/synth_val --steps 2000 --out plain.safetensors

Made with `posepart synth DIR --n 2000 --size 128 --max-people 2 --min-height 0.5 --crowd-prob 0 --clutter 0`. The
model, its targets (sigma, PAF width), the loss and the augmentation are the CPU demo's, read from its shipped config
(`configs/demo_cpu_joint.yaml`: one place states them); the loop trains with AdamW and a one-cycle schedule in float32
rather than the demo's Muon, linear decay and bfloat16. The weights are saved with `save_weights` (the tensors, and
the schema and config that rebuild the model), a file `posepart evaluate`, `predict` and `export` read as they read a
run's exported weights.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from posepart.data.format import PosePartDataset
from posepart.engine.builders import build_from_config
from posepart.engine.checkpoint import load_model, save_weights
from posepart.engine.config import ConfigError, load_config
from posepart.engine.settings import Config
from posepart.evaluate import format_metrics
from posepart.evaluate_model import evaluate_model
from posepart.jobs import scaled_sigma
from posepart.losses import PosePartLoss
from posepart.losses.weighting import UncertaintyWeighting
from posepart.models import PosePartNet
from posepart.schema import Schema
from posepart.targets.mapper import Mapper, MappedDataset, TargetConfig, collate

DEMO = "demo_cpu_joint.yaml"
RECIPE = load_config(DEMO)  # the demo's model, targets, loss and augmentation


def recipe(width: float, size: int) -> Config:
    """The demo's config at `width` and input side `size` (its heatmap sigma, in input pixels, scaled with it)."""
    return load_config(DEMO, [f"model.width={width}", f"data.input_size={size}",
                              f"data.sigma={scaled_sigma(RECIPE, size)}"])


def build(schema: Schema, config: Config) -> PosePartNet:
    """The demo's joint network for `schema`: one stage with a part branch, parts and pose maps refined to stride 4,
    BatchNorm and SiLU (it trains from scratch), heatmaps ending in a sigmoid for the focal loss."""
    return build_from_config(config, schema, pretrained=False)


def load(path: Path) -> PosePartNet:
    """The model `main` saved, rebuilt for inference (eval mode), as the command line rebuilds it."""
    return load_model(path).model


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=Path, required=True, help="training dataset root (the posepart format)")
    parser.add_argument("--val", type=Path, required=True, help="validation dataset root")
    parser.add_argument("--out", type=Path, default=Path("plain.safetensors"), help="where the weights go")
    parser.add_argument("--steps", type=int, default=2000, help="optimiser steps (default: about 8 demo epochs)")
    parser.add_argument("--batch", type=int, default=8, help="images per step")
    parser.add_argument("--size", type=int, default=RECIPE.data.input_size, help="network input side (a multiple "
                        "of 8)")
    parser.add_argument("--width", type=float, default=RECIPE.model.width, help="channel multiplier of VGG16")
    parser.add_argument("--lr", type=float, default=3e-3, help="AdamW peak learning rate (one-cycle: a warm-up, "
                        "then cosine decay)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: at least 1")
    if args.out.suffix.lower() != ".safetensors":  # checked now, not after the training
        parser.error(f"--out {args.out}: the weights file must end in .safetensors")
    try:
        config = recipe(args.width, args.size)
    except ConfigError as err:  # a size that is no multiple of 8, a width of 0 (the recipe's keys they set)
        parser.error(f"--size {args.size} / --width {args.width}: {str(err).removeprefix('--set: ')}")
    torch.manual_seed(0)

    train_set = PosePartDataset.open(args.train)  # records: what the JSON says, no pixels yet
    model = build(train_set.schema, config)
    # learned task weights (Kendall et al.): the pose losses are ~100x smaller than the part cross-entropy
    loss = RECIPE.loss
    loss_fn = PosePartLoss(train_set.schema, heatmap_loss=loss.heatmap, focal_beta=loss.focal_beta,
                           weighting=UncertaintyWeighting(["seg", "heatmap", "paf"], priorities=loss.weights))
    # the targets are drawn on the grid the model's HeadMeta describes (stride 4, sigma, PAF width): nothing repeated
    mapper = Mapper(train_set, TargetConfig(args.size, model.meta), augment=RECIPE.data.augment)
    samples = MappedDataset(mapper, seed=0)  # augmentation seeded by (seed, epoch, index); broken files replaced
    loader = DataLoader(samples, batch_size=args.batch, shuffle=True, drop_last=True, collate_fn=collate)
    if not len(loader):  # (drop_last: an epoch of no batch would loop for ever)
        parser.error(f"--batch {args.batch}: {args.train} has only {len(samples)} images")
    # the task weights learn faster, without decay: at the model's LR they take most of a short run to settle
    optimizer = torch.optim.AdamW([{"params": model.parameters()},
                                   {"params": loss_fn.parameters(), "lr": loss.weighting_lr, "weight_decay": 0.0}],
                                  lr=args.lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[args.lr, loss.weighting_lr],
                                                   total_steps=args.steps, pct_start=min(0.1, 50 / args.steps),
                                                   anneal_strategy="cos")

    def batches():  # epoch after epoch, each with its own augmentation draw
        for epoch in itertools.count():
            samples.set_epoch(epoch)
            yield from loader

    model.train()
    for step, batch in zip(range(args.steps), batches()):
        output = model(batch["image"])  # heatmaps [(B, K+1, H/4, W/4)], pafs [(B, 2L, H/4, W/4)], parts [(B, P, ...)]
        result = loss_fn(output, batch)  # per-sample task masks: a sample without part labels adds no part loss
        optimizer.zero_grad(set_to_none=True)
        result.total.backward()
        optimizer.step()
        schedule.step()
        if step % 100 == 0 or step == args.steps - 1:
            terms = ", ".join(f"{name} {float(result.terms[name]):.4f}" for name in ("total", "seg", "heatmap", "paf"))
            print(f"step {step}: {terms}", flush=True)

    save_weights(model, args.out, config=config)  # with the schema and config that rebuild it
    metrics, _ = evaluate_model(model, PosePartDataset.open(args.val), input_size=args.size, progress=False)
    print(f"{format_metrics(metrics)}\nweights: {args.out}")  # (OKS AP, PCKh, mean IU: what the val set labels)
    return metrics


if __name__ == "__main__":
    main()
