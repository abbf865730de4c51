"""How per-task losses combine into one total: a small pluggable interface and two implementations.

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
        return torch.stack(list(self.terms(losses, present).values())).sum()

    def log_terms(self) -> dict[str, Tensor]:
        """Detached values worth logging (e.g. learned weights); none by default."""
        return {}


class FixedWeighting(TaskWeighting):
    """total = sum_i w_i * L_i with constant weights; tasks not in `weights` get `default`.

    `FixedWeighting()` is the seed paper's eq. 4, L = L_seg + L_heat + L_paf (all weights 1).
    """

    def __init__(self, weights: Mapping[str, float] | None = None, default: float = 1.0) -> None:
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

    def __init__(self, tasks: Sequence[str], init: float | Mapping[str, float] = 0.0,
                 priorities: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.tasks = tuple(tasks)
        if not self.tasks or len(set(self.tasks)) != len(self.tasks):
            raise ValueError(f"tasks must be non-empty and distinct, got {self.tasks}")
        start = [init.get(t, 0.0) if isinstance(init, Mapping) else float(init) for t in self.tasks]
        self.log_vars = nn.Parameter(torch.tensor(start, dtype=torch.float32))  # (T,) s_i = log sigma_i^2
        self._index = {t: i for i, t in enumerate(self.tasks)}
        self.priorities = {t: float((priorities or {}).get(t, 1.0)) for t in self.tasks}
        if not all(r > 0 for r in self.priorities.values()):
            raise ValueError(f"task priorities must be positive, got {self.priorities}")

    def log_var(self, task: str) -> Tensor:
        """The learnable s of one task."""
        try:
            return self.log_vars[self._index[task]]
        except KeyError:
            raise KeyError(f"task {task!r} has no uncertainty parameter; known: {', '.join(self.tasks)}") from None

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
