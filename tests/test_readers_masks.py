"""`posepart convert masks`: part masks as CVAT's "Segmentation mask 1.1" and Roboflow's "Semantic Segmentation Masks"
export them (their layouts rebuilt from the tools' exporters: datumaro's VOC converter, Roboflow's format docs), alone
and joined to a COCO keypoints file of the same images."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from reader_checks import convert, inspect_json, oracle

from posepart.data.format import DatasetError, PosePartDataset
from posepart.data.readers.masks import read_class_table

COLOURS = {"head": (186, 145, 9), "torso": (51, 221, 255), "arm": (250, 50, 83)}  # a CVAT project's own colours
TRUTH = np.zeros((40, 60), np.uint8)  # class indices in the converted order: background, arm, head, torso
TRUTH[5:15, 25:35] = 2
TRUTH[15:35, 20:40] = 3
TRUTH[15:30, 40:50] = 1


def _image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    assert cv2.imwrite(str(path), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))


def _cvat(root: Path, n: int = 3) -> Path:
    """labelmap.txt sorted by name (background not first), RGB masks in the labels' colours, JPEGImages/."""
    (root / "SegmentationClass").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "labelmap.txt").write_text("# label:color_rgb:parts:actions\narm:250,50,83::\nbackground:0,0,0::\n"
                                       "head:186,145,9::\ntorso:51,221,255::\n")
    names = {1: "arm", 2: "head", 3: "torso"}
    for i in range(n):
        _image(root / "JPEGImages" / f"frame_{i:06d}.jpg", i)
        colour = np.zeros((40, 60, 3), np.uint8)
        for index, name in names.items():
            colour[TRUTH == index] = COLOURS[name]
        if i == 2:
            colour[0:2, 0:3] = (1, 2, 3)  # a colour the table lacks
        cv2.imwrite(str(root / "SegmentationClass" / f"frame_{i:06d}.png"), colour[..., ::-1])
    return root


def test_cvat_segmentation_masks_convert_with_the_labels_names_and_colours(tmp_path, capsys):
    """Before, no reader took them: pascal-person-part wanted SegmentationPart/ and VOC's colours ("unknown colour")
    and `--part-order` PASCAL's six names; a user's own classes had no way in but code of their own."""
    src = _cvat(tmp_path / "cvat")
    out = tmp_path / "ds"
    printed = convert(capsys, ["masks", "--images", src / "JPEGImages", "--masks", src / "SegmentationClass",
                               "--classes", src / "labelmap.txt", "--out", out])
    assert "wrote 3 images (0 people, 0 ignore regions, 3 part maps)" in printed
    assert "skipped 6 x mask pixels of a colour or value the class table lacks (ignored)" in printed
    dataset = PosePartDataset.open(out)
    assert dataset.schema.part_classes == ("background", "arm", "head", "torso")
    parts = [dataset.load_parts(record) for record in dataset.records]
    np.testing.assert_array_equal(parts[0], TRUTH)
    assert (parts[2][0:2, 0:3] == 255).all() and (parts[2][2:] == TRUTH[2:]).all()
    assert inspect_json(capsys, out)["images_part_labeled"] == 3
    assert oracle(out, tmp_path)["segmentation"]["mean_iou"] == pytest.approx(1.0)


