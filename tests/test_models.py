"""Tests for posepart.models: shapes from the schema, stage counts, exact input-size seg logits, VGG16 weight loading
(against a real torchvision vgg16 state dict), FLOPs against hand counts, and gradient flow through the shared trunk."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from posepart.models import (
    MODELS,
    BilinearUpsample,
    FCNHead,
    MaxBlurPool,
    ModelOutput,
    PAFStages,
    PosePartNet,
    ResidualRefine,
    ShapeSpec,
    SkipRefine,
    VGGTrunk,
    build_model,
    channels_last_,
    count_flops,
    count_parameters,
    fcn8_vgg16,
    fcn32_vgg16,
    fold_batch_norm,
    joint_vgg16,
    load_vgg16_weights,
    paf_vgg16,
)
from posepart.models.fcn import pad_edges
from posepart.schema import Schema

SMALL = dict(width=0.25)  # CPU-sized: 16..128 trunk channels
SMALL_FC = dict(width=0.25, fc_width=64)
TINY = Schema(keypoints=("a", "b", "c"), skeleton=((0, 1), (1, 2)), part_classes=("background", "x", "y"), name="tiny")
SCHEMAS = {"pascal": Schema.pascal_person_part(), "tiny": TINY}
FCN_NAMES = ("fcn32_vgg16", "fcn16_vgg16", "fcn8_vgg16")


def small_kwargs(name: str, **extra: object) -> dict[str, object]:
    return {**(SMALL if name == "paf_vgg16" else SMALL_FC), **extra}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# -- shapes ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("schema_name", sorted(SCHEMAS))
@pytest.mark.parametrize("name", sorted(MODELS))
def test_builder_output_shapes(name: str, schema_name: str) -> None:
    schema = SCHEMAS[schema_name]
    model = build_model(name, schema, **small_kwargs(name, **({"stages": 2} if "fcn" not in name else {})))
    out = model(torch.randn(2, 3, 96, 80))
    assert isinstance(out, ModelOutput) and model.meta.pose_stride == (None if name.startswith("fcn") else 8)
    if name.startswith("fcn"):
        assert out.heatmaps == [] and out.pafs == []
    else:
        assert len(out.heatmaps) == len(out.pafs) == 2
        for hm, paf in zip(out.heatmaps, out.pafs):
            assert hm.shape == (2, schema.heatmap_channels, 12, 10)
            assert paf.shape == (2, schema.paf_channels, 12, 10)
    if name == "paf_vgg16":
        assert out.parts == []
    else:  # FCN logits at input resolution
        assert len(out.parts) == 1 and out.parts[0].shape == (2, schema.num_parts, 96, 80)
        assert model.meta.parts_stride == 1


def test_coco_schema_pose_only() -> None:
    coco = Schema.coco()
    out = paf_vgg16(coco, stages=1, **SMALL)(torch.randn(1, 3, 64, 64))
    assert out.heatmaps[0].shape == (1, 18, 8, 8) and out.pafs[0].shape == (1, 38, 8, 8) and out.parts == []
    for name in (*FCN_NAMES, "joint_vgg16"):  # COCO has no part classes: a seg model cannot be sized
        with pytest.raises(ValueError, match="part classes"):
            build_model(name, coco, **SMALL_FC)
    parts_only = Schema(keypoints=(), skeleton=(), part_classes=("background", "x"))
    with pytest.raises(ValueError, match="joints"):
        paf_vgg16(parts_only, **SMALL)


@pytest.mark.parametrize("stages", [1, 2, 3])
@pytest.mark.parametrize("seg_head", ["fcn32", "fcn8", "stage", None])
def test_stage_counts(stages: int, seg_head: str | None) -> None:
    schema = SCHEMAS["pascal"]
    if seg_head is None:
        model = paf_vgg16(schema, stages=stages, **SMALL)
    else:
        model = joint_vgg16(schema, stages=stages, seg_head=seg_head, **SMALL_FC)  # type: ignore[arg-type]
    out = model(torch.randn(1, 3, 64, 48))
    assert len(out.heatmaps) == len(out.pafs) == stages
    if seg_head == "stage":  # one stride-8 logits map per stage, fed to the next stage
        assert [p.shape for p in out.parts] == [(1, schema.num_parts, 8, 6)] * stages
        assert model.meta.parts_stride == 8
        if stages > 1:
            first_conv = model.pose_head.stages[1].branches["parts"][0]
            assert first_conv.in_channels == 32 + schema.heatmap_channels + schema.paf_channels + schema.num_parts
    elif seg_head is not None:
        assert [p.shape for p in out.parts] == [(1, schema.num_parts, 64, 48)]


@pytest.mark.parametrize("seg_stride", [4, 2])
def test_stage_seg_refined_by_skips_starts_as_bilinear_upsampling(seg_stride: int) -> None:
    """seg_stride 4 / 2: each stage's stride-8 logits x2-upsampled per skip plus zero-initialised skip scores, so at
    initialisation the output equals repeated x2 bilinear interpolation of the stride-8 logits; the next stage is
    still fed the stride-8 logits."""
    schema = SCHEMAS["pascal"]
    model = joint_vgg16(schema, stages=2, seg_head="stage", seg_stride=seg_stride, **SMALL).eval()
    x = torch.randn(1, 3, 64, 48)
    with torch.no_grad():
        out = model(x)
        _, _, coarse = model.pose_head(model.trunk(x)["features"])  # [(1, P, 8, 6)] * 2
    assert model.meta.parts_stride == seg_stride and not hasattr(model, "parts_stride")  # `meta` alone says it
    assert [p.shape for p in out.parts] == [(1, schema.num_parts, 64 // seg_stride, 48 // seg_stride)] * 2
    for refined, logits in zip(out.parts, coarse):
        expected = logits
        while expected.shape[-1] < refined.shape[-1]:
            expected = F.interpolate(expected, scale_factor=2, mode="bilinear", align_corners=False)
        torch.testing.assert_close(refined, expected, atol=1e-5, rtol=1e-5)
    second = model.pose_head.stages[1].branches["parts"][0]
    assert second.in_channels == 32 + schema.heatmap_channels + schema.paf_channels + schema.num_parts


@pytest.mark.parametrize("refine, names", [("deep", ("conv3_3", "conv2_2")), ("fcn", ("pool2", "pool1"))])
def test_skip_refinement_learns_from_the_fine_maps(refine: str, names: tuple[str, ...]) -> None:
    """The zero-initialised last layers of the part refinement get a gradient from the segmentation loss at the
    first step; `refine` picks the trunk maps of both refinements (parts and pose) and the parts' form."""
    model = joint_vgg16(TINY, stages=1, seg_head="stage", seg_stride=2, pose_stride=2, refine=refine, **SMALL)
    assert tuple(model.pose_refine["heatmaps"].heads) == names
    assert isinstance(model.parts_refine, ResidualRefine if refine == "deep" else SkipRefine)
    out = model(torch.randn(2, 3, 32, 32))
    F.cross_entropy(out.parts[-1], torch.randint(0, TINY.num_parts, (2, 16, 16))).backward()
    for name in names:
        last = (model.parts_refine.heads[name][-1] if refine == "deep" else model.parts_refine.scorers[name])
        assert last.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="refine must be one of"):
        paf_vgg16(TINY, stages=1, pose_stride=4, refine="conv4", **SMALL)


