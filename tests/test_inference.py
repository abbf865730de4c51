"""The inference API: inputs of every kind, bad inputs, ground-truth decoding through the whole pipeline, flip and
multi-scale test-time augmentation, and agreement with the evaluation path."""

from __future__ import annotations

import itertools
import zlib

import cv2
import numpy as np
import pytest
import torch
from inference_helpers import GroundTruthNet, amplify, write_checkpoint
from PIL import Image, ImageOps

from posepart.data.augment import IMAGENET_MEAN, IMAGENET_STD, canvas_size, invert, normalize, transform_points
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
from posepart.decode import DecodeConfig
from posepart.decode.image import decode_in_image
from posepart.evaluate import oracle_prediction
from posepart.heads import HeadMeta
from posepart.inference import ImageResult, ModelOutputError, Predictor
from posepart.inference.predictor import letterbox_matrix
from posepart.inference.preprocess import InputError, letterbox, load_image
from posepart.inference.tta import Maps, flip_maps, merge_views
from posepart.models import build_model
from posepart.names import mirror_name
from posepart.schema import Schema
from posepart.targets import build_targets
from posepart.targets.mapper import Mapper, TargetConfig

SIZE = 64
PASCAL = Schema.pascal_person_part()


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> PosePartDataset:
    return PosePartDataset.open(write_synth(tmp_path_factory.mktemp("infer") / "val", n=3, seed=2, size=SIZE))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Predictor:
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.ckpt", PASCAL, input_size=SIZE, gain=40.0)
    return Predictor.from_checkpoint(path, batch_size=3)


@pytest.fixture(scope="module")
def truth_net(synth) -> GroundTruthNet:
    net = GroundTruthNet(synth.schema)
    net.register_dataset(synth, SIZE, flip=True)
    return net


def test_preprocessing_matches_the_training_mapper(synth):
    """The plane-by-plane normalisation equals the plain broadcast formula bit for bit (any layout), and for a square
    image at the input size the canvas is the evaluation mapper's."""
    noise = np.random.default_rng(0).integers(0, 256, (9, 7, 3), np.uint8)
    noise[0, :3] = [[0, 0, 0], [255, 255, 255], [124, 116, 104]]
    for image in (noise, noise[:, ::-1], np.asfortranarray(noise)):
        plain = ((image.astype(np.float32) - IMAGENET_MEAN) / IMAGENET_STD).transpose(2, 0, 1)
        out = normalize(image)
        assert out.dtype == np.float32 and out.flags.c_contiguous and np.array_equal(out, plain)
    record = synth.records[0]
    canvas, _ = letterbox(synth.load_image(record), canvas_size((record.height, record.width), SIZE, 8))
    assert np.array_equal(normalize(canvas), Mapper(synth, TargetConfig(input_size=SIZE))(record)["image"])
    assert canvas_size((1080, 1920), 368, 8) == (208, 368)  # aspect kept, short side padded to the stride
    assert canvas_size((50, 40), 64, 8) == (64, 56)