def test_roboflow_semantic_masks_beside_the_images_and_a_keypoints_file(tmp_path, capsys):
    """Roboflow's grey `_mask.png` files lie beside the images, its _classes.csv has a header and spaces; joined by
    name to a COCO keypoints file, the images carry pose and parts (the joint model's data). Before: `convert cihp`
    took such masks as CIHP's 20 classes (head became "hat"), exit 0."""
    src = tmp_path / "train"
    src.mkdir()
    (src / "_classes.csv").write_text("Pixel Value, Class\n0, background\n1, arm\n2, head\n3, torso\n")
    names = []
    for i in range(3):
        name = f"img{i}_jpg.rf.{i:08x}"
        names.append(f"{name}.jpg")
        _image(src / f"{name}.jpg", i)
        if i < 2:  # the third image has no mask: with keypoints it is written pose-only
            cv2.imwrite(str(src / f"{name}_mask.png"), TRUTH)
    person = {"id": 1, "name": "person", "keypoints": ["head", "neck", "hip"], "skeleton": [[1, 2], [2, 3]]}
    coco = {"images": [{"id": i + 1, "file_name": n, "width": 60, "height": 40} for i, n in enumerate(names[:2] +
                                                                                                      names[2:])],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 3,
                             "keypoints": [30, 8, 2, 30, 16, 2, 30, 30, 2], "bbox": [25, 5, 10, 30], "area": 300}
                            for i in range(3)],
            "categories": [{"id": 0, "name": "people-Ab3x", "supercategory": "none"}, person]}
    (tmp_path / "kp.json").write_text(json.dumps(coco))
    cv2.imwrite(str(src / "gone_jpg.rf.0_mask.png"), TRUTH)  # a mask whose image is not there: no image either
    out = tmp_path / "ds"
    printed = convert(capsys, ["masks", "--images", src, "--masks", src, "--classes", src / "_classes.csv",
                               "--keypoints", tmp_path / "kp.json", "--out", out])
    assert "wrote 3 images (3 people, 0 ignore regions, 2 part maps)" in printed
    assert "1 x mask without its image" in printed and "neither a mask nor people" not in printed
    dataset = PosePartDataset.open(out)
    assert dataset.schema.keypoints == ("head", "neck", "hip") and dataset.schema.part_classes[1:] == (
        "arm", "head", "torso")
    assert [r.file_name for r in dataset.records] == names and [r.parts_path is not None for r in dataset.records] \
        == [True, True, False]
    np.testing.assert_array_equal(dataset.load_parts(dataset.records[0]), TRUTH)
    assert dataset.records[0].keypoints[0, :, :2].tolist() == [[30, 8], [30, 16], [30, 30]]
    metrics = oracle(out, tmp_path)
    assert metrics["pose"]["ap"] == pytest.approx(1.0) and metrics["segmentation"]["mean_iou"] == pytest.approx(1.0)


