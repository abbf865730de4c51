import re

import numpy as np
import pytest

from posepart.names import flip_permutation, name_key, split_side, unpaired_sided_names
from posepart.schema import Schema, voc_palette


def test_pascal_schema_sizes_and_flips():
    s = Schema.pascal_person_part()
    assert (s.num_joints, s.num_limbs, s.num_parts) == (14, 17, 7)
    assert (s.heatmap_channels, s.paf_channels) == (15, 34)
    perm = s.flip_perm
    assert s.keypoints[perm[s.joint("left_wrist")]] == "right_wrist"
    assert s.keypoints[perm[s.joint("head")]] == "head"
    assert s.part_flip_perm == tuple(range(7))  # PASCAL parts have no sides
    # the neck->left_shoulder limb becomes neck->right_shoulder, same direction
    limb = s.skeleton.index((s.joint("neck"), s.joint("left_shoulder")))
    target, reversed_ = s.limb_flip[limb]
    assert s.skeleton[target] == (s.joint("neck"), s.joint("right_shoulder")) and not reversed_
    # the redundant shoulder-shoulder limb mirrors onto itself, reversed
    limb = s.skeleton.index((s.joint("left_shoulder"), s.joint("right_shoulder")))
    assert s.limb_flip[limb] == (limb, True)


def test_coco_limb_flip_detects_reversed_edges():
    s = Schema.coco()
    # COCO stores left_eye-right_eye as (2, 3) 1-based: its mirror is itself, reversed
    limb = s.skeleton.index((1, 2))
    assert s.limb_flip[limb] == (limb, True)


def test_category_round_trip_and_custom_schema():
    custom = Schema(keypoints=("top", "left_hand", "right_hand"), skeleton=((0, 1), (0, 2)),
                    part_classes=("background", "body", "left-arm", "right-arm"), sigmas=(0.1, 0.2, 0.2))
    cat = custom.to_category()
    assert cat["skeleton"] == [[1, 2], [1, 3]]  # 1-based on disk
    back = Schema.from_category(cat)
    assert back == custom
    assert back.flip_perm == (0, 2, 1)
    assert back.part_flip_perm == (0, 1, 3, 2)  # hyphenated side names are mirrored too


def test_split_side_is_the_one_side_parser():
    """The side prefix parsing that flips, part-name mapping and part instances all read."""
    assert split_side("left_upper_arm") == ("left", "upper_arm")
    assert split_side("Right Hand") == ("right", "Hand")
    assert split_side("LEFT-foot") == ("left", "foot")
    assert split_side("leftover") == (None, "leftover")  # a word that starts with "left" has no side
    assert split_side("head") == (None, "head")


def test_a_0_based_skeleton_is_named_as_such():
    """Before: "skeleton edge (0, -1) is not a pair of distinct joints": pairs the user never wrote, shifted by one."""
    with pytest.raises(ValueError, match=re.escape("skeleton pair [1, 0] names a joint outside 1..3: COCO skeleton "
                                                   "pairs count the keypoints from 1 (this one holds a 0")):
        Schema.from_category({"keypoints": ["a", "b", "c"], "skeleton": [[1, 0], [1, 2]]})
    # CVAT's skeleton pairs are its point ids, not renumbered when a point is deleted (an exports review)
    with pytest.raises(ValueError, match=re.escape("skeleton pair [2, 4] names a joint outside 1..3: COCO skeleton "
                                                   "pairs count the keypoints from 1 (a tool's own point ids")):
        Schema.from_category({"keypoints": ["1", "2", "4"], "skeleton": [[1, 2], [2, 4]]})


def test_mirror_names_keep_case():
    assert flip_permutation(["Left Hand", "Right Hand", "LEFT_FOOT", "RIGHT_FOOT"]) == (1, 0, 3, 2)


