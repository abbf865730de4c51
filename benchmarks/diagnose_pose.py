"""Where a trained model's pose AP is lost: its maps decoded as they are, with the heatmaps or the PAFs replaced by
the ground truth's targets, with flip TTA, what a perfect ranking of its people, exact joints near their true place
or no left/right swaps would add, and where its heatmap peaks lie (docs/training.md, "What limits the pose
branch"). Decoding choices to try on a trained model: `--radius` (the peak window; default the model's
`HeadMeta.peak_radius`) and `--blur` (extra rows with the joint heatmaps smoothed by a Gaussian of that many cells
before decoding, each map's maximum kept: DARK's modulation, Zhang et al. 2020, what `model.heatmap_smoothing` does
inside the model; on a model that smooths already, on top of its own).

Every image is letterboxed as evaluation does; the targets are built exactly as for training, on the model's own
grid (its HeadMeta). Prints one line per variant (AP, AP50, PCKh), then the predicted people altered three ways
(AP, AP50: `ranked_by_oks`, what their ranking loses; `snapped`, what their joints' placement within 2 and 4 px
loses; `unswapped`, what joints taken for their left/right twin lose); on posepart's synthetic data, the AP per
view and per pose kind, as predicted and with the swaps undone (`Evaluator.slices`: which people the network fails
on); the AP by the people's area (`by_area`: each bin's people scored alone, as the slices are); and the peak
census (`PeakCensus`): where the peaks lie (at a joint of their type, at its left/right
twin, at another joint, on the background) and, per joint type, how far the nearest peak is: which joints the
network misses, and whether it swaps sides.

Run:
    .venv/bin/python benchmarks/diagnose_pose.py runs/ablate/NAME/checkpoints/last.ckpt runs/ablate/data/val
    .venv/bin/python benchmarks/diagnose_pose.py CKPT runs/demo/data/train --images 300 --blur 0.5 0.75 1.0
"""

from __future__ import annotations

import argparse
import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from posepart.data.augment import apply_affine, invert, letterbox_affine, normalize
from posepart.data.format import PosePartDataset
from posepart.decode import DecodeConfig, decode_in_image, find_peaks_flat, people_to_coco
from posepart.engine.checkpoint import load_model
from posepart.evaluate import Evaluator, Prediction
from posepart.heads import HeadMeta
from posepart.inference.tta import Maps, flip_maps
from posepart.metrics.oks import AREA_RANGES, coco_ground_truth, coco_keypoint_ap, oks
from posepart.models.pose import HeatmapSmoothing
from posepart.targets import build_targets

VARIANTS = ("predicted maps", "true heatmaps + predicted PAFs", "predicted heatmaps + true PAFs", "flip TTA",
            "true heatmaps + true PAFs (oracle)")


def smoothed(heatmaps: np.ndarray, sigma_cells: float, num_joints: int) -> np.ndarray:
    """The joint channels blurred as `model.heatmap_smoothing` would (DARK's modulation, each map's maximum kept)."""
    with torch.inference_mode():
        return HeatmapSmoothing(sigma_cells, num_joints)(torch.from_numpy(heatmaps[None])).numpy()[0]


def ranked_by_oks(results: list[dict], ground_truth: list[dict], sigmas: tuple[float, ...]) -> list[dict]:
    """Copies of COCO keypoint `results`, each scored by its best OKS with a labelled person of its image: the same
    people in the best order, so that AP minus the predicted ranking's AP is what the people's scores lose."""
    people: dict[int, list[dict]] = {}
    for ann in ground_truth:
        if not ann.get("iscrowd") and any(v > 0 for v in ann["keypoints"][2::3]):
            people.setdefault(ann["image_id"], []).append(ann)
    k = len(sigmas)
    return [{**r, "score": max((oks(np.reshape(g["keypoints"], (k, 3)), np.reshape(r["keypoints"], (k, 3)),
                                    g["area"], sigmas) for g in people.get(r["image_id"], [])), default=0.0)}
            for r in results]


