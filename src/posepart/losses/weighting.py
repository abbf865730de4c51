"""How per-task losses combine into one total: a small pluggable interface and four implementations (fixed,
uncertainty, DWA, GradNorm).

A weighting is an `nn.Module` (so learnable weightings register their parameters with the `PosePartLoss` that holds
them — the optimizer must be given `loss_fn.parameters()` too). It receives only the tasks present in this step
(a model without a seg head produces no "seg" entry), so absent tasks contribute neither loss nor regulariser.
To add a scheme, subclass `TaskWeighting` and implement `terms`; the total is their sum (gradient aggregation,
`loss.aggregator`, combines the gradients of the terms instead).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping, Sequence

import torch
from torch import Tensor, nn


def weighted_total(terms: Mapping[str, Tensor]) -> Tensor:
    """The total to minimise: the sum of the tasks' weighted terms (`TaskWeighting.terms`)."""
    return torch.stack(list(terms.values())).sum()


class TaskWeighting(nn.Module, ABC):
    """Maps {task name: scalar loss} to each task's weighted term; the total to minimise is their sum."""

    @abstractmethod
    def terms(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        """Each task's weighted term. `present` (0-dim bool tensors, default all True) says which tasks this batch
        supervises at all: a task it lacks must add nothing, regulariser included."""

    def forward(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> Tensor:
        """The weighted total: the sum of `terms`."""
        if not losses:
            raise ValueError("no task losses to weight")
        return weighted_total(self.terms(losses, present))

    def _set_tasks(self, tasks: Sequence[str]) -> None:
        """For a weighting with per-task state: `tasks` (one slot each, in this order) and their index."""
        self.tasks = tuple(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be non-empty and distinct, got {self.tasks}")
        self._index = {t: i for i, t in enumerate(self.tasks)}

    def _slot(self, task: str) -> int:
        """The index of `task`'s state; a KeyError naming the known tasks for one this weighting was not built for."""
        try:
            return self._index[task]
        except KeyError:
            raise KeyError(f"task {task!r} has no {type(self).__name__} weight; known: "
                           f"{', '.join(self.tasks)}") from None

    def log_terms(self) -> dict[str, Tensor]:
        """Detached values worth logging (e.g. learned weights); none by default."""
        return {}


class FixedWeighting(TaskWeighting):
    """total = sum_i w_i * L_i with constant weights; tasks not in `weights` get `default`.

    `FixedWeighting()` is the seed paper's eq. 4, L = L_seg + L_heat + L_paf (all weights 1).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, *, default: float = 1.0) -> None:
        super().__init__()
        self.weights = dict(weights or {})
        self.default = float(default)

    def terms(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        # an unsupervised task's loss is already exactly 0 (masked), so `present` changes nothing here
        return {name: self.weights.get(name, self.default) * loss for name, loss in losses.items()}


class UncertaintyWeighting(TaskWeighting):
    """Homoscedastic-uncertainty weighting (Kendall, Gal & Cipolla, CVPR 2018) with learnable s_i = log sigma_i^2
    and a priority r_i per task (default 1):

        total = sum_i exp(-s_i) * L_i + r_i * s_i

    With r = 1 this is the common simplified form, the same for every task: for a Gaussian (MSE) task the paper's
    L / (2 sigma^2) + log sigma is half of it, for a softmax task L / sigma^2 + log sigma differs only in the
    regulariser's factor 1/2; we drop those constant factors so that all tasks are treated alike.
    For fixed L_i the optimum is s_i = log(L_i / r_i), where task i's gradient is weighted r_i / L_i. Why r: a constant
    factor on L_i is absorbed by s_i (it would change nothing at equilibrium), so the regulariser is the only place a
    task's priority can be set; `loss.weights` gives r under this weighting, as it gives the weights of the fixed sum.
    Parametrising log sigma^2 keeps the weight exp(-s) positive.
    """

    def __init__(self, tasks: Sequence[str], *, init: float | Mapping[str, float] = 0.0,
                 priorities: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self._set_tasks(tasks)
        start = [init.get(t, 0.0) if isinstance(init, Mapping) else float(init) for t in self.tasks]
        self.log_vars = nn.Parameter(torch.tensor(start, dtype=torch.float32))  # (T,) s_i = log sigma_i^2
        self.priorities = {t: float((priorities or {}).get(t, 1.0)) for t in self.tasks}
        if not all(r > 0 for r in self.priorities.values()):
            raise ValueError(f"task priorities must be positive, got {self.priorities}")

    def log_var(self, task: str) -> Tensor:
        """The learnable s of one task."""
        return self.log_vars[self._slot(task)]

    def terms(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        terms = {}
        for name, loss in losses.items():
            s = self.log_var(name)
            term = torch.exp(-s) * loss + self.priorities[name] * s
            if present is not None and name in present:
                # Without this, a task no sample of the batch labels still pulls s down by its regulariser; over a
                # run with that task masked, s -> -inf and exp(-s) * 0 becomes NaN. torch.where: no host sync.
                term = torch.where(present[name], term, torch.zeros_like(term))
            terms[name] = term
        return terms

    def log_terms(self) -> dict[str, Tensor]:
        return {f"log_var/{t}": self.log_vars[i].detach() for t, i in self._index.items()}


class DynamicWeightAverage(TaskWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019): task k's term is lambda_k * c_k * L_k with

        lambda_k = K softmax_k(w_k / T),  w_k = L_k(t-1) / L_k(t-2)

    where L_k(t) is the mean of task k's loss over period t (a task whose loss fell less in the last period weighs
    more) and c_k a fixed scale (`loss.weights`, default 1). The paper's period is an epoch; here it is `period`
    training steps, so short runs adapt too. Until two periods are complete (and for a task absent from either)
    w_k = 1. The state (running sums, the last two periods' means, the step count) lives in buffers: it is
    checkpointed and resumes exactly. Only training steps count (`self.training`), and only the steps whose batch
    supervises the task (`present`). No parameter, no host sync.
    """

    def __init__(self, tasks: Sequence[str], *, period: int = 100, temperature: float = 2.0,
                 scales: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self._set_tasks(tasks)
        if period < 1 or not temperature > 0:
            raise ValueError(f"need period >= 1 and temperature > 0, got {period}, {temperature}")
        self.period, self.temperature = int(period), float(temperature)
        self.scales = {t: float((scales or {}).get(t, 1.0)) for t in self.tasks}
        n = len(self.tasks)
        self.register_buffer("sums", torch.zeros(n))
        self.register_buffer("counts", torch.zeros(n))
        self.register_buffer("means", torch.full((2, n), -1.0))  # rows: periods t-2, t-1; -1 = not yet
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        self._used: Tensor | None = None  # the lambda of the last `terms` call

    def weights(self) -> Tensor:
        """(K,) the current lambda (sums to K)."""
        known = (self.means > 0).all(0)
        ratio = torch.where(known, self.means[1] / self.means[0].clamp(min=1e-12), torch.ones_like(self.means[1]))
        return len(self.tasks) * torch.softmax(ratio / self.temperature, 0)

    def terms(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        lam = self.weights()
        self._used = lam.detach()  # what `log_terms` reports: the weights of this step, not the next one's
        terms = {name: lam[self._slot(name)] * self.scales[name] * loss for name, loss in losses.items()}
        if self.training:
            self._record(losses, present)
        return terms

    @torch.no_grad()
    def _record(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None) -> None:
        for name, loss in losses.items():
            i = self._slot(name)
            here = present[name].float() if present is not None and name in present else torch.ones(())
            self.sums[i] += here.to(self.sums.device) * loss.detach().float()
            self.counts[i] += here.to(self.sums.device)
        self.steps += 1
        end = self.steps % self.period == 0  # a 0-dim tensor: no host sync
        mean = torch.where(self.counts > 0, self.sums / self.counts.clamp(min=1), self.means[1])
        self.means.copy_(torch.where(end, torch.stack([self.means[1], mean]), self.means))
        self.sums.masked_fill_(end, 0.0)
        self.counts.masked_fill_(end, 0.0)

    def log_terms(self) -> dict[str, Tensor]:
        lam = self._used if self._used is not None else self.weights()
        return {f"weight/{t}": lam[i].detach() for t, i in self._index.items()}


class GradNormWeighting(TaskWeighting):
    """GradNorm (Chen et al., ICML 2018): learnable task weights w_k (sum K) trained so that each task's gradient
    norm at the last shared layer, G_k = ||grad_W w_k L_k||, approaches mean(G) * r_k^alpha, where r_k is task k's
    relative inverse training rate (L_k / L_k(0), over its mean across tasks): a task that trains slower gets a
    larger gradient.

    The network is trained on sum_k w_k L_k with w detached (`terms`); the weights get only GradNorm's gradient,
    d/dw_k sum_j |G_j - target_j| = sign(G_k - target_k) G_k / w_k (the target held constant, as in the paper), which
    `balance` writes into `weights.grad`. After each optimizer step `renormalise` rescales
    w to sum K. L_k(0) is a task's loss at the first step whose batch supervises it (a buffer: resumes exactly);
    a task the batch lacks gets no gradient and no say in mean(G).
    """

    def __init__(self, tasks: Sequence[str], *, alpha: float = 1.5) -> None:
        super().__init__()
        self._set_tasks(tasks)
        self.alpha = float(alpha)
        self.weights = nn.Parameter(torch.ones(len(self.tasks)))
        self.register_buffer("initial", torch.full((len(self.tasks),), float("nan")))

    def terms(self, losses: Mapping[str, Tensor], present: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
        w = self.weights.detach()
        return {name: w[self._slot(name)] * loss for name, loss in losses.items()}

    def balance(self, tasks: Mapping[str, Tensor], present: Mapping[str, Tensor], shared: Sequence[Tensor]) -> None:
        """Accumulate GradNorm's gradient into `weights.grad`. tasks: each task's term w_k L_k (the network's graph,
        kept: `retain_graph`); present: whether the batch supervises it; shared: the last shared layer's
        parameters."""
        names = [name for name in tasks if bool(present.get(name, True))]  # one host sync per step
        if not names:
            return
        idx = torch.tensor([self._slot(n) for n in names], device=self.weights.device)
        norms = []
        for name in names:
            grads = [g for g in torch.autograd.grad(tasks[name], list(shared), retain_graph=True, allow_unused=True)
                     if g is not None]
            if not grads:  # before: torch.sqrt of the int 0, a TypeError
                raise ValueError(f"GradNorm: task {name!r} sends no gradient through the shared layer's parameters: "
                                 f"give balance() a layer every task's loss depends on")
            norms.append(torch.sqrt(sum((g.float() ** 2).sum() for g in grads)))
        g = torch.stack(norms).detach()  # (n,) G_k at the current weights
        w = self.weights.detach()[idx]
        losses = torch.stack([tasks[n].detach().float() for n in names]) / w  # raw L_k
        first = torch.isnan(self.initial[idx])
        self.initial[idx] = torch.where(first, losses, self.initial[idx])
        ratio = losses / self.initial[idx].clamp(min=1e-12)
        target = g.mean() * (ratio / ratio.mean()) ** self.alpha
        grad = torch.zeros_like(self.weights)
        grad[idx] = torch.sign(g - target) * g / w.clamp(min=1e-12)
        self.weights.grad = grad if self.weights.grad is None else self.weights.grad + grad

    @torch.no_grad()
    def renormalise(self) -> None:
        """w <- K w / sum(w), kept positive (after every optimizer step)."""
        self.weights.clamp_(min=1e-3)
        self.weights.mul_(len(self.tasks) / self.weights.sum())

    def log_terms(self) -> dict[str, Tensor]:
        return {f"weight/{t}": self.weights[i].detach() for t, i in self._index.items()}
