"""Self-training on unlabelled images (`train.self_training`): an EMA teacher and flip-consistent pseudo-labels.

The source report's future work, in the form Mean Teacher / FixMatch gave it. A teacher, the exponential moving average
of the student (torch's `AveragedModel`; buffers too, so BatchNorm statistics follow), labels every unlabelled sample
of a batch on its weak view (the Mapper's geometric augmentation alone) and on the mirror of that view:
- pose: people are decoded from both (the mirror's maps flipped back first, `inference.tta.flip_maps`), matched by
  OKS, and a person is kept only where the two agree (the report's cyclic consistency): OKS >= `flip_oks` and at least
  `min_joints` joints found in both; a kept joint is the mean of its two positions. People seen in only one view or
  disagreeing become ignore regions (their box, widened); heatmap and PAF targets are rebuilt from the kept people by
  the normal target builder;
- parts: the two views' class probabilities are averaged; a pixel keeps its arg-max class where that probability
  reaches `part_threshold`, else it is ignored (255). No dense CRF: pydensecrf, the one implementation, has had one
  release (1.0rc3, 2018), whose source does not build here (Cython: 'eigen.pxd' not found); thresholding the
  flip-averaged probabilities is the refinement we can maintain;
- where: with a pose head, only inside the kept people's boxes (widened), for both tasks, and only what the teacher
  is sure of there: a joint channel only when every kept person's joint was confirmed (else "no joint here" would be
  taught at a real joint), and no "background" on a kept person's limbs (the pose refines the parts: a pixel on a
  confirmed limb is a body part, whichever). A model without a pose head has no people: its confident pixels count
  everywhere. Why: a young teacher misses people and body parts and calls them background with confidence; taught as
  such, the student learns to see no one (measured: docs/training.md, "Self-training").
The student learns the pseudo-labels on the strong view (the same geometry plus photometric jitter) with a per-sample
loss weight that ramps up as exp(-5 (1 - t)^2) over `ramp_steps` (Laine & Aila 2017), so the first, poor teacher
barely counts. Everything else is a labelled sample's path: the same loss, masks, weighting and logging.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from posepart.data.records import region_mask
from posepart.decode import DecodeConfig, decode
from posepart.engine.settings import SelfTrainingConfig
from posepart.heads import HeadMeta
from posepart.inference.tta import Maps, flip_maps
from posepart.losses.seg import upsample_logits
from posepart.metrics.oks import oks_terms
from posepart.schema import IGNORE_LABEL, Schema
from posepart.targets import build_targets

_BOX_MARGIN = 0.15  # a pseudo-person's box: its joints' box widened by this share of its longer side ...
_BOX_PAD = 8.0  # ... plus this many input pixels (a joint's blob reaches a few pixels past it)
_LIMB_WIDTH = 0.06  # a confirmed limb covers body pixels this share of its person's box diagonal to either side


def ramp_weight(step: int, config: SelfTrainingConfig) -> float:
    """The pseudo-labels' loss weight at optimizer step `step`: weight * exp(-5 (1 - t)^2), t = step / ramp_steps."""
    if config.ramp_steps <= 0:
        return config.weight
    t = min(max(step, 0) / config.ramp_steps, 1.0)
    return config.weight * math.exp(-5.0 * (1.0 - t) ** 2)


