"""The optimiser and LR schedule of a run (`optim.*`): SGD, AdamW, or Muon on the conv kernels and AdamW elsewhere.

Why Muon: on the demo's recipe it is the first change in twelve rounds of ablation worth about what twice the images
are (docs/training.md, "A twelfth round"). Muon (Jordan et al. 2024) orthogonalises each weight matrix's momentum
before the step, so every direction of it moves at the same rate instead of the few that dominate the gradient;
Keller Jordan's CIFAR-10 speedruns use it on conv kernels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from posepart.engine.settings import OptimConfig
from posepart.errors import PosepartWarning

# Keller Jordan's quintic Newton-Schulz coefficients (as torch.optim.Muon's defaults): a steep slope at 0, so that in
# 5 steps singular values from about 1/300 of the matrix norm up land in about [0.7, 1.2] (tested); Muon does not
# need exact orthogonality.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalise(matrix: Tensor, steps: int = 5) -> Tensor:
    """About U V^T of the SVD U S V^T of a 2-D `matrix`, by a Newton-Schulz iteration in float32 (on the CPU the
    bfloat16 of torch.optim.Muon's is emulated where AVX512-BF16 is missing, and the matrices here are small).

    Run on the Gram matrix: each step X <- p(X X^T) X multiplies X on the left by a polynomial of its Gram matrix,
    so X_k = Q_k X_0 with Q_k a polynomial of G = X_0 X_0^T, and X_k X_k^T = Q_k G Q_k. Iterating Q and the m x m
    Gram matrix (m the short side) costs two m x m x n products in all instead of two per step: the same result
    (to float32 rounding) in about half the time on the demo's kernels (docs/training.md, seventeenth round)."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.float()
    tall = x.shape[0] > x.shape[1]
    if tall:  # iterate on the wide side: the Gram matrix is the smaller one
        x = x.T
    x = x / (x.norm() + 1e-7)  # spectral norm <= Frobenius norm <= 1: inside the iteration's basin
    gram = x @ x.T  # (m, m)
    eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
    q = eye
    for _ in range(steps):
        poly = torch.addmm(a * eye + b * gram, gram, gram, alpha=c)  # p(G_k) = a I + b G_k + c G_k^2
        q = poly @ q
        gram = poly @ gram @ poly  # G_{k+1} = X_{k+1} X_{k+1}^T = p(G_k) G_k p(G_k)
    x = q @ x
    return x.T if tall else x


class MuonAdamW(torch.optim.AdamW):
    """AdamW, except on the parameter groups marked `muon=True`: there Muon (Nesterov momentum, orthogonalised).

    Written here because torch.optim.Muon takes 2-D parameters only: a conv kernel (out, in, kh, kw) is
    orthogonalised as its (out, in * kh * kw) matrix, as Keller Jordan's CIFAR-10 speedruns do. Its update is scaled
    by 0.2 * sqrt(max(out, in * kh * kw)) to AdamW's update RMS (Moonshot's rule, Liu et al. 2025), so one `lr` and
    one weight decay serve both kinds of group. One optimiser, not two: Lightning's automatic optimisation, the LR
    schedule and the checkpoint's optimiser state see one object.
    """

    def __init__(self, params: Iterable[dict[str, Any]], *, lr: float, weight_decay: float, momentum: float = 0.95,
                 ns_steps: int = 5) -> None:
        super().__init__(params, lr=lr, weight_decay=weight_decay)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"muon momentum must be in [0, 1), got {momentum}")
        for group in self.param_groups:
            group.setdefault("muon", False)
            group.setdefault("muon_momentum", momentum)
            group.setdefault("ns_steps", ns_steps)
            if group["muon"] and any(p.ndim < 2 for p in group["params"]):
                raise ValueError("muon groups hold matrices or conv kernels (2-D or more), not biases or norms")

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        self.param_groups = [g for g in groups if not g["muon"]]  # AdamW's own step, on its groups only
        try:
            super().step()
        finally:
            self.param_groups = groups
        for group in groups:
            if group["muon"]:
                self._muon_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        lr, decay, mu = group["lr"], group["weight_decay"], group["muon_momentum"]
        for param in group["params"]:
            if param.grad is None:
                continue
            state = self.state[param]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                state["step"] = torch.tensor(0.0)  # as AdamW's: its load_state_dict reads every state's "step"
            state["step"] += 1
            buffer = state["momentum_buffer"]
            buffer.lerp_(param.grad, 1.0 - mu)
            update = param.grad.lerp(buffer, mu)  # Nesterov: the gradient pulled towards the new momentum
            matrix = update.reshape(update.shape[0], -1)
            scale = 0.2 * math.sqrt(max(matrix.shape))
            param.mul_(1.0 - lr * decay)
            param.add_(orthogonalise(matrix, group["ns_steps"]).view(param.shape).to(param.dtype), alpha=-lr * scale)


