"""Losses against hand-computed values: CE normalisation, set-valued labels, pose masks, stages, task weighting."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import pytest
import torch
import torch.nn.functional as F

from posepart.losses import (
    FixedWeighting,
    PoseLoss,
    PosePartLoss,
    SegLoss,
    UncertaintyWeighting,
    paf_channel_mask,
    upsample_logits,
)
from posepart.schema import Schema


@dataclass
class StandInOutput:
    """What the loss reads from `posepart.models.ModelOutput`: the three per-stage lists."""

    heatmaps: list[torch.Tensor] = field(default_factory=list)
    pafs: list[torch.Tensor] = field(default_factory=list)
    parts: list[torch.Tensor] = field(default_factory=list)


def ModelOutput(heatmaps: Sequence[torch.Tensor] = (), pafs: Sequence[torch.Tensor] = (),  # noqa: N802
                parts: Sequence[torch.Tensor] = ()) -> object:
    """The real ModelOutput when the models package provides it, else the stand-in (the loss only duck-types)."""
    try:
        from posepart.models import ModelOutput as Real

        return Real(heatmaps=list(heatmaps), pafs=list(pafs), parts=list(parts))
    except (ImportError, TypeError):
        return StandInOutput(list(heatmaps), list(pafs), list(parts))


LOG2 = math.log(2.0)
# 3 joints a-b-c, limbs (a,b) and (b,c): 4 heatmap channels (3 + background), 4 PAF channels, 3 part classes.
TINY = Schema(keypoints=("a", "b", "c"), skeleton=((0, 1), (1, 2)), part_classes=("background", "x", "y"))


def logit_pixels(*probs: tuple[float, ...]) -> torch.Tensor:
    """(1, P, 1, N) logits whose softmax at pixel n is probs[n] (log of unnormalised weights)."""
    return torch.log(torch.tensor(probs, dtype=torch.float32)).T[None, :, None, :]


def pose_batch(b: int = 1, h: int = 2, w: int = 2, **overrides: torch.Tensor) -> dict[str, torch.Tensor]:
    """A zero-target batch for TINY at output size (h, w), every joint annotated, everything supervised."""
    batch = {
        "heatmaps": torch.zeros(b, TINY.heatmap_channels, h, w),
        "pafs": torch.zeros(b, TINY.paf_channels, h, w),
        "pose_mask": torch.ones(b, h, w),
        "joint_mask": torch.ones(b, TINY.num_joints, dtype=torch.bool),
        "has_pose": torch.ones(b, dtype=torch.bool),
    }
    batch.update(overrides)
    return batch


# -- segmentation --------------------------------------------------------------------------------------------------
def test_ce_normalised_by_labelled_pixels_only() -> None:
    # pixel 0: p = (1/4, 1/4, 1/2), label 0 -> log 4; pixel 1 ignored; pixel 2: p = (1/8, 3/8, 1/2), label 2 -> log 2
    logits = logit_pixels((1, 1, 2), (5, 1, 1), (1, 3, 4))
    labels = torch.tensor([[[0, 255, 2]]])
    assert SegLoss()(logits, labels).item() == pytest.approx((2 * LOG2 + LOG2) / 2, rel=1e-6)


def test_ce_denominator_is_batch_wide_pixel_count() -> None:
    # sample 0: two pixels labelled 0 with p0 = 1/4 (2 * log 4); sample 1: one pixel, p2 = 1/2 (log 2), one ignored.
    logits = torch.cat([logit_pixels((1, 1, 2), (1, 1, 2)), logit_pixels((1, 3, 4), (1, 1, 1))])
    labels = torch.tensor([[[0, 0]], [[2, 255]]])
    expected = (2 * 2 * LOG2 + LOG2) / 3  # not the mean of per-sample means, (2 log 2 + log 2) / 2
    assert SegLoss()(logits, labels).item() == pytest.approx(expected, rel=1e-6)


def test_mixed_batch_equals_labelled_sample_alone() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[1, 0, :2] = 255
    mixed = SegLoss()(logits, labels, has_parts=torch.tensor([False, True]))
    alone = SegLoss()(logits[1:], labels[1:])
    assert mixed.item() == pytest.approx(alone.item(), rel=1e-6)
    assert not torch.equal(mixed, SegLoss()(logits, labels))  # sample 0's labels would have counted


def test_logits_upsampled_bilinearly_with_stride_convention() -> None:
    # width 2 -> 4 (stride 2), align_corners=False: samples at source x = -0.25 (clamped), 0.25, 0.75, 1.25 (clamped)
    low = torch.tensor([[[[0.0, 4.0]]]])
    assert upsample_logits(low, (1, 4)).flatten().tolist() == pytest.approx([0.0, 1.0, 3.0, 4.0])
    # one stride-2 cell with p = (1/4, 1/4, 1/2) supervises its 2x2 pixels: log 4, log 4, log 2, (ignored)
    logits = logit_pixels((1, 1, 2))
    labels = torch.tensor([[[0, 1], [2, 255]]])
    assert SegLoss()(logits, labels).item() == pytest.approx(5 * LOG2 / 3, rel=1e-6)


def test_seg_stages_at_both_resolutions_are_each_supervised() -> None:
    full = logit_pixels((1, 1, 2)).expand(1, 3, 2, 2)  # FCN head at input resolution
    low = logit_pixels((1, 1, 2))  # per-stage branch at stride 2
    labels = torch.tensor([[[0, 1], [2, 255]]])
    assert SegLoss()([full, low], labels).item() == pytest.approx(2 * 5 * LOG2 / 3, rel=1e-6)


def test_set_valued_label_is_minus_log_of_summed_probabilities() -> None:
    allowed = torch.tensor([[False, True, True]])  # label 3 = P + 0 = "class 1 or 2"
    logits = logit_pixels((2, 3, 5), (2, 3, 5))  # p = (0.2, 0.3, 0.5) at both pixels
    loss = SegLoss(allowed_sets=allowed)(logits, torch.tensor([[[3, 0]]]))
    assert loss.item() == pytest.approx((-math.log(0.3 + 0.5) - math.log(0.2)) / 2, rel=1e-6)
    # gradient of -log(p1 + p2) w.r.t. logit j is p_j - [j allowed] p_j / (p1 + p2), here averaged over 2 pixels
    logits.requires_grad_(True)
    SegLoss(allowed_sets=allowed)(logits, torch.tensor([[[3, 255]]])).backward()
    expected = [0.2, 0.3 - 0.3 / 0.8, 0.5 - 0.5 / 0.8]
    assert logits.grad[0, :, 0, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert logits.grad[0, :, 0, 1].abs().sum().item() == 0.0


def test_set_table_with_plain_labels_matches_cross_entropy() -> None:
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 1] = 255
    with_table = SegLoss(allowed_sets=torch.tensor([[True, True, False]]))(logits, labels)
    assert with_table.item() == pytest.approx(F.cross_entropy(logits, labels, ignore_index=255).item(), rel=1e-5)
    everything = SegLoss(allowed_sets=torch.ones(1, 3, dtype=torch.bool))(logits, torch.full((2, 4, 4), 3))
    assert everything.item() == pytest.approx(0.0, abs=1e-6)  # "any class" carries no information


def test_seg_rejects_bad_tables_and_labels() -> None:
    with pytest.raises(ValueError, match="at least one class"):
        SegLoss(allowed_sets=torch.tensor([[False, False, False]]))
    with pytest.raises(ValueError, match="outside"):
        SegLoss()(torch.zeros(1, 3, 1, 2), torch.tensor([[[1, 3]]]))  # 3 is not a class and there are no sets
    with pytest.raises(ValueError, match="columns"):
        PosePartLoss(TINY, allowed_sets=torch.ones(1, 4, dtype=torch.bool))


@pytest.mark.parametrize("allowed", [None, torch.tensor([[False, True, True]])])
def test_all_ignored_seg_is_zero_without_nan(allowed: torch.Tensor | None) -> None:
    logits = torch.randn(2, 3, 2, 2, requires_grad=True)
    labels = torch.randint(0, 3, (2, 2, 2))
    for lab, has in ((torch.full_like(labels, 255), None), (labels, torch.tensor([False, False]))):
        loss = SegLoss(allowed_sets=allowed)(logits, lab, has_parts=has)
        (grad,) = torch.autograd.grad(loss, logits)
        assert loss.item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


# -- heatmaps and PAFs ---------------------------------------------------------------------------------------------
def test_masked_mse_value_by_hand() -> None:
    pose_mask = torch.tensor([[[1.0, 0.0], [1.0, 1.0]]])  # 3 supervised pixels x 4 channels = 12 entries
    pred = torch.zeros(1, 4, 2, 2)
    pred[0, 0, 0, 0] = 1.0  # supervised: 1
    pred[0, 1, 0, 1] = 5.0  # on a masked pixel: 0
    pred[0, 2, 1, 1] = 2.0  # supervised: 4
    (loss,) = PoseLoss(TINY)("heatmap", [pred], pose_batch(pose_mask=pose_mask))
    assert loss.item() == pytest.approx(5 / 12)


def test_joint_mask_excludes_channel() -> None:
    batch = pose_batch(joint_mask=torch.tensor([[True, False, True]]))
    pred = torch.zeros(1, 4, 2, 2)
    pred[0, 0] = 1.0  # joint a: supervised, error 1 at 4 pixels
    (base,) = PoseLoss(TINY)("heatmap", [pred], batch)
    assert base.item() == pytest.approx(4 / 8)  # channels a and c only (background off: b unannotated), 2 x 4 entries
    pred2 = pred.clone()
    pred2[0, 1] = 7.0  # joint b: not annotated by this source
    assert PoseLoss(TINY)("heatmap", [pred2], batch)[0].item() == base.item()
    pred3 = pred.clone()
    pred3[0, 2] = 1.0  # joint c: annotated
    assert PoseLoss(TINY)("heatmap", [pred3], batch)[0].item() == pytest.approx(8 / 8)


def test_background_channel_needs_every_joint() -> None:
    pred = torch.zeros(1, 4, 2, 2)
    pred[0, 3] = 1.0  # background channel off by 1 everywhere
    full = PoseLoss(TINY)("heatmap", [pred], pose_batch())[0]
    assert full.item() == pytest.approx(4 / 16)
    partial = PoseLoss(TINY)("heatmap", [pred], pose_batch(joint_mask=torch.tensor([[True, True, False]])))[0]
    assert partial.item() == 0.0


def test_limb_masked_when_one_joint_missing() -> None:
    joint_mask = torch.tensor([[True, True, False], [True, True, True]])
    assert paf_channel_mask(joint_mask, TINY.skeleton).tolist() == [[True, True, False, False], [True] * 4]
    batch = pose_batch(joint_mask=joint_mask[:1])
    pred = torch.zeros(1, 4, 2, 2)
    pred[0, 2:] = 3.0  # limb (b, c): c missing -> unsupervised
    assert PoseLoss(TINY)("paf", [pred], batch)[0].item() == 0.0
    pred[0, 0] = 1.0  # limb (a, b) x channel: supervised, 2 channels x 4 pixels
    assert PoseLoss(TINY)("paf", [pred], batch)[0].item() == pytest.approx(4 / 8)


def test_seed_mask_ignores_background_false_positives() -> None:
    gt = torch.zeros(1, 4, 2, 2)
    gt[0, 0, 0, 0] = 1.0  # joint a peak at (0, 0)
    gt[0, 3] = 1.0 - gt[0, :3].amax(0)  # background = 1 - max over joints: 0 at the peak, 1 elsewhere
    batch = pose_batch(heatmaps=gt)
    pred = gt.clone()
    pred[0, 0, 1, 1] = 1.0  # false positive for joint a far from the person
    assert PoseLoss(TINY, mask_mode="openpose")("heatmap", [pred], batch)[0].item() == pytest.approx(1 / 16)
    assert PoseLoss(TINY, mask_mode="seed")("heatmap", [pred], batch)[0].item() == 0.0
    pred[0, 0, 0, 0] = 0.5  # a missed peak is still penalised; W: 1 joint-a pixel + 3 background pixels
    assert PoseLoss(TINY, mask_mode="seed")("heatmap", [pred], batch)[0].item() == pytest.approx(0.25 / 4)


def test_seed_paf_mask_supervises_both_channels_on_the_limb() -> None:
    gt = torch.zeros(1, 4, 2, 2)
    gt[0, 0, 0, 0] = 1.0  # limb (a, b) is horizontal at (0, 0): x = 1, y = 0
    pred = gt.clone()
    pred[0, 1, 0, 0] = 0.5  # wrong y component on the limb: counted
    pred[0, 2:, 1, 1] = 1.0  # spurious field of limb (b, c): free in seed mode
    loss = PoseLoss(TINY, mask_mode="seed")("paf", [pred], pose_batch(pafs=gt))[0]
    assert loss.item() == pytest.approx(0.25 / 2)


def test_samples_without_pose_add_nothing_and_empty_pose_is_zero() -> None:
    torch.manual_seed(2)
    pred = torch.rand(2, 4, 2, 2, requires_grad=True)
    gt = torch.rand(2, 4, 2, 2)
    mixed = pose_batch(2, heatmaps=gt, has_pose=torch.tensor([True, False]))
    alone = pose_batch(1, heatmaps=gt[:1])
    loss = PoseLoss(TINY)("heatmap", [pred], mixed)[0]
    assert loss.item() == pytest.approx(PoseLoss(TINY)("heatmap", [pred[:1]], alone)[0].item(), rel=1e-6)
    nobody = pose_batch(2, heatmaps=gt, has_pose=torch.zeros(2, dtype=torch.bool))
    none = PoseLoss(TINY, mask_mode="seed")("heatmap", [pred], nobody)
    (grad,) = torch.autograd.grad(none[0], pred)
    assert none[0].item() == 0.0 and torch.equal(grad, torch.zeros_like(grad))


# -- the multi-task loss -------------------------------------------------------------------------------------------
def test_two_identical_stages_give_twice_one_stage() -> None:
    torch.manual_seed(3)
    heat, paf, seg = torch.rand(1, 4, 2, 2), torch.rand(1, 4, 2, 2), torch.randn(1, 3, 2, 2)
    batch = pose_batch(parts=torch.tensor([[[0, 1], [2, 255]]]), has_parts=torch.tensor([True]))
    one = PosePartLoss(TINY)(ModelOutput(heatmaps=[heat], pafs=[paf], parts=[seg]), batch)
    two = PosePartLoss(TINY)(ModelOutput(heatmaps=[heat, heat], pafs=[paf, paf], parts=[seg, seg]), batch)
    for task in ("seg", "heatmap", "paf"):
        assert two.terms[task].item() == pytest.approx(2 * one.terms[task].item(), rel=1e-6)
        assert two.terms[f"{task}/stage2"].item() == pytest.approx(one.terms[f"{task}/stage1"].item(), rel=1e-6)
    assert two.total.item() == pytest.approx(2 * one.total.item(), rel=1e-6)
    expected = one.terms["seg"] + one.terms["heatmap"] + one.terms["paf"]  # seed eq. 4: unit weights
    assert one.total.item() == pytest.approx(expected.item(), rel=1e-6)


def test_pose_only_and_parts_only_samples_get_no_cross_gradient() -> None:
    torch.manual_seed(4)
    heat = torch.rand(2, 4, 2, 2, requires_grad=True)
    paf = torch.rand(2, 4, 2, 2, requires_grad=True)
    seg = torch.randn(2, 3, 4, 4, requires_grad=True)  # input resolution 4x4, output stride 2
    batch = pose_batch(2, heatmaps=torch.rand(2, 4, 2, 2), has_pose=torch.tensor([True, False]),
                       parts=torch.randint(0, 3, (2, 4, 4)), has_parts=torch.tensor([False, True]))
    PosePartLoss(TINY)(ModelOutput(heatmaps=[heat], pafs=[paf], parts=[seg]), batch).total.backward()
    assert seg.grad[0].abs().sum().item() == 0.0 and seg.grad[1].abs().sum().item() > 0
    for pred in (heat, paf):
        assert pred.grad[1].abs().sum().item() == 0.0 and pred.grad[0].abs().sum().item() > 0


def test_absent_tasks_skipped_and_terms_detached() -> None:
    result = PosePartLoss(TINY)(ModelOutput(heatmaps=[torch.ones(1, 4, 2, 2, requires_grad=True)]), pose_batch())
    assert set(result.terms) == {"heatmap", "heatmap/stage1", "total"}
    assert result.total.item() == pytest.approx(1.0) and result.total.requires_grad
    assert not any(t.requires_grad for t in result.terms.values())
    as_dict = PosePartLoss(TINY)({"heatmaps": [torch.ones(1, 4, 2, 2)], "parts": []}, pose_batch())
    assert set(as_dict.terms) == set(result.terms)  # a mapping output works too
    with pytest.raises(ValueError, match="expects"):
        PosePartLoss(TINY)(ModelOutput(pafs=[torch.zeros(1, 3, 2, 2)]), pose_batch())
    with pytest.raises(ValueError, match="no parts"):
        PosePartLoss(TINY)(ModelOutput(), pose_batch())


def test_uncertainty_weighting_value_and_gradient() -> None:
    weighting = UncertaintyWeighting(["seg", "heatmap", "paf"], init={"seg": 0.5, "heatmap": -1.0})
    l_seg = torch.tensor(2.0, requires_grad=True)
    l_heat = torch.tensor(3.0, requires_grad=True)
    total = weighting({"seg": l_seg, "heatmap": l_heat})  # "paf" absent: no term, no regulariser
    assert total.item() == pytest.approx(math.exp(-0.5) * 2 + 0.5 + math.exp(1.0) * 3 - 1.0, rel=1e-6)
    total.backward()
    # d/ds (e^-s L + s) = 1 - e^-s L; d/dL = e^-s
    assert weighting.log_vars.grad.tolist() == pytest.approx([1 - math.exp(-0.5) * 2, 1 - math.exp(1.0) * 3, 0.0])
    assert l_seg.grad.item() == pytest.approx(math.exp(-0.5)) and l_heat.grad.item() == pytest.approx(math.e)
    with pytest.raises(KeyError, match="known"):
        weighting({"depth": l_seg})


def test_uncertainty_priorities_set_the_equilibrium_weight() -> None:
    """total = sum e^-s L + r s: at fixed L the optimum is s = log(L / r), where the loss weighs r / L."""
    weighting = UncertaintyWeighting(["seg", "heatmap"], priorities={"heatmap": 3.0})
    losses = {"seg": torch.tensor(0.5), "heatmap": torch.tensor(2.0)}
    with torch.no_grad():
        weighting.log_vars.copy_(torch.tensor([math.log(0.5 / 1.0), math.log(2.0 / 3.0)]))
    weighting(losses).backward()
    assert weighting.log_vars.grad.tolist() == pytest.approx([0.0, 0.0], abs=1e-6)  # the stationary point
    assert torch.exp(-weighting.log_vars).tolist() == pytest.approx([1 / 0.5, 3 / 2.0])  # r / L
    with pytest.raises(ValueError, match="positive"):
        UncertaintyWeighting(["seg"], priorities={"seg": 0.0})


@pytest.mark.parametrize("settings, words", [
    (["loss.weighting=uncertainty", "loss.weights.heatmap=0"], "> 0"),
    (["loss.weights.heatmap=-1"], ">= 0"),
    (["loss.weights.depth=1"], "unknown tasks ['depth']"),
])
def test_task_weights_are_validated_with_the_config(settings, words) -> None:
    """Before: a priority of 0 under uncertainty weighting was a ValueError traceback when the model was built."""
    from posepart.engine.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"loss.*weights") as err:
        load_config(None, settings)
    assert words in str(err.value)


def test_loss_module_exposes_weighting_parameters_and_fixed_weights() -> None:
    loss_fn = PosePartLoss(TINY, weighting=UncertaintyWeighting(["heatmap", "paf"]))
    assert [p is loss_fn.weighting.log_vars for p in loss_fn.parameters()] == [True]
    result = loss_fn(ModelOutput(heatmaps=[torch.ones(1, 4, 2, 2)]), pose_batch())
    assert result.terms["log_var/heatmap"].item() == 0.0 and result.total.item() == pytest.approx(1.0)
    fixed = FixedWeighting({"seg": 0.5})({"seg": torch.tensor(2.0), "paf": torch.tensor(3.0)})
    assert fixed.item() == pytest.approx(0.5 * 2 + 3.0)


# -- focal heatmap loss --------------------------------------------------------------------------------------------
def test_focal_heatmap_loss_by_hand() -> None:
    """One 3x3 joint map: a positive peak (gt 1, p 0.8), a neighbour at gt 0.5 (penalty reduced by (1 - 0.5)^4) and
    seven background cells at p 0.1; normalised by the one positive."""
    from posepart.losses.pose import focal_heatmap_loss

    gt = torch.zeros(1, 1, 3, 3)
    gt[0, 0, 1, 1], gt[0, 0, 1, 2] = 1.0, 0.5
    pred = torch.full((1, 1, 3, 3), 0.1)
    pred[0, 0, 1, 1] = 0.8
    positive = -(0.2**2) * math.log(0.8)
    background = 7 * -(0.1**2) * math.log(0.9) - 0.5**4 * 0.1**2 * math.log(0.9)
    loss = focal_heatmap_loss(pred, gt, torch.ones_like(gt))
    assert loss.item() == pytest.approx(positive + background, rel=1e-5)
    # a tie (a joint halfway between two cells) gives two positives; a masked cell adds nothing
    gt[0, 0, 1, 2] = 1.0
    weight = torch.ones_like(gt)
    weight[0, 0, 0, 0] = 0.0
    tie = -(0.2**2) * math.log(0.8) - (0.9**2) * math.log(0.1)
    rest = 6 * -(0.1**2) * math.log(0.9)
    assert focal_heatmap_loss(pred, gt, weight).item() == pytest.approx((tie + rest) / 2, rel=1e-5)


def test_focal_beta_sets_the_penalty_next_to_a_peak() -> None:
    """The neighbour at gt 0.5 pays (1 - 0.5)^beta of a background cell's loss: 1/16 with CenterNet's 4, 1/4 with 2;
    `loss.focal_beta` reaches the loss through PoseLoss."""
    from posepart.losses.pose import focal_heatmap_loss

    gt = torch.zeros(1, 1, 3, 3)
    gt[0, 0, 1, 1], gt[0, 0, 1, 2] = 1.0, 0.5
    pred = torch.full((1, 1, 3, 3), 0.1)
    pred[0, 0, 1, 1] = 0.8
    background = -(0.1**2) * math.log(0.9)
    positive = -(0.2**2) * math.log(0.8)
    for beta in (4.0, 2.0):
        loss = focal_heatmap_loss(pred, gt, torch.ones_like(gt), beta=beta)
        assert loss.item() == pytest.approx(positive + 7 * background + 0.5**beta * background, rel=1e-5)
    hm = torch.cat([gt, 1 - gt], 1)  # one joint + the background channel (TINY has 3 joints: pad with zeros)
    hm = torch.cat([torch.zeros(1, TINY.num_joints - 1, 3, 3), hm], 1)
    prob = torch.cat([torch.full((1, TINY.num_joints - 1, 3, 3), 0.1), pred, 1 - pred], 1)
    batch = pose_batch(1, 3, 3, heatmaps=hm)
    (two,) = PoseLoss(TINY, heatmap_loss="focal", focal_beta=2.0)("heatmap", [prob], batch)
    (four,) = PoseLoss(TINY, heatmap_loss="focal")("heatmap", [prob], batch)
    assert (two - four).item() == pytest.approx((0.25 - 0.0625) * background, rel=1e-4)


def test_focal_pose_loss_keeps_mse_on_the_background_channel() -> None:
    torch.manual_seed(5)
    gt = torch.rand(1, TINY.heatmap_channels, 4, 4)
    pred = torch.rand(1, TINY.heatmap_channels, 4, 4) * 0.98 + 0.01
    batch = pose_batch(1, 4, 4, heatmaps=gt)
    from posepart.losses.pose import focal_heatmap_loss, masked_mse

    (loss,) = PoseLoss(TINY, heatmap_loss="focal")("heatmap", [pred], batch)
    ones = torch.ones(1, 1, 4, 4)
    expected = focal_heatmap_loss(pred[:, :3], gt[:, :3], ones.expand(1, 3, 4, 4)) + masked_mse(pred[:, 3:], gt[:, 3:],
                                                                                                 ones)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError, match="heatmap_loss"):
        PoseLoss(TINY, heatmap_loss="l1")  # type: ignore[arg-type]


def test_maps_of_another_stride_or_logits_under_the_focal_loss_are_named() -> None:
    """An API walkthrough: targets drawn for another stride gave a bare "prediction and target differ"; a model
    built without the heatmap sigmoid trained under the focal loss on clamped logits without a word."""
    batch = pose_batch(1, 4, 4)
    with pytest.raises(ValueError, match=r"heatmap stage 2: the model's maps are \(8, 8\) cells, the batch's targets "
                                         r"\(4, 4\).*TargetConfig\(input_size, model.meta\)"):
        PoseLoss(TINY)("heatmap", [torch.zeros(1, 4, 4, 4), torch.zeros(1, 4, 8, 8)], batch)
    logits = torch.randn(1, TINY.heatmap_channels, 4, 4)
    with pytest.raises(ValueError, match="focal heatmap loss needs probabilities.*heatmap_sigmoid=True"):
        PoseLoss(TINY, heatmap_loss="focal")("heatmap", [logits], batch)
    focal = PoseLoss(TINY, heatmap_loss="focal")
    focal("heatmap", [torch.sigmoid(logits)], batch)  # probabilities: checked once, then no host sync per step
    assert focal._focal_checked


def test_uncertainty_weight_of_a_task_the_batch_lacks_gets_no_gradient() -> None:
    """A parts-only batch: the pose tasks' losses are 0 and their log-variances must get no gradient (otherwise a run
    with pose masked drives s to -inf and exp(-s) * 0 to NaN); the labelled task is weighted as usual."""
    torch.manual_seed(4)
    weighting = UncertaintyWeighting(["seg", "heatmap", "paf"], init=0.5)
    loss = PosePartLoss(TINY, weighting=weighting)
    out = ModelOutput(heatmaps=[torch.rand(2, 4, 2, 2)], pafs=[torch.rand(2, 4, 2, 2)],
                      parts=[torch.randn(2, 3, 2, 2)])
    batch = pose_batch(2, has_pose=torch.zeros(2, dtype=torch.bool))
    batch["parts"] = torch.randint(0, 3, (2, 2, 2))
    batch["has_parts"] = torch.ones(2, dtype=torch.bool)
    result = loss(out, batch)
    result.total.backward()
    grad = weighting.log_vars.grad
    assert grad[1].item() == 0.0 and grad[2].item() == 0.0 and grad[0].item() != 0.0
    seg = result.terms["seg"]
    assert result.total.item() == pytest.approx(math.exp(-0.5) * seg.item() + 0.5, rel=1e-6)
