"""Inference forward of the joint model against its FLOP floor, at batch 1 and 32 (issue 6: within 1.5x at batch 32).

FLOP floor = the forward's FLOPs (convolutions and matmuls, counted by torch's FlopCounterMode on the real model, not
estimated) / the device's peak: on a GPU the vendor's dense figure for the precision (`bench_train.GPU_PEAK`), on a
CPU the fp32 GEMM throughput measured here on the same threads (4096^2 matmul; no data sheet describes a virtual
machine). "x floor" = measured ms per image / floor ms per image; 1.0 would be every cycle spent at GEMM speed.
The network runs as `Predictor` runs it (eval mode, inference_mode, BatchNorm folded into the convolutions,
channels_last weights and inputs), plus what a GPU wants: bf16 autocast with --bf16, torch.compile with --compile.

Run (CPU):  taskset -c 0 .venv/bin/python benchmarks/bench_network.py --threads 1
            add --width 1 --seg-head fcn32 --calls 2 for the paper-width model (1.3 s per image on one core)
     (GPU): python benchmarks/bench_network.py --device cuda --width 1 --seg-head fcn32 --bf16 --compile
     --profile TRACE.json: also profile 3 forwards at the first batch size (top operators, also by input
                           shapes; Chrome trace).
Writes benchmarks/results/network_<device>_w<width>[_bf16][_compiled][_<threads>t].json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))
from bench_train import add_model_arguments, check_device, device_peak, profile, sync, write_result  # noqa: E402

from posepart.models import build_model, channels_last_, fold_batch_norm  # noqa: E402
from posepart.schema import Schema  # noqa: E402


def forward_flops(model: torch.nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one forward on x (convolutions, matmuls), counted by torch."""
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        model(x)
    return float(counter.get_total_flops())


def seconds_per_call(run: Callable[[], None], device: torch.device, calls: int) -> float:
    """Fastest of `calls` calls after two warm-up calls (oneDNN primitives, compilation, autotuning): the fastest,
    because this virtual machine's slow spells (up to +60 %) would otherwise decide the figure."""
    run()
    run()
    best = float("inf")
    for _ in range(calls):
        sync(device)
        t0 = time.perf_counter()
        run()
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_model_arguments(parser, size=368)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--calls", type=int, default=5, help="timed calls per batch size (the fastest counts)")
    parser.add_argument("--no-fold-bn", dest="fold_bn", action="store_false", help="keep BatchNorm layers unfolded")
    args = parser.parse_args()

    device = check_device(parser, args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    schema = Schema.pascal_person_part()
    model = build_model("joint_vgg16", schema, width=args.width, stages=args.stages, seg_head=args.seg_head,
                        batch_norm=args.seg_head == "stage")  # as bench_predict builds its two models
    memory = torch.channels_last if args.channels_last else torch.contiguous_format
    model = (fold_batch_norm(model.eval()) if args.fold_bn else model.eval()).to(device)
    if args.channels_last:
        channels_last_(model)  # as `TorchBackend` runs it
    net = torch.compile(model) if args.compile else model
    precision = "bf16" if args.bf16 else "fp32"
    name, peak, peak_label = device_peak(device, precision)

    rows, calls = [], {}
    for batch in args.batches:
        x = torch.randn(batch, 3, args.size, args.size, device=device).contiguous(memory_format=memory)

        def forward(x: torch.Tensor = x) -> None:
            with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
                net(x)

        calls[batch] = forward
        flops = forward_flops(model, x) / batch
        seconds = seconds_per_call(forward, device, args.calls) / batch
        floor = flops / peak
        rows.append({"batch": batch, "ms_per_image": 1e3 * seconds, "images_per_s": 1 / seconds,
                     "gflop_per_image": flops / 1e9, "floor_ms_per_image": 1e3 * floor, "x_floor": seconds / floor})
    meta = {"device": name, "threads": torch.get_num_threads(), "width": args.width, "size": args.size,
            "stages": args.stages, "seg_head": args.seg_head, "precision": precision, "compile": args.compile,
            "channels_last": args.channels_last, "fold_bn": args.fold_bn, "peak": peak_label,
            "peak_tflops": peak / 1e12, "calls": args.calls, "torch": torch.__version__}
    print(f"joint_vgg16 w{args.width:g} ({args.seg_head} seg head, {args.stages} stages) forward at {args.size}px, "
          f"{precision}{', compiled' if args.compile else ''}, on {name}; floor at {peak / 1e9:.0f} GFLOP/s "
          f"({peak_label})")
    print(f"{'batch':>5} {'ms/image':>9} {'images/s':>9} {'GFLOP/image':>11} {'floor ms':>9} {'x floor':>8}")
    for r in rows:
        print(f"{r['batch']:>5} {r['ms_per_image']:>9.2f} {r['images_per_s']:>9.1f} {r['gflop_per_image']:>11.2f} "
              f"{r['floor_ms_per_image']:>9.2f} {r['x_floor']:>8.2f}")
    result = {"meta": meta, "rows": rows}
    if args.profile is not None:
        result.update(profile(calls[args.batches[0]], device, args.profile))
    write_result(f"network_{device.type}_w{args.width:g}", args, result)


if __name__ == "__main__":
    main()