@pytest.mark.parametrize("keypoints, words", [
    ([30, 8, 2, 30, 16, 2], r"annotation id 1 \(image a\.jpg\): 6 keypoint values, expected 3 x 3"),  # was a
    ([30, 8, 2, 30, 16, 2, 30, 30, 3], r"annotation id 1 \(image a\.jpg\): keypoint visibility must be 0, 1 or 2, "
                                       r"got 3 for joint 'hip' \(the annotation's keypoints\[8\]\)"),  # "at joint 2"
])  # numpy reshape error ("not a COCO keypoints file"), and a visibility of 3 was written as it stood
def test_a_keypoints_record_the_dataset_would_refuse_is_refused_naming_it(tmp_path, keypoints, words):
    from posepart.data.readers.masks import convert_masks

    src = tmp_path / "src"
    src.mkdir()
    _image(src / "a.jpg", 0)
    cv2.imwrite(str(src / "a.png"), TRUTH)
    (tmp_path / "classes.txt").write_text("background\narm\nhead\ntorso\n")
    person = {"id": 1, "name": "person", "keypoints": ["head", "neck", "hip"], "skeleton": [[1, 2], [2, 3]]}
    (tmp_path / "kp.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 60, "height": 40}], "categories": [person],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "keypoints": keypoints}]}))
    with pytest.raises(DatasetError, match=words):
        convert_masks(src, src, tmp_path / "classes.txt", tmp_path / "out", keypoints=tmp_path / "kp.json",
                      progress=False)


def test_class_tables_and_masks_that_cannot_be_read_say_why(tmp_path, capsys):
    table = tmp_path / "names.txt"
    table.write_text("background\nhead\nhead\n")
    with pytest.raises(DatasetError, match=r"class names must be given and differ \(repeated: \['head'\]\)"):
        read_class_table(table)
    table.write_text("head\ntorso\n")  # a list of names without background: value 0 is the first name's
    assert read_class_table(table).values == {0: 1, 1: 2} and read_class_table(table).classes == (
        "background", "head", "torso")
    bad_csv = tmp_path / "_classes.csv"
    bad_csv.write_text("value,name\n0,background\n")
    with pytest.raises(DatasetError, match="expected Roboflow's header 'Pixel Value, Class'"):
        read_class_table(bad_csv)
    src = _cvat(tmp_path / "cvat", n=1)  # colour masks read with a table of values
    code = __import__("posepart.cli", fromlist=["main"]).main(
        ["convert", "masks", "--images", str(src / "JPEGImages"), "--masks", str(src / "SegmentationClass"),
         "--classes", str(table), "--out", str(tmp_path / "ds")])
    assert code == 2 and "no image converted" in capsys.readouterr().err


def test_what_does_not_join_is_counted_and_names_keep_their_folders(tmp_path, capsys):
    """A review's cases: images in subfolders (CVAT keeps a task's) were left out without a word; people were joined
    by stem alone, so a/1.jpg's and b/1.jpg's people both went to one 1.jpg; x.jpg and x.png took one part map and made
    a dataset that would not open; images and masks that joined nothing were not counted; LA masks were unreadable."""
    images, masks = tmp_path / "JPEGImages", tmp_path / "SegmentationClass"
    for name in ("a/1", "b/1", "c/x", "c/y", "c/y2"):
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        _image(images / f"{name}.jpg", len(name))
    _image(images / "c/x.png", 9)  # the same name as c/x.jpg but its extension
    for name in ("a/1", "b/1", "c/x", "orphan"):
        (masks / name).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(masks / f"{name}.png"), TRUTH)
    from PIL import Image

    Image.fromarray(np.stack([TRUTH, np.full_like(TRUTH, 255)], -1), "LA").save(masks / "c/y.png")  # grey + alpha
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    person = {"id": 1, "name": "person", "keypoints": ["head", "neck"], "skeleton": [[1, 2]]}
    listed = ["a/1.jpg", "b/1.jpg", "c/y2.jpg", "gone.jpg"]
    coco = {"images": [{"id": i + 1, "file_name": n, "width": 60, "height": 40} for i, n in enumerate(listed)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 2,
                             "keypoints": [10 + 10 * i, 8, 2, 10 + 10 * i, 20, 2]} for i in range(4)],
            "categories": [person]}
    (tmp_path / "kp.json").write_text(json.dumps(coco))
    out = tmp_path / "ds"
    printed = convert(capsys, ["masks", "--images", images, "--masks", masks, "--classes", tmp_path / "names.txt",
                               "--keypoints", tmp_path / "kp.json", "--out", out])
    for line in ("wrote 5 images (3 people, 0 ignore regions, 4 part maps)",
                 "1 x image of the same name as another but its extension",
                 "1 x image without a mask (kept without part labels) (first: " + str(images / "c/y2.jpg"),
                 "2 x image the keypoints file does not list (kept without pose)",
                 "1 x mask without its image (not read) (first: " + str(masks / "orphan.png"),
                 "1 x image of the keypoints file not found among the images (first: gone.jpg)"):
        assert line in printed, printed
    dataset = PosePartDataset.open(out)
    by_name = {r.file_name: r for r in dataset.records}
    assert sorted(by_name) == ["a/1.jpg", "b/1.jpg", "c/x.jpg", "c/y.jpg", "c/y2.jpg"]
    assert by_name["a/1.jpg"].keypoints[:, 0, 0].tolist() == [10] and by_name["b/1.jpg"].keypoints[:, 0, 0].tolist() \
        == [20]  # each its own person
    np.testing.assert_array_equal(dataset.load_parts(by_name["c/y.jpg"]), TRUTH)  # the alpha is no label


@pytest.mark.parametrize("text, classes, values", [
    ("background\narm\n\nhead\n", None, "line 3 is empty"),  # before: head took value 2, the blank line's
    ("__ignore__\n_background_\narm\nhead\n", ("background", "arm", "head"), {0: 0, 1: 1, 2: 2}),  # labelme's
    # "value name" lines: before, "0 background" was read as a class name, every class a phantom's neighbour
    ("0 background\n1 arm\n2: head\n4, torso\n", ("background", "arm", "head", "torso"), {0: 0, 1: 1, 2: 2, 4: 3}),
])
def test_a_list_of_names_numbers_every_line(tmp_path, text, classes, values):
    table = tmp_path / "labels.txt"
    table.write_text(text)
    if classes is None:
        with pytest.raises(DatasetError, match=values):
            read_class_table(table)
    else:
        read = read_class_table(table)
        assert read.classes == classes and read.values == values