def test_every_input_kind_gives_results_in_its_own_coordinates(tiny, synth, tmp_path):
    path = synth.records[0].image_path
    rgb = synth.load_image(synth.records[0])
    grey16 = (cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "grey16.png"), grey16)
    cv2.imwrite(str(tmp_path / "rgba.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGRA))
    inputs = [str(path), path, rgb, Image.fromarray(rgb), rgb[:, :, 0], np.dstack([rgb, np.full(rgb.shape[:2], 255,
              np.uint8)]), rgb.astype(np.float32) / 255.0, tmp_path / "grey16.png", tmp_path / "rgba.png",
              Image.fromarray(grey16), np.ascontiguousarray(rgb[:40, :56])]
    results = tiny(inputs)
    assert isinstance(results, list) and len(results) == len(inputs)
    for result in results:
        assert result.ok, result.error
        assert result.parts is not None and result.parts.dtype == np.uint8
        assert result.instances is not None and result.instances.dtype == np.uint16
        assert result.parts.shape == result.instances.shape == (result.height, result.width)
    assert (results[-1].height, results[-1].width) == (40, 56)
    # the same pixels give the same prediction whatever the container (path, array, PIL, RGBA, float)
    for i in (1, 2, 3, 5, 6, 8):
        assert np.array_equal(results[i].parts, results[0].parts), i
    assert np.array_equal(results[7].parts, results[9].parts)  # 16-bit file and 16-bit PIL image agree
    single = tiny(rgb)
    assert isinstance(single, ImageResult) and np.array_equal(single.parts, results[0].parts)
    stacked = tiny(np.stack([rgb, rgb[::-1]]))  # a (B, H, W, 3) array is a batch
    assert len(stacked) == 2 and np.array_equal(stacked[0].parts, results[0].parts)


def test_bad_inputs_are_reported_and_the_rest_is_processed(tiny, synth, tmp_path):
    good = synth.load_image(synth.records[0])
    (tmp_path / "garbage.jpg").write_bytes(b"this is not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    jpeg = cv2.imencode(".jpg", good)[1].tobytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    header = (60000).to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])  # 60000 x 60000 RGB: over OpenCV's 2^30 pixels
    png = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header), chunk(b"IDAT", zlib.compress(b"")), chunk(b"IEND", b"")]
    (tmp_path / "huge.png").write_bytes(b"".join(png))
    (tmp_path / "clip.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42")  # what the file holds does not matter
    cv2.imwrite(str(tmp_path / "float255.tif"), good.astype(np.float32))  # 0..255 in a float file: no scale to read
    bad = {
        str(tmp_path / "huge.png"): "OpenCV cannot decode it",  # before: cv2.error ended the whole run, nothing written
        str(tmp_path / "float255.tif"): "a float image holds values in [0, 1], this one 0..",
        str(tmp_path / "garbage.jpg"): "not a decodable image",
        str(tmp_path / "empty.png"): "empty file",
        str(tmp_path / "truncated.jpg"): "truncated JPEG",
        str(tmp_path / "missing.png"): "no such file",
        str(tmp_path): "is a folder",
        str(tmp_path / "clip.mp4"): "is a video: give the Predictor its frames",  # before: "not a decodable image"
    }
    one_bright = good.astype(np.int32)
    one_bright[0, 0, 0] = 256  # before: taken as 16-bit, the whole image shifted to black
    arrays = {"zero-size image": np.zeros((0, 7, 3), np.uint8), "(H, W, 3)": np.zeros((5, 5, 2), np.uint8),
              "unsupported input type int": 42,
              "unsupported array dtype object": np.array([[1, "a"]], dtype=object),  # before: a TypeError escaped
              "int32 values outside 0..255": one_bright,
              "a float image holds values in [0, 1], this one 0..": good.astype(np.float32),  # before: all white
              "unsupported array dtype complex64": good.astype(np.complex64)}  # before: its real part, with a warning
    inputs = [good, *bad, *arrays.values(), good]
    results = tiny(inputs)
    assert [r.ok for r in results] == [True] + [False] * (len(inputs) - 2) + [True]
    assert {r.error_kind for r in results[1:-1]} == {"input"}  # the caller's, not the model's
    for result, (name, reason) in zip(results[1:], bad.items()):
        assert name in result.error and reason in result.error, result.error
        assert result.people == [] and result.parts is None
    for result, reason in zip(results[1 + len(bad):-1], arrays):
        assert reason in result.error, (reason, result.error)
    assert tiny(good.astype(np.int64)).ok and tiny(good.astype(np.float64) / 255.0).ok  # in range: fine
    resized = cv2.resize(good.astype(np.float32) / 255.0, (97, 83), interpolation=cv2.INTER_CUBIC)
    assert resized.min() < -1e-3 or resized.max() > 1 + 1e-3  # a cubic resize's overshoot (a serving walkthrough:
    assert np.array_equal(load_image(resized), np.clip(np.rint(resized * 255), 0, 255).astype(np.uint8))  # refused)
    cv2.imwrite(str(tmp_path / "float01.tif"), good[:, :, ::-1].astype(np.float32) / 255.0)  # a float TIFF's [0, 1]
    assert np.array_equal(load_image(tmp_path / "float01.tif"), good)  # before: clipped to 0..1, an all-black image
    assert np.array_equal(results[0].parts, results[-1].parts)
    with pytest.raises(InputError, match="no such file"):
        tiny(str(tmp_path / "missing.png"))


def test_pil_images_without_a_stated_range_read_in_pils_own():
    """PIL's "I" and "F" modes hold 0..255 when converted from an 8-bit image: before, "I" was shifted as 16-bit
    (black) and "F" clipped to [0, 1] (white)."""
    grey = (np.arange(48 * 40).reshape(48, 40) % 251).astype(np.uint8)
    eight_bit = load_image(Image.fromarray(grey))
    for mode in ("I", "F"):
        assert np.array_equal(load_image(Image.fromarray(grey).convert(mode)), eight_bit), mode
    assert np.array_equal(load_image(Image.fromarray(grey.astype(np.float32) / 255.0)), eight_bit)  # numpy's floats
    sixteen = Image.fromarray(grey.astype(np.int32) * 257)  # a 16-bit image in a 32-bit mode, as older Pillows give
    assert sixteen.mode == "I" and np.array_equal(load_image(sixteen), eight_bit)
    for bad, words in ((np.full((4, 4), 300.0, np.float32), "0..255"), (np.full((4, 4), -1, np.int32), "0..65535"),
                       (np.full((4, 4), np.nan, np.float32), "NaN")):
        with pytest.raises(InputError, match=words):
            load_image(Image.fromarray(bad))


def test_a_pil_image_that_cannot_be_decoded_is_one_bad_input(tmp_path):
    """PIL decodes on first use: a truncated file, or an image used after its `with` block, raised OSError or a bare
    AssertionError that ended a whole list of inputs (the same file given as a path was one bad input)."""
    noise = np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    jpeg = cv2.imencode(".jpg", noise)[1].tobytes()
    (tmp_path / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 2])  # its header whole, half of its pixels
    with pytest.raises(InputError, match="PIL could not read the image \\(OSError"):
        load_image(Image.open(tmp_path / "truncated.jpg"))
    (tmp_path / "whole.jpg").write_bytes(jpeg)
    with Image.open(tmp_path / "whole.jpg") as closed:
        pass
    with pytest.raises(InputError, match="PIL could not read the image"):
        load_image(closed)


