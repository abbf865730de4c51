"""COCO release layout (read by posepart.data.format): crowds and unlabelled people become ignore regions from their
RLE / polygons, checked pixel for pixel against pycocotools on coco_mini, and masked out of the pose targets."""

from __future__ import annotations

import numpy as np
from pycocotools.coco import COCO

from posepart.data.format import PosePartDataset
from posepart.heads import HeadMeta
from posepart.targets import build_targets


def test_crowd_and_unlabelled_people_are_ignore_regions(fixtures):
    ann_file = fixtures / "coco_mini/annotations/person_keypoints_train2017.json"
    ds = PosePartDataset.open(annotations=ann_file, images=fixtures / "coco_mini/train2017")
    coco = COCO(str(ann_file))
    crowds = rle = polygons = 0
    for rec in ds:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=rec.image_id))
        ignored = [a for a in anns if a["iscrowd"] or a["num_keypoints"] == 0]
        assert rec.num_people == len(anns) - len(ignored) and len(rec.ignore_regions) == len(ignored)
        expected = np.zeros((rec.height, rec.width), bool)
        for a in ignored:
            expected |= coco.annToMask(a).astype(bool)
            crowds += a["iscrowd"]
            rle += isinstance(a["segmentation"], dict)
            polygons += isinstance(a["segmentation"], list)
        assert np.array_equal(rec.ignore_mask(), expected), rec.file_name
    # the fixture README: 5 crowds (uncompressed RLE) among the 172 annotations; 81 unlabelled people (polygons)
    assert (crowds, rle, polygons) == (5, 5, 81)


def test_ignore_regions_mask_the_pose_targets(fixtures):
    ds = PosePartDataset.open(annotations=fixtures / "coco_mini/annotations/person_keypoints_train2017.json",
                              images=fixtures / "coco_mini/train2017")
    rec = max(ds, key=lambda r: r.ignore_mask().sum())  # the image with the largest crowd area
    ignore = rec.ignore_mask()
    stride = 8
    h, w = rec.height // stride * stride, rec.width // stride * stride  # crop to a multiple of the stride
    targets = build_targets(rec.keypoints, ignore[:h, :w], None, HeadMeta(ds.schema, pose_stride=stride))
    cells = ignore[:h, :w].reshape(h // stride, stride, w // stride, stride).mean((1, 3))
    assert ((targets.pose_mask == 0) == (cells > 0.5)).all()  # masked where more than half of a cell is ignored
    assert (targets.pose_mask == 0).sum() > 100