def test_masks_mostly_of_a_value_the_table_names_a_class_are_noted(tmp_path, capsys):
    """A list of names without `background` names value 0 as its first class: the unlabelled pixels of index masks
    then became that class without a word (a part-segmentation walkthrough: 90 % "face")."""
    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    for i in range(2):
        _image(src / f"a{i}.jpg", i)
        cv2.imwrite(str(src / "masks" / f"a{i}.png"), TRUTH)  # mostly 0
    (tmp_path / "names.txt").write_text("arm\nhead\ntorso\n")  # value 0 is "arm"
    printed = convert(capsys, ["masks", "--images", src, "--masks", src / "masks", "--classes", tmp_path / "names.txt",
                               "--out", tmp_path / "ds"])
    assert ("2 x masks mostly of the value 0 (or black), which the class table names 'arm' (no 'background' in it: "
            "is 0 unlabelled? then add 'background' as its first line)") in printed
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    assert "masks mostly of the value 0" not in convert(capsys, ["masks", "--images", src, "--masks", src / "masks",
                                                                   "--classes", tmp_path / "names.txt", "--out",
                                                                   tmp_path / "ds2"])


def test_a_labelmap_name_with_a_colon_and_a_line_that_is_not_one(tmp_path):
    table = tmp_path / "labelmap.txt"
    table.write_text("background:0,0,0::\nshoe: left:1,2,3::\n")
    assert read_class_table(table).colours == {(0, 0, 0): 0, (1, 2, 3): 1}  # before: read as a list of names
    table.write_text("background:0,0,0::\nhead\n")
    with pytest.raises(DatasetError, match="'head' is not a labelmap line"):
        read_class_table(table)


def test_people_of_every_category_of_the_same_joints_are_read_and_another_skeletons_counted(tmp_path, capsys):
    """As `PosePartDataset` reads a keypoints file (`format.people_categories`): categories of one keypoint list are
    one kind of body (a CVAT project with "adult" and "child" labels of one skeleton), another skeleton's people are
    counted. Before, only the first category's people were read and the rest dropped without a word."""
    src = _cvat(tmp_path / "cvat", n=1)
    joints = {"keypoints": ["head", "neck"], "skeleton": [[1, 2]]}
    coco = {"images": [{"id": 1, "file_name": "frame_000000.jpg", "width": 60, "height": 40}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": c, "iscrowd": 0, "num_keypoints": 2,
                             "keypoints": [10 + 20 * i, 8, 2, 10 + 20 * i, 20, 2]} for i, c in enumerate((3, 5, 7))],
            "categories": [{"id": 3, "name": "adult", **joints}, {"id": 5, "name": "child", **joints},
                           {"id": 7, "name": "hand", "keypoints": ["wrist", "thumb"], "skeleton": [[1, 2]]}]}
    (tmp_path / "kp.json").write_text(json.dumps(coco))
    out = tmp_path / "ds"
    printed = convert(capsys, ["masks", "--images", src / "JPEGImages", "--masks", src / "SegmentationClass",
                               "--classes", src / "labelmap.txt", "--keypoints", tmp_path / "kp.json", "--out", out])
    assert "wrote 1 images (2 people, 0 ignore regions, 1 part maps)" in printed, printed
    assert "1 x annotation of another keypoint category (not read)" in printed and "'hand'" in printed
    record = PosePartDataset.open(out).records[0]
    assert record.keypoints[:, 0, 0].tolist() == [10, 30]