def test_torch_tensors_are_read_in_torchvisions_layout(tiny):
    """(C, H, W) uint8 (`torchvision.io.decode_image`) or float in [0, 1] (`ToTensor`), grey (H, W), bfloat16, and a
    (B, C, H, W) batch give what the same pixels as a numpy array give (before: "unsupported input type Tensor")."""
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    chw = torch.from_numpy(rgb).permute(2, 0, 1)
    for tensor in (chw, chw.float() / 255.0, chw.double() / 255.0):
        assert np.array_equal(load_image(tensor), rgb), tensor.dtype
    assert np.array_equal(load_image(chw[:1]), load_image(rgb[:, :, 0]))  # one channel: grey
    assert np.array_equal(load_image(chw[0]), load_image(rgb[:, :, 0]))
    assert np.array_equal(load_image(torch.cat([chw, chw[:1]])), rgb)  # RGBA: alpha dropped, as for arrays
    from torchvision import tv_tensors  # a subclass of Tensor (a review: refused as "unsupported input type Image")

    assert np.array_equal(load_image(tv_tensors.Image(chw)), rgb)
    halves = torch.tensor([[0.0, 0.5, 1.0]]).expand(3, 2, 3)  # exact in bfloat16
    assert np.array_equal(load_image(halves.bfloat16()), load_image(halves.numpy().transpose(1, 2, 0)))
    for bad, words in ((torch.from_numpy(rgb), "expected a tensor of shape \\(C, H, W\\)"),  # channels last
                       (chw.float(), "a float image holds values in \\[0, 1\\]"),
                       (chw.int() - 1, "values outside 0..255")):
        with pytest.raises(InputError, match=words):
            load_image(bad)
    batch = tiny(torch.stack([chw, chw.flip(-1)]))
    one, mirrored = tiny([rgb, rgb[:, ::-1]])
    assert [r.coco(1) for r in batch] == [one.coco(1), mirrored.coco(1)]
    assert np.array_equal(batch[0].parts, one.parts) and np.array_equal(batch[1].parts, mirrored.parts)