def test_sides_in_the_spellings_datasets_use():
    """Before: only left_/right_ prefixes had a side, so "l_shoulder", OpenPose's "LShoulder" or "knee_left" were never
    swapped by a horizontal flip (augmentation and flip TTA then mirrored people with their joints unswapped)."""
    assert flip_permutation(["l_shoulder", "r_shoulder", "LShoulder", "RShoulder", "RightHip", "LeftHip",
                             "knee_left", "knee_right", "ankle_R", "ankle_L", "R-Elbow", "L-Elbow", "neck"]) == (
        1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12)
    assert split_side("LShoulder") == ("left", "Shoulder") and split_side("knee_r") == ("right", "knee")
    assert split_side("l_ankle") == ("left", "ankle") and split_side("RightHip") == ("right", "Hip")
    assert split_side("Reye") == (None, "Reye") and split_side("Left") == (None, "Left")  # no side there
    assert [split_side(name)[0] for name in ("LOWER_ARM", "ROOT", "LEFT", "RAnkle", "LEFTFoot")] == [
        None, None, None, "right", "left"]  # capitals: a side only before a capitalised word
    assert Schema(keypoints=("LShoulder", "RShoulder", "Neck"), skeleton=((0, 2), (1, 2))).flip_perm == (1, 0, 2)
    # MoveNet's camel case, Blender's suffix, and pairs spelt two ways (a walkthrough's dataset of leftHand/rightHand
    # trained on flipped people with unswapped labels: validation AP 0.52 against 1.0 without flips)
    assert flip_permutation(["leftShoulder", "rightShoulder", "hand.L", "hand.R", "left_eye", "Right_eye",
                             "left_foot", "foot_right", "nose"]) == (1, 0, 3, 2, 5, 4, 7, 6, 8)
    perm = flip_permutation(["hand.L", "hand.R", "left_hand", "hand_right"])  # one joint spelt twice: no guessing
    assert perm == (1, 0, 2, 3) and all(perm[perm[i]] == i for i in range(4))


def test_sigmas_default_by_name():
    s = Schema.coco()
    assert s.sigmas[0] == pytest.approx(0.026) and s.sigmas[-1] == pytest.approx(0.089)


