"""Gradient aggregation over the task losses (`loss.aggregator`): torchjd's Jacobian descent, correct for batches
that lack a task.

With `sum` a step follows the gradient of the total, the sum of the task terms. An aggregator takes instead the
Jacobian of the task terms with respect to the model's parameters, one row per task (`torchjd.autojac.backward`),
and combines the rows (`torchjd.aggregation`): UPGrad projects every row onto the dual cone of all rows and averages,
so the update conflicts with no task; PCGrad removes pairwise conflicts; MGDA takes the min-norm point of the rows'
convex hull. A task no sample of the batch labels is left out: its masked loss gives a zero row, which MGDA would
return as the min-norm update and which only dilutes UPGrad's average. The learnable task weights of uncertainty
weighting are not model parameters: they get the plain gradient of the total, as with `sum`.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import torch
from torch import Tensor

from posepart.losses import LossResult

AGGREGATORS = {"upgrad": "UPGrad", "pcgrad": "PCGrad", "mgda": "MGDA"}  # `loss.aggregator` -> torchjd class


@functools.cache
def make_aggregator(name: str) -> Any:
    """The torchjd aggregator of a `loss.aggregator` name (stateless: one instance serves every step)."""
    from torchjd import aggregation

    return getattr(aggregation, AGGREGATORS[name])()


def aggregate_task_gradients(result: LossResult, name: str, model_params: Sequence[Tensor],
                             weighting_params: Sequence[Tensor] = ()) -> list[str]:
    """Accumulate the step's gradient into `.grad`: the aggregated task rows for `model_params`, the gradient of the
    total for `weighting_params`. Returns the tasks that gave a row (with one, its gradient is the step)."""
    if weighting_params:
        grads = torch.autograd.grad(result.total, list(weighting_params), retain_graph=True, allow_unused=True)
        for param, grad in zip(weighting_params, grads):
            if grad is not None:
                param.grad = grad if param.grad is None else param.grad + grad
    tasks = [task for task in result.tasks if bool(result.present.get(task, True))]  # one host sync per step
    if len(tasks) <= 1:
        torch.autograd.backward(result.tasks[tasks[0]] if tasks else result.total, inputs=list(model_params))
        return tasks
    from torchjd.autojac import backward, jac_to_grad

    # one row at a time (parallel_chunk_size=1): torch's batched (vmap) backward fails on bf16-autocast graphs
    # ("expected scalar type BFloat16 but found Float"), and on a CPU it saves little
    backward([result.tasks[task] for task in tasks], inputs=list(model_params), parallel_chunk_size=1)
    jac_to_grad(list(model_params), make_aggregator(name))
    return tasks