def _tagged(path, pixels: np.ndarray, orientation: int) -> None:
    """Write `pixels` losslessly (PNG, TIFF) tagged with an EXIF orientation."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, exif=exif)


def test_a_photo_tagged_with_an_exif_orientation_is_read_upright(tiny, synth, tmp_path):
    """Files are turned as PIL's `exif_transpose` (the reference) turns them, for all eight orientations, and a phone
    photo stored sideways gives the upright image's prediction in the upright image's coordinates. Before, the
    stored pixels were used: a person lying on their side, and joints in the stored frame."""
    pixels = np.random.default_rng(0).integers(0, 256, (5, 3, 3), np.uint8)  # not square: every turn differs
    for orientation, suffix in itertools.product(range(1, 9), (".png", ".tif")):  # OpenCV turns TIFFs itself
        path = (tmp_path / f"o{orientation}").with_suffix(suffix)
        _tagged(path, pixels, orientation)
        with Image.open(path) as image:
            expected = np.asarray(ImageOps.exif_transpose(image).convert("RGB"))
        assert np.array_equal(load_image(path), expected), path.name
    rgb = synth.load_image(synth.records[0])[:, :48]  # not square
    _tagged(tmp_path / "sideways.png", np.ascontiguousarray(np.rot90(rgb, 1)), 6)  # stored turned anticlockwise
    upright, sideways = tiny([rgb, tmp_path / "sideways.png"])
    assert (sideways.height, sideways.width) == rgb.shape[:2]
    assert np.array_equal(sideways.parts, upright.parts) and np.array_equal(sideways.keypoints, upright.keypoints)


def test_an_image_files_bytes_are_read_as_its_path_is(tiny, synth, tmp_path):
    """A serving walkthrough: an upload (io.BytesIO, an open file) was iterated as a batch of text lines (thousands of
    failed results, no exception), bytes were refused, and PIL, the workaround, left a phone photo sideways."""
    import io
    import os

    rgb = synth.load_image(synth.records[0])[:, :48]
    _tagged(tmp_path / "sideways.png", np.ascontiguousarray(np.rot90(rgb, 1)), 6)  # EXIF: stored turned
    path = synth.records[0].image_path
    raw = path.read_bytes()

    class Located(os.PathLike):  # a path type of one's own
        def __fspath__(self) -> str:
            return str(path)

    expected = tiny(path)
    with open(path, "rb") as upload:
        given = [raw, bytearray(raw), memoryview(raw), io.BytesIO(raw), upload, Located()]
        for item in given:
            result = tiny(item)
            assert isinstance(result, ImageResult), type(item)  # one image, not a batch of lines
            assert np.array_equal(result.parts, expected.parts) and np.array_equal(result.keypoints,
                                                                                   expected.keypoints)
    turned = tiny(io.BytesIO((tmp_path / "sideways.png").read_bytes()))
    assert (turned.height, turned.width) == rgb.shape[:2]  # upright, as the path is read
    assert np.array_equal(turned.parts, tiny(tmp_path / "sideways.png").parts)
    results = tiny([io.BytesIO(raw), io.BytesIO(raw[: len(raw) // 2]), io.BytesIO(b"")])
    assert results[0].ok and "truncated" in results[1].error and "empty" in results[2].error
    (tmp_path / "text.txt").write_text("not an image")
    with open(tmp_path / "text.txt") as text, pytest.raises(InputError, match="binary mode"):
        tiny(text)
    with pytest.raises(InputError, match="an empty path"):
        tiny("")


@pytest.mark.parametrize("warm", [True, False])
def test_a_process_forked_after_the_model_ran_runs_it_too(warm):
    """A serving walkthrough (gunicorn --preload, a "fork" process pool given a Predictor, warmed up or only built: a
    review found the second still hanging): the child waited forever at its first forward, torch's OpenMP thread pool
    not surviving fork(). Two threads in the parent, as on any multi-core machine; a 120 s timeout for forever."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import multiprocessing, sys, numpy as np, torch
        torch.set_num_threads(2)
        from posepart.inference import Predictor
        from posepart.models import build_model
        from posepart.schema import Schema
        torch.manual_seed(0)
        model = build_model("joint_vgg16", Schema.pascal_person_part(), width=0.125, fc_width=16, stages=1,
                            seg_head="stage")
        predictor = Predictor.from_model(model, input_size=64)
        image = np.random.default_rng(0).integers(0, 255, (96, 96, 3), np.uint8)
        here = predictor(image).parts if sys.argv[1] == "warm" else None
        def work(_):
            return predictor(image).parts
        with multiprocessing.get_context("fork").Pool(2) as pool:
            there = pool.map_async(work, range(2)).get(timeout=60)
        here = predictor(image).parts if here is None else here
        print(all(np.array_equal(parts, here) for parts in there))
    """)
    done = subprocess.run([sys.executable, "-c", code, "warm" if warm else "cold"], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == "True", done.stdout + done.stderr[-2000:]


def test_from_model_drops_the_outputs_of_heads_never_trained():
    """The joint network trained on pose alone (`tasks: [pose]`) still has a part head of random weights: a Predictor of
    its checkpoint drops that output; before, `from_model` (no way to say what was trained) returned its random part
    labels and instances."""
    torch.manual_seed(2)
    model = build_model("joint_vgg16", PASCAL, width=0.125, fc_width=32, stages=1, seg_head="stage")
    image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), np.uint8)
    assert Predictor.from_model(model, input_size=SIZE)(image).parts is not None
    pose_alone = Predictor.from_model(model, input_size=SIZE, tasks=["pose"])(image)
    assert pose_alone.parts is None and pose_alone.instances is None
    from posepart.errors import UsageError

    for wrong in ("pose", ["seg"]):  # a string is its letters; "seg" is the loss's name, not a task's
        with pytest.raises(UsageError, match="tasks must be a list of \\['pose', 'parts'\\]"):
            Predictor.from_model(model, input_size=SIZE, tasks=wrong)


def test_predictor_options_are_checked_when_it_is_made():
    """Before: input_size 0 silently meant the model's size, 10**9 asked OpenCV for terabytes on the first image, an
    infinite scale overflowed there, and a dict for decode_config failed with an AttributeError at predict time."""
    from posepart.errors import UsageError

    model = build_model("paf_vgg16", PASCAL, width=0.125, stages=1)
    for options, words in (({"input_size": 0}, "input size 0 is outside 8..8192"),
                           ({"input_size": 10**9}, "outside 8..8192"), ({"scales": [1.0, float("inf")]}, "finite"),
                           ({"input_size": 100}, "input size 100 is not a multiple of the network's 8"),
                           ({"scales": [1000.0]}, "scale 1000 makes a 64000 px canvas"), ({"scales": [0.01]}, "1 px"),
                           ({"decode_config": {"min_joints": 1}}, "must be a DecodeConfig, got dict"),
                           # a serving walkthrough: options from a config or the environment were taken by their truth
                           # ("false" computed instances) or truncated (batch size 2.5 ran as 2), a negative distance
                           # acted as its square and NaN assigned no pixel
                           ({"part_instances": "false"}, "part_instances must be True or False, got 'false'"),
                           ({"flip": "no"}, "flip must be True or False"), ({"batch_size": 2.5}, "integer >= 1"),
                           ({"instance_max_distance": -1.0}, "instance_max_distance must be a number > 0"),
                           ({"instance_max_distance": float("nan")}, "instance_max_distance must be a number > 0")):
        with pytest.raises(UsageError, match=words):
            Predictor.from_model(model, input_size=options.pop("input_size", SIZE), **options)
    # a walkthrough: another schema's channel counts were accepted, then the first image failed inside the decoder
    with pytest.raises(UsageError, match=r"schema= 'person' has 17 joints, 19 limbs; the model predicts 14 joints, "
                                         r"17 limbs \(its own schema 'person'\): leave schema= out"):
        Predictor.from_model(model, Schema.coco(), input_size=SIZE)
    with pytest.raises(UsageError, match=r"Predictor takes a backend, got str: .*Predictor.from_checkpoint\(path\)"):
        Predictor("model.onnx")


def test_threads_are_an_option_for_every_kind_of_model_file(tiny, tmp_path):
    """A serving walkthrough: `threads=` worked for an .onnx file only (a TypeError for the others), while the CLI's
    --threads sets torch's for them."""
    path = write_checkpoint(tmp_path / "m.ckpt", PASCAL, input_size=SIZE)
    before = torch.get_num_threads()
    try:
        Predictor.from_checkpoint(path, threads=1)
        assert torch.get_num_threads() == 1  # torch's threads are the process's
    finally:
        torch.set_num_threads(before)
    from posepart.errors import UsageError

    with pytest.raises(UsageError, match="threads must be an integer >= 1, got 0"):
        Predictor.from_checkpoint(path, threads=0)