def snapped(results: list[dict], labelled: dict[int, np.ndarray], radius: float) -> list[dict]:
    """Copies of COCO keypoint `results` with every predicted joint that lies within `radius` px of a labelled joint
    of its type in its image (`labelled`: image id -> (N, K, 3) [x, y, v]) moved onto the nearest such joint: AP
    minus the predicted AP is what the joints' placement within `radius` loses."""
    out = []
    for r in results:
        kps = np.array(r["keypoints"], np.float64).reshape(-1, 3)
        gt = labelled.get(r["image_id"], np.zeros((0, *kps.shape)))  # (N, K, 3)
        for j in np.flatnonzero(kps[:, 2] > 0):
            targets = gt[gt[:, j, 2] > 0, j, :2]  # (n, 2) the labelled joints of type j
            d = np.hypot(*(targets - kps[j, :2]).T)
            if len(d) and d.min() <= radius:
                kps[j, :2] = targets[d.argmin()]
        out.append({**r, "keypoints": kps.reshape(-1).tolist()})
    return out


def unswapped(results: list[dict], labelled: dict[int, np.ndarray], flip_perm: tuple[int, ...]) -> list[dict]:
    """Copies of COCO keypoint `results` in which each left/right pair of joints (both predicted, both labelled) is
    exchanged where that brings the pair nearer the labelled person the prediction lies closest to (the least mean
    distance over the joints both have; `labelled`: image id -> (N, K, 3) [x, y, v]): AP minus the predicted AP is
    what taking a joint for its left/right twin loses."""
    pairs = [(j, int(m)) for j, m in enumerate(flip_perm) if j < m]
    out = []
    for r in results:
        kps = np.array(r["keypoints"], np.float64).reshape(-1, 3)
        gt = labelled.get(r["image_id"], np.zeros((0, *kps.shape)))  # (N, K, 3)
        both = (gt[:, :, 2] > 0) & (kps[None, :, 2] > 0)  # (N, K) the joints each labelled person shares with it
        if both.any():
            d = np.hypot(*(gt[:, :, :2] - kps[None, :, :2]).transpose(2, 0, 1))  # (N, K) px
            mean = np.where(both.any(1), (d * both).sum(1) / np.maximum(both.sum(1), 1), np.inf)
            person = gt[mean.argmin()]  # (K, 3)
            for a, b in pairs:
                if min(kps[a, 2], kps[b, 2], person[a, 2], person[b, 2]) <= 0:
                    continue
                kept = np.hypot(*(kps[a, :2] - person[a, :2])) + np.hypot(*(kps[b, :2] - person[b, :2]))
                crossed = np.hypot(*(kps[a, :2] - person[b, :2])) + np.hypot(*(kps[b, :2] - person[a, :2]))
                if crossed < kept:
                    kps[[a, b]] = kps[[b, a]]
        out.append({**r, "keypoints": kps.reshape(-1).tolist()})
    return out


RECALL = ("within 4 px", "4-8 px", "only the mirror joint's peak", "no peak")  # a labelled joint's nearest peak
PLACES = ("own joint", "mirror joint", "other joint", "background")  # where a peak lies (within 8 px of ...)


