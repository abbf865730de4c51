"""Part instances: part pixels drawn per person from known skeletons must come back to that person."""

from __future__ import annotations

import cv2
import numpy as np

from posepart.decode.instances import assign_part_instances, cell_index, part_limb_compatibility
from posepart.schema import Schema

PASCAL = Schema.pascal_person_part()
STRIDE = 8
PART_OF_LIMB = {("left_shoulder", "left_elbow"): "upper_arm", ("right_shoulder", "right_elbow"): "upper_arm",
                ("left_elbow", "left_wrist"): "lower_arm", ("right_elbow", "right_wrist"): "lower_arm",
                ("left_hip", "left_knee"): "upper_leg", ("right_hip", "right_knee"): "upper_leg",
                ("left_knee", "left_ankle"): "lower_leg", ("right_knee", "right_ankle"): "lower_leg"}


def person(**joints: tuple[float, float]) -> np.ndarray:
    kp = np.zeros((PASCAL.num_joints, 3), np.float32)
    for name, (x, y) in joints.items():
        kp[PASCAL.joint(name)] = (x, y, 1.0)
    return kp


def standing(cx: float, top: float, h: float) -> np.ndarray:
    """A frontal stick person of height h with its head top at (cx, top)."""
    s = h / 8
    return person(head=(cx, top), neck=(cx, top + 1.5 * s), left_shoulder=(cx + s, top + 1.7 * s),
                  right_shoulder=(cx - s, top + 1.7 * s), left_elbow=(cx + 1.3 * s, top + 3 * s),
                  right_elbow=(cx - 1.3 * s, top + 3 * s), left_wrist=(cx + 1.4 * s, top + 4.2 * s),
                  right_wrist=(cx - 1.4 * s, top + 4.2 * s), left_hip=(cx + 0.6 * s, top + 4.3 * s),
                  right_hip=(cx - 0.6 * s, top + 4.3 * s), left_knee=(cx + 0.7 * s, top + 6 * s),
                  right_knee=(cx - 0.7 * s, top + 6 * s), left_ankle=(cx + 0.7 * s, top + 7.8 * s),
                  right_ankle=(cx - 0.7 * s, top + 7.8 * s))