def test_no_joint_comes_from_the_letterbox_padding():
    """A 720 x 104 image fills 9 of the 64 x 16 canvas's rows; before, the joints a (random) network put in the grey
    padding, or that sub-cell placement carried there, came back up to 40 px above and below the image."""
    torch.manual_seed(2)
    model = build_model("joint_vgg16", PASCAL, width=0.125, fc_width=32, stages=1, seg_head="stage")
    amplify(model, 40.0)
    predictor = Predictor.from_model(model, input_size=SIZE, decode_config=DecodeConfig.for_evaluation())
    rng = np.random.default_rng(5)
    for height, width in [(104, 720), (720, 104), (104, 400), (64, 64)]:
        result = predictor(rng.integers(0, 255, (height, width, 3), np.uint8))
        joints = np.concatenate([p.keypoints for p in result.people])
        found = joints[joints[:, 2] > 0]
        assert len(found) > 0, (height, width)
        assert (found[:, 0] >= -0.5).all() and (found[:, 0] <= width - 0.5).all(), (height, width)
        assert (found[:, 1] >= -0.5).all() and (found[:, 1] <= height - 0.5).all(), (height, width)


@pytest.mark.parametrize("stride", [8, 4, 2])
def test_joints_on_the_edge_of_a_letterboxed_image_decode_where_they_are(stride):
    """A review: cells whose centre lay in the letterbox padding were zeroed even where they reached into the image,
    so at strides 4 and 2 the joints on its edge came back up to half a cell inside (a 640 x 480 photo at 368 px:
    a head at y = 0, 1 or 2 came back at 2.98; 21 px on a 4032 x 3024 one). Ground-truth maps of people whose head
    touches the top edge and whose ankles the bottom one, decoded as the Predictor and the oracle decode them."""
    head = HeadMeta(PASCAL, pose_stride=stride)
    layout = np.array([(0, 0), (0, .15), (.18, .18), (-.18, .18), (.25, .38), (-.25, .38), (.28, .55), (-.28, .55),
                       (.1, .55), (-.1, .55), (.12, .77), (-.12, .77), (.13, 1.0), (-.13, 1.0)])  # PASCAL's joints
    for (height, width), top in itertools.product([(480, 640), (61, 300), (3024, 4032), (427, 640)], (0.0, 1.0)):
        people = np.full((1, PASCAL.num_joints, 3), 2.0, np.float32)
        people[0, :, 0] = width / 2 + (height - 1 - top) * layout[:, 0]
        people[0, :, 1] = top + (height - 1 - top) * layout[:, 1]  # the head at y = top, the ankles at H - 1
        canvas = canvas_size((height, width), 368, 8)
        to_canvas = letterbox_matrix((height, width), canvas)
        on_canvas = people.copy()
        on_canvas[..., :2] = transform_points(to_canvas, people[..., :2])
        maps = build_targets(on_canvas, np.zeros(canvas, bool), None, head)
        found, _ = decode_in_image(maps.heatmaps, maps.pafs, head, DecodeConfig(), invert(to_canvas), (height, width))
        assert len(found) == 1, (height, width, stride)
        np.testing.assert_allclose(found[0].keypoints[:, :2], people[0, :, :2], atol=1e-3,
                                   err_msg=f"{width} x {height}, stride {stride}")


def test_a_model_whose_maps_hold_nan_or_inf_is_said_so_image_by_image(synth):
    """A review: NaN maps gave nobody without a word (a diverged model looked like empty photos), an inf crashed the
    decoder and lost the whole batch, or gave people scored inf. Each image's result now names the broken maps; an
    evaluation scores such an image as finding nobody, as training validation does, and counts it."""
    from posepart.evaluate_model import evaluate_model

    for value in (float("nan"), float("inf")):
        model = build_model("joint_vgg16", PASCAL, width=0.125, fc_width=16, stages=1, seg_head="stage")
        with torch.no_grad():
            model.pose_head.stages[0].branches["heatmaps"][-1].bias.fill_(value)  # the heatmaps' last conv
        results = Predictor.from_model(model, input_size=SIZE)([synth.load_image(r) for r in synth.records])
        assert [r.error for r in results] == ["the model's heatmaps hold NaN or infinite values (a diverged model, "
                                              "or an overflow in reduced precision): nothing decoded"] * 3
        assert [r.error_kind for r in results] == ["model"] * 3
        with pytest.raises(ModelOutputError, match="hold NaN"):  # a serving walkthrough: an InputError, the
            Predictor.from_model(model, input_size=SIZE)(synth.load_image(synth.records[0]))  # client blamed
        metrics, _ = evaluate_model(model, synth, input_size=SIZE, progress=False)  # the model's failure: scored
        assert metrics["images"] == 3 and metrics["maps_not_finite"] == 3  # (a review: skipped, it raised the AP)
        assert metrics["pose"]["ap"] == 0.0 and "skipped" not in metrics


def _truth_people(dataset: PosePartDataset, config: DecodeConfig) -> list[np.ndarray]:
    """The oracle: ground-truth targets decoded and mapped to the image, as evaluation does."""
    out = []
    for record in dataset.records:
        prediction, _ = oracle_prediction(dataset, record, input_size=SIZE, config=config)
        keypoints = np.asarray([r["keypoints"] for r in prediction.results], np.float32)
        out.append(keypoints.reshape(-1, dataset.schema.num_joints, 3))
    return out


