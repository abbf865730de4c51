"""Where a trained model's pose AP is lost: its maps decoded as they are, with the heatmaps or the PAFs replaced by
the ground truth's targets, with flip TTA, and where its heatmap peaks lie (docs/training.md, "What limits the pose
branch"). Decoding choices to try on a trained model: `--radius` (the peak window; default the model's
`HeadMeta.peak_radius`) and `--blur` (extra rows with the joint heatmaps smoothed by a Gaussian of that many cells
before decoding, each map's maximum kept: DARK's modulation, Zhang et al. 2020, what `model.heatmap_smoothing` does
inside the model; on a model that smooths already, on top of its own).

Every image is letterboxed as evaluation does; the targets are built exactly as for training, on the model's own
grid (its HeadMeta). Prints one line per variant (AP, AP50, PCKh) and the peak statistics.

Run:
    .venv/bin/python benchmarks/diagnose_pose.py runs/ablate/NAME/checkpoints/last.ckpt runs/ablate/data/val
    .venv/bin/python benchmarks/diagnose_pose.py CKPT runs/demo/data/train --images 300 --blur 0.5 0.75 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch

from posepart.data.augment import apply_affine, invert, letterbox_affine, normalize
from posepart.data.format import PosePartDataset
from posepart.decode import DecodeConfig, decode, find_peaks_flat, people_to_coco
from posepart.engine.checkpoint import load_model
from posepart.evaluate import Evaluator, Prediction
from posepart.heads import HeadMeta
from posepart.inference.tta import Maps, flip_maps
from posepart.models.pose import HeatmapSmoothing
from posepart.targets import build_targets

VARIANTS = ("predicted maps", "true heatmaps + predicted PAFs", "predicted heatmaps + true PAFs", "flip TTA",
            "true heatmaps + true PAFs (oracle)")


def smoothed(heatmaps: np.ndarray, sigma_cells: float, num_joints: int) -> np.ndarray:
    """The joint channels blurred as `model.heatmap_smoothing` would (DARK's modulation, each map's maximum kept)."""
    with torch.inference_mode():
        return HeatmapSmoothing(sigma_cells, num_joints)(torch.from_numpy(heatmaps[None])).numpy()[0]


def peak_distances(heatmaps: np.ndarray, keypoints: np.ndarray, head: HeadMeta, radius: int
                   ) -> tuple[list[float], int, int]:
    """-> (for each labelled joint, the distance in input px to the nearest peak of its type; peaks; peaks more
    than 8 px from every labelled joint of their type)."""
    stride = head.stride
    peaks = find_peaks_flat(np.ascontiguousarray(heatmaps[:-1]), 0.1, sigma_cells=head.heatmap_sigma_cells,
                            radius=radius)
    xy = peaks.xy * stride + (stride - 1) / 2  # cell -> input pixel
    nearest, far = [], 0
    for j in range(keypoints.shape[1]):
        mine = xy[peaks.starts[j]:peaks.starts[j + 1]]
        truth = keypoints[:, j][keypoints[:, j, 2] > 0, :2]
        for point in truth:
            nearest.append(float(np.hypot(*(mine - point).T).min()) if len(mine) else np.inf)
        for point in mine:
            far += not len(truth) or float(np.hypot(*(truth - point).T).min()) > 8
    return nearest, len(peaks.xy), far


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path, help="dataset root (posepart format)")
    parser.add_argument("--input-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=None, help="score only the first N images")
    parser.add_argument("--radius", type=int, default=None, help="peak window radius in cells (default: the model's)")
    parser.add_argument("--blur", type=float, nargs="*", default=[], metavar="CELLS",
                        help="also decode the predicted maps with the heatmaps smoothed by these Gaussian sigmas")
    args = parser.parse_args()

    model = load_model(args.checkpoint).model.eval()
    head = model.meta
    schema = head.schema
    dataset = PosePartDataset.open(args.data)
    records = dataset.records[: args.images]
    blurred = {sigma: f"predicted maps, heatmaps blurred {sigma:g} cells" for sigma in args.blur}
    scores = {name: Evaluator(schema) for name in (*VARIANTS, *blurred.values())}
    config = dataclasses.replace(DecodeConfig.for_evaluation(), peak_radius=args.radius)
    radius = config.window(head)
    out_hw = (args.input_size, args.input_size)
    distances: list[float] = []
    peaks = far = 0
    for record in records:
        affine = letterbox_affine((record.height, record.width), out_hw)
        image, parts, ignore, keypoints = apply_affine(affine, dataset.load_image(record), dataset.load_parts(record),
                                                       record.ignore_mask(), record.keypoints, out_hw,
                                                       schema.flip_perm, schema.part_flip_perm)
        targets = build_targets(keypoints, ignore, parts, head)
        batch = torch.from_numpy(np.stack([normalize(image), normalize(np.ascontiguousarray(image[:, ::-1]))]))
        with torch.inference_mode():
            output = model(batch)
        heatmaps, pafs = output.heatmaps[-1].float().numpy(), output.pafs[-1].float().numpy()
        mirrored = flip_maps(Maps(heatmaps[1], pafs[1], None), schema)
        maps = {
            "predicted maps": (heatmaps[0], pafs[0]),
            "true heatmaps + predicted PAFs": (targets.heatmaps, pafs[0]),
            "predicted heatmaps + true PAFs": (heatmaps[0], targets.pafs),
            "flip TTA": ((heatmaps[0] + mirrored.heatmaps) / 2, (pafs[0] + mirrored.pafs) / 2),
            "true heatmaps + true PAFs (oracle)": (targets.heatmaps, targets.pafs),
            **{name: (smoothed(heatmaps[0], sigma, schema.num_joints), pafs[0]) for sigma, name in blurred.items()},
        }
        to_image = invert(affine)
        for name, (hm, paf) in maps.items():
            people = decode(np.ascontiguousarray(hm, np.float32), np.ascontiguousarray(paf, np.float32), head, config)
            scores[name].add(record, Prediction(people_to_coco(people, record.image_id, to_image), None), None)
        nearest, n, f = peak_distances(heatmaps[0], keypoints, head, radius)
        distances += nearest
        peaks, far = peaks + n, far + f
    print(f"{len(records)} images of {args.data}, model {args.checkpoint}, peak radius {radius}")
    for name, evaluator in scores.items():
        pose = evaluator.compute()["pose"]
        print(f"  {name:32s} AP {pose['ap']:.3f}  AP50 {pose['ap50']:.3f}  PCKh {pose['pckh']:.3f}")
    d = np.asarray(distances)
    print(f"  labelled joints with a peak of their type within 2 / 4 / 8 px: {np.mean(d < 2):.2f} / "
          f"{np.mean(d < 4):.2f} / {np.mean(d < 8):.2f}")
    print(f"  peaks (threshold 0.1) more than 8 px from every labelled joint of their type: {far / max(peaks, 1):.2f} "
          f"of {peaks}")


if __name__ == "__main__":
    main()