def build_optimizer(config: OptimConfig, model: nn.Module, extra_groups: list[dict[str, Any]]) -> torch.optim.Optimizer:
    """`config.name`'s optimiser over `model`'s trainable parameters, plus `extra_groups` (e.g. the task weights).

    muon: every kernel (conv, transposed conv: 2-D or more) under Muon, the output convs included: Keller Jordan
    keeps a language model's output layer on AdamW, but here the outputs on Muon gave the same AP and +0.012 mean IU
    over two seeds (docs/training.md, twelfth round); biases and norms under AdamW."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.name == "muon":
        groups = [{"params": [p for p in trainable if p.ndim >= 2], "muon": True},  # conv kernels
                  {"params": [p for p in trainable if p.ndim < 2]}, *extra_groups]  # biases, norms
        return MuonAdamW([g for g in groups if g["params"]], lr=config.lr, weight_decay=config.weight_decay,
                         momentum=config.muon_momentum)
    groups = [{"params": trainable}, *extra_groups]
    if config.name == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


class CosineToZero(torch.optim.lr_scheduler.CosineAnnealingLR):
    """torch's cosine schedule, held at its end (`eta_min`, 0) past `T_max`, as LinearLR holds its end factor: torch's
    climbs back up there, so a run resumed with a larger max_epochs (which keeps the planned length, restored with
    the state) restarted warm. Up to T_max it is torch's own, number for number, and its state is torch's."""

    def get_lr(self) -> list[float]:
        if self.last_epoch >= self.T_max:
            return [self.eta_min for _ in self.optimizer.param_groups]
        return super().get_lr()

    def _get_closed_form_lr(self) -> list[float]:  # step(epoch) (SequentialLR's milestone) takes this path
        if self.last_epoch >= self.T_max:
            return [self.eta_min for _ in self.base_lrs]
        return super()._get_closed_form_lr()


def build_schedule(config: OptimConfig, optimizer: torch.optim.Optimizer,
                   planned_steps: Callable[[], int]) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up over `warmup_steps`, then `config.schedule` (cosine or linear: to 0 over the rest of
    `planned_steps()`, asked only then; a warning where the warm-up does not end before the plan does)."""
    sched = torch.optim.lr_scheduler
    warmup = max(config.warmup_steps, 0)
    if config.schedule in ("cosine", "linear"):
        planned = planned_steps()
        if warmup >= planned:  # before: a short run (a first try on a few images) learnt at a sliver of the LR, unsaid
            rank_zero_warn(f"optim.warmup_steps={warmup} is not below the {planned} steps this run plans: its "
                           f"learning rate climbs for the whole run, never reaching optim.lr={config.lr:g} nor "
                           f"decaying; warm up for fewer steps (--set optim.warmup_steps=N) or train for more",
                           category=PosepartWarning)
    if config.schedule == "cosine":
        main: sched.LRScheduler = CosineToZero(optimizer, T_max=max(planned - warmup, 1))
    elif config.schedule == "linear":
        main = sched.LinearLR(optimizer, start_factor=1.0, end_factor=0.0, total_iters=max(planned - warmup, 1))
    elif config.schedule == "step":
        main = sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
    else:
        main = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if warmup:
        ramp = sched.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), end_factor=1.0, total_iters=warmup)
        main = sched.SequentialLR(optimizer, [ramp, main], milestones=[warmup])
    return main