@pytest.mark.parametrize("flip", [False, True])
def test_ground_truth_maps_decode_to_the_oracle_people(synth, truth_net, flip):
    """A network that outputs the ground truth gives exactly the oracle's people, with or without flip-TTA (the flip
    is undone exactly: joints and limbs swapped, PAF x negated), and the ground-truth part labels."""
    config = DecodeConfig.for_evaluation()
    predictor = Predictor.from_model(truth_net, input_size=SIZE, flip=flip, decode_config=config)
    results = predictor([synth.load_image(r) for r in synth.records])
    total = 0
    for result, truth, record in zip(results, _truth_people(synth, config), synth.records):
        assert result.ok
        assert result.keypoints.reshape(-1, synth.schema.num_joints, 3).shape == truth.shape
        if len(truth):
            np.testing.assert_allclose(result.keypoints[..., :2], truth[..., :2], atol=1e-3)
            np.testing.assert_allclose(result.keypoints[..., 2], truth[..., 2], atol=1e-5)
        total += len(truth)
        gt_parts = synth.load_parts(record)
        labelled = gt_parts != 255
        assert np.array_equal(result.parts[labelled], gt_parts[labelled])
    assert total >= 3


def test_person_mask_is_that_persons_instance_and_refuses_a_person_not_there(synth, truth_net):
    """Before: `person_mask(99)` gave an all-False mask, as if person 99 existed and had no part pixels."""
    result = Predictor.from_model(truth_net, input_size=SIZE)(synth.load_image(synth.records[0]))
    n = len(result.people)
    assert n >= 1 and result.instances is not None
    for i in range(n):
        np.testing.assert_array_equal(result.person_mask(i), result.instances == i + 1)
    np.testing.assert_array_equal(result.person_mask(-1), result.instances == n)  # Python's indexing, as people[-1]
    assert result.person_mask(0).any()
    for index in (n, -n - 1, 99):
        with pytest.raises(IndexError, match=f"person {index} of {n}"):
            result.person_mask(index)
    # a Predictor told not to assign them names that cause (before: only the heads, which this model has)
    without = Predictor.from_model(truth_net, input_size=SIZE, part_instances=False)(synth.load_image(synth.records[0]))
    with pytest.raises(ValueError, match="part_instances=True"):
        without.person_mask(0)


def test_a_result_prints_as_one_line_of_what_it_holds(synth, truth_net):
    """A notebook shows a result by its repr: before, the dataclass's printed every array (parts, instances, the
    maps), thousands of lines for one image."""
    image = synth.load_image(synth.records[0])
    result = Predictor.from_model(truth_net, input_size=SIZE, keep_maps=True)(image)
    n, (h, w) = len(result.people), image.shape[:2]
    assert n and repr(result) == (f"ImageResult(source={result.source!r}, {w}x{h}, {n} "
                                  f"{'person' if n == 1 else 'people'} (best score {result.people[0].score:.3f}), "
                                  f"parts uint8({h}, {w}), instances uint16({h}, {w}), maps)")
    failed = ImageResult("a.jpg", error="a.jpg: no such file", error_kind="input")
    assert repr(failed) == "ImageResult(source='a.jpg', error='a.jpg: no such file', error_kind='input')"


def test_flip_without_the_schema_swaps_breaks_the_ground_truth(synth, truth_net, monkeypatch):
    """Negative control for the test above: mirroring the maps back by columns alone loses people."""
    import posepart.inference.predictor as inference

    def naive(maps: Maps, schema: Schema) -> Maps:
        return Maps(*(None if m is None else m[:, :, ::-1] for m in maps))

    config = DecodeConfig.for_evaluation()
    good = Predictor.from_model(truth_net, input_size=SIZE, flip=True, decode_config=config)
    expected = [r.keypoints for r in good([synth.load_image(r) for r in synth.records])]
    monkeypatch.setattr(inference, "flip_maps", naive)
    broken = good([synth.load_image(r) for r in synth.records])
    assert any(r.keypoints.shape != e.shape or not np.allclose(r.keypoints, e, atol=1e-2)
               for r, e in zip(broken, expected))


def test_multiscale_maps_are_resampled_onto_the_reference_grid(synth, truth_net):
    """Ground truth at input 64 and 96 averaged on the 64 grid: the same people within a pixel."""
    for record in synth.records:  # register the 1.5x canvases too
        truth_net.register(synth.load_image(record), synth.load_parts(record), record.keypoints, 96)
    config = DecodeConfig.for_evaluation()
    images = [synth.load_image(r) for r in synth.records]
    single = Predictor.from_model(truth_net, input_size=SIZE, decode_config=config)(images)
    multi = Predictor.from_model(truth_net, input_size=SIZE, scales=(1.0, 1.5), decode_config=config)(images)
    matched = 0
    for a, b in zip(single, multi):
        for person in a.people:
            found = person.keypoints[:, 2] > 0.5
            distance = [np.abs(q.keypoints[found, :2] - person.keypoints[found, :2]).max() for q in b.people]
            assert distance and min(distance) < 1.0
            matched += 1
    assert matched >= 3


def test_the_views_of_test_time_scales_come_in_one_order_whatever_order_they_are_given():
    """The merged maps are a float sum over the views: in the order given, three orders of `--scales` gave three
    keypoint files (last digits) under one `test_time` record, which lists the scales sorted (a walkthrough)."""
    from posepart.inference.tta import View, tta_views

    for given in ((1.5, 0.75, 1.0), (1.0, 1.5, 0.75), (0.75, 1.0, 1.5)):
        assert tta_views(given, flip=True) == [View(scale, flip) for scale in (0.75, 1.0, 1.5)
                                               for flip in (False, True)]