def agreement(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How two decodings of one person agree: per-joint OKS terms (K,) (`metrics.oks_terms`, with the area of the box
    of the joints both found) and the mask of those joints (score > 0 in both); all terms 0 under two such joints."""
    both = (a[:, 2] > 0) & (b[:, 2] > 0)
    if both.sum() < 2:
        return np.zeros(len(a)), both
    xy = np.concatenate([a[both, :2], b[both, :2]])
    area = max(float(np.prod(xy.max(0) - xy.min(0))), 1.0)
    return np.where(both, oks_terms(a, b, area, sigmas), 0.0), both


@dataclass
class PseudoPeople:
    """The people kept for one image, (N, K, 3) [x, y, v] in input pixels (v 2 for a joint both views agree on, else
    0), their boxes (N, 4) and the boxes (M, 4) of the people dropped, [x, y, w, h] widened around the joints."""

    keypoints: np.ndarray
    boxes: np.ndarray
    ignore_boxes: np.ndarray


def consistent_people(people: np.ndarray, mirrored: np.ndarray, sigmas: np.ndarray, *, min_oks: float,
                      min_joints: int) -> PseudoPeople:
    """Keep the people of one view that the other view confirms. people (N, K, 3), mirrored (M, K, 3): decoded from
    the image and from its mirror (already flipped back), [x, y, score] with score 0 for a missing joint.

    Pairs are matched greedily by descending OKS, each person used once; a pair is kept when OKS >= `min_oks` and at
    least `min_joints` joints are found in both. A kept joint must be found in both views and lie within a joint's
    OKS tolerance (its own OKS term >= 0.5); its position is the mean of the two. Every other person, of either view,
    is dropped and becomes an ignore box.
    """
    k = sigmas.shape[0]
    pairs = []  # (OKS over the joints both found, i, j, per-joint terms, found in both)
    for i, p in enumerate(people):
        for j, q in enumerate(mirrored):
            terms, both = agreement(p, q, sigmas)
            if both.sum() < max(min_joints, 2):
                continue
            score = float(terms[both].mean())
            if score >= min_oks:
                pairs.append((score, i, j, terms, both))
    kept, used_p, used_q = [], set(), set()
    for _, i, j, terms, both in sorted(pairs, key=lambda t: (-t[0], t[1], t[2])):
        if i in used_p or j in used_q:
            continue
        p, q = people[i], mirrored[j]
        agree = both & (terms >= 0.5)
        if int(agree.sum()) < min_joints:
            continue
        person = np.zeros((k, 3), np.float32)
        person[agree, :2] = (p[agree, :2] + q[agree, :2]) / 2.0
        person[agree, 2] = 2.0
        kept.append(person)
        used_p.add(i)
        used_q.add(j)
    dropped = [p for i, p in enumerate(people) if i not in used_p] + \
              [q for j, q in enumerate(mirrored) if j not in used_q]
    boxes = [person_box(p) for p in dropped if (p[:, 2] > 0).any()]
    return PseudoPeople(np.stack(kept) if kept else np.zeros((0, k, 3), np.float32),
                        np.asarray([person_box(p) for p in kept], np.float32).reshape(-1, 4),
                        np.asarray(boxes, np.float32).reshape(-1, 4))


def person_box(person: np.ndarray) -> list[float]:
    """[x, y, w, h] around a person's found joints, widened by `_BOX_MARGIN` of its longer side + `_BOX_PAD`."""
    xy = person[person[:, 2] > 0, :2]
    low, high = xy.min(0), xy.max(0)
    pad = _BOX_MARGIN * float((high - low).max()) + _BOX_PAD
    return [float(low[0] - pad), float(low[1] - pad), float(high[0] - low[0] + 2 * pad),
            float(high[1] - low[1] + 2 * pad)]


def limb_mask(people: np.ndarray, skeleton: Sequence[tuple[int, int]], height: int, width: int) -> np.ndarray:
    """(H, W) bool: the pixels on the limbs (skeleton edges between two found joints) of `people` (N, K, 3), drawn
    `_LIMB_WIDTH` of each person's joint-box diagonal to either side (at least 2 px)."""
    mask = np.zeros((height, width), np.uint8)
    for person in people:
        found = person[:, 2] > 0
        if found.sum() < 2:
            continue
        xy = person[found, :2]
        radius = max(2, int(round(_LIMB_WIDTH * float(np.linalg.norm(xy.max(0) - xy.min(0))))))
        for a, b in skeleton:
            if found[a] and found[b]:
                cv2.line(mask, tuple(int(round(v)) for v in person[a, :2]), tuple(int(round(v)) for v in person[b, :2]),
                         1, thickness=2 * radius + 1)
    return mask.astype(bool)


def pseudo_part_labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """(P, H, W) class probabilities -> (H, W) uint8: the arg-max class where its probability >= threshold, else
    255 (ignore)."""
    labels = probs.argmax(0).astype(np.uint8)
    labels[probs.max(0) < threshold] = IGNORE_LABEL
    return labels


class SelfTraining(nn.Module):
    """The teacher of a self-training run and the pseudo-labelling of a batch's unlabelled samples.

    A submodule of the LightningModule, so the teacher is moved, checkpointed and restored with it (--resume continues
    the same teacher). Its parameters take no gradient.
    """

    def __init__(self, model: nn.Module, config: SelfTrainingConfig, schema: Schema,
                 tasks: Sequence[str] | None = None) -> None:
        """`tasks`: what the labelled sources teach ("pose", "parts"; None: every head of the model). A head that no
        labelled source trains gets no pseudo-label: its output is of random weights, and learning it would send
        that noise into the shared layers."""
        super().__init__()
        self.config = config
        self.schema = schema
        self.tasks = None if tasks is None else tuple(tasks)
        self.teacher = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.teacher_decay), use_buffers=True)
        self.teacher.requires_grad_(False)
        self.decode_config = DecodeConfig()  # OpenPose's thresholds: a pseudo-label is a confident person

    @torch.no_grad()
    def update(self, student: nn.Module) -> None:
        """One EMA step after an optimizer step: teacher = decay * teacher + (1 - decay) * student (the first call
        copies the student)."""
        self.teacher.update_parameters(student)

    @torch.no_grad()
    def label(self, batch: dict[str, Tensor], step: int) -> dict[str, float]:
        """Replace the targets of the batch's unlabelled samples by the teacher's pseudo-labels, in place, and give
        every sample its `loss_weight` (1, or the ramp's weight for a pseudo-labelled one). Returns the yield."""
        rows = batch["unlabelled"].nonzero().flatten()
        weight = ramp_weight(step, self.config)
        batch["loss_weight"] = torch.where(batch["unlabelled"], weight, 1.0).float()
        if not len(rows):
            return {"weight": weight}
        teacher = self.teacher.module
        head: HeadMeta = teacher.meta
        teacher.eval()  # the LightningModule's train() flips it back; its statistics are the average's, not updated
        weak = batch["weak_image"][rows]
        n, (height, width) = len(rows), weak.shape[-2:]
        output = teacher(torch.cat([weak, weak.flip(-1)]))
        maps = {name: None if value is None else value.float() for name, value in output.stage(-1).items()}
        if maps["parts"] is not None:  # probabilities at input resolution (where the part labels live)
            maps["parts"] = F.softmax(upsample_logits(maps["parts"], (height, width)), 1)
        host = {name: None if value is None else value.cpu().numpy() for name, value in maps.items()}
        people = dropped = part_pixels = 0
        label_pose = head.has_pose and (self.tasks is None or "pose" in self.tasks)
        label_parts = head.has_parts and (self.tasks is None or "parts" in self.tasks)
        for row, i in enumerate(rows.tolist()):
            views = [Maps(**{name: None if host[name] is None else host[name][row + offset] for name in Maps._fields})
                     for offset in (0, n)]
            views[1] = flip_maps(views[1], self.schema)
            keypoints, ignore, parts = np.zeros((0, self.schema.num_joints, 3), np.float32), None, None
            if label_pose:
                found = [self._decode(v, head) for v in views]
                pseudo = consistent_people(found[0], found[1], self.schema.sigmas_array, min_oks=self.config.flip_oks,
                                           min_joints=self.config.min_joints)
                keypoints = pseudo.keypoints
                ignore = ~self._union(pseudo.boxes, height, width) | self._union(pseudo.ignore_boxes, height, width)
                people += len(keypoints)
                dropped += len(found[0]) - len(keypoints)  # of the image's people (an unconfirmed pair is one)
                batch["has_pose"][i] = True
                # a joint channel is taught only where every kept person's joint was confirmed
                batch["joint_mask"][i] = torch.from_numpy((keypoints[:, :, 2] > 0).all(0) & (len(keypoints) > 0))
            if label_parts:
                parts = pseudo_part_labels((views[0].parts + views[1].parts) / 2.0, self.config.part_threshold)
                if ignore is not None:  # only where a confirmed person is, and never "background" on their limbs
                    parts[ignore] = IGNORE_LABEL
                    parts[(parts == 0) & limb_mask(keypoints, self.schema.skeleton, height, width)] = IGNORE_LABEL
                part_pixels += int((parts != IGNORE_LABEL).sum())
                batch["has_parts"][i] = True
            built = build_targets(keypoints, ignore, parts if parts is not None else
                                  np.full((height, width), IGNORE_LABEL, np.uint8), head)
            for key, value in (("heatmaps", built.heatmaps), ("pafs", built.pafs), ("pose_mask", built.pose_mask),
                               ("parts", built.parts)):
                batch[key][i] = torch.from_numpy(value).to(batch[key].device, batch[key].dtype)
        return {"weight": weight, "people": people / n, "dropped": dropped / n,
                "part_pixels": part_pixels / (n * height * width)}

    @staticmethod
    def _union(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """(H, W) bool: the pixels inside any of the [x, y, w, h] boxes."""
        mask = np.zeros((height, width), bool)
        for box in boxes:
            mask |= region_mask(box.tolist(), height, width)
        return mask

    def _decode(self, maps: Maps, head: HeadMeta) -> np.ndarray:
        """(N, K, 3) people decoded from one view's maps."""
        found = decode(maps.heatmaps, maps.pafs, head, self.decode_config)
        if not found:
            return np.zeros((0, self.schema.num_joints, 3), np.float32)
        return np.stack([p.keypoints for p in found])