@dataclass
class PeakCensus:
    """Where a model's heatmap peaks (threshold 0.1, the decoder's window) lie against the labelled joints.

    distances: for each labelled joint, the distance in input px to the nearest peak of its type (inf: none);
    recall: joint name -> Counter over `RECALL` (a joint with no peak of its type within 4 px counts as "only the
            mirror joint's peak" when the left/right twin's channel has one there: a side swapped, not a miss);
    peaks: (">= 0.5" or "< 0.5", a `PLACES` entry) -> count: a peak near a labelled joint of its type, of its
           mirror type, of another type, or of none (8 px).
    """

    distances: list[float] = field(default_factory=list)
    recall: dict[str, Counter[str]] = field(default_factory=dict)
    peaks: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, heatmaps: np.ndarray, keypoints: np.ndarray, head: HeadMeta, radius: int) -> None:
        """One image: heatmaps (K+1, h, w) on the model's grid, keypoints (N, K, 3) in input pixels."""
        schema, stride = head.schema, head.stride
        peaks = find_peaks_flat(np.ascontiguousarray(heatmaps[:-1]), 0.1, sigma_cells=head.heatmap_sigma_cells,
                                radius=radius)
        xy = peaks.xy * stride + (stride - 1) / 2  # cell -> input pixel
        mirror = schema.flip_perm
        labelled = [keypoints[:, j][keypoints[:, j, 2] > 0, :2] for j in range(schema.num_joints)]
        everyone = np.concatenate(labelled)  # every labelled joint of the image, any type

        def nearest(points: np.ndarray, to: np.ndarray) -> np.ndarray:
            """Distance from each of `points` to the nearest of `to` (inf when `to` is empty)."""
            if not len(to):
                return np.full(len(points), np.inf)
            return np.hypot(*(points[:, None] - to[None]).transpose(2, 0, 1)).min(axis=1)

        for j, name in enumerate(schema.keypoints):
            mine = xy[peaks.starts[j]:peaks.starts[j + 1]]
            twin = xy[peaks.starts[mirror[j]]:peaks.starts[mirror[j] + 1]]
            d_own, d_twin = nearest(labelled[j], mine), nearest(labelled[j], twin)
            self.distances += d_own.tolist()
            counts = self.recall.setdefault(name, Counter())
            for own, other in zip(d_own, d_twin):
                counts[RECALL[0] if own <= 4 else RECALL[1] if own <= 8 else
                       RECALL[2] if mirror[j] != j and other <= 4 else RECALL[3]] += 1
            scores = peaks.score[peaks.starts[j]:peaks.starts[j + 1]]
            near_own = nearest(mine, labelled[j]) <= 8
            near_twin = nearest(mine, labelled[mirror[j]]) <= 8 if mirror[j] != j else np.zeros(len(mine), bool)
            near_any = nearest(mine, everyone) <= 8
            for score, own, twin_, any_ in zip(scores, near_own, near_twin, near_any):
                place = PLACES[0] if own else PLACES[1] if twin_ else PLACES[2] if any_ else PLACES[3]
                self.peaks[(">= 0.5" if score >= 0.5 else "< 0.5", place)] += 1

    def report(self) -> str:
        d = np.asarray(self.distances)
        total = sum(self.peaks.values())
        far = total - sum(n for (_, place), n in self.peaks.items() if place == PLACES[0])
        lines = [f"  labelled joints with a peak of their type within 2 / 4 / 8 px: {np.mean(d < 2):.2f} / "
                 f"{np.mean(d < 4):.2f} / {np.mean(d < 8):.2f}",
                 f"  peaks (threshold 0.1) more than 8 px from every labelled joint of their type: "
                 f"{far / max(total, 1):.2f} of {total}",
                 "  peaks by where they lie (share of all peaks): " + "; ".join(
                     f"score {conf}: " + ", ".join(f"{place} {self.peaks[(conf, place)] / max(total, 1):.2f}"
                                                   for place in PLACES) for conf in (">= 0.5", "< 0.5")),
                 "  labelled joints by their nearest peak: " + " | ".join(RECALL)]
        for name, counts in self.recall.items():
            n = max(sum(counts.values()), 1)
            lines.append(f"    {name:16s} " + " | ".join(f"{counts[k] / n:.2f}" for k in RECALL))
        return "\n".join(lines)


