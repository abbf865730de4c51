"""Parameter and FLOP counts, measured (FlopCounterMode), not estimated by hand."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from posepart.heads import INPUT_SIZE


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (frozen ones too unless `trainable_only`)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_flops(model: nn.Module, input_hw: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> float:
    """FLOPs of one eval-mode forward pass on a (1, 3, H, W) input, counted by torch's FlopCounterMode.

    FlopCounterMode counts a multiply-add as 2 FLOPs and covers matmul/conv/transposed-conv (forward); elementwise
    ops, pooling and interpolation are not counted (they are a small fraction for these conv nets).
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros(1, 3, int(input_hw[0]), int(input_hw[1]), device=device, dtype=dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return float(counter.get_total_flops())


def complexity_table(input_hw: tuple[int, int] = (INPUT_SIZE, INPUT_SIZE)) -> str:
    """Markdown table of parameters and GFLOPs of every registered model on PASCAL-Person-Part, at two widths.

    python -c "from posepart.models.complexity import complexity_table; print(complexity_table())"   (~25 s on CPU)
    """
    from ..schema import Schema
    from .build import MODELS

    schema = Schema.pascal_person_part()
    configs: list[tuple[str, dict[str, object]]] = [(name, {}) for name in MODELS]
    configs.insert(configs.index(("joint_vgg16", {})) + 1, ("joint_vgg16", {"seg_head": "stage"}))
    rows = [f"| model | options | width | fc_width | params (M) | GFLOPs @ {input_hw[0]}x{input_hw[1]} |",
            "|---|---|---|---|---|---|"]
    for width, fc_width in ((1.0, 4096), (0.25, 4096), (0.25, 1024)):
        for name, extra in configs:
            kwargs: dict[str, object] = {"width": width, **extra}
            uses_fc = not name.startswith("paf") and extra.get("seg_head") != "stage"
            if uses_fc:
                kwargs["fc_width"] = fc_width
            elif fc_width != 4096:
                continue  # no FCN head: same numbers as the row above
            model = MODELS[name](schema, **kwargs)
            options = ", ".join(f"{k}={v}" for k, v in extra.items()) or "defaults"
            rows.append(f"| {name} | {options} | {width:g} | {fc_width if uses_fc else '-'} | "
                        f"{count_parameters(model) / 1e6:.2f} | {count_flops(model, input_hw) / 1e9:.1f} |")
            del model
    return "\n".join(rows)
