"""End-to-end `Predictor` speed on one core, and proof that decoding is never the bottleneck.

Part 1, post-processing alone: decode (peaks, PAF scoring, grouping) + part-instance assignment (including the pixel
-> cell index) for 1 / 5 / 10 / 20 people at 368x368, PASCAL schema, on maps rendered from random stick figures
(bench_decode's) and part labels painted along their limbs; the best of REPEATS calls, averaged over IMAGES scenes.
Also reported: the fraction of part pixels given to the person who was painted there.

Part 2, end to end: ms per image by stage (load, preprocess, network, merge, decode, part labels, instances) for a
368x368 image with 1 / 5 / 20 people, through `Predictor` with a real network (PyTorch, and ONNX Runtime for the
exported model). Whatever an untrained network outputs is replaced by the scene's ground-truth maps right after the
network ran, so decoding and instance assignment do realistic work on N people while the network is timed as it is.

Part 3, batch 1 vs 32: images/s and ms per image of the network alone (one call on a ready input batch) and end to end
(`Predictor` on a list of as many images, 5 people each), one thread.

Run: taskset -c 0 .venv/bin/python benchmarks/bench_predict.py [--quick]   (writes benchmarks/results/predict.json)
     taskset -c 0 .venv/bin/python benchmarks/bench_predict.py --post-only   (part 1 only: results/predict_post.json)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # one core: set before numpy / torch are imported

import argparse  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_decode import SIZE, STRIDE, random_people, render  # noqa: E402
from common import write_json  # noqa: E402

from posepart.decode import decode  # noqa: E402
from posepart.decode.instances import assign_part_instances, cell_index, part_limb_compatibility  # noqa: E402
from posepart.engine.export import export_onnx  # noqa: E402
from posepart.heads import HeadMeta
from posepart.inference.backends import Backend, OnnxBackend, TorchBackend  # noqa: E402
from posepart.inference.predictor import Predictor, model_info  # noqa: E402
from posepart.inference.tta import Maps  # noqa: E402
from posepart.models import build_model  # noqa: E402
from posepart.schema import Schema  # noqa: E402

torch.set_num_threads(1)
cv2.setNumThreads(1)
STAGES = ("load", "preprocess", "network", "merge", "decode", "parts", "instances")
BATCHES = (1, 32)


def paint_parts(people: np.ndarray, schema: Schema) -> tuple[np.ndarray, np.ndarray]:
    """(labels, owner) at SIZE x SIZE: each limb painted 7 px wide in the first part class it may carry (torso limbs
    as torso, ...), the head as a disc; owner = person index + 1; later people in front."""
    table = part_limb_compatibility(schema)
    labels = np.zeros((SIZE, SIZE), np.uint8)
    owner = np.zeros((SIZE, SIZE), np.uint8)
    head = schema.joint("head")
    for n, kp in enumerate(people, start=1):
        pts = np.round(kp[:, :2]).astype(int)
        for limb, (a, b) in enumerate(schema.skeleton):
            cls = int(np.argmax(table[1:, limb])) + 1
            for target, value in ((labels, cls), (owner, n)):
                cv2.line(target, tuple(map(int, pts[a])), tuple(map(int, pts[b])), value, 7)
        for target, value in ((labels, schema.part_classes.index("head")), (owner, n)):
            cv2.circle(target, tuple(map(int, pts[head])), 6, value, -1)
    return labels, owner


def instance_accuracy(instances: np.ndarray, labels: np.ndarray, owner: np.ndarray, decoded: np.ndarray,
                      truth: np.ndarray) -> float:
    """Fraction of painted part pixels whose instance is the decoded person matching the painter (nearest joints)."""
    if not len(decoded):
        return 0.0
    distance = np.abs(decoded[:, None, :, :2] - truth[None, :, :, :2]).sum(-1).mean(-1)  # (D, T)
    match = np.concatenate([[0], distance.argmin(1) + 1])  # instance id -> painter id
    fg = labels > 0
    return float((match[instances[fg]] == owner[fg]).mean())


def bench_post(schema: Schema, people_counts: tuple[int, ...], images: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    grid = (SIZE // STRIDE, SIZE // STRIDE)
    identity = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    rows_out = []
    for n in people_counts:
        t_decode, t_inst, accuracy = [], [], []
        for _ in range(images):
            truth = random_people(rng, schema, n)
            hm, paf = render(truth, schema)
            labels, owner = paint_parts(truth, schema)

            def post() -> tuple[list, np.ndarray]:
                people = decode(hm, paf, HeadMeta(schema, pose_stride=STRIDE))
                t0 = time.perf_counter()
                rows, cols = cell_index(identity, (SIZE, SIZE), grid, STRIDE)
                cells = np.stack([p.keypoints for p in people]) if people else np.zeros((0, schema.num_joints, 3))
                cells = cells.copy()
                cells[..., :2] = (cells[..., :2] - (STRIDE - 1) / 2) / STRIDE
                inst = assign_part_instances(labels, cells, schema, rows, cols, grid)
                return people, inst, time.perf_counter() - t0

            best_d = best_i = np.inf
            for _ in range(repeats):
                t0 = time.perf_counter()
                people, inst, ti = post()
                total = time.perf_counter() - t0
                best_d, best_i = min(best_d, total - ti), min(best_i, ti)
            t_decode.append(best_d)
            t_inst.append(best_i)
            decoded = np.stack([p.keypoints for p in people]) if people else np.zeros((0, schema.num_joints, 3))
            accuracy.append(instance_accuracy(inst, labels, owner, decoded, truth))
        rows_out.append({"people": n, "decode_ms": 1e3 * float(np.mean(t_decode)),
                         "instances_ms": 1e3 * float(np.mean(t_inst)),
                         "total_ms": 1e3 * float(np.mean(np.add(t_decode, t_inst))),
                         "total_p90_ms": 1e3 * float(np.quantile(np.add(t_decode, t_inst), 0.9)),
                         "instance_pixel_accuracy": float(np.mean(accuracy))})
    return rows_out


class TruthAfterNetwork(Backend):
    """Runs the real network (so it is timed), then hands on the scene's ground-truth maps instead of its output."""

    def __init__(self, inner: Backend, maps: Maps) -> None:
        self.inner, self.info, self.maps = inner, inner.info, maps

    def __call__(self, batch: np.ndarray) -> Maps:
        self.inner(batch)
        return Maps(*(None if m is None else np.repeat(m[None], len(batch), 0) for m in self.maps))