def _mirror_by_names(maps: Maps, schema: Schema) -> Maps:
    """Independent truth for a mirrored image's maps: channels looked up by mirrored names, PAF vectors mirrored."""
    names = list(schema.keypoints)
    hm = np.stack([maps.heatmaps[names.index(mirror_name(n))] for n in names] + [maps.heatmaps[-1]])[:, :, ::-1]
    edges = [(names[a], names[b]) for a, b in schema.skeleton]
    pafs = []
    for a, b in edges:
        ma, mb = mirror_name(a), mirror_name(b)
        if (ma, mb) in edges:
            src, sx, sy = edges.index((ma, mb)), -1.0, 1.0
        else:
            src, sx, sy = edges.index((mb, ma)), 1.0, -1.0
        pafs += [sx * maps.pafs[2 * src, :, ::-1], sy * maps.pafs[2 * src + 1, :, ::-1]]
    classes = list(schema.part_classes)
    parts = np.stack([maps.parts[classes.index(mirror_name(c))] for c in classes])[:, :, ::-1]
    return Maps(hm, np.stack(pafs), parts)


@pytest.mark.parametrize("seg_head, seg_stride, pose_stride", [("fcn32", 8, 8), ("stage", 8, 8), ("stage", 4, 8),
                                                              ("stage", 4, 4), ("fcn32", 8, 2)])
def test_flip_tta_on_a_mirrored_input_gives_mirrored_maps_and_labels(seg_head, seg_stride, pose_stride):
    """A random (not mirror-symmetric) network with flip-TTA: the merged maps and part labels of the mirrored image
    are the mirrored ones of the image, checked by joint/limb/part NAMES. LIP's schema has sided part classes
    (left_arm/right_arm) as well as sided joints and limbs."""
    schema = Schema.lip()
    torch.manual_seed(3)
    model = build_model("joint_vgg16", schema, width=0.125, fc_width=32, stages=1, seg_head=seg_head,
                        seg_stride=seg_stride, pose_stride=pose_stride)
    amplify(model, 40.0)
    with torch.no_grad():  # refined pose maps: make the (zero-initialised) skip heads count
        for param in (model.pose_refine.parameters() if model.pose_refine is not None else []):
            param.normal_(0.0, 0.2)
    predictor = Predictor.from_model(model, input_size=SIZE, flip=True, keep_maps=True)
    image = np.random.default_rng(0).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
    original, mirrored = predictor([image, np.ascontiguousarray(image[:, ::-1])])
    expected = _mirror_by_names(original.maps, schema)
    for got, want in zip(mirrored.maps, expected):
        np.testing.assert_allclose(got, want, atol=1e-6)
    left, right = schema.part_classes.index("left_arm"), schema.part_classes.index("right_arm")
    assert not np.allclose(original.maps.parts[left], original.maps.parts[right][:, ::-1], atol=1e-3)  # swap matters
    lut = np.array([schema.part_classes.index(mirror_name(c)) for c in schema.part_classes], np.uint8)
    assert np.array_equal(mirrored.parts, lut[original.parts[:, ::-1]])


def test_flip_tta_on_a_skeleton_without_mirror_edges():
    """A user's skeleton need not be mirror-symmetric (head-left_foot without head-right_foot). Before: flip-TTA raised
    "skeleton is not mirror-symmetric" from `predict --flip` and `evaluate --flip`. Now a limb without a mirror takes
    its PAF from the unflipped view alone (a mirrored view tells nothing about it); the paired limbs still average."""
    schema = Schema(keypoints=("head", "left_hand", "right_hand", "left_foot", "right_foot"),
                    skeleton=((0, 1), (0, 2), (0, 3)), part_classes=("background", "left_arm", "right_arm"))
    assert schema.limb_flip == ((1, False), (0, False), (None, False))
    torch.manual_seed(4)
    model = build_model("joint_vgg16", schema, width=0.125, fc_width=32, stages=1, seg_head="stage")
    amplify(model, 40.0)
    image = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
    plain = Predictor.from_model(model, input_size=SIZE, keep_maps=True)(image).maps
    flipped = Predictor.from_model(model, input_size=SIZE, flip=True, keep_maps=True)(image).maps
    assert np.isfinite(flipped.pafs).all() and np.isfinite(flipped.heatmaps).all()
    # the unpaired limb: the unflipped view alone (to float rounding: the flip run batches both views)
    np.testing.assert_allclose(flipped.pafs[4:6], plain.pafs[4:6], rtol=1e-4, atol=1e-3)
    assert not np.allclose(flipped.pafs[:4], plain.pafs[:4], atol=1e-2)  # the paired ones: two views averaged
    mirrored = flip_maps(Maps(None, plain.pafs, None), schema).pafs
    assert np.isnan(mirrored[4:6]).all() and np.isfinite(mirrored[:4]).all()


def test_a_views_nan_is_kept_unless_the_whole_channel_is_left_out():
    """`merge_views` leaves out a channel that `flip_maps` left out (NaN throughout). Before, it read that from the
    top-left cell alone: a model's NaN there dropped the view's channel and hid the rest of its NaN values, so the
    merged maps looked finite and the Predictor's check for broken maps never fired."""
    head = HeadMeta(Schema.pascal_person_part(), pose_stride=8, sigma=7.0)
    hw, base, twice = (32, 32), np.eye(3)[:2], 2 * np.eye(3)[:2]  # the second view at twice the scale: resampled
    rng = np.random.default_rng(0)
    channels = head.schema.heatmap_channels
    views = [Maps(rng.random((channels, n, n)).astype(np.float32), None, None) for n in (4, 8)]
    views[0].heatmaps[3, 0, 0] = np.nan  # a model's NaN in one cell of one view
    views[1].heatmaps[5] = np.nan  # a channel left out of this view, as flip_maps leaves one
    merged = merge_views([(views[0], base), (views[1], twice)], base, hw, head).heatmaps
    assert np.isnan(merged[3, 0, 0]) and np.isfinite(np.delete(merged, 3, 0)).all()
    np.testing.assert_array_equal(merged[5], views[0].heatmaps[5])  # the other view's, alone