@pytest.mark.parametrize("kwargs, message", [
    (dict(keypoints=("a", "a"), skeleton=()), "must differ"),
    (dict(keypoints=("a", "b"), skeleton=((0, 2),)), "skeleton edge"),
    (dict(keypoints=("a",), skeleton=(), part_classes=("body",)), "background"),
    (dict(keypoints=("a", "b"), skeleton=(), sigmas=(0.1,)), "sigmas"),
])
def test_invalid_schemas(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Schema(**kwargs)


def test_voc_palette_first_colours():
    p = voc_palette(8)
    assert p[1].tolist() == [128, 0, 0] and p[2].tolist() == [0, 128, 0] and p[3].tolist() == [128, 128, 0]
    assert p[4].tolist() == [0, 0, 128] and p[7].tolist() == [128, 128, 128]
    assert np.array_equal(Schema.pascal_person_part().part_colours, p[:7])


def test_sigmas_and_the_head_size_read_every_spelling_of_a_joint_name():
    """Before (a walkthrough): AIC's 'Right Wrist' and MHP's 'Right-wrist', 'Head-top', 'Upper-neck' got the default
    sigma (a wrist scored like a shoulder) and no PCKh head size, where flips and joint maps read these names."""
    schema = Schema(name="mhp", keypoints=("Head-top", "Upper-neck", "Right-wrist", "Left Hip"), skeleton=((0, 1),))
    assert schema.sigmas == (0.079, 0.079, 0.062, 0.107)
    people = np.array([[[0, 0, 2], [3, 4, 2], [9, 9, 2], [0, 0, 0]], [[0, 0, 2], [0, 0, 0], [1, 1, 2], [2, 2, 2]]])
    assert schema.head_neck_sizes(people)[0] == 5.0 and np.isnan(schema.head_neck_sizes(people)[1])
    assert Schema.from_category(schema.to_category()) == schema  # default sigmas stay unwritten and read back


def test_sigmas_read_a_side_run_into_a_name_where_its_mirror_confirms_it():
    """A review: 'lhip' / 'rwrist' were read as left and right for flips but scored with the default sigma (0.079,
    not a hip's 0.107 and a wrist's 0.062), though the README says any spelling the schema reads. A side no mirror
    confirms ('lknee' alone) and a rest that names no known joint ('LSHO') keep the default."""
    schema = Schema(keypoints=("lhip", "rhip", "lwrist", "rwrist", "leftear", "rightear", "LSHO", "RSHO", "lknee"),
                    skeleton=((0, 1), (2, 3), (4, 5), (6, 7), (7, 8)))
    assert schema.flip_perm[:8] == (1, 0, 3, 2, 5, 4, 7, 6)
    assert schema.sigmas == (0.107, 0.107, 0.062, 0.062, 0.035, 0.035, 0.079, 0.079, 0.079)


def test_sides_inside_a_name_and_run_into_camel_case():
    """DeepLabCut's quadrupeds ("front_left_paw"), Kinect's suffixes ("ShoulderLeft"), "lKnee" and "kneeL": before,
    none had a side, so flips (training's and --flip) mirrored these joints' places without swapping them."""
    assert flip_permutation(["front_left_paw", "front_right_paw", "back_left_paw", "back_right_paw", "tail"]) == (
        1, 0, 3, 2, 4)
    assert flip_permutation(["lKnee", "rKnee", "kneeL", "kneeR", "ShoulderLeft", "ShoulderRight"]) == (
        1, 0, 3, 2, 5, 4)
    # sides run into the name pair where both spellings are there (BODY_25 in lower case, PASCAL-Part's person parts,
    # Vicon's markers, Mixamo's bones, a digit before the side); "leftover" and "lip" have no mirror to pair with
    names = ["lshoulder", "rshoulder", "leye", "reye", "LSHO", "RSHO", "finger1L", "finger1R", "mixamorig:LeftArm",
             "mixamorig:RightArm", "eyeLeftOuter", "eyeRightOuter", "leftover", "lip"]
    assert flip_permutation(names) == (1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13)
    assert split_side("front_left_paw") == ("left", "front_paw") and split_side("HandTipRight") == ("right", "HandTip")
    assert [split_side(name)[0] for name in ("HEAD_TOP", "medial", "Left", "leftover", "ROOT")] == [None] * 5


def test_one_letter_sides_inside_quadruped_and_insect_names_pair():
    """Quadrupeds' "FL_paw" / "FR_paw" and insects' "legL1" / "legR1": before, no side was read and flips (training's
    and --flip) left these joints unswapped, with no note (a custom-data walkthrough). A capital inside a name pairs
    only with its mirror spelling, as other run-in sides do."""
    assert flip_permutation(["nose", "FL_paw", "FR_paw", "HL_paw", "HR_paw"]) == (0, 2, 1, 4, 3)
    assert flip_permutation(["legL1", "legR1", "leg_L2", "leg_R2", "legL_3", "legR_3", "leg_l_4", "leg_r_4"]) == (
        1, 0, 3, 2, 5, 4, 7, 6)
    assert flip_permutation(["paw_fl_1", "paw_fr_1", "leg_l1", "leg_r1", "world", "worrd", "FL_paw"]) == (
        1, 0, 3, 2, 4, 5, 6)  # a lower-case side in a word of one or two letters, not in a longer one


def test_a_side_inside_camel_case_is_read_as_in_snake_case():
    """'FrontLeftPaw' and 'front_left_paw' are one joint to schema matching (evaluating a CamelCase export against a
    snake_case model): before, their keys were 'front_left_paw' and 'left_front_paw', and 4 of 7 joints went
    unscored (a custom-data walkthrough)."""
    spellings = ["front_left_paw", "FrontLeftPaw", "frontLeftPaw", "Front Left Paw", "front-left-paw"]
    assert {name_key(name) for name in spellings} == {"left_front_paw"}
    assert name_key("TailBase") == "tail_base" and name_key("LBigToe") == "left_big_toe"


def test_names_that_say_a_side_flips_leave_in_place_are_named():
    """A side run into a word ("leftear") is not read on its own, as "leftover" is not: such a name pairs with its
    mirror spelling where the schema has it, and a sided name without its mirror stays in place under flips, which
    `inspect` notes and `train` warns of."""
    assert unpaired_sided_names(["leftear", "rightear", "leftover", "left_knee", "nose", "left_eye", "right_eye"]) == [
        "leftover", "left_knee"]
    schema = Schema(keypoints=("nose", "leftear", "righteye"), skeleton=((0, 1), (0, 2)))
    (concern,) = schema.concerns()
    assert "'leftear', 'righteye' say left or right" in concern
    for built_in in (Schema.pascal_person_part(), Schema.coco(), Schema.mpii(), Schema.lip(), Schema.cihp()):
        assert built_in.concerns() == ()


def test_a_skeleton_in_separate_groups_is_named():
    """The decoder assembles a person along the limbs: a skeleton in two groups finds every person as two (the
    synthetic people with no neck-hip or shoulder-hip limb: oracle AP 0.106), and nothing said so; a joint in no
    limb is found only near a person."""
    schema = Schema(keypoints=("head", "neck", "hip", "knee", "ear"), skeleton=((0, 1), (2, 3)))
    assert schema.skeleton_groups == ((0, 1), (2, 3))  # "ear" is in no limb: in no group
    alone, groups = schema.concerns()
    assert "the joints 'ear' are in no limb" in alone and "2 separate groups (head, neck; hip, knee)" in groups
    joined = Schema(keypoints=schema.keypoints, skeleton=((0, 1), (2, 3), (3, 1), (4, 0)))
    assert joined.skeleton_groups == ((0, 1, 2, 3, 4),) and joined.concerns() == ()
    # a limb listed twice (a walkthrough: [1, 2] and [2, 1] were taken silently, a second PAF pair on the same limb)
    (twice,) = Schema(keypoints=schema.keypoints, skeleton=((0, 1), (2, 3), (3, 1), (4, 0), (1, 0))).concerns()
    assert twice.startswith("the skeleton lists [2, 1] ('neck', 'head') a second time (in either order)")


def test_an_empty_skeleton_and_names_without_sides_are_noted():
    """An annotation tool's export as a walkthrough found them: CVAT names its points "1", "2", ... (a flip then
    leaves every joint in place, and training mirrors people unswapped), Label Studio's skeleton is always empty (no
    pose model trains; the oracle scores AP 0). Before, `inspect` said nothing of either."""
    numbered = Schema(keypoints=("1", "2", "3", "4"), skeleton=((0, 1), (1, 2), (1, 3)))
    (sides,) = numbered.concerns()
    assert "the joint names are numbers ('1', '2', '3', '4'" in sides and "flip_pairs" in sides
    assert len(Schema(keypoints=("kp_1", "Point 2", "p3"), skeleton=((0, 1), (1, 2))).concerns()) == 1
    paired = Schema(keypoints=numbered.keypoints, skeleton=numbered.skeleton, flip_pairs=((2, 3),))
    assert paired.concerns() == ()  # sides given as pairs: nothing to say
    # named joints where a flip rightly leaves each in place (a review: a hand's, a midline's, Horse-10's near/off)
    for names in (("nose", "l_eye", "r_eye"), ("wrist", "thumb1", "thumb2"), ("head", "neck", "pelvis"),
                  ("Nearknee", "Offknee", "Withers")):
        assert Schema(keypoints=names, skeleton=((0, 1), (0, 2))).concerns() == (), names
    sided_without_limbs = Schema(keypoints=("left_hand", "right_hand"), skeleton=())
    (limbs,) = sided_without_limbs.concerns()
    assert "the skeleton lists no limbs" in limbs and "oracle scores AP 0" in limbs
    assert Schema(keypoints=("tip",), skeleton=()).concerns() == ()  # one joint: nothing to join or mirror


def test_schema_values_that_cannot_be_meant_are_refused_naming_them():
    """A repeated part class (inspect merged its pixels into the other's), an infinite sigma (OKS 1 at any distance),
    a limb from a joint to itself (named 0-based before: "(2, 2)" for the file's [3, 3])."""
    with pytest.raises(ValueError, match="part class names must differ: 'x' more than once"):
        Schema.from_category({"keypoints": ["a", "b"], "skeleton": [[1, 2]], "part_classes": ["background", "x", "x"]})
    with pytest.raises(ValueError, match="keypoint names must differ: 'b' more than once"):
        Schema.from_category({"keypoints": ["a", "b", "b"], "skeleton": [[1, 2]]})
    with pytest.raises(ValueError, match="positive, finite numbers"):
        Schema.from_category({"keypoints": ["a", "b"], "skeleton": [[1, 2]], "sigmas": [0.05, float("inf")]})
    with pytest.raises(ValueError, match=re.escape("skeleton pair [2, 2] joins 'b' to itself")):
        Schema.from_category({"keypoints": ["a", "b", "c"], "skeleton": [[1, 2], [2, 2]]})


def test_flip_pairs_pair_joints_their_names_cannot():
    """Face landmarks numbered round the jaw (COCO-WholeBody's face-0 ... face-16) mirror each other with nothing in
    their names to say so: `flip_pairs` in categories[0] (1-based, as the skeleton) pairs them, and wins over a pair
    the names would make (its old partner is then its own mirror, so a flip stays its own inverse). Before, no
    schema could pair them: flips mirrored their places without swapping them."""
    category = {"keypoints": ["jaw_0", "jaw_1", "jaw_2", "nose", "left_eye", "right_eye", "eye_c"],
                "skeleton": [[1, 2], [2, 3], [2, 4], [4, 5], [4, 6], [4, 7]], "flip_pairs": [[1, 3], [5, 7]]}
    schema = Schema.from_category(category)
    assert schema.flip_pairs == ((0, 2), (4, 6))
    assert schema.flip_perm == (2, 1, 0, 3, 6, 5, 4)  # right_eye's partner by name is taken: itself
    assert Schema.from_category(schema.to_category()) == schema  # checkpoints, .safetensors and ONNX carry it so
    assert schema.concerns() == ("the joint names 'right_eye' say left or right, but a horizontal flip (training's "
                                 "augmentation, --flip) leaves them in place: no mirror name pairs them (name the "
                                 "pairs e.g. left_x / right_x, x_left / x_right, lX / rX, or list them in "
                                 "the category's \"flip_pairs\")",
                                 "\"flip_pairs\" pairs [5, 7] ('left_eye', 'eye_c'), joints whose names say otherwise "
                                 "(the same side, or another mirror): the pairs count the keypoints from 1, as the "
                                 "skeleton's do")  # a pair against the names' is allowed, and said
    for pairs, words in (([[1, 1]], "two distinct joints"), ([[1, 8]], "1-based pairs of joints among 1..7"),
                         ([[1, 2], [2, 3]], "'jaw_1' more than once"), ("1,3", "a list of [a, b]")):
        with pytest.raises(ValueError, match=re.escape(words)):
            Schema.from_category({**category, "flip_pairs": pairs})


def test_flip_pairs_that_pair_joints_their_names_pair_otherwise_are_noted():
    """Two left paws paired, or a 0-based list read 1-based (each joint paired with its neighbour): before, taken as
    given without a note, and flips swapped the wrong joints (a custom-data walkthrough)."""
    names = ["nose", "neck", "tail_base", "front_left_paw", "front_right_paw", "back_left_paw", "back_right_paw"]
    skeleton = [[1, 2], [2, 3], [2, 4], [2, 5], [3, 6], [3, 7]]

    def noted(pairs: list) -> list[str]:
        schema = Schema.from_category({"keypoints": names, "skeleton": skeleton, "flip_pairs": pairs})
        return [c for c in schema.concerns() if c.startswith('"flip_pairs"')]

    assert noted([[4, 5], [6, 7]]) == [] and noted([[1, 2]]) == []  # as the names pair them; unsided joints: free
    (same_side,) = noted([[4, 6]])
    assert same_side.startswith('"flip_pairs" pairs [4, 6] (\'front_left_paw\', \'back_left_paw\'), joints whose names '
                                'say otherwise')
    (shifted,) = noted([[3, 4], [5, 6]])  # the 0-based [[3, 4], [5, 6]] of the right pairs, read 1-based
    assert "[3, 4] ('tail_base', 'front_left_paw'), [5, 6] ('front_right_paw', 'back_left_paw')" in shifted
    assert "count the keypoints from 1" in shifted


def test_flip_pairs_travel_with_a_model(tmp_path):
    """A checkpoint and its .safetensors export carry the schema's flip pairs: the Predictor's flip TTA and a
    fine-tuning run's flips read them from the model file."""
    from inference_helpers import write_checkpoint

    from posepart.cli import main
    from posepart.engine.checkpoint import load_model

    schema = Schema.from_category({"keypoints": ["jaw_0", "nose", "jaw_2"], "skeleton": [[1, 2], [2, 3]],
                                   "part_classes": ["background", "face"], "flip_pairs": [[1, 3]]})
    ckpt = write_checkpoint(tmp_path / "m.ckpt", schema)
    assert main(["export-weights", "--checkpoint", str(ckpt), "--out", str(tmp_path / "m.safetensors")]) == 0
    for path in (ckpt, tmp_path / "m.safetensors"):
        loaded = load_model(path)
        assert loaded.schema == schema and loaded.schema.flip_perm == (2, 1, 0)
