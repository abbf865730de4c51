"""The optimisers of `optim.name`: Muon's orthogonalisation, its step by hand, AdamW's groups untouched, resume."""

from __future__ import annotations

import io
import math
import warnings

import pytest
import torch
from torch import nn

from posepart.engine.config import ConfigError, load_config
from posepart.engine.optim import NS_COEFFICIENTS, MuonAdamW, build_optimizer, build_schedule, orthogonalise
from posepart.engine.settings import OptimConfig
from posepart.errors import PosepartWarning
from posepart.models import build_model
from posepart.schema import Schema


def newton_schulz_scalar(s: float, steps: int = 5) -> float:
    """What the iteration does to one singular value s: s -> a s + b s^3 + c s^5, `steps` times."""
    a, b, c = NS_COEFFICIENTS
    for _ in range(steps):
        s = a * s + b * s ** 3 + c * s ** 5
    return s


def orthonormal_rows(rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(cols, cols, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q[:rows].float()


def test_orthogonalise_keeps_singular_vectors_and_evens_the_values():
    """A matrix U diag(s) V^T comes out as U diag(s') V^T, each s' the scalar iteration of s / ||s||: the values
    spread over three decades come near 1, all but the two smallest (under 1/300 of the norm) into [0.65, 1.25].
    Within 1e-3: the Gram form squares the spread in float32 (about 5e-4 off here; the bfloat16 iteration of
    torch.optim.Muon is 7e-2 off)."""
    u, v = orthonormal_rows(16, 16, seed=1).T, orthonormal_rows(16, 48, seed=2)
    s = torch.logspace(-2, 1, 16, dtype=torch.float64)
    out = orthogonalise((u.double() @ torch.diag(s) @ v.double()).float()).double()
    inner = u.double().T @ out @ v.double().T  # diag(s') when the singular vectors are kept
    off_diagonal = inner - torch.diag(torch.diagonal(inner))
    assert off_diagonal.abs().max() < 1e-3
    expected = torch.tensor([newton_schulz_scalar(float(x)) for x in s / s.norm()], dtype=torch.float64)
    torch.testing.assert_close(torch.diagonal(inner), expected, rtol=0, atol=1e-3)
    assert torch.all(expected[2:] > 0.65) and torch.all(expected < 1.25) and torch.all(expected > 0.3)
    # the iteration is scale-free and transposes with its input
    matrix = torch.randn(12, 40, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(orthogonalise(7.0 * matrix), orthogonalise(matrix), rtol=1e-4, atol=1e-5)
    assert torch.equal(orthogonalise(matrix.T), orthogonalise(matrix).T)


def newton_schulz_direct(matrix: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """The textbook iteration X <- a X + (b X X^T + c (X X^T)^2) X on the wide side, in float64: the reference."""
    a, b, c = NS_COEFFICIENTS
    x = matrix.double()
    x = (x.T if x.shape[0] > x.shape[1] else x) / x.norm()
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if matrix.shape[0] > matrix.shape[1] else x


@pytest.mark.parametrize("shape", [(128, 1152), (32, 882), (64, 64), (288, 32), (15, 1)])
def test_orthogonalise_on_the_gram_matrix_equals_the_direct_iteration(shape):
    """Iterating the m x m Gram matrix (the speed-up) gives what iterating X itself gives: the demo's kernel shapes
    (a 3x3 conv of 128 -> 128 channels at width 0.25, a 7x7 one, square, tall, a column), random and low-rank plus
    noise (a gradient's usual shape)."""
    generator = torch.Generator().manual_seed(shape[0])
    low_rank = torch.randn(shape[0], 3, generator=generator) @ torch.randn(3, shape[1], generator=generator)
    for matrix in (torch.randn(shape, generator=generator), low_rank + 1e-2 * torch.randn(shape, generator=generator)):
        torch.testing.assert_close(orthogonalise(matrix).double(), newton_schulz_direct(matrix), rtol=0, atol=1e-4)


def test_muon_first_step_by_hand():
    """A conv kernel whose gradient, as an (out, in*kh*kw) matrix, is 5 x orthonormal rows: every singular value of
    the normalised matrix is 1 / sqrt(out), so the step is the scalar iteration of that value times the rows,
    scaled by lr * 0.2 * sqrt(in*kh*kw), after the decoupled weight decay."""
    conv = nn.Conv2d(4, 8, 3, bias=False)
    rows = orthonormal_rows(8, 36)
    weight = conv.weight.detach().clone()
    conv.weight.grad = (5.0 * rows).view(8, 4, 3, 3)
    lr, decay = 0.01, 0.1
    MuonAdamW([{"params": [conv.weight], "muon": True}], lr=lr, weight_decay=decay).step()
    # Nesterov momentum on the first step: the buffer is (1 - mu) g, the update g.lerp(buffer, mu) = (1 - mu^2) g,
    # whose scale the normalisation removes.
    value = newton_schulz_scalar(1 / math.sqrt(8))
    assert 0.7 < value < 1.2  # the update's RMS is then about 0.2 lr: AdamW's, Moonshot's rule
    expected = weight * (1 - lr * decay) - lr * 0.2 * math.sqrt(36) * value * rows.view(8, 4, 3, 3)
    torch.testing.assert_close(conv.weight.detach(), expected, rtol=0, atol=1e-6)


def test_muon_adamw_steps_the_other_groups_exactly_as_adamw():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 2, 1))
    twin = [p.detach().clone().requires_grad_() for p in model.parameters()]
    grads = [torch.randn_like(p) for p in model.parameters()]
    rest = list(model.parameters())[1:]
    muon = MuonAdamW([{"params": [model[0].weight], "muon": True}, {"params": rest}], lr=0.01, weight_decay=0.1)
    adamw = torch.optim.AdamW(twin[1:], lr=0.01, weight_decay=0.1)
    for _ in range(3):
        for p, q, g in zip(model.parameters(), twin, grads):
            p.grad, q.grad = g.clone(), g.clone()
        muon.step()
        adamw.step()
    for p, q in zip(rest, twin[1:]):
        assert torch.equal(p.detach(), q.detach())
    assert not torch.equal(model[0].weight.detach(), twin[0].detach())  # the muon group took its own step


def test_muon_state_round_trips_through_state_dict():
    """Three steps straight equal one step, a save into a fresh optimiser, then two more: momentum, AdamW's moments
    and the groups' settings all travel in the state dict."""
    def run(cut: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
        make = lambda: MuonAdamW([{"params": [model[0].weight], "muon": True},  # noqa: E731
                                  {"params": [model[0].bias, *model[2].parameters()]}], lr=0.01, weight_decay=0.1)
        optimizer = make()
        for step in range(3):
            if cut and step == 1:
                state = optimizer.state_dict()
                optimizer = make()
                optimizer.load_state_dict(state)
            for i, p in enumerate(model.parameters()):
                p.grad = torch.randn(p.shape, generator=torch.Generator().manual_seed(10 * step + i))
            optimizer.step()
        return [p.detach().clone() for p in model.parameters()]

    for a, b in zip(run(cut=False), run(cut=True)):
        assert torch.equal(a, b)


def test_muon_groups_refuse_vectors():
    with pytest.raises(ValueError, match="not biases or norms"):
        MuonAdamW([{"params": [nn.Parameter(torch.zeros(3))], "muon": True}], lr=0.01, weight_decay=0.0)


def test_build_optimizer_puts_the_kernels_under_muon():
    """`optim.name: muon` on the demo's joint model: every conv and transposed-conv kernel under Muon, biases and
    BatchNorm under AdamW, the extra group (task weights) as given; every trainable parameter once."""
    model = build_model("joint_vgg16", Schema.pascal_person_part(), stages=1, seg_head="stage", seg_stride=4,
                        pose_stride=4, width=0.25, fc_width=256, batch_norm=True)
    extra = [{"params": [nn.Parameter(torch.zeros(3))], "lr": 0.05, "weight_decay": 0.0}]
    optimizer = build_optimizer(OptimConfig(name="muon", lr=0.005, weight_decay=1e-4), model, extra)
    muon, adamw, weights = optimizer.param_groups
    assert muon["muon"] and not adamw["muon"] and not weights["muon"] and weights["lr"] == 0.05
    names = {id(p): n for n, p in model.named_parameters()}
    kernels = {n for n, p in model.named_parameters() if isinstance(model.get_submodule(n.rsplit(".", 1)[0]),
                                                                     (nn.Conv2d, nn.ConvTranspose2d))
               and n.endswith(".weight")}
    assert {names[id(p)] for p in muon["params"]} == kernels and len(kernels) == 36  # 27 hidden, 6 out, 3 upsamplers
    assert all(p.ndim == 1 for p in adamw["params"])
    assert len(muon["params"]) + len(adamw["params"]) == len(list(model.parameters()))
    assert (muon["lr"], muon["weight_decay"], muon["muon_momentum"]) == (0.005, 1e-4, 0.95)


def test_muon_momentum_out_of_range_is_a_config_error_naming_the_key():
    with pytest.raises(ConfigError, match="optim.muon_momentum: must be in"):
        load_config(None, ["optim.name=muon", "optim.muon_momentum=1.0"])


@pytest.mark.parametrize("schedule, after_warmup", [
    ("linear", [1.0, 0.75, 0.5, 0.25, 0.0, 0.0, 0.0, 0.0]),
    ("cosine", [1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5, (1 + math.cos(3 * math.pi / 4)) / 2, 0.0, 0.0, 0.0, 0.0]),
    ("constant", [1.0] * 8),
])
def test_schedules_by_hand(schedule: str, after_warmup: list[float]):
    """Warm-up 2 steps from lr / 3, then the schedule over the remaining 4 of 6 planned steps (to 0 for linear and
    cosine): the LR each optimizer step runs at. Past the plan (a run resumed with a larger max_epochs keeps its
    schedule) the LR stays where the plan ended; before, cosine climbed back up (0.15, 0.5, 0.85 of the LR)."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = build_schedule(OptimConfig(lr=1.0, schedule=schedule, warmup_steps=2), optimizer, lambda: 6)
    seen = []
    for _ in range(10):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([1 / 3, 2 / 3, *after_warmup], abs=1e-12)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_warm_up_as_long_as_the_run_is_said(schedule: str):
    """A first try on a few images (6 steps under the demo configs' 50-step warm-up) learnt at up to an eighth of the
    LR, never decaying, and nothing said so; a warm-up that ends before the plan does is not warned of."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.warns(PosepartWarning, match=r"optim.warmup_steps=50 is not below the 6 steps this run plans"):
        build_schedule(OptimConfig(lr=1.0, schedule=schedule, warmup_steps=50), optimizer, lambda: 6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_schedule(OptimConfig(lr=1.0, schedule=schedule, warmup_steps=5), optimizer, lambda: 6)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_a_resumed_schedule_keeps_its_planned_length(schedule: str):
    """Resumed with another planned length (a larger train.max_epochs), the schedule continues the plan it started
    with: its length is restored with its state (and saved as plain values, loadable weights-only)."""
    def run(planned: int, state: dict | None, steps: int) -> tuple[list[float], dict]:
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = build_schedule(OptimConfig(lr=1.0, schedule=schedule, warmup_steps=2), optimizer, lambda: planned)
        if state is not None:
            scheduler.load_state_dict(state)
            optimizer.param_groups[0]["lr"] = scheduler.get_last_lr()[0]
        seen = []
        for _ in range(steps):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen, scheduler.state_dict()

    straight, _ = run(6, None, 9)
    first, state = run(6, None, 4)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    second, _ = run(20, torch.load(buffer, weights_only=True), 5)
    assert first + second == pytest.approx(straight, abs=1e-12) and straight[-3:] == [0.0, 0.0, 0.0]
