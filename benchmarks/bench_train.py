"""Training-step speed and model FLOPs utilisation (MFU) of the joint model.

MFU = achieved FLOP/s / peak FLOP/s. Achieved: the FLOPs of one training step (forward + backward convolutions and
matmuls, counted by torch's FlopCounterMode on the real model and loss, not estimated) times steps per second. Peak:
on a GPU the vendor's dense figure for the precision (`GPU_PEAK`, by device name); on a CPU no spec sheet describes a
virtual machine, so the reference is the fp32 GEMM throughput measured here on the same threads (4096^2 matmul) and
the figure is labelled "of measured GEMM". The batch is real: synthetic images through the training Mapper.

Run (CPU, the demo's recipe): .venv/bin/python benchmarks/bench_train.py --config demo_cpu_joint.yaml --threads 2
                             (and with --bf16)
    (CPU, a model shape):    .venv/bin/python benchmarks/bench_train.py --size 128 --stages 1 --seg-stride 4 --threads 1
                             (the flags' model refines its stride-4 part logits as FCN does, `--refine fcn`, as the
                             demo's did when BENCHMARKS.md's rows were measured; the shipped configs say `deep`)
    (CPU, the paper model):  .venv/bin/python benchmarks/bench_train.py --width 1 --size 368 --batch 2 --steps 2
    (GPU, issue 6 setting):  python benchmarks/bench_train.py --device cuda --width 1 --size 368 --batch 32 --bf16
                             (and the same with --compile)
With --config the model, loss and optimiser are the ones `posepart train` builds from that config (pose stride,
refinements, heatmap loss, task weighting, `optim.name`), not a shape given by flags.
Writes benchmarks/results/train_<device>_w<width>_<size>[_bf16][_compiled][_<threads>t].json (with --config:
train_<device>_<config>_<size>...).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import torch
from common import write_json
from torch.utils.data import default_collate
from torch.utils.flop_counter import FlopCounterMode

from posepart.data.augment import AugmentConfig
from posepart.data.format import PosePartDataset
from posepart.data.synth import write_synth
from posepart.engine.config import load_config
from posepart.engine.module import PosePartModule
from posepart.heads import HeadMeta
from posepart.losses import PosePartLoss, UncertaintyWeighting
from posepart.models import build_model, channels_last_
from posepart.schema import Schema
from posepart.targets.mapper import MappedDataset, Mapper, TargetConfig

# Dense peak FLOP/s by GPU name fragment and precision (vendor data sheets, SXM parts, no sparsity).
GPU_PEAK = {"H100": {"bf16": 989e12, "fp32": 67e12}, "H200": {"bf16": 989e12, "fp32": 67e12},
            "A100": {"bf16": 312e12, "fp32": 19.5e12}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def gemm_flops(device: torch.device, dtype: torch.dtype, n: int = 4096, repeats: int = 5) -> float:
    """Measured matmul FLOP/s: the practical peak of this device, thread count and dtype."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def device_peak(device: torch.device, precision: str) -> tuple[str, float, str]:
    """(device name, peak FLOP/s, what that peak is): the vendor's dense figure on a GPU, the measured fp32 GEMM rate
    on this CPU's threads otherwise."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((p[precision] for key, p in GPU_PEAK.items() if key in name), float("nan"))
        return name, peak, f"{name} dense {precision} peak"
    name = platform.processor() or "cpu"
    return name, gemm_flops(device, torch.float32), f"measured fp32 GEMM on {torch.get_num_threads()} threads"


def add_model_arguments(parser: argparse.ArgumentParser, *, size: int) -> None:
    """The options bench_train and bench_network share: device, threads, precision, layout, model shape, profile."""
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CPU intra-op threads (default: torch's)")
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--size", type=int, default=size)
    parser.add_argument("--stages", type=int, default=2)
    parser.add_argument("--seg-head", default="stage", help="stage, or fcn32/fcn16/fcn8")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (inductor)")
    parser.add_argument("--profile", type=Path, metavar="TRACE.json",
                        help="also profile 3 calls with torch.profiler: print the top operators, write a Chrome trace")


def check_device(parser: argparse.ArgumentParser, args: argparse.Namespace) -> torch.device:
    """The --device asked for, or the parser's one-line error where this machine has none such (a GPU command run
    on a CPU machine failed deep inside `model.to`)."""
    try:
        device = torch.device(args.device)
    except RuntimeError as err:
        parser.error(f"--device {args.device}: {err}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: this machine has no CUDA GPU (torch {torch.__version__})")
    return device


def write_result(stem: str, args: argparse.Namespace, data: dict[str, Any]) -> None:
    """benchmarks/results/<stem>[_bf16][_compiled][_<threads>t].json: the options that change the figure are in the
    name, so a compiled run does not overwrite the eager one."""
    tags = ("_bf16" if args.bf16 else "") + ("_compiled" if args.compile else "")
    write_json(f"{stem}{tags}{f'_{args.threads}t' if args.threads is not None else ''}.json", data)


def real_batch(batch: int, size: int, folder: Path, head: HeadMeta | None = None) -> dict[str, torch.Tensor]:
    """`batch` synthetic images mapped exactly as in training (augmentation, targets, masks) for the model whose
    outputs `head` describes (None: a stride-8 pose head)."""
    dataset = PosePartDataset.open(write_synth(folder, n=batch, seed=0, size=size))
    mapped = MappedDataset(Mapper(dataset, TargetConfig(input_size=size, head=head), AugmentConfig()), seed=0)
    return default_collate([mapped[i] for i in range(batch)])


def profile(step: Callable[[], None], device: torch.device, trace: Path, top: int = 12) -> dict[str, Any]:
    """torch.profiler over 3 steps: the operators taking the most self time (`profile_top_ops`), and the same split by
    input shapes (`profile_top_shapes`: which convolution is slow), printed; writes a Chrome trace."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch_profile(activities=activities, record_shapes=True) as prof:
        for _ in range(3):
            step()
        sync(device)
    trace.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace))
    # torch >= 2.4 calls the GPU time `device` time; the `cuda` names are gone from 2.11.
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"

    def top_rows(by_shape: bool) -> list[dict[str, Any]]:
        # Operators only: on a GPU each kernel is listed beside the operator that launched it, whose self device
        # time already counts it (the first GPU profile, 2026-12-04, summed both and halved every share).
        events = sorted((e for e in prof.key_averages(group_by_input_shape=by_shape)
                         if e.device_type == DeviceType.CPU), key=lambda e: getattr(e, key), reverse=True)
        total = sum(getattr(e, key) for e in events)
        return [{"op": e.key, **({"input_shapes": e.input_shapes} if by_shape else {}),
                 "self_ms_per_step": getattr(e, key) / 3e3, "share": getattr(e, key) / total,
                 "calls_per_step": e.count / 3} for e in events[:top]]

    result = {"profile_top_ops": top_rows(False), "profile_top_shapes": top_rows(True)}
    print(f"top operators by self {'GPU' if device.type == 'cuda' else 'CPU'} time (trace: {trace}):")
    for name, rows in result.items():
        print(f"  {name}:")
        for r in rows:
            shapes = f"  {str(r['input_shapes'])[:80]}" if "input_shapes" in r else ""
            print(f"    {r['op']:<36} {r['self_ms_per_step']:8.1f} ms/step {100 * r['share']:5.1f} %  "
                  f"{r['calls_per_step']:5.0f} calls/step{shapes}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, size=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seg-stride", type=int, default=8, help="with --seg-head stage: 8, 4 or 2")
    parser.add_argument("--refine", default="fcn", choices=("fcn", "deep"),
                        help="how a --seg-stride finer than 8 refines the part logits (model.refine; default: fcn, the "
                             "model of BENCHMARKS.md's rows)")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up steps)")
    parser.add_argument("--config", default=None, metavar="NAME_OR_PATH",
                        help="a training config (e.g. demo_cpu_joint.yaml): its model and loss, as `posepart train` "
                             "builds them, instead of --width/--stages/--seg-head/--seg-stride")
    args = parser.parse_args()
    shape_flags = ("width", "stages", "seg_head", "seg_stride", "refine")
    if args.config is not None and any(getattr(args, k) != parser.get_default(k) for k in shape_flags):
        parser.error("--config sets the model: drop --width, --stages, --seg-head, --seg-stride and --refine")

    device = check_device(parser, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    schema = Schema.pascal_person_part()
    if args.config is not None:  # the recipe's own model and loss (pose stride, refinements, focal loss, weights)
        recipe = PosePartModule(load_config(args.config), schema, pretrained=False)
        model, loss_fn = recipe.model.to(device), recipe.loss_fn.to(device)
        m = recipe.config.model
        args.width, args.stages, args.seg_head, args.seg_stride, args.refine = (m.width, m.stages, m.seg_head,
                                                                                m.seg_stride, m.refine)
        if args.size == parser.get_default("size"):
            args.size = recipe.config.data.input_size
    else:
        model = build_model("joint_vgg16", schema, width=args.width, stages=args.stages, seg_head=args.seg_head,
                            seg_stride=args.seg_stride, refine=args.refine, batch_norm=True,
                            fc_width=max(int(4096 * args.width), 64)).to(device)
        loss_fn = PosePartLoss(schema, weighting=UncertaintyWeighting(["seg", "heatmap", "paf"]),
                               check_labels=False).to(device)
    with tempfile.TemporaryDirectory() as tmp:
        batch = real_batch(args.batch, args.size, Path(tmp), head=model.meta)
    batch = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    if args.channels_last:
        channels_last_(model)  # as the engine trains it
    net = torch.compile(model) if args.compile else model
    if args.config is not None:  # the recipe's optimiser too (`optim.name: muon` orthogonalises every kernel)
        optimizer = recipe.make_optimizer()
    else:
        params = list(model.parameters()) + list(loss_fn.parameters())
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    image = batch["image"].contiguous(memory_format=memory)

    def step(module: torch.nn.Module = net) -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            output = module(image)
            loss = loss_fn(output, batch).total
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    with FlopCounterMode(display=False) as counter:
        step(model)  # eager: the counter sees every operator
    flops_per_step = float(counter.get_total_flops())
    step()
    step()  # (with --compile, the first call compiles)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    seconds = (time.perf_counter() - t0) / args.steps
    achieved = flops_per_step / seconds
    precision = "bf16" if args.bf16 else "fp32"
    name, peak, peak_label = device_peak(device, precision)
    row = {"device": name, "threads": torch.get_num_threads(), "width": args.width, "size": args.size,
           "batch": args.batch, "stages": args.stages, "seg_head": args.seg_head, "seg_stride": args.seg_stride,
           "refine": args.refine, "config": args.config, "pose_stride": model.meta.pose_stride, "precision": precision,
           "optimizer": recipe.config.optim.name if args.config is not None else "adamw",
           "compile": args.compile, "channels_last": args.channels_last,
           "step_ms": 1e3 * seconds, "images_per_s": args.batch / seconds,
           "gflop_per_step": flops_per_step / 1e9, "achieved_tflops": achieved / 1e12, "peak_tflops": peak / 1e12,
           "peak": peak_label, "mfu": achieved / peak, "torch": torch.__version__}
    print(f"{args.config or 'joint_vgg16'} w{args.width} {args.size}px batch {args.batch} {precision} on {name}: "
          f"{row['step_ms']:.0f} ms/step, {row['images_per_s']:.1f} images/s, {row['gflop_per_step']:.0f} GFLOP/step, "
          f"{row['achieved_tflops'] * 1e3:.0f} GFLOP/s = {100 * row['mfu']:.0f}% of {peak_label} "
          f"({row['peak_tflops'] * 1e3:.0f} GFLOP/s)")
    if args.profile is not None:
        row.update(profile(step, device, args.profile))
    shape = f"w{args.width:g}" if args.config is None else Path(args.config).stem
    write_result(f"train_{device.type}_{shape}_{args.size}", args, row)


if __name__ == "__main__":
    main()