def scene_maps(schema: Schema, n: int, parts_stride: int, seed: int) -> Maps:
    truth = random_people(np.random.default_rng(seed), schema, n)
    hm, paf = render(truth, schema)
    labels, _ = paint_parts(truth, schema)
    if parts_stride > 1:
        labels = labels[parts_stride // 2 :: parts_stride, parts_stride // 2 :: parts_stride]
    logits = 10.0 * np.eye(schema.num_parts, dtype=np.float32)[labels].transpose(2, 0, 1)
    return Maps(hm, paf, logits)


def bench_end_to_end(schema: Schema, name: str, backend: Backend, people_counts: tuple[int, ...],
                     images: int) -> list[dict]:
    rows_out = []
    image = np.random.default_rng(1).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
    for n in people_counts:
        truth_backend = TruthAfterNetwork(backend, scene_maps(schema, n, backend.info.parts_stride, seed=n))
        predictor = Predictor(truth_backend, input_size=SIZE, batch_size=1)
        predictor(image)  # warm-up (allocations, oneDNN primitives)
        predictor.timings.clear()
        found = [len(predictor(image).people) for _ in range(images)]
        ms = {stage: 1e3 * predictor.timings.get(stage, 0.0) / images for stage in STAGES}
        total = sum(ms.values())
        rows_out.append({"model": name, "people": n, "people_found": float(np.mean(found)), **ms, "total": total,
                         "decode_instances_share": (ms["decode"] + ms["instances"]) / total})
    return rows_out


def bench_batches(schema: Schema, name: str, backend: Backend, batches: tuple[int, ...], calls: int,
                  people: int = 5) -> list[dict]:
    """Images/s and ms per image at each batch size: the network alone (one backend call on a ready input batch) and
    end to end (`Predictor` on a list of that many images, its own batch_size, decoding `people` people each)."""
    rows_out = []
    image = np.random.default_rng(2).integers(0, 255, (SIZE, SIZE, 3), np.uint8)
    maps = scene_maps(schema, people, backend.info.parts_stride, seed=people)
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, SIZE, SIZE)).astype(np.float32)
        backend(x)  # warm-up at this shape
        start = time.perf_counter()
        for _ in range(calls):
            backend(x)
        network = (time.perf_counter() - start) / (calls * batch)
        predictor = Predictor(TruthAfterNetwork(backend, maps), input_size=SIZE, batch_size=batch)
        predictor([image] * batch)
        start = time.perf_counter()
        for _ in range(calls):
            predictor([image] * batch)
        e2e = (time.perf_counter() - start) / (calls * batch)
        rows_out.append({"model": name, "batch": batch, "network_ms": 1e3 * network, "network_images_s": 1 / network,
                         "end_to_end_ms": 1e3 * e2e, "end_to_end_images_s": 1 / e2e, "people": people})
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, no full-width model")
    parser.add_argument("--post-only", action="store_true", help="only part 1 (decode + part instances)")
    args = parser.parse_args()
    schema = Schema.pascal_person_part()
    images, repeats, e2e_images = (10, 5, 2) if args.quick else (30, 20, 5)

    post = bench_post(schema, (1, 5, 10, 20), images, repeats)
    print(f"decode + part instances, PASCAL schema, {SIZE}x{SIZE} input, 1 thread, {images} scenes x best of "
          f"{repeats}")
    print(f"{'people':>6} {'decode ms':>10} {'instances ms':>13} {'total ms':>9} {'p90 ms':>7} {'pixel acc':>10}")
    for r in post:
        print(f"{r['people']:>6} {r['decode_ms']:>10.3f} {r['instances_ms']:>13.3f} {r['total_ms']:>9.3f} "
              f"{r['total_p90_ms']:>7.3f} {r['instance_pixel_accuracy']:>10.3f}")
    meta = {"schema": "pascal_person_part", "input": SIZE, "stride": STRIDE, "threads": 1, "images": images,
            "repeats": repeats, "e2e_images": e2e_images, "numpy": np.__version__, "torch": torch.__version__,
            "opencv": cv2.__version__, "machine": platform.processor() or platform.machine(), "quick": args.quick}
    if args.post_only:
        write_json("predict_post.json", {"meta": meta, "post": post})
        return

    torch.manual_seed(0)
    models = [("joint w0.25 (stage seg, BN, 2 stages)",
               build_model("joint_vgg16", schema, width=0.25, stages=2, seg_head="stage", batch_norm=True))]
    if not args.quick:
        models.append(("joint w1.0 (fcn32, 2 stages)", build_model("joint_vgg16", schema, width=1.0, stages=2)))
    e2e, batched = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, model in models:
            info = model_info(model, schema, SIZE, name)
            torch_backend = TorchBackend(model, info)
            e2e += bench_end_to_end(schema, f"{name}, PyTorch", torch_backend, (1, 5, 20),
                                    e2e_images if "w1.0" not in name else max(2, e2e_images // 2))
            batched += bench_batches(schema, f"{name}, PyTorch", torch_backend, BATCHES, 1 if "w1.0" in name else 2)
            if "w0.25" in name:
                onnx = export_onnx(model, info, Path(tmp) / "model.onnx", verify=False)["path"]
                onnx_backend = OnnxBackend(onnx, threads=1)
                e2e += bench_end_to_end(schema, f"{name}, ONNX Runtime", onnx_backend, (1, 5, 20), e2e_images)
                batched += bench_batches(schema, f"{name}, ONNX Runtime", onnx_backend, BATCHES, 2)
    print(f"\nend to end, ms per image at {SIZE}x{SIZE}, 1 thread (decode/instances on ground-truth maps of N people)")
    header = f"{'model':<52} {'people':>6} " + " ".join(f"{s[:9]:>9}" for s in STAGES) + f" {'total':>8} {'post %':>7}"
    print(header)
    for r in e2e:
        print(f"{r['model']:<52} {r['people']:>6} " + " ".join(f"{r[s]:>9.2f}" for s in STAGES)
              + f" {r['total']:>8.1f} {100 * r['decode_instances_share']:>6.1f}%")

    print(f"\nbatch 1 vs {BATCHES[-1]}, {SIZE}x{SIZE}, 1 thread: network alone and end to end (5 people per image)")
    print(f"{'model':<52} {'batch':>5} {'net ms/img':>10} {'net img/s':>9} {'e2e ms/img':>10} {'e2e img/s':>9}")
    for r in batched:
        print(f"{r['model']:<52} {r['batch']:>5} {r['network_ms']:>10.1f} {r['network_images_s']:>9.2f} "
              f"{r['end_to_end_ms']:>10.1f} {r['end_to_end_images_s']:>9.2f}")

    write_json("predict.json", {"meta": meta, "post": post, "end_to_end": e2e, "batches": batched})


if __name__ == "__main__":
    main()