def draw(people: list[np.ndarray], hw: tuple[int, int], thickness: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Part labels and true owners (1-based), people painted in order (later ones in front)."""
    labels = np.zeros(hw, np.uint8)
    owner = np.zeros(hw, np.uint8)
    cls = {c: i for i, c in enumerate(PASCAL.part_classes)}
    for n, kp in enumerate(people, start=1):
        j = {name: tuple(int(round(v)) for v in kp[PASCAL.joint(name), :2]) for name in PASCAL.keypoints}
        torso = np.array([j["left_shoulder"], j["right_shoulder"], j["right_hip"], j["left_hip"]], np.int32)
        for target in (labels, owner):
            value = cls["torso"] if target is labels else n
            cv2.fillConvexPoly(target, torso, value)
            cv2.circle(target, j["head"], 4, cls["head"] if target is labels else n, -1)
            for (a, b), part in PART_OF_LIMB.items():
                cv2.line(target, j[a], j[b], cls[part] if target is labels else n, thickness)
    return labels, owner


def assign(labels: np.ndarray, people: list[np.ndarray], **kw: float) -> np.ndarray:
    hw = labels.shape
    grid = (hw[0] // STRIDE, hw[1] // STRIDE)
    rows, cols = cell_index(np.array([[1.0, 0, 0], [0, 1.0, 0]]), hw, grid, STRIDE)
    cells = np.stack(people) if people else np.zeros((0, PASCAL.num_joints, 3), np.float32)
    cells[..., :2] = (cells[..., :2] - (STRIDE - 1) / 2) / STRIDE
    return assign_part_instances(labels, cells, PASCAL, rows, cols, grid, **kw)


def test_part_pixels_go_to_their_own_person():
    people = [standing(30, 10, 80), standing(62, 14, 72), standing(96, 8, 84)]
    labels, owner = draw(people, (104, 128))
    instances = assign(labels, people)
    fg = labels > 0
    assert instances.dtype == np.uint16 and instances.shape == labels.shape
    assert np.array_equal(instances > 0, fg)  # every part pixel near a person is assigned, background never
    assert (instances[fg] == owner[fg]).mean() > 0.95


def test_a_forearm_across_another_torso_does_not_take_the_torso():
    """B's torso pixels lie closer to A's forearm than to any torso limb of B; the part class says they are B's."""
    b = standing(64, 10, 96)
    a = standing(20, 14, 90)
    a[PASCAL.joint("left_elbow")] = (44, 52, 1)
    a[PASCAL.joint("left_wrist")] = (80, 52, 1)  # A's left forearm straight through B's torso
    labels, owner = draw([b, a], (112, 112))
    instances = assign(labels, [b, a])
    torso_b = (labels == PASCAL.part_classes.index("torso")) & (owner == 1)
    near_arm = torso_b & (np.abs(np.arange(112)[:, None] - 52) <= 8)
    assert near_arm.sum() > 50
    assert (instances[near_arm] == 1).mean() > 0.95
    arm_a = (labels == PASCAL.part_classes.index("lower_arm")) & (owner == 2)
    assert (instances[arm_a] == 2).mean() > 0.9


def test_far_pixels_and_missing_limbs():
    people = [standing(30, 10, 60)]
    labels, owner = draw(people, (96, 128))
    labels[40:50, 110:120] = PASCAL.part_classes.index("head")  # a blob far from the only person
    elbowless = people[0].copy()
    for elbow in ("left_elbow", "right_elbow"):  # no upper-arm limb at all: the person's other elements claim its arms
        elbowless[PASCAL.joint(elbow)] = 0
    instances = assign(labels, [elbowless])
    assert (instances[40:50, 110:120] == 0).all()
    arm = (labels == PASCAL.part_classes.index("upper_arm")) & (owner == 1)
    assert (instances[arm] == 1).all()
    assert not assign(labels, []).any()  # nobody found: nothing assigned


def test_compatibility_table_reads_names():
    table = part_limb_compatibility(PASCAL)
    limbs = [f"{PASCAL.keypoints[a]}-{PASCAL.keypoints[b]}" for a, b in PASCAL.skeleton]
    upper = [limbs[i] for i in np.flatnonzero(table[PASCAL.part_classes.index("upper_arm"), : len(limbs)])]
    assert sorted(upper) == ["left_shoulder-left_elbow", "right_shoulder-right_elbow"]
    lip = Schema.lip()
    table = part_limb_compatibility(lip)
    left_arm = table[lip.part_classes.index("left_arm"), : lip.num_limbs]
    assert all("left" in lip.keypoints[a] and "left" in lip.keypoints[b]
               for (a, b), ok in zip(lip.skeleton, left_arm) if ok) and left_arm.sum() == 2
    unknown = Schema.from_names(["a", "b"], [("a", "b")], ["background", "blob"])
    assert part_limb_compatibility(unknown)[1].all()  # an unknown class may lie anywhere


def test_camel_case_names_read_as_the_label_maps_read_them():
    """Part classes and joints spelled in camel case ('UpperArm', 'LeftShoulder', as some tools export them) get the
    table of their snake-case spelling: before, 'UpperArm' was read as 'upperarm', an unknown class allowed on every
    limb, where the label maps (`name_key`) read it as 'upper_arm'."""
    def camel_case(name: str) -> str:
        return name.title().replace("_", "")

    camel = Schema.from_names([camel_case(n) for n in PASCAL.keypoints],
                              [(camel_case(PASCAL.keypoints[a]), camel_case(PASCAL.keypoints[b]))
                               for a, b in PASCAL.skeleton],
                              ["background", *map(camel_case, PASCAL.part_classes[1:])])
    assert "UpperArm" in camel.part_classes and "LeftShoulder" in camel.keypoints
    np.testing.assert_array_equal(part_limb_compatibility(camel), part_limb_compatibility(PASCAL))
    limbs = [(PASCAL.keypoints[a], PASCAL.keypoints[b]) for a, b in PASCAL.skeleton]
    sided = Schema.from_names(PASCAL.keypoints, limbs, ["background", "arm", "legs", "shoes"])  # side-less names
    table = part_limb_compatibility(sided)
    np.testing.assert_array_equal(table[1], part_limb_compatibility(PASCAL)[[3, 4]].any(0))  # upper or lower arm
    np.testing.assert_array_equal(table[2], part_limb_compatibility(PASCAL)[[5, 6]].any(0))


def test_compiled_pass_equals_numpy_path():
    """The compiled pixel sweep gives the vectorised path's map exactly: crowded random scenes with missing joints
    (lone-joint elements), a duplicated person (equal distances: the first wins in both), ignore (255) and unknown
    labels, a scaled pixel -> cell index, a non-contiguous label view and signed labels."""
    rng = np.random.default_rng(7)
    hw, grid = (150, 200), (24, 32)  # the image is a 0.8x-scaled view of the 192x256 canvas
    scale = np.array([[1.25, 0, 3.0], [0, 1.25, 2.0]])
    rows, cols = cell_index(scale, hw, grid, STRIDE)
    compared = 0
    for n in (1, 3, 8, 15):
        people = [standing(rng.uniform(10, 240), rng.uniform(0, 90), rng.uniform(30, 100)) for _ in range(n)]
        for kp in people:
            kp[rng.random(PASCAL.num_joints) < 0.25] = 0  # missing joints
        people.append(people[0].copy())
        labels = rng.integers(0, PASCAL.num_parts + 2, size=(hw[0], 2 * hw[1])).astype(np.uint8)[:, ::2]
        labels[rng.random(hw) < 0.3] = 0
        labels[rng.random(hw) < 0.05] = 255
        cells = np.stack(people)
        cells[..., :2] = (cells[..., :2] - (STRIDE - 1) / 2) / STRIDE
        for lab in (labels, labels.astype(np.int32) - (labels == 255) * 256):  # 255 -> -1 as a signed ignore label
            fast = assign_part_instances(lab, cells, PASCAL, rows, cols, grid, max_distance=0.8, jit=True)
            reference = assign_part_instances(lab, cells, PASCAL, rows, cols, grid, max_distance=0.8, jit=False)
            assert fast.dtype == reference.dtype == np.uint16
            assert np.array_equal(fast, reference)
            assert 0 < (fast > 0).sum() < (lab > 0).sum()  # some assigned, some too far or not a part
            assert not fast[(lab <= 0) | (lab >= PASCAL.num_parts)].any()
            compared += 1
    assert compared == 8