def test_flip_tta_on_a_mirrored_input_gives_mirrored_people_and_instances(synth, truth_net):
    """Decoded people and part instances of a mirrored image are the mirrored people and instances (joints swapped
    by name, x -> W - 1 - x), with flip-TTA on."""
    predictor = Predictor.from_model(truth_net, input_size=SIZE, flip=True)
    schema = synth.schema
    perm = [schema.keypoints.index(mirror_name(n)) for n in schema.keypoints]
    people = 0
    for record in synth.records:
        image = synth.load_image(record)
        original, mirrored = predictor([image, np.ascontiguousarray(image[:, ::-1])])
        assert len(mirrored.people) == len(original.people)
        for p, q in zip(original.people, mirrored.people):
            flipped = p.keypoints[perm].copy()
            flipped[:, 0] = np.where(flipped[:, 2] > 0, record.width - 1 - flipped[:, 0], 0.0)
            np.testing.assert_allclose(q.keypoints, flipped, atol=1e-3)
            assert q.score == pytest.approx(p.score, abs=1e-5)
            people += 1
        assert np.array_equal(mirrored.instances, original.instances[:, ::-1])
    assert people >= 2


def test_flip_maps_turns_targets_into_the_targets_of_mirrored_people():
    """Independent truth: maps rendered from mirrored keypoints (COCO's skeleton has a limb whose mirror is stored
    reversed: left_shoulder-right_shoulder)."""
    from posepart.targets import build_targets

    rng = np.random.default_rng(1)
    for schema in (Schema.coco(), PASCAL):
        kp = np.zeros((2, schema.num_joints, 3), np.float32)
        kp[..., 0] = rng.uniform(4, 91, kp.shape[:2])
        kp[..., 1] = rng.uniform(4, 59, kp.shape[:2])
        kp[..., 2] = 2
        mirrored = kp[:, list(schema.flip_perm)].copy()
        mirrored[..., 0] = 96 - 1 - mirrored[..., 0]
        ignore = np.zeros((64, 96), bool)
        a = build_targets(kp, ignore, None, HeadMeta(schema))
        b = build_targets(mirrored, ignore, None, HeadMeta(schema))
        flipped = flip_maps(Maps(a.heatmaps, a.pafs, None), schema)
        np.testing.assert_allclose(flipped.heatmaps, b.heatmaps, atol=1e-5)
        np.testing.assert_allclose(flipped.pafs, b.pafs, atol=1e-5)


def test_predictor_agrees_with_decoding_the_training_mappers_input(synth, tiny):
    """Same canvas, same network, same decoding: the Predictor's people and parts are those of the network run on the
    evaluation Mapper's input, decoded directly and mapped back by hand (square images: the same canvas)."""
    from posepart.data.augment import labels_to_image
    from posepart.decode import decode, people_to_coco

    model = tiny.backend.model
    config = DecodeConfig.for_evaluation()
    predictor = Predictor(tiny.backend, input_size=SIZE, decode_config=config)
    mapper = Mapper(synth, TargetConfig(input_size=SIZE))
    people = 0
    for record in synth.records:
        sample = mapper(record)
        with torch.inference_mode():
            output = model(torch.from_numpy(sample["image"][None]))
        decoded = decode(output.heatmaps[-1][0].numpy(), output.pafs[-1][0].numpy(), model.meta, config)
        want = np.asarray([r["keypoints"] for r in people_to_coco(decoded, record.image_id)], np.float32)
        if len(want):  # mapped back by hand: canvas -> image pixels, absent joints (0, 0, 0)
            want = want.reshape(len(want), -1, 3)
            want[..., :2] = want[..., :2] @ sample["to_image"][:, :2].T + sample["to_image"][:, 2]
            want[want[..., 2] <= 0] = 0.0
            want = want.reshape(len(want), -1)
        logits = torch.nn.functional.interpolate(output.parts[-1], size=(SIZE, SIZE), mode="bilinear")
        parts = labels_to_image(logits[0].argmax(0).to(torch.uint8).numpy(), sample["to_image"],
                                (record.height, record.width))
        result = predictor(synth.load_image(record))
        got = np.asarray([r["keypoints"] for r in result.coco(record.image_id)], np.float32)
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-3)
        people += len(want)
        assert (result.parts == parts).mean() > 0.999
    assert people >= 1


def test_settings_are_what_a_run_records_as_plain_json(truth_net):
    """`Predictor.settings()` goes into predict's summary.json. DecodeConfig takes numpy numbers: a first version
    passed them through, and json failed after every input had been processed (no summary.json)."""
    import json

    decode = DecodeConfig(min_joints=np.int64(2), peak_threshold=np.float32(0.1))
    predictor = Predictor.from_model(truth_net, input_size=SIZE, scales=(1.0, 1.5), flip=True, decode_config=decode)
    settings = json.loads(json.dumps(predictor.settings()))
    assert settings["input_size"] == SIZE and settings["test_time"] == {"scales": [1.0, 1.5], "flip": True}
    assert settings["decode"]["min_joints"] == 2 and settings["decode"]["peak_threshold"] == pytest.approx(0.1)
