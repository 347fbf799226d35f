"""LeeBERT's learned loss weights Ω and the optimizers that update them (LeeBERT §3.2-3.4).

Ω is an [L, T] matrix, T = 1 + L: row m weighs exit m's terms of Eq. 5, column 0 its CE, column 1 + t
its distillation from teacher exit t (see `core.training.losses.leebert_terms`). Each row is a softmax over the
row's existing terms, so an exit's weights are positive and sum to 1 (the normalization of
LeeBERT-rand); terms that do not exist (t ∉ T(m)) have weight 0.

Optimizers, by name (Θ = model parameters, λ1 its learning rate, λ2 = Ω's learning rate):

    slo     Eq. 7   one backward on B1; Θ and Ω both step on it (Ω as ordinary parameters)
    blo     Eq. 8   Θ steps on B1 ⊂ D1; then Ω steps on B2 ⊂ D2 at the updated Θ (first order,
                    as the paper: Θ' is treated as a constant of Ω)
    clo_v1  Eq. 9   Θ steps on B1; then at the updated Θ, Ω ← Ω − λ1 ∇Ω L_B1 − λ2 ∇Ω L_B2 (Alg. 1)
    clo_v2  Alg. 2  cycles of C steps: steps 1..C−1 are SLO steps on B1 (Θ and Ω ← Ω − λ1 ∇Ω L_B1),
                    step C is a CLO-v1 step

Eq. 5 is linear in the weights, so ∇Ω L_B at a given Θ needs only the loss terms at Θ: the extra
evaluations of BLO/CLO run the model without autograd (a forward pass each), and a CLO-v2 plain step
costs what a joint step costs. By default (`omega_grad="first_order"`) BLO is first order, as the paper
states (§3.3.1): the "unrolled" model is the really updated Θ', and dΘ'/dΩ is ignored.

`omega_grad="second_order"` (BLO and CLO cross-level steps) replaces ∇Ω L_B2 by the hypergradient of
DARTS (Liu et al., 2019, Eq. 7-8) through one virtual SGD step of Θ on B1:

    ∇Ω L_B2(Θ*, Ω) − ξ ∇²_{Ω,Θ} L_B1(Θ, Ω) ∇_Θ* L_B2(Θ*, Ω),   Θ* = Θ − ξ ∇Θ L_B1(Θ, Ω)

with ξ each parameter group's current learning rate (`theta()` gives (parameter, ξ) pairs) and the
Hessian-vector product by central differences at Θ ± e·u, u = ξ ⊙ ∇_Θ* L_B2, e = 0.01 / ‖u‖ (Eq. 8; the
perturbation has norm 0.01 as in DARTS). Both perturbed forwards reuse one dropout draw. Cost per
cross-level step: one more forward+backward (B2 at Θ*) and two forwards (B1 at Θ±) than first order.
Θ itself still takes its real (Adam) step from Θ; the virtual step only shapes Ω's gradient.

Ω has one Adam optimizer at λ2. Eq. 9 and Alg. 2 give the D1 gradient the model's step size λ1; we feed
Ω's optimizer (λ1/λ2)·∇Ω L_B1 (+ ∇Ω L_B2), which is Eq. 9 exactly under SGD; under Adam (the paper's
optimizer) it keeps the ratio of the two gradients at the cross-level step.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from core.training.config import OMEGA_GRADS, OMEGA_WEIGHTS, OPTIMIZERS  # noqa: F401  (the name lists live with the options)
from core.training.losses import leebert_loss, term_mask, term_names

FD_RADIUS = 0.01  # DARTS Eq. 8: the finite-difference perturbation's norm
WEIGHTS = OMEGA_WEIGHTS
RANDOM_RANGE = (1, 50)  # LeeBERT-rand: integers drawn from {1, ..., 50}, normalized per exit


class Omega(nn.Module):
    """Loss weights Ω [L, 1 + L], a row-wise softmax over each exit's terms.

    `init`: `learned` (uniform start, trainable), `uniform` (fixed), `random` (fixed integers 1..50,
    normalized per exit, drawn with `seed`)."""

    def __init__(self, num_exits: int, teachers: str = "lae", init: str = "learned", seed: int = 0):
        super().__init__()
        if init not in WEIGHTS:
            raise ValueError(f"unknown Ω weights {init!r}; valid: {', '.join(WEIGHTS)}")
        self.num_exits, self.teachers, self.init = num_exits, teachers, init
        mask = term_mask(num_exits, teachers)                                    # [L, T]
        self.register_buffer("mask", mask, persistent=False)
        logits = torch.zeros(mask.shape)
        if init == "random":
            g = torch.Generator().manual_seed(int(seed))
            lo, hi = RANDOM_RANGE
            ints = torch.randint(lo, hi + 1, mask.shape, generator=g).float()
            logits = torch.log(ints)  # softmax(log w) = w / Σ w over the row's terms
        self.logits = nn.Parameter(logits, requires_grad=(init == "learned"))
        self.terms = term_names(num_exits)

    @property
    def learnable(self) -> bool:
        return self.logits.requires_grad

    def weights(self) -> torch.Tensor:
        """[L, T] weights: positive on existing terms, 0 elsewhere, each row summing to 1."""
        z = self.logits.masked_fill(~self.mask, float("-inf"))
        return torch.softmax(z, dim=-1)

    def matrix(self) -> list[list[float]]:
        """Ω as a nested list (rows = exits, columns = `self.terms`) for metrics.jsonl."""
        with torch.no_grad():
            return [[round(float(v), 6) for v in row] for row in self.weights().cpu()]


# ---- D1 / D2 ------------------------------------------------------------------------------------
def split_d1_d2(n: int, *, seed: int, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """A random 50:50 split of range(n) into (D1, D2), redrawn for each epoch (LeeBERT §4.4)."""
    if n < 2:
        raise ValueError(f"BLO/CLO need at least 2 training rows to split into D1 and D2, got {n}")
    perm = np.random.default_rng([int(seed), int(epoch), 0x0E6A]).permutation(n)
    half = (n + 1) // 2
    return np.sort(perm[:half]), np.sort(perm[half:])


def uses_split(optimizer: str | None) -> bool:
    """Whether the optimizer draws B2 from a held-out half D2 (BLO, CLO) rather than using D_tr whole."""
    return optimizer in ("blo", "clo_v1", "clo_v2")


# ---- DARTS second-order hypergradient ------------------------------------------------------------
def _rng_states() -> tuple:
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    return torch.get_rng_state(), cuda


def _set_rng_states(states: tuple) -> None:
    cpu, cuda = states
    torch.set_rng_state(cpu)
    if cuda is not None:
        torch.cuda.set_rng_state_all(cuda)


def darts_b2_target(forward: "ForwardFn", b1, b2, theta: list[tuple[torch.Tensor, float]],
                    weights: torch.Tensor, *, teacher: torch.Tensor | None = None,
                    rng: tuple | None = None) -> torch.Tensor:
    """[L, T] detached matrix D with ∇Ω Σ(W(Ω) * D) = the DARTS hypergradient (Eq. 7-8) of
    L_B2(Θ − ξ ∇Θ L_B1(Θ, Ω), Ω) w.r.t. Ω, where L_B = Σ(W(Ω) * terms_B) (LeeBERT Eq. 5).

    Call it after L_B1's backward and before Θ's step: each parameter's `.grad` must hold ∇Θ L_B1.
    `theta` lists (parameter, ξ); `weights` = W(Ω), detached. Θ is restored exactly on return and
    the `.grad`s are left as they were.

    The training gradient detaches the distillation teachers (core.training.losses.kd_matrix), so ∇Θ L_B1 is not
    the derivative of L_B1's value. ∇_Θ* L_B2 is of the value (`forward(b2, True, detach_teacher=False)`),
    while the mixed derivative must be of the training gradient: the perturbed forwards
    get `teacher`, B1's logits at Θ, as fixed teachers (`forward(b1, False, teacher=...)`), and `rng`,
    the random state B1's forward started from, so they draw the same dropout as the gradient did.

    Because Eq. 5 is linear in W: ∇Ω L_B2(Θ*) = ∇Ω Σ W·terms_B2(Θ*), and the Hessian-vector term
    ξ ∇²_{Ω,Θ} L_B1 v = ∇Ω Σ W·(terms_B1(Θ + e u) − terms_B1(Θ − e u)) / (2e) with u = ξ ⊙ v, so
    D = terms_B2(Θ*) − (terms_B1(Θ + e u) − terms_B1(Θ − e u)) / (2e)."""
    params = [p for p, _ in theta]
    xis = [float(x) for _, x in theta]
    saved = [p.detach().clone() for p in params]
    try:
        with torch.no_grad():                       # the virtual step Θ* = Θ − ξ ∇Θ L_B1
            for p, x in zip(params, xis):
                if p.grad is not None:
                    p.sub_(x * p.grad)
        t2 = forward(b2, True, detach_teacher=False)[0]   # L_B2's value, teachers included
        v = torch.autograd.grad((weights * t2).sum(), params, allow_unused=True)   # ∇_Θ* L_B2
        u = [x * (g if g is not None else torch.zeros_like(p)) for p, x, g in zip(params, xis, v)]
        norm = torch.sqrt(sum((ui.double() ** 2).sum() for ui in u))
        t2 = t2.detach()
        if not torch.isfinite(norm) or float(norm) == 0.0:
            return t2                                # no Θ-dependence reaches L_B2: first order is exact
        e = FD_RADIUS / float(norm)
        after = _rng_states()
        rng = rng or after
        out = []
        for sign in (1.0, -1.0):                     # Θ ± e u, the same dropout draw for both
            with torch.no_grad():
                for p, s0, ui in zip(params, saved, u):
                    p.copy_(s0 + sign * e * ui)
                _set_rng_states(rng)
                res = forward(b1, False) if teacher is None else forward(b1, False, teacher=teacher)
                out.append(res[0].detach())
        _set_rng_states(after)                       # training randomness continues as if not replayed
        return t2 - (out[0] - out[1]) / (2 * e)
    finally:
        with torch.no_grad():
            for p, s0 in zip(params, saved):
                p.copy_(s0)


# ---- the update rules ---------------------------------------------------------------------------
@dataclass
class OmegaStepInfo:
    loss: float             # the Θ loss on B1 (Eq. 5 plus extras)
    terms: torch.Tensor     # [L, T] detached terms on B1 at the Θ used for Θ's step
    output: object          # the model output on B1 (logits etc.) for logging
    omega_updated: bool     # whether Ω changed in this step
    cross: bool             # whether this was a cross-level (or bi-level) step


# (batch, grad[, teacher=logits][, detach_teacher=bool]) -> (terms [L, T], extra_loss | None, output: logits or an
# object with .logits); the keywords are used by the second-order Ω gradient only
ForwardFn = Callable[..., tuple]


class OmegaOptimizer:
    """Runs one training step of LeeBERT under a named optimizer.

    `forward(batch, grad)` returns `(terms [L, T], extra, output)`: the Eq. 5 terms of the model on
    `batch` (computed with autograd when `grad`), an extra loss added to Θ's objective only (e.g. LTE;
    None for none) and the raw model output. `update_theta(loss)` backpropagates `loss` and steps Θ
    (clip, optimizer, scheduler, zero grads). `next_b2()` draws B2 from D2 (BLO/CLO only).
    `reduce_grad(g)` averages Ω's gradient over processes (identity on one process).
    `optimizer_cls` builds Ω's optimizer (Adam, as the paper; the tests use SGD to check the rules).
    `omega_grad="second_order"` (BLO, CLO) needs `theta()` -> [(parameter, ξ)], and `update_theta`
    must accept `before_step`, a callable it runs between the backward and Θ's step.
    """

    def __init__(self, name: str | None, omega: Omega, *, lr: float = 1e-3, theta_lr: float = 3e-5,
                 cycle: int = 4, reduce_grad: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 optimizer_cls=torch.optim.Adam, omega_grad: str = "first_order",
                 theta: Callable[[], list[tuple[torch.Tensor, float]]] | None = None):
        if name is not None and name not in OPTIMIZERS:
            raise ValueError(f"unknown Ω optimizer {name!r}; valid: {', '.join(OPTIMIZERS)}")
        if omega_grad not in OMEGA_GRADS:
            raise ValueError(f"unknown omega_grad {omega_grad!r}; valid: {', '.join(OMEGA_GRADS)}")
        if omega_grad == "second_order" and omega.learnable and name not in ("blo", "clo_v1", "clo_v2"):
            raise ValueError(f"omega_grad second_order needs a bi-level optimizer (blo, clo_v1, clo_v2), got {name}")
        if omega_grad == "second_order" and omega.learnable and theta is None:
            raise ValueError("omega_grad second_order needs theta(), the model parameters and their step sizes")
        self.omega_grad, self.theta = omega_grad, theta
        if name == "clo_v2" and int(cycle) < 1:
            raise ValueError(f"cycle (the cross-level cycle length C) must be >= 1, got {cycle}")
        if omega.learnable and name is None:
            raise ValueError("learned Ω weights need an optimizer (slo, blo, clo_v1 or clo_v2)")
        self.name = name if omega.learnable else None
        self.omega, self.cycle = omega, int(cycle)
        self.lr, self.theta_lr = float(lr), float(theta_lr)
        self.d1_scale = self.theta_lr / self.lr  # λ1 / λ2: Eq. 9's weight of ∇Ω L_B1 relative to λ2
        self.reduce_grad = reduce_grad or (lambda g: g)
        self.opt = optimizer_cls([omega.logits], lr=self.lr) if self.name else None

    @property
    def uses_split(self) -> bool:
        return uses_split(self.name)

    def is_cross(self, step: int) -> bool:
        """Whether (1-based) `step` is a cross-level / bi-level step that evaluates B2."""
        if self.name in ("blo", "clo_v1"):
            return True
        if self.name == "clo_v2":
            return step % self.cycle == 0
        return False

    def _omega_step(self, loss_omega: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        grad, = torch.autograd.grad(loss_omega, [self.omega.logits])
        self.omega.logits.grad = self.reduce_grad(grad)
        self.opt.step()

    def step(self, step: int, b1, *, forward: ForwardFn, update_theta: Callable[[torch.Tensor], None],
             next_b2: Callable[[], object] | None = None) -> OmegaStepInfo:
        name = self.name
        if name is None or (name in ("slo", "clo_v2") and not self.is_cross(step)):
            # SLO step (and CLO-v2's plain steps): one backward, Θ and Ω step on B1
            terms, extra, out = forward(b1, True)
            w = self.omega.weights()
            loss = leebert_loss(terms, w)                  # LeeBERT Eq. 5
            total = loss if extra is None else loss + extra
            if name is None:
                update_theta(total)
                return OmegaStepInfo(float(total.detach()), terms.detach(), out, False, False)
            scale = 1.0 if name == "slo" else self.d1_scale
            # Ω's gradient of Eq. 5 on B1 from the same graph; then Θ's backward frees it
            g_omega, = torch.autograd.grad(loss, [self.omega.logits], retain_graph=True)
            update_theta(total)
            self.opt.zero_grad(set_to_none=True)
            self.omega.logits.grad = self.reduce_grad(g_omega * scale)
            self.opt.step()
            return OmegaStepInfo(float(total.detach()), terms.detach(), out, True, False)

        # BLO / CLO cross-level step: Θ on B1 with Ω held fixed
        if next_b2 is None:
            raise ValueError(f"optimizer {name} needs batches B2 from D2 (next_b2)")
        rng = _rng_states() if self.omega_grad == "second_order" else None
        terms, extra, out = forward(b1, True)
        w = self.omega.weights().detach()
        total = leebert_loss(terms, w)
        if extra is not None:
            total = total + extra
        if self.omega_grad == "second_order":
            held = {}
            logits = getattr(out, "logits", out)
            teacher = logits.detach() if isinstance(logits, torch.Tensor) else None

            def before_step():  # Θ's grads hold ∇Θ L_B1: unroll one virtual step (DARTS Eq. 7-8)
                held["t2"] = darts_b2_target(forward, b1, next_b2(), self.theta(), w, teacher=teacher, rng=rng)
            update_theta(total, before_step=before_step)
            t2 = held["t2"]
        else:
            update_theta(total)
            t2 = None
        # ... then Ω at the updated Θ: the terms need no autograd through the model
        with torch.no_grad():
            if t2 is None:
                t2 = forward(next_b2(), False)[0].detach()
            target = t2
            if name in ("clo_v1", "clo_v2"):
                t1 = forward(b1, False)[0].detach()
                target = self.d1_scale * t1 + t2
        self._omega_step((self.omega.weights() * target).sum())
        return OmegaStepInfo(float(total.detach()), terms.detach(), out, True, True)