def test_a_file_name_that_is_not_utf8_is_written_not_crashed_on(tmp_path):
    """An archive made on Windows unpacks Latin-1 names (b"caf\\xe9.jpg"), which Python reads as surrogates. Before,
    cv2.imwrite took such a name as UTF-8 and crashed the process (a segfault, exit -11), leaving a half-written
    dataset; every image and part map is now encoded by OpenCV and written by Python (`files.write_image`)."""
    import os
    import subprocess
    import sys

    images, masks = tmp_path / "imgs", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    name = os.fsdecode(b"caf\xe9")
    _image(tmp_path / "x.jpg", 0)
    (tmp_path / "x.jpg").rename(images / f"{name}.jpg")
    ok, data = cv2.imencode(".png", TRUTH)
    (masks / f"{name}.png").write_bytes(data.tobytes())
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    code = "import sys; from posepart.cli import main; sys.exit(main(sys.argv[1:]))"
    run = subprocess.run([sys.executable, "-c", code, "convert", "masks", "--images", str(images), "--masks",
                          str(masks), "--classes", str(tmp_path / "names.txt"), "--out", str(tmp_path / "ds")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, (run.returncode, run.stderr[-2000:])
    dataset = PosePartDataset.open(tmp_path / "ds")
    assert [r.file_name for r in dataset.records] == [f"{name}.jpg"]
    np.testing.assert_array_equal(dataset.load_parts(dataset.records[0]), TRUTH)


def test_masks_saved_in_other_forms_read_as_the_labels_they_hold(tmp_path, capsys):
    """A part-segmentation walkthrough: index masks saved as RGB (R = G = B) were refused ("a colour mask, but the
    class table gives values"); an RGBA colour mask's transparent background was its colour (white: unknown,
    ignored, 85 % of the pixels); 0/255 binary masks were counted with every unknown value, not said to be such."""
    from posepart.data.readers.masks import convert_masks

    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    for name in ("grey", "rgba", "binary"):
        _image(src / f"{name}.jpg", 0)
    cv2.imwrite(str(src / "masks" / "grey.png"), np.repeat(TRUTH[..., None], 3, axis=2))  # index in RGB
    rgba = np.zeros((*TRUTH.shape, 4), np.uint8)
    rgba[..., :3] = 255  # a white background, transparent
    for index, name in {1: "arm", 2: "head", 3: "torso"}.items():
        rgba[TRUTH == index] = (*COLOURS[name], 255)
    cv2.imwrite(str(src / "masks" / "rgba.png"), rgba[..., [2, 1, 0, 3]])
    cv2.imwrite(str(src / "masks" / "binary.png"), np.where(TRUTH > 0, 255, 0).astype(np.uint8))
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    (tmp_path / "labelmap.txt").write_text("background:0,0,0::\n" + "".join(  # in TRUTH's order
        f"{name}:{','.join(map(str, COLOURS[name]))}::\n" for name in ("arm", "head", "torso")))
    by_value = convert_masks(src, src / "masks", tmp_path / "names.txt", tmp_path / "values", progress=False)
    assert any("binary masks?" in reason for reason in by_value.skips.counts)
    values = PosePartDataset.open(tmp_path / "values")
    grey = next(r for r in values.records if r.file_name == "grey.jpg")
    np.testing.assert_array_equal(values.load_parts(grey), TRUTH)
    binary = next(r for r in values.records if r.file_name == "binary.jpg")
    assert (values.load_parts(binary)[TRUTH > 0] == 255).all()
    convert_masks(src, src / "masks", tmp_path / "labelmap.txt", tmp_path / "colours", progress=False)
    colours = PosePartDataset.open(tmp_path / "colours")
    np.testing.assert_array_equal(colours.load_parts(next(r for r in colours.records if r.file_name == "rgba.jpg")),
                                  TRUTH)


def test_masks_resized_with_interpolation_are_named(tmp_path):
    """Index masks resized with linear interpolation hold in-between values along their edges (a head's edge on the
    background reads as arm, 1 between 0 and 2): before, converted as those classes without a word. The same mask
    resized with nearest-neighbour interpolation is not named."""
    from posepart.data.readers.masks import INTERPOLATED, convert_masks

    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    for name, interpolation in (("linear", cv2.INTER_LINEAR), ("nearest", cv2.INTER_NEAREST)):
        assert cv2.imwrite(str(src / f"{name}.jpg"), np.zeros((80, 120, 3), np.uint8))
        mask = cv2.resize(TRUTH, (120, 80), interpolation=interpolation)  # twice the size
        assert cv2.imwrite(str(src / "masks" / f"{name}.png"), mask)
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    result = convert_masks(src, src / "masks", tmp_path / "names.txt", tmp_path / "ds", progress=False)
    assert result.skips.counts[INTERPOLATED] == 1 and result.skips.examples[INTERPOLATED] == str(
        src / "masks" / "linear.png")


def test_a_mask_drawn_on_a_turned_photo_says_so(tmp_path):
    """A phone photo tagged with EXIF orientation 6 and a mask drawn on it as viewers show it (its sides swapped):
    the size mismatch did not say why (a part-segmentation walkthrough); the dataset's own image check did."""
    from PIL import Image

    from posepart.data.readers.masks import convert_masks

    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(src / "phone.jpg", exif=exif)  # stored 60x40
    _image(src / "plain.jpg", 0)
    cv2.imwrite(str(src / "masks" / "phone.png"), TRUTH.T.copy())  # drawn upright: 40x60
    cv2.imwrite(str(src / "masks" / "plain.png"), TRUTH)
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    result = convert_masks(src, src / "masks", tmp_path / "names.txt", tmp_path / "ds", progress=False)
    example = result.skips.examples["part map size mismatch"]
    assert "part map is 40x60 but the image phone.jpg is 60x40; its EXIF orientation 6 shows it turned" in example


def test_masks_saved_as_jpeg_are_named_not_read(tmp_path, capsys):
    """JPEG masks were not found, and the images counted as having "neither a mask nor people", without a word of
    why (a part-segmentation walkthrough): lossy masks are not read (their edges hold other classes), and said so."""
    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    for name in ("a", "b"):
        _image(src / f"{name}.jpg", 0)
    cv2.imwrite(str(src / "masks" / "a.png"), TRUTH)
    cv2.imwrite(str(src / "masks" / "b.jpg"), TRUTH)
    (tmp_path / "names.txt").write_text("background\narm\nhead\ntorso\n")
    printed = convert(capsys, ["masks", "--images", src, "--masks", src / "masks", "--classes", tmp_path / "names.txt",
                               "--out", tmp_path / "ds"])
    assert "wrote 1 images" in printed and "neither a mask nor people" not in printed
    said = f"1 x mask not saved as PNG (not read: export the masks as PNG, lossless) (first: {src / 'masks' / 'b.jpg'})"
    assert said in printed


def test_antialiased_colour_edges_take_the_nearest_label_when_asked(tmp_path):
    """A mask drawn with antialiasing blends two labels' colours at every edge: those pixels were ignored (a
    part-segmentation walkthrough: 10 % of the pixels); `--nearest-colour` gives each its nearest table colour's
    class, and without it they stay ignored and counted."""
    from posepart.data.readers.masks import convert_masks

    src = _cvat(tmp_path / "cvat", n=1)
    path = src / "SegmentationClass" / "frame_000000.png"
    colour = cv2.imread(str(path))[..., ::-1].copy()
    edge = np.zeros(TRUTH.shape, bool)
    edge[:, 1:] = TRUTH[:, 1:] != TRUTH[:, :-1]  # the first pixel of every run: a blend of its two neighbours
    blend = ((colour[:, 1:].astype(int) * 3 + colour[:, :-1]) // 4).astype(np.uint8)  # 3/4 of its own colour
    colour[:, 1:][edge[:, 1:]] = blend[edge[:, 1:]]
    cv2.imwrite(str(path), colour[..., ::-1])
    args = (src / "JPEGImages", src / "SegmentationClass", src / "labelmap.txt")
    plain = convert_masks(*args, tmp_path / "plain", progress=False)
    assert plain.skips.counts["mask pixels of a colour or value the class table lacks (ignored)"] == edge.sum()
    snapped = convert_masks(*args, tmp_path / "snapped", nearest_colour=True, progress=False)
    assert snapped.skips.counts["mask pixels of a colour the table lacks, given its nearest colour's class "
                                "(--nearest-colour)"] == edge.sum()
    dataset = PosePartDataset.open(tmp_path / "snapped")
    np.testing.assert_array_equal(dataset.load_parts(dataset.records[0]), TRUTH)


def test_masks_kept_among_their_images_still_convert(tmp_path):
    """A review: with the masks among the images (a.jpg beside its mask a.png), the JPEG check took each photo for
    a mask saved as JPEG, and nothing converted."""
    from posepart.data.readers.masks import convert_masks

    src = tmp_path / "src"
    src.mkdir()
    for i, name in enumerate(("a", "b")):
        _image(src / f"{name}.jpg", i)
        cv2.imwrite(str(src / f"{name}.png"), TRUTH)
    (tmp_path / "names.txt").write_text("0 _background_\n1 arm\n2 head\n3 torso\n")  # labelme's name: background
    result = convert_masks(src, src, tmp_path / "names.txt", tmp_path / "ds", progress=False)
    assert result.images == 2 and result.part_maps == 2 and not result.skips.counts
    assert PosePartDataset.open(tmp_path / "ds").schema.part_classes == ("background", "arm", "head", "torso")