def test_seg_stride_errors() -> None:
    with pytest.raises(ValueError, match="seg_stride"):
        joint_vgg16(TINY, seg_head="fcn32", seg_stride=4, **SMALL_FC)  # the FCN heads are full resolution already
    with pytest.raises(ValueError, match="seg_stride"):
        joint_vgg16(TINY, seg_head="stage", seg_stride=3, **SMALL)
    with pytest.raises(ValueError, match="must have stride 4"):
        SkipRefine(3, 8, {"pool1": ShapeSpec(16, 2)})  # skips must halve the stride one at a time
    with pytest.raises(ValueError, match="needs stage_seg"):
        PosePartNet(VGGTrunk(width=0.25), None, paf_vgg16(TINY, stages=1, **SMALL).pose_head,
                    parts_refine=SkipRefine(3, 8, {"pool2": ShapeSpec(32, 4)}))


@pytest.mark.parametrize("name", FCN_NAMES)
@pytest.mark.parametrize("hw", [(40, 56), (72, 88), (104, 24), (8, 8)])
def test_fcn_logits_exactly_input_size(name: str, hw: tuple[int, int]) -> None:
    """Multiples of 8 that are not multiples of 32 (ceil-mode pools + crop) still give (B, P, H, W)."""
    out = build_model(name, TINY, **SMALL_FC)(torch.randn(1, 3, *hw))
    assert out.parts[0].shape == (1, TINY.num_parts, *hw)


def _two_builds(name: str, **option: str) -> tuple[nn.Module, nn.Module]:
    """A small BatchNorm model `name` built twice from the same seed, by default and with `option`, in eval mode."""
    options = dict(width=0.125, batch_norm=True, **({} if name == "paf_vgg16" else {"fc_width": 32}))
    torch.manual_seed(0)
    default = build_model(name, Schema.pascal_person_part(), **options).eval()
    torch.manual_seed(0)
    return default, build_model(name, Schema.pascal_person_part(), **option, **options).eval()