def _figure(value: float | None) -> str:
    """A score to 3 decimals, or "-" where it is undefined (None: e.g. AP on data with no person to find)."""
    return "-" if value is None else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("data", type=Path, help="dataset root (posepart format)")
    parser.add_argument("--input-size", type=int, default=None,
                        help="the network input side (default: the one the checkpoint was trained at)")
    parser.add_argument("--images", type=int, default=None, help="score only the first N images")
    parser.add_argument("--radius", type=int, default=None, help="peak window radius in cells (default: the model's)")
    parser.add_argument("--blur", type=float, nargs="*", default=[], metavar="CELLS",
                        help="also decode the predicted maps with the heatmaps smoothed by these Gaussian sigmas")
    args = parser.parse_args()

    loaded = load_model(args.checkpoint)
    model = loaded.model.eval()
    input_size = args.input_size or loaded.input_size
    head = model.meta
    schema = head.schema
    dataset = PosePartDataset.open(args.data)
    records = dataset.records[: args.images]
    blurred = {sigma: f"predicted maps, heatmaps blurred {sigma:g} cells" for sigma in args.blur}
    scores = {name: Evaluator(schema) for name in (*VARIANTS, *blurred.values())}
    config = dataclasses.replace(DecodeConfig.for_evaluation(), peak_radius=args.radius)
    radius = config.window(head)
    out_hw = (input_size, input_size)
    census = PeakCensus()
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
            people, _ = decode_in_image(np.ascontiguousarray(hm, np.float32), np.ascontiguousarray(paf, np.float32),
                                        head, config, to_image, (record.height, record.width))
            scores[name].add(record, Prediction(people_to_coco(people, record.image_id), None), None)
        census.add(heatmaps[0], keypoints, head, radius)
    print(f"{len(records)} images of {args.data} at {input_size} px, model {args.checkpoint}, peak radius {radius}")
    computed = {name: evaluator.compute()["pose"] for name, evaluator in scores.items()}
    for name, pose in computed.items():
        print(f"  {name:32s} AP {_figure(pose['ap'])}  AP50 {_figure(pose['ap50'])}  PCKh {_figure(pose['pckh'])}")
    predicted = scores["predicted maps"]
    labelled = {image["id"]: people for image, people in zip(predicted.images, predicted.gt_people)}
    rescored = {"predicted maps, ranked by true OKS": ranked_by_oks(predicted.results, predicted.ground_truth,
                                                                    schema.sigmas),
                **{f"predicted maps, joints <= {r} px exact": snapped(predicted.results, labelled, r)
                   for r in (2, 4)},
                "predicted maps, left/right swaps undone": unswapped(predicted.results, labelled, schema.flip_perm)}
    for name, results in rescored.items():
        pose = coco_keypoint_ap(predicted.images, predicted.ground_truth, results, schema.sigmas)
        print(f"  {name:32s} AP {_figure(pose['ap'])}  AP50 {_figure(pose['ap50'])}")
    undone = rescored["predicted maps, left/right swaps undone"]
    slices = predicted.slices()
    if slices:  # the predicted maps' slice scores come with their metrics; only the swaps-undone ones are new here
        print("  by the synthetic people's view and pose kind (each slice's people alone): people | AP | "
              "AP with left/right swaps undone")
        for slicing, groups in slices.items():
            for value, people in groups.items():
                score = computed["predicted maps"]["slices"][slicing][value]
                ap = coco_keypoint_ap(predicted.images, predicted.ground_truth, undone, schema.sigmas, people=people,
                                      small=False)
                print(f"    {slicing} {value:16s} {score['people']:5d} | {_figure(score['ap'])} | {_figure(ap['ap'])}")
    print("  by the labelled people's area (COCO's, px^2 in the image; each bin's people alone, as the slices above: "
          "not COCOeval's area ranges of metrics.json's ap_small, ap_medium, ap_large): people | AP | AP with "
          "left/right swaps undone")
    for name, people in by_area(predicted.ground_truth, schema.num_joints).items():
        if people:
            score, swapped = (coco_keypoint_ap(predicted.images, predicted.ground_truth, results, schema.sigmas,
                                               people=people, small=False) for results in (predicted.results, undone))
            print(f"    {name:16s} {len(people):5d} | {_figure(score['ap'])} | {_figure(swapped['ap'])}")
    print(census.report())


# COCOeval's small / medium / large ranges (`AREA_RANGES`), the small and medium ones split once more
AREA_BINS = tuple(sorted({0.0, 24.0 ** 2, 48.0 ** 2, *(low for low, _ in AREA_RANGES.values())}))


def by_area(ground_truth: list[dict], num_joints: int) -> dict[str, set[int]]:
    """The labelled people's ids by their area as COCOeval reads it (the OKS scale): small people are where a
    crowded scene loses most (docs/training.md, twenty-third round)."""
    edges = (*AREA_BINS, float("inf"))
    names = [f"{lo ** 0.5:.0f}^2-{hi ** 0.5:.0f}^2" if hi < float("inf") else f">= {lo ** 0.5:.0f}^2"
             for lo, hi in zip(edges, edges[1:])]
    bins: dict[str, set[int]] = {name: set() for name in names}
    for ann in map(lambda a: coco_ground_truth(a, num_joints), ground_truth):
        if not ann["iscrowd"] and ann["num_keypoints"] > 0:
            bins[names[int(np.searchsorted(AREA_BINS, ann["area"], side="right")) - 1]].add(ann["id"])
    return bins


if __name__ == "__main__":
    main()
