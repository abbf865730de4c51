"""The mapper (record -> model inputs) and the torch Dataset that skips broken samples."""

import numpy as np
import torch
from test_format import write_custom

from posepart.data.augment import AugmentConfig
from posepart.data.format import PosePartDataset
from posepart.targets.mapper import MappedDataset, Mapper, TargetConfig


def test_eval_mapper_shapes_and_flags(tmp_path):
    ds = PosePartDataset.open(write_custom(tmp_path / "ds"))
    sample = Mapper(ds, TargetConfig(input_size=64))(ds.records[0])
    s = ds.schema
    assert sample["image"].shape == (3, 64, 64) and sample["image"].dtype == np.float32
    assert sample["heatmaps"].shape == (s.heatmap_channels, 8, 8)
    assert sample["pafs"].shape == (s.paf_channels, 8, 8)
    assert sample["pose_mask"].shape == (8, 8) and sample["parts"].shape == (64, 64)
    assert sample["has_pose"] and sample["has_parts"] and sample["joint_mask"].all()
    # the letterboxed 60x40 image leaves padding rows: unlabelled for parts and unsupervised for pose
    assert (sample["parts"][:4] == 255).all() and sample["pose_mask"][0].sum() == 0
    # the inverse affine maps the network input back onto the image: by hand, the 60x40 image is scaled by 64/60 to
    # fit the 64x64 canvas and centred, so canvas pixels step 60/64 image pixels and the centres coincide
    to_image = sample["to_image"]
    np.testing.assert_allclose(to_image[:, :2], [[60 / 64, 0.0], [0.0, 60 / 64]], rtol=0, atol=1e-12)
    np.testing.assert_allclose(to_image @ [31.5, 31.5, 1.0], [29.5, 19.5], rtol=0, atol=1e-9)
    assert not Mapper(ds, TargetConfig(input_size=64))(ds.records[1])["has_parts"]


def test_training_mapper_is_deterministic_per_seed_epoch_index(tmp_path):
    ds = PosePartDataset.open(write_custom(tmp_path / "ds"))
    data = MappedDataset(Mapper(ds, TargetConfig(input_size=64), AugmentConfig()), seed=3)
    a, b = data[0], data[0]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["heatmaps"], b["heatmaps"])
    data.set_epoch(1)
    assert not np.array_equal(a["image"], data[0]["image"])
    data.set_epoch(0)  # the seed and the stream (one record drawn twice an epoch by a mix) each give their own draw
    other_seed = MappedDataset(Mapper(ds, TargetConfig(input_size=64), AugmentConfig()), seed=4)
    assert not np.array_equal(a["image"], other_seed[0]["image"])
    assert np.array_equal(a["image"], data.draw(0, 0)["image"])
    assert not np.array_equal(a["image"], data.draw(0, 1)["image"])


def test_broken_sample_is_skipped_and_counted(tmp_path):
    root = write_custom(tmp_path / "ds")
    ds = PosePartDataset.open(root)
    (root / "images/img1.png").write_bytes(b"\xff\xd8garbage")  # decodes to nothing
    data = MappedDataset(Mapper(ds, TargetConfig(input_size=64)))
    loader = torch.utils.data.DataLoader(data, batch_size=3)
    batch = next(iter(loader))
    assert batch["skipped"].tolist() == [0, 1, 0]  # index 1 was replaced by the next good sample
    assert batch["image_id"].tolist() == [1, 3, 3]
    (root / "images/img2.png").write_bytes(b"\xff\xd8garbage")  # two in a row: each counted once, where drawn
    data = MappedDataset(Mapper(PosePartDataset.open(root), TargetConfig(input_size=64)))
    assert [int(data[i]["skipped"]) for i in range(3)] == [0, 1, 1]  # before: [0, 2, 1]
    from posepart.engine.sampling import ValidationSet  # validation scores the record a sample was made from

    sample = ValidationSet([data])[1]  # img1 and img2 broken: made from img0 (a review caught index 1 + 1 here)
    assert int(sample["index"]) == 0 and int(sample["image_id"]) == 1


def test_unlabelled_source_crops_do_not_follow_its_hidden_people(tmp_path):
    """A dataset used as an unlabelled source (the study hides a labelled dataset's labels) must not centre its
    random crops on the people it is not meant to know: its crops are those of the same image without people."""
    import dataclasses

    ds = PosePartDataset.open(write_custom(tmp_path / "ds"))
    record = ds.records[0]
    assert record.num_people == 1
    no_people = dataclasses.replace(record, keypoints=record.keypoints[:0], boxes=record.boxes[:0],
                                    head_sizes=record.head_sizes[:0])
    augment = AugmentConfig(center_jitter=0.0)
    mapper = Mapper(ds, TargetConfig(input_size=64), augment, views=True, unlabelled=True)
    hidden = mapper(record, np.random.default_rng(5))["to_image"]
    blind = mapper(no_people, np.random.default_rng(5))["to_image"]
    np.testing.assert_array_equal(hidden, blind)  # before: centred on the person's box
    labelled = Mapper(ds, TargetConfig(input_size=64), augment)(record, np.random.default_rng(5))["to_image"]
    assert not np.allclose(labelled, hidden)  # a labelled source's crop does follow its person