def _assert_same_weights_other_outputs(model: nn.Module, other: nn.Module) -> None:
    """Two builds of one layout (an option without weights changed): the same tensors by name, outputs of the same
    shape that differ."""
    assert list(model.state_dict()) == list(other.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = model(x), other(x)
    first = (a.parts or a.heatmaps)[-1], (b.parts or b.heatmaps)[-1]
    assert first[0].shape == first[1].shape and not torch.allclose(*first)


@pytest.mark.parametrize("name", ["fcn32_vgg16", "paf_vgg16", "joint_vgg16"])
def test_silu_replaces_every_relu_and_keeps_the_weights(name: str) -> None:
    """`activation="silu"`: the same layout and weights (an activation has none), every ReLU a SiLU, other outputs;
    "relu" is VGG16's own; any other name is refused."""
    relu, silu = _two_builds(name, activation="silu")
    count = {kind: [sum(isinstance(m, kind) for m in model.modules()) for model in (relu, silu)]
             for kind in (nn.ReLU, nn.SiLU)}
    assert count[nn.ReLU][0] >= 10 and count[nn.ReLU][1] == 0 and count[nn.SiLU] == [0, count[nn.ReLU][0]]
    _assert_same_weights_other_outputs(relu, silu)
    with pytest.raises(ValueError, match="activation"):
        _two_builds(name, activation="gelu")


def _max_blur_reference(x: np.ndarray) -> np.ndarray:
    """MaxBlurPool by its definition, with loops: the max of every 2x2 window at stride 1 (the edge pixels repeated),
    then [1, 2, 1] x [1, 2, 1] / 16 around every odd window, so output (i, j) is centred where MaxPool2d(2, 2)'s is
    (between input pixels 2j and 2j + 1 on each axis). Both are separable: one axis after the other."""
    def window_max(a: np.ndarray) -> np.ndarray:  # last axis, n -> n + 1: window (i - 1, i)
        n = a.shape[-1] // 2 * 2
        return np.stack([np.maximum(a[..., max(i - 1, 0)], a[..., min(i, n - 1)]) for i in range(n + 1)], -1)

    def blur(m: np.ndarray) -> np.ndarray:  # last axis, n + 1 -> n / 2
        return np.stack([(m[..., 2 * j] + 2 * m[..., 2 * j + 1] + m[..., 2 * j + 2]) / 4
                         for j in range(m.shape[-1] // 2)], -1)

    def transposed(f, a: np.ndarray) -> np.ndarray:
        return np.swapaxes(f(np.swapaxes(a, -1, -2)), -1, -2)

    return transposed(blur, blur(transposed(window_max, window_max(x))))


@pytest.mark.parametrize("hw", [(8, 8), (6, 10), (7, 9)])
def test_max_blur_pool_is_a_max_then_a_121_blur_and_moves_with_its_input(hw: tuple[int, int]) -> None:
    """`MaxBlurPool` against a loop over its definition, at MaxPool2d's output size (floor mode: an odd row dropped);
    and the reason for it: a bright pixel moved by one input pixel moves the pooled map's centre of mass by half a
    cell, where MaxPool2d's stays put for every other step (its output only says which 2x2 window)."""
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(0))
    out = MaxBlurPool()(x)
    assert out.shape == nn.MaxPool2d(2, 2)(x).shape
    np.testing.assert_allclose(out.numpy(), _max_blur_reference(x.numpy()), atol=1e-6, rtol=0)

    def centre(pool: nn.Module, q: int) -> float:  # the pooled map's centre of mass, in input pixels
        delta = torch.zeros(1, 1, 1, 32)
        delta[..., q] = 1.0
        row = pool(F.pad(delta, (0, 0, 0, 1)))[0, 0, 0]  # 2 rows: one output row
        return float(2 * (row * torch.arange(16.0)).sum() / row.sum() + 0.5)

    for q in range(8, 14):
        assert centre(MaxBlurPool(), q) == pytest.approx(q)
    assert [centre(nn.MaxPool2d(2, 2), q) for q in (8, 9, 10, 11)] == [8.5, 8.5, 10.5, 10.5]


@pytest.mark.parametrize("name", ["fcn32_vgg16", "paf_vgg16", "joint_vgg16"])
def test_blur_pools_replace_the_trunks_max_pools_and_keep_the_weights(name: str) -> None:
    """`pool="blur"`: the trunk's three max-pools are MaxBlurPools (the FCN head's own pool4 and pool5 stay: FCN's,
    in ceil mode), with the same weights and outputs of the same shape; any other name is refused."""
    plain, blur = _two_builds(name, pool="blur")
    assert [type(m) for m in blur.trunk.features if isinstance(m, (nn.MaxPool2d, MaxBlurPool))] == [MaxBlurPool] * 3
    assert sum(isinstance(m, nn.MaxPool2d) for m in plain.modules()) - \
        sum(isinstance(m, nn.MaxPool2d) for m in blur.modules()) == 3
    _assert_same_weights_other_outputs(plain, blur)
    with pytest.raises(ValueError, match="pool must be one of"):
        _two_builds(name, pool="avg")


@pytest.mark.parametrize("name, options, words", [
    ("paf_vgg16", dict(width=float("nan")), "width must be a finite number > 0, got nan"),
    ("paf_vgg16", dict(width=float("inf")), "width must be a finite number > 0"),
    ("paf_vgg16", dict(width="0.25"), "width must be a finite number > 0, got '0.25'"),
    ("joint_vgg16", dict(fc_width=0), "fc_width must be an integer >= 1, got 0"),
    ("fcn32_vgg16", dict(fc_width=-5), "fc_width must be an integer >= 1"),
    ("paf_vgg16", dict(heatmap_smoothing=-1.0), "heatmap_smoothing must be a finite number >= 0, got -1.0"),
    ("paf_vgg16", dict(batch_norm="no"), "batch_norm must be True or False, got 'no'"),
    ("paf_vgg16", dict(stages=True), "stages must be an integer >= 1, got True"),
    ("joint_vgg16", dict(pose_stride=4.0), "pose_stride must be an integer >= 1, got 4.0"),
])
def test_builders_refuse_bad_numbers_before_building(name: str, options: dict[str, object], words: str) -> None:
    """An API walkthrough: a NaN or string width failed in torch's words, fc_width 0 at the first forward, a negative
    smoothing was blamed on `sigma`, and batch_norm="no" or stages=True built something."""
    with pytest.raises(ValueError, match=re.escape(words)):
        build_model(name, Schema.pascal_person_part(), **options)
    build_model("paf_vgg16", Schema.pascal_person_part(), width=np.float32(0.125), stages=np.int64(1),
                batch_norm=np.True_)  # numpy's numbers are numbers (a review: np.True_ refused)


def test_input_not_multiple_of_stride_is_refused() -> None:
    with pytest.raises(ValueError, match="multiples of 8"):
        fcn32_vgg16(TINY, **SMALL_FC)(torch.randn(1, 3, 60, 64))
    # channels last or unbatched: before, "multiples of 8, got 64x3" or an error deep inside F.interpolate
    for shape in ((1, 64, 64, 3), (3, 64, 64)):
        with pytest.raises(ValueError, match=re.escape(f"expected an image batch (B, 3, H, W), got shape {shape}")):
            fcn32_vgg16(TINY, **SMALL_FC)(torch.randn(*shape))
    # a walkthrough: uint8 pixels gave torch's "expected scalar type Byte but found Float" from inside the trunk
    with pytest.raises(ValueError, match="expected normalised float pixels .*, got torch.uint8"):
        fcn32_vgg16(TINY, **SMALL_FC)(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_paf_stage_structure_matches_paper() -> None:
    """Stage 1: 3x conv3x3(128) + 1x1(512) + 1x1(out); stage t>=2: 5x conv7x7(128) + 1x1(128) + 1x1(out)."""
    head = PAFStages(128, heatmap_channels=15, paf_channels=26, stages=2)
    for t, (kernels, widths) in enumerate([([3, 3, 3, 1, 1], [128, 128, 128, 512]),
                                           ([7, 7, 7, 7, 7, 1, 1], [128] * 6)]):
        for branch, out_c in (("heatmaps", 15), ("pafs", 26)):
            convs = [m for m in head.stages[t].branches[branch] if isinstance(m, nn.Conv2d)]
            assert [c.kernel_size[0] for c in convs] == kernels
            assert [c.out_channels for c in convs] == widths + [out_c]
            assert convs[0].in_channels == (128 if t == 0 else 128 + 15 + 26)
    with pytest.raises(ValueError, match="1..6"):
        PAFStages(128, heatmap_channels=15, paf_channels=26, stages=7)


# -- trunk -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("width", [0.25, 0.5])
@pytest.mark.parametrize("cpm", [True, False])
def test_trunk_output_shapes_match_forward(width: float, cpm: bool) -> None:
    trunk = VGGTrunk(width=width, cpm=cpm)
    feats = trunk(torch.randn(1, 3, 64, 96))
    shapes = trunk.output_shapes()
    assert set(feats) == set(shapes) == ({"pool1", "conv2_2", "pool2", "conv3_3", "pool3", "conv4_3"}
                                         | ({"features"} if cpm else set()))
    for key, spec in shapes.items():
        assert feats[key].shape == (1, spec.channels, 64 // spec.stride, 96 // spec.stride)
    # conv2_2 / conv3_3 are the maps the pools read, intact after the forward (no in-place layer touched them)
    torch.testing.assert_close(F.max_pool2d(feats["conv2_2"], 2), feats["pool2"], rtol=0, atol=0)
    torch.testing.assert_close(F.max_pool2d(feats["conv3_3"], 2), feats["pool3"], rtol=0, atol=0)
    assert shapes["conv4_3"].channels == int(512 * width) and shapes["pool3"].channels == int(256 * width)


@pytest.fixture(scope="module")
def vgg16_state() -> dict[str, torch.Tensor]:
    return torchvision.models.vgg16(weights=None).state_dict()


def test_trunk_layout_matches_torchvision_vgg16() -> None:
    tv = torchvision.models.vgg16(weights=None, init_weights=False).features  # layout only: skip the slow init
    trunk = VGGTrunk()
    for i, layer in enumerate(trunk.features):  # same module types at the same indices, same conv shapes
        assert type(layer) is type(tv[i])
        if isinstance(layer, nn.Conv2d):
            assert layer.weight.shape == tv[i].weight.shape
    assert len(trunk.features) == 23  # conv4_3's ReLU is features.22; pool4 belongs to the FCN head


# -- pretrained loading -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def vgg16_file(vgg16_state: dict[str, torch.Tensor], tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("vgg") / "vgg16.pth"
    torch.save(vgg16_state, path)
    return path


def features_only(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if k.startswith("features.")}


def test_pretrained_fcn8_loads_trunk_conv5_fc6_fc7(vgg16_file: Path, vgg16_state: dict[str, torch.Tensor]) -> None:
    model = fcn8_vgg16(TINY, pretrained=vgg16_file)  # width 1.0, fc_width 4096: every VGG16 layer fits
    sd = model.state_dict()
    for i in (0, 2, 5, 7, 10, 12, 14, 17, 19, 21):
        for p in ("weight", "bias"):
            assert torch.equal(sd[f"trunk.features.{i}.{p}"], vgg16_state[f"features.{i}.{p}"])
    for own, tv in ((0, 24), (2, 26), (4, 28)):
        assert torch.equal(sd[f"seg_head.conv5.{own}.weight"], vgg16_state[f"features.{tv}.weight"])
        assert torch.equal(sd[f"seg_head.conv5.{own}.bias"], vgg16_state[f"features.{tv}.bias"])
    fc6 = sd["seg_head.fc.fc6.weight"]
    assert fc6.shape == (4096, 512, 7, 7)
    assert torch.equal(fc6, vgg16_state["classifier.0.weight"].view(4096, 512, 7, 7))
    # Element (o, c, y, x) of the conv is the fc weight on flattened pool5 index c*49 + y*7 + x.
    assert fc6[5, 3, 2, 6] == vgg16_state["classifier.0.weight"][5, 3 * 49 + 2 * 7 + 6]
    assert torch.equal(sd["seg_head.fc.fc7.weight"][:, :, 0, 0], vgg16_state["classifier.3.weight"])
    assert torch.equal(sd["seg_head.fc.fc7.bias"], vgg16_state["classifier.3.bias"])


def test_pretrained_features_only_into_pose_model(tmp_path: Path, vgg16_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "features.pt"
    torch.save(features_only(vgg16_state), path)
    model = paf_vgg16(TINY, stages=1, pretrained=path)
    assert torch.equal(model.trunk.features[21].weight, vgg16_state["features.21.weight"])
    # The CPM adapter is not part of VGG16: it keeps its own init.
    assert model.trunk.cpm is not None and model.trunk.cpm.conv4_3_CPM.weight.shape == (256, 512, 3, 3)


def test_imagenet_weights_are_torchvisions_file_in_the_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 vgg16_state: dict[str, torch.Tensor]) -> None:
    """`pretrained="imagenet"`: torchvision's VGG16_Weights.IMAGENET1K_V1 file, read from torch's hub cache."""
    from torchvision.models import VGG16_Weights

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded a cached file"))
    cached = tmp_path / "checkpoints" / Path(VGG16_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir()
    torch.save(features_only(vgg16_state), cached)
    model = paf_vgg16(TINY, stages=1, pretrained="imagenet")
    assert cached.name == "vgg16-397923af.pth"
    assert torch.equal(model.trunk.features[21].weight, vgg16_state["features.21.weight"])


def test_imagenet_weights_offline_say_where_to_put_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Offline (this machine), the hub download fails: one error naming the URL and the file to put in place."""
    from cli_helpers import refused, run_cli

    from posepart.errors import MissingFileError

    def offline(url: str, dst: str, **kwargs: object) -> None:
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    where = tmp_path / "hub" / "checkpoints" / "vgg16-397923af.pth"
    with pytest.raises(MissingFileError, match="download.pytorch.org/models/vgg16-397923af.pth") as err:
        paf_vgg16(TINY, stages=1, pretrained="imagenet")
    assert str(where) in str(err.value)
    from posepart.data.synth import write_synth

    data = write_synth(tmp_path / "data", n=2, seed=0, size=64)
    code, _, stderr = run_cli(["train", "--config", "demo_cpu_paf", "--set", "model.width=1.0", "--set",
                               "model.batch_norm=false", "--set", "model.pretrained=imagenet", "--set",
                               f"data.train={data}", "--set", "data.input_size=64", "--out", str(tmp_path / "run")],
                              capsys)
    assert refused(code, stderr) and str(where) in stderr


def test_pretrained_safetensors(tmp_path: Path, vgg16_state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "vgg16.safetensors"
    save_file({k: v.contiguous() for k, v in features_only(vgg16_state).items()}, str(path))
    trunk = VGGTrunk(cpm=False)
    loaded = load_vgg16_weights(trunk, path)
    assert len(loaded) == 20  # 10 convs x (weight, bias)
    assert torch.equal(trunk.features[10].bias, vgg16_state["features.10.bias"])


def test_pretrained_narrow_fc_skips_fc6_fc7_with_warning(tmp_path: Path, vgg16_state: dict[str, torch.Tensor]) -> None:
    path = tmp_path / "vgg16_small_fc.pt"
    small = features_only(vgg16_state)
    small["classifier.0.weight"] = torch.randn(16, 25088)  # a real layout with a different fc width
    small["classifier.0.bias"] = torch.randn(16)
    torch.save(small, path)
    with pytest.warns(UserWarning, match="classifier.0.weight"):
        model = fcn32_vgg16(TINY, fc_width=64, pretrained=path)
    assert torch.equal(model.seg_head.conv5[4].weight, vgg16_state["features.28.weight"])


@pytest.mark.parametrize("name", sorted(MODELS))
def test_pretrained_needs_width_one(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pretrained VGG16 weights need width=1.0, got 0.25"):
        build_model(name, TINY, **small_kwargs(name), pretrained=tmp_path / "never_read.pth")
    with pytest.raises(ValueError, match=r"need width=1.0, got 0.25"):
        load_vgg16_weights(VGGTrunk(width=0.25), tmp_path / "never_read.pth")


def test_the_weight_loader_refuses_a_batch_norm_network_in_words(tmp_path: Path,
                                                                  vgg16_state: dict[str, torch.Tensor]) -> None:
    """The loader asks the whole of `check_fits`: before, it asked the width only, and a BatchNorm network met
    `AttributeError: 'ReLU' object has no attribute 'weight'` (the torchvision indices land on other layers there)."""
    from posepart.models.pretrained import PretrainedError

    torch.save(features_only(vgg16_state), tmp_path / "vgg16.pth")
    for model in (VGGTrunk(batch_norm=True), paf_vgg16(TINY, width=1.0, stages=1, batch_norm=True)):
        with pytest.raises(PretrainedError, match=r"are for the plain network: set batch_norm=False"):
            load_vgg16_weights(model, tmp_path / "vgg16.pth")


def test_pretrained_errors_name_the_keys(tmp_path: Path, vgg16_state: dict[str, torch.Tensor]) -> None:
    state = features_only(vgg16_state)
    missing = dict(state)
    del missing["features.10.weight"]
    torch.save(missing, tmp_path / "missing.pt")
    with pytest.raises(ValueError, match=r"features\.10\.weight"):
        load_vgg16_weights(VGGTrunk(), tmp_path / "missing.pt")
    wrong = dict(state)
    wrong["features.0.weight"] = torch.zeros(64, 4, 3, 3)
    torch.save(wrong, tmp_path / "wrong.pt")
    with pytest.raises(ValueError, match=r"features\.0\.weight \(64, 4, 3, 3\)"):
        load_vgg16_weights(VGGTrunk(), tmp_path / "wrong.pt")
    with pytest.raises(FileNotFoundError):
        load_vgg16_weights(VGGTrunk(), tmp_path / "absent.pt")


# -- FCN pieces ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("learnable", [True, False])
@pytest.mark.parametrize("factor", [2, 8, 32])
def test_bilinear_upsample_equals_interpolate(factor: int, learnable: bool) -> None:
    x = torch.randn(2, 3, 5, 4)
    up = BilinearUpsample(3, factor, learnable=learnable)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    out_hw = (5 * factor - factor // 2, 4 * factor)  # also a crop
    torch.testing.assert_close(up(x, out_hw), ref[:, :, : out_hw[0], : out_hw[1]], atol=1e-5, rtol=0)
    assert count_parameters(up) == (9 * (2 * factor) ** 2 if learnable else 0)


def test_pad_edges_is_replicate_padding() -> None:
    x = torch.randn(2, 3, 5, 4)
    torch.testing.assert_close(pad_edges(x), F.pad(x, (1, 1, 1, 1), mode="replicate"), atol=0, rtol=0)


def test_bilinear_upsample_compiles_with_gradients() -> None:
    """torch.compile (inductor) differentiates the upsampling and gets eager's gradients: the GPU training step is meant
    to be compiled. (With F.pad(mode="replicate") torch 2.14's compiled backward fails a stride assertion.)"""
    up = BilinearUpsample(7, 4, learnable=False)
    x = torch.randn(2, 7, 16, 16, requires_grad=True)
    torch.compile(up)(x, (64, 60)).square().sum().backward()
    compiled_grad, x.grad = x.grad, None
    up(x, (64, 60)).square().sum().backward()
    torch.testing.assert_close(compiled_grad, x.grad)


def test_fcn_skips_start_at_zero() -> None:
    head = FCNHead(128, 3, variant="fcn8", width=0.25, fc_width=32)
    for conv in (head.score_pool4, head.score_pool3):
        assert not conv.weight.any() and not conv.bias.any()
    assert head.score_fr.weight.std() > 0


@pytest.mark.parametrize("variant", ["fcn16", "fcn8"])
def test_fcn_skips_add_their_scores(variant: str) -> None:
    """The finer skips' scores are added to the coarse ones: with every scorer's weights at zero and only biases,
    each fused map is constant, bilinear upsampling keeps a constant, so the logits are the biases' sum everywhere
    (hand-computed; the skips start at zero, so no forward pass of a fresh head can see them), and the skip scorers
    get a gradient from the loss at the first step."""
    def skips(head: FCNHead) -> list[nn.Conv2d]:
        return [head.score_pool4] + ([head.score_pool3] if variant == "fcn8" else [])

    head = FCNHead(128, 3, variant=variant, width=0.25, fc_width=32, pool3_channels=64).eval()
    feats = {"conv4_3": torch.randn(2, 128, 5, 7), "pool3": torch.randn(2, 64, 5, 7)}
    scorers = [head.score_fr, *skips(head)]
    biases = torch.tensor([[0.5, -1.0, 2.0], [0.25, 0.75, -0.5], [1.5, 0.0, 1.0]])[: len(scorers)]
    with torch.no_grad():
        for conv, bias in zip(scorers, biases):
            conv.weight.zero_()
            conv.bias.copy_(bias)
    logits = head(feats, (40, 56))  # (2, 3, 40, 56)
    torch.testing.assert_close(logits, biases.sum(0)[None, :, None, None].expand(2, 3, 40, 56))

    head = FCNHead(128, 3, variant=variant, width=0.25, fc_width=32, pool3_channels=64)
    F.cross_entropy(head(feats, (40, 56)), torch.randint(0, 3, (2, 40, 56))).backward()
    for conv in skips(head):
        assert conv.weight.grad.abs().sum() > 0


# -- FLOPs and parameters -----------------------------------------------------------------------------------------
def test_flops_of_single_conv_are_two_per_multiply_add() -> None:
    conv = nn.Conv2d(3, 8, kernel_size=3, padding=1)
    macs = 16 * 24 * 8 * 3 * 9  # output pixels x out channels x (in channels x kernel)
    assert count_flops(conv, (16, 24)) == pytest.approx(2 * macs, rel=0.01)
    assert count_parameters(conv) == 8 * 3 * 9 + 8


def test_trunk_flops_match_hand_count() -> None:
    trunk = VGGTrunk(width=0.25)
    h, w, macs = 64, 48, 0
    for m in [*trunk.features, *trunk.cpm]:  # type: ignore[misc]
        if isinstance(m, nn.MaxPool2d):
            h, w = h // 2, w // 2
        elif isinstance(m, nn.Conv2d):
            macs += h * w * m.out_channels * m.in_channels * 9
    assert count_flops(trunk, (64, 48)) == pytest.approx(2 * macs, rel=1e-6)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_counts_positive_and_grow_with_width(name: str) -> None:
    narrow = build_model(name, TINY, **small_kwargs(name, width=0.125))
    wide = build_model(name, TINY, **small_kwargs(name))
    assert 0 < count_flops(narrow, (64, 64)) < count_flops(wide, (64, 64))
    assert 0 < count_parameters(narrow) < count_parameters(wide)


# -- the joint model ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seg_head", ["fcn16", "stage"])
def test_both_heads_send_gradients_to_the_trunk(seg_head: str) -> None:
    model = joint_vgg16(TINY, stages=2, seg_head=seg_head, **SMALL_FC)  # type: ignore[arg-type]
    x = torch.randn(2, 3, 64, 64)
    first_conv = model.trunk.features[0].weight
    pose_param = model.pose_head.stages[0].branches["heatmaps"][0].weight
    for loss_of in (lambda o: sum(h.square().mean() for h in o.heatmaps + o.pafs),
                    lambda o: F.cross_entropy(o.parts[-1], torch.zeros_like(o.parts[-1][:, 0], dtype=torch.long))):
        model.zero_grad(set_to_none=True)
        loss_of(model(x)).backward()
        assert first_conv.grad is not None and first_conv.grad.abs().sum() > 0
    if seg_head == "fcn16":  # the seg loss reaches the trunk but not the pose stages (heads split after the trunk)
        assert pose_param.grad is None


def test_posepartnet_needs_a_head_and_one_parts_source() -> None:
    trunk = VGGTrunk(width=0.25)
    with pytest.raises(ValueError, match="needs a seg_head"):
        PosePartNet(trunk, None, None)
    stage_seg = PAFStages(32, heatmap_channels=4, paf_channels=4, stages=1, width=0.25, stage_seg=True,
                          part_channels=3)
    with pytest.raises(ValueError, match="not both"):
        PosePartNet(trunk, FCNHead(128, 3, width=0.25, fc_width=16), stage_seg)


class OwnTrunk(nn.Module):
    """A trunk of one's own (not VGG): stride-2 convs to `stride`, its maps reported as `VGGTrunk` reports them."""

    def __init__(self, stride: int = 8, channels: int = 24) -> None:
        super().__init__()
        self.stride, self.channels = stride, channels
        self.body = nn.Sequential(*(nn.Sequential(nn.Conv2d(3 if i == 0 else channels, channels, 3, 2, 1), nn.ReLU())
                                    for i in range(stride.bit_length() - 1)))

    def output_shapes(self) -> dict[str, ShapeSpec]:
        return {"conv4_3": ShapeSpec(self.channels, self.stride), "features": ShapeSpec(self.channels, self.stride)}

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.body(x)  # (B, C, H/stride, W/stride)
        return {"conv4_3": features, "features": features}


def test_heads_on_a_trunk_of_ones_own_read_its_maps_at_their_stride() -> None:
    """An API walkthrough: FCN-16s sized its pool4 scorer for VGG's conv4_3 channels, not the trunk's (a crash on any
    other trunk), and a stride-16 trunk under the pose stages gave a model whose `meta` said stride 8 (its maps then
    decoded on the wrong grid)."""
    trunk = OwnTrunk()
    pose = PAFStages(24, heatmap_channels=TINY.heatmap_channels, paf_channels=TINY.paf_channels, stages=1, width=0.25)
    model = PosePartNet(trunk, FCNHead(24, TINY.num_parts, variant="fcn16", width=0.25, fc_width=8), pose,
                        schema=TINY)
    out = model(torch.randn(1, 3, 64, 64))
    assert out.parts[0].shape == (1, 3, 64, 64) and out.heatmaps[0].shape == (1, 4, 8, 8)
    assert model.meta.pose_stride == 8
    with pytest.raises(ValueError, match="'features' map is at stride 16, but the pose head .* as stride 8"):
        PosePartNet(OwnTrunk(16), None, pose, schema=TINY)
    with pytest.raises(ValueError, match="'conv4_3' map is at stride 16, but the FCN head"):
        PosePartNet(OwnTrunk(16), FCNHead(24, 3, width=0.25, fc_width=8), None, schema=TINY)


def test_build_model_unknown_name_lists_known() -> None:
    with pytest.raises(KeyError, match="fcn32_vgg16.*joint_vgg16|joint_vgg16.*fcn32_vgg16"):
        build_model("resnet", TINY)
    assert set(MODELS) == {"fcn32_vgg16", "fcn16_vgg16", "fcn8_vgg16", "paf_vgg16", "joint_vgg16"}
    with pytest.raises(ValueError, match="seg_head"):
        joint_vgg16(TINY, seg_head="fcn4", **SMALL_FC)  # type: ignore[arg-type]


def test_batch_norm_variants_shapes_and_layout() -> None:
    """batch_norm=True: BatchNorm after every hidden conv, torchvision's vgg16_bn layout in the trunk."""
    schema = Schema.pascal_person_part()
    model = joint_vgg16(schema, width=0.125, fc_width=16, stages=2, batch_norm=True)
    x = torch.randn(2, 3, 64, 48)
    out = model(x)
    assert out.parts[0].shape == (2, schema.num_parts, 64, 48)
    assert out.heatmaps[1].shape == (2, schema.heatmap_channels, 8, 6)
    tv = torchvision.models.vgg16_bn(weights=None).features
    trunk = model.trunk.features
    assert [type(m) for m in trunk] == [type(m) for m in tv[: len(trunk)]]
    assert [i for i, m in enumerate(trunk) if isinstance(m, nn.MaxPool2d)] == [6, 13, 23]  # pool3: FCN8's skip
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    n_hidden = sum(isinstance(m, nn.Conv2d) and m.bias is None for m in model.modules())
    assert n_bn == n_hidden > 20  # every hidden conv, and those drop their (redundant) bias
    assert isinstance(fcn32_vgg16(schema, width=0.125, fc_width=16, batch_norm=True)(x), ModelOutput)


def test_batch_norm_with_pretrained_is_refused(tmp_path) -> None:
    with pytest.raises(ValueError, match="batch_norm=False"):
        paf_vgg16(Schema.pascal_person_part(), batch_norm=True, pretrained=tmp_path / "vgg16.pth")


def test_channels_last_gives_the_same_outputs_and_gradients() -> None:
    """The channels_last layout of the engine and the Predictor (NHWC weights and inputs) is a speed-up only: same
    numbers as NCHW."""
    import copy

    torch.manual_seed(0)
    schema = Schema.pascal_person_part()
    plain = joint_vgg16(schema, width=0.125, stages=2, seg_head="stage", batch_norm=True)
    fast = channels_last_(copy.deepcopy(plain))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.dim() == 4)
    fcn = channels_last_(fcn32_vgg16(schema, width=0.125, fc_width=64))
    assert all(b.is_contiguous() for b in fcn.buffers())  # buffers keep their layout (DDP broadcasts them)
    x = torch.randn(2, 3, 64, 64)
    a, b = plain(x), fast(x.contiguous(memory_format=torch.channels_last))
    for name in ("heatmaps", "pafs", "parts"):
        for u, v in zip(getattr(a, name), getattr(b, name)):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-5)
    sum(t.square().sum() for t in a.heatmaps + a.pafs + a.parts).backward()
    sum(t.square().sum() for t in b.heatmaps + b.pafs + b.parts).backward()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters()):
        # float32 sums over the batch's pixels in another order, errors carried down from the layers above: on one
        # thread 5e-4 in the first conv, whose gradients reach 19, 4e-5 in a bias whose gradients reach 0.2; the
        # bound follows each gradient's scale (a layout bug is off by the scale itself)
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-3 * float(p.grad.abs().max()) + 1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")
        # DDP copies each gradient into a bucket view with its weight's strides, and warns at every step where the
        # strides differ (the 1x1 convs' did: their weights kept NCHW strides over the size-1 dims)
        assert q.grad.stride() == q.stride(), name


def test_fold_batch_norm_computes_the_same_function_on_a_copy() -> None:
    """Folding BatchNorm into the convolutions (inference) gives the eval-mode outputs of the unfolded model; the
    original model keeps its norms and checkpoint keys; a model without BatchNorm comes back as itself."""
    torch.manual_seed(0)
    schema = Schema.pascal_person_part()
    model = joint_vgg16(schema, width=0.125, stages=2, seg_head="stage", batch_norm=True)
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in norms:  # running statistics and affine terms far from the identity they start at
        bn.running_mean.uniform_(-1.0, 1.0)
        bn.running_var.uniform_(0.2, 3.0)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    keys = list(model.state_dict())
    folded = fold_batch_norm(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert list(model.state_dict()) == keys
    assert len(norms) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        a, b = model.eval()(x), folded(x)
    for name in ("heatmaps", "pafs", "parts"):
        for u, v in zip(getattr(a, name), getattr(b, name)):
            torch.testing.assert_close(u, v, rtol=1e-4, atol=1e-4)
    plain = joint_vgg16(schema, width=0.125, stages=1)
    assert fold_batch_norm(plain) is plain


@pytest.mark.parametrize("sigmoid", [False, True])
def test_heatmaps_start_near_their_prior(sigmoid):
    """Plain heatmaps start near 0 (OpenPose's small output init); sigmoid heatmaps (focal loss) at CenterNet's prior
    0.1 for joints and 0.99 for the background channel, not at 0.5 everywhere: at every stage and after a stride-4
    refinement."""
    schema = Schema.pascal_person_part()
    torch.manual_seed(0)
    model = build_model("paf_vgg16", schema, stages=2, pose_stride=4, width=0.125, batch_norm=True,
                        heatmap_sigmoid=sigmoid).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    for hm in out.heatmaps:
        joints, background = hm[:, :-1], hm[:, -1]
        assert abs(joints.mean().item() - (0.1 if sigmoid else 0.0)) < 0.03
        assert abs(background.mean().item() - (0.99 if sigmoid else 0.0)) < 0.03
        if sigmoid:
            assert 0.0 < hm.min().item() and hm.max().item() < 1.0


def test_fcn_fc_block_trains_under_bf16_autocast_on_tiny_maps() -> None:
    """At a 64 px input the stride-32 map is 2x2, smaller than fc6's 7x7 kernel: oneDNN's bf16 convolution backward
    gave non-finite gradients there in about a third of the steps (torch 2.14), so the block runs in float32 under
    autocast. Every gradient of several bf16 steps (on 1x1 and 2x2 maps, after float32 steps: the wrong gradients
    come from memory the kernel does not overwrite) stays finite."""
    torch.manual_seed(0)
    model = fcn32_vgg16(Schema.pascal_person_part(), width=0.25, fc_width=256, batch_norm=True)
    for bf16, size in [(False, 64)] * 3 + [(True, 32), (True, 64)] * 5:  # float32 steps first: reused memory
        model.zero_grad()
        x = torch.randn(8, 3, size, size)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = model(x).parts[-1]
        F.cross_entropy(logits.float(), torch.randint(0, 7, (8, size, size))).backward()
        bad = [name for name, p in model.named_parameters() if not torch.isfinite(p.grad).all()]
        assert not bad, bad


def test_the_pretrained_rule_is_stated_once(tmp_path) -> None:
    """The config, the builders and the loader refuse VGG16 weights on a width-scaled or BatchNorm network with the
    same words (`posepart.models.pretrained.check_fits`)."""
    from posepart.engine.config import ConfigError, load_config

    weights = tmp_path / "vgg16.pth"
    for settings, kwargs in ((["model.width=0.5"], {"width": 0.5}), (["model.batch_norm=true"], {"batch_norm": True})):
        with pytest.raises(ConfigError) as from_config:
            load_config(None, [*settings, f"model.pretrained={weights}"])
        with pytest.raises(ValueError) as from_builder:
            paf_vgg16(Schema.pascal_person_part(), stages=1, pretrained=weights, **kwargs)
        assert str(from_config.value) == f"model: {from_builder.value}"


def test_heatmap_smoothing_is_scipys_gaussian_with_each_maximum_kept():
    """DARK's modulation against scipy: every joint map blurred (zero padding, truncated at 4 sigma) and rescaled to
    its own maximum; negative values cut to 0 first (an MSE map); the background channel untouched."""
    from scipy.ndimage import gaussian_filter

    from posepart.models.pose import HeatmapSmoothing

    rng = np.random.default_rng(0)
    maps = rng.random((2, 4, 17, 13)).astype(np.float32)
    maps[1, 2] -= 0.5  # partly negative
    maps[0, 1] = -maps[0, 1]  # no positive value at all: zeros
    for sigma in (0.5, 0.75, 1.3):
        with torch.inference_mode():
            got = HeatmapSmoothing(sigma, 3)(torch.from_numpy(maps)).numpy()
        for b in range(2):
            for c in range(3):
                positive = np.maximum(maps[b, c].astype(np.float64), 0)
                blurred = gaussian_filter(positive, sigma, mode="constant")
                expected = blurred * positive.max() / blurred.max() if positive.max() > 0 else blurred
                np.testing.assert_allclose(got[b, c], expected, atol=1e-6, rtol=0)
            np.testing.assert_array_equal(got[b, 3], maps[b, 3])
    with pytest.raises(ValueError, match="sigma"):
        HeatmapSmoothing(0.0, 3)


def test_models_smooth_heatmaps_at_inference_only():
    """`heatmap_smoothing`: the loss reads the raw maps (training mode), every consumer the smoothed ones (eval);
    the model's HeadMeta records it; PAFs are never touched."""
    from posepart.models.pose import HeatmapSmoothing

    torch.manual_seed(0)
    plain = paf_vgg16(Schema.pascal_person_part(), stages=1, pose_stride=4, heatmap_sigmoid=True, **SMALL)
    smooth = paf_vgg16(Schema.pascal_person_part(), stages=1, pose_stride=4, heatmap_sigmoid=True,
                       heatmap_smoothing=0.75, **SMALL)
    smooth.load_state_dict(plain.state_dict(), strict=True)  # no weights of its own: old checkpoints still load
    assert (plain.meta.heatmap_smoothing, smooth.meta.heatmap_smoothing) == (0.0, 0.75)
    x = torch.randn(2, 3, 64, 48)
    for model in (plain, smooth):
        model.train()
    with torch.no_grad():
        torch.testing.assert_close(smooth(x).heatmaps[-1], plain(x).heatmaps[-1])
        plain.eval(), smooth.eval()
        raw, out = plain(x), smooth(x)
    torch.testing.assert_close(out.heatmaps[-1], HeatmapSmoothing(0.75, 14)(raw.heatmaps[-1]))
    torch.testing.assert_close(out.pafs[-1], raw.pafs[-1])
    assert not torch.equal(out.heatmaps[-1], raw.heatmaps[-1])
    with pytest.raises(ValueError, match="heatmap_smoothing needs a pose_head"):
        PosePartNet(VGGTrunk(**SMALL), FCNHead(VGGTrunk(**SMALL).output_shapes()["conv4_3"].channels, 3, **SMALL_FC),
                    None, schema=TINY, heatmap_smoothing=0.75)


def test_every_output_stride_has_its_skips_in_both_refinements() -> None:
    """`heads.OUTPUT_STRIDES` is the one list of the strides heads output (configs, `evaluate --stride`, the builders
    check against it; `models/refine.py` once kept its own copy): each refinement kind has skips for each."""
    from posepart.heads import OUTPUT_STRIDES
    from posepart.models.refine import SKIPS_TO_STRIDE

    for kind, skips in SKIPS_TO_STRIDE.items():
        assert sorted(skips) == sorted(OUTPUT_STRIDES), kind
        assert all(len(skips[s]) == {8: 0, 4: 1, 2: 2}[s] for s in skips)  # each skip halves the stride
