"""core.training.omega: Ω's parameterization, the D1/D2 split, and the SLO / BLO / CLO-v1 / CLO-v2 update rules
checked exactly (Θ and Ω on plain SGD) on a toy multi-exit network."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from core.training import losses
from core.training.omega import Omega, OmegaOptimizer, split_d1_d2, uses_split

L, K, D, B = 3, 3, 6, 8
LR_THETA, LR_OMEGA, TAU = 0.05, 0.5, 2.0


class Toy(nn.Module):
    """x [B, D] -> L stacked tanh layers, each with a linear exit -> logits [B, L, K]."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.layers = nn.ModuleList(nn.Linear(D, D) for _ in range(L))
        self.exits = nn.ModuleList(nn.Linear(D, K) for _ in range(L))

    def forward(self, x):
        out = []
        for layer, ex in zip(self.layers, self.exits):
            x = torch.tanh(layer(x))
            out.append(ex(x))
        return torch.stack(out, 1)


def batch(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, D, generator=g), torch.randint(0, K, (B,), generator=g)


B1, B2 = batch(1), batch(2)


def terms_of(model, b, mask):
    x, y = b
    return losses.leebert_terms(model(x), y, mask, TAU)


def omega_grad(omega: Omega, terms: torch.Tensor) -> torch.Tensor:
    """Analytic ∂/∂z of Σ W(z) * terms for the row-wise masked softmax W: W (terms − Σ_row W terms)."""
    with torch.no_grad():
        w = omega.weights()
        t = terms.detach()
        return w * (t - (w * t).sum(1, keepdim=True))


def sgd_theta_step(model, loss):
    grads = torch.autograd.grad(loss, list(model.parameters()))
    with torch.no_grad():
        for p, g in zip(model.parameters(), grads):
            p -= LR_THETA * g


class Harness:
    """Runs OmegaOptimizer steps on the toy and counts forward passes."""

    def __init__(self, name, init="learned", cycle=2, teachers="lae"):
        self.model = Toy()
        self.omega = Omega(L, teachers, init, seed=3)
        self.mask = self.omega.mask
        self.opt = OmegaOptimizer(name, self.omega, lr=LR_OMEGA, theta_lr=LR_THETA, cycle=cycle,
                                  optimizer_cls=torch.optim.SGD)
        self.calls = {"grad": 0, "nograd": 0}

    def forward(self, b, grad, teacher=None, detach_teacher=True):
        self.calls["grad" if grad else "nograd"] += 1
        x, y = b
        logits = self.model(x)
        return losses.leebert_terms(logits, y, self.mask, TAU, teacher, detach_teacher), None, logits

    def update_theta(self, loss):
        sgd_theta_step(self.model, loss)

    def step(self, t):
        return self.opt.step(t, B1, forward=self.forward, update_theta=self.update_theta, next_b2=lambda: B2)


def snapshot(h):
    return copy.deepcopy(h.model), h.omega.logits.detach().clone()


def theta_after_b1(model, omega):
    """Θ' = Θ − λ1 ∇Θ L_B1(Θ, Ω)."""
    m = copy.deepcopy(model)
    loss = (omega.weights().detach() * terms_of(m, B1, omega.mask)).sum()
    sgd_theta_step(m, loss)
    return m


def assert_theta_equal(a, b):
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-5)


# ---- Ω itself ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("teachers", ["lae", "lle"])
def test_weights_positive_rows_sum_to_one_masked_zero(teachers):
    om = Omega(4, teachers, "learned")
    with torch.no_grad():
        om.logits.normal_()
    w = om.weights()
    mask = losses.term_mask(4, teachers)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    assert (w[mask] > 0).all() and (w[~mask] == 0).all()
    assert om.terms == ["ce", "kd:1", "kd:2", "kd:3", "kd:4"]
    assert len(om.matrix()) == 4 and len(om.matrix()[0]) == 5
    if teachers == "lle":  # the last exit has no later exits: all its weight is on CE
        assert w[-1].tolist() == [1.0, 0, 0, 0, 0]


def test_uniform_and_random_are_fixed_baselines():
    u = Omega(3, "lae", "uniform")
    assert not u.learnable
    torch.testing.assert_close(u.weights(), torch.tensor([[1, 0, 1, 1], [1, 1, 0, 1], [1, 1, 1, 0]]) / 3.0)
    r = Omega(3, "lae", "random", seed=7)
    assert not r.learnable
    ints = torch.exp(r.logits.detach())[r.mask]
    torch.testing.assert_close(ints, ints.round())
    assert ints.min() >= 1 and ints.max() <= 50
    w = r.weights()
    expect = torch.where(r.mask, torch.exp(r.logits.detach()), torch.zeros(()))
    torch.testing.assert_close(w, expect / expect.sum(1, keepdim=True))
    assert torch.equal(Omega(3, "lae", "random", seed=7).weights(), w)  # seeded
    with pytest.raises(ValueError, match="Ω weights"):
        Omega(3, "lae", "dirichlet")


def test_split_d1_d2_half_and_redrawn_per_epoch():
    d1, d2 = split_d1_d2(11, seed=0, epoch=1)
    assert len(d1) == 6 and len(d2) == 5
    assert sorted(np.concatenate([d1, d2]).tolist()) == list(range(11))
    e1 = split_d1_d2(100, seed=0, epoch=1)
    assert np.array_equal(e1[0], split_d1_d2(100, seed=0, epoch=1)[0])
    assert not np.array_equal(e1[0], split_d1_d2(100, seed=0, epoch=2)[0])
    assert uses_split("clo_v2") and uses_split("blo") and not uses_split("slo") and not uses_split(None)


# ---- the update rules, exactly ------------------------------------------------------------------
def test_slo_eq7_theta_and_omega_step_on_the_same_batch():
    h = Harness("slo")
    m0, z0 = snapshot(h)
    info = h.step(1)
    assert info.omega_updated and not info.cross
    t1 = terms_of(m0, B1, h.mask)
    om0 = Omega(L); om0.logits.data.copy_(z0)
    torch.testing.assert_close(h.omega.logits.detach(), z0 - LR_OMEGA * omega_grad(om0, t1))
    # Θ stepped on the loss with Ω's (pre-step) weights
    m_want = copy.deepcopy(m0)
    sgd_theta_step(m_want, (om0.weights() * terms_of(m_want, B1, h.mask)).sum())
    assert_theta_equal(h.model, m_want)
    assert h.calls == {"grad": 1, "nograd": 0}


def test_blo_eq8_omega_on_b2_at_the_updated_theta():
    h = Harness("blo")
    m0, z0 = snapshot(h)
    info = h.step(1)
    assert info.cross
    om0 = Omega(L); om0.logits.data.copy_(z0)
    m1 = theta_after_b1(m0, om0)
    assert_theta_equal(h.model, m1)
    want = z0 - LR_OMEGA * omega_grad(om0, terms_of(m1, B2, h.mask))
    torch.testing.assert_close(h.omega.logits.detach(), want)
    assert h.calls == {"grad": 1, "nograd": 1}


def test_clo_v1_eq9_both_splits_at_the_updated_theta():
    h = Harness("clo_v1")
    m0, z0 = snapshot(h)
    h.step(1)
    om0 = Omega(L); om0.logits.data.copy_(z0)
    m1 = theta_after_b1(m0, om0)
    assert_theta_equal(h.model, m1)
    # Ω ← Ω − λ1 ∇Ω L_B1 − λ2 ∇Ω L_B2, both at Θ'
    want = z0 - LR_THETA * omega_grad(om0, terms_of(m1, B1, h.mask)) \
              - LR_OMEGA * omega_grad(om0, terms_of(m1, B2, h.mask))
    torch.testing.assert_close(h.omega.logits.detach(), want)
    assert h.calls == {"grad": 1, "nograd": 2}


def test_clo_v2_algorithm2_plain_steps_then_a_cross_level_step():
    C = 3
    h = Harness("clo_v2", cycle=C)
    for t in range(1, C):  # c != C: Θ and Ω both step on B1 (Ω with λ1)
        m0, z0 = snapshot(h)
        info = h.step(t)
        assert not info.cross
        om0 = Omega(L); om0.logits.data.copy_(z0)
        torch.testing.assert_close(h.omega.logits.detach(),
                                   z0 - LR_THETA * omega_grad(om0, terms_of(m0, B1, h.mask)))
    assert h.calls == {"grad": C - 1, "nograd": 0}  # plain steps cost one forward/backward
    m0, z0 = snapshot(h)
    info = h.step(C)  # c == C: the CLO-v1 update
    assert info.cross
    om0 = Omega(L); om0.logits.data.copy_(z0)
    m1 = theta_after_b1(m0, om0)
    assert_theta_equal(h.model, m1)
    want = z0 - LR_THETA * omega_grad(om0, terms_of(m1, B1, h.mask)) \
              - LR_OMEGA * omega_grad(om0, terms_of(m1, B2, h.mask))
    torch.testing.assert_close(h.omega.logits.detach(), want)
    assert h.calls == {"grad": C, "nograd": 2}
    assert [h.opt.is_cross(t) for t in range(1, 7)] == [False, False, True, False, False, True]


@pytest.mark.parametrize("init", ["uniform", "random"])
def test_fixed_weights_leave_omega_unchanged(init):
    h = Harness("clo_v2", init=init)  # the optimizer name is ignored for fixed weights
    z0 = h.omega.logits.detach().clone()
    m0 = copy.deepcopy(h.model)
    for t in range(1, 5):
        info = h.step(t)
        assert not info.omega_updated
    assert torch.equal(h.omega.logits, z0)
    assert any(not torch.equal(p, q) for p, q in zip(h.model.parameters(), m0.parameters()))
    assert h.calls == {"grad": 4, "nograd": 0}


def test_learned_omega_with_adam_moves_every_existing_weight():
    om = Omega(L, "lle")
    opt = OmegaOptimizer("clo_v2", om, lr=1e-2, theta_lr=3e-5, cycle=2)
    model = Toy()
    z0 = om.logits.detach().clone()
    for t in range(1, 5):
        opt.step(t, B1, forward=lambda b, g: (terms_of(model, b, om.mask), None, None),
                 update_theta=lambda loss: sgd_theta_step(model, loss), next_b2=lambda: B2)
    moved = (om.logits.detach() - z0).abs() > 0
    # every exit with more than one term moves; the LLE last exit has only CE (its weight stays 1)
    assert moved[:-1][om.mask[:-1]].all()
    assert om.weights()[-1, 0] == 1.0


def test_bad_optimizer_names():
    with pytest.raises(ValueError, match="unknown Ω optimizer"):
        OmegaOptimizer("adam", Omega(3))
    with pytest.raises(ValueError, match="need an optimizer"):
        OmegaOptimizer(None, Omega(3))
    with pytest.raises(ValueError, match="cycle"):
        OmegaOptimizer("clo_v2", Omega(3), cycle=0)


# ---- second-order Ω gradient (DARTS Eq. 7-8) ------------------------------------------------------
XI = 0.5  # a large virtual step, so the second-order term is far from negligible on the toy


def terms64(model, b, mask, teacher=None, detach_teacher=True):
    """LeeBERT Eq. 5 terms in float64 (core.training.losses computes in float32), so that the brute-force
    derivative below is accurate to ~1e-8; teachers detached, or the given `teacher` logits."""
    x, y = b
    z = model(x.double())                                                       # [B, L, K]
    logp = torch.log_softmax(z, -1)
    ce = -logp.gather(-1, y[:, None, None].expand(-1, L, 1)).squeeze(-1).mean(0)
    zt = z if teacher is None else teacher
    pt = torch.softmax((zt.detach() if detach_teacher else zt) / TAU, -1)
    kd = -(TAU ** 2) * torch.einsum("btk,bmk->mt", pt, torch.log_softmax(z / TAU, -1)) / z.shape[0]
    kd_mask = mask[:, 1:]
    kd = torch.where(kd_mask, kd / (L * kd_mask.sum(1, keepdim=True)), torch.zeros_like(kd))
    return torch.cat([ce[:, None], kd], 1)


def unrolled_b2_loss(model, mask, logits: torch.Tensor) -> torch.Tensor:
    """f(z) = L_B2(Θ − ξ ∇Θ L_B1(Θ, W(z)), W(z)) with W the masked row softmax, by plain SGD."""
    w = torch.softmax(logits.masked_fill(~mask, float("-inf")), -1)
    m = copy.deepcopy(model)
    grads = torch.autograd.grad((w * terms64(m, B1, mask)).sum(), list(m.parameters()))
    with torch.no_grad():
        for p, g in zip(m.parameters(), grads):
            p -= XI * g
        return float((w * terms64(m, B2, mask)).sum())


def test_darts_second_order_matches_a_brute_force_derivative():
    from core.training.omega import darts_b2_target

    model = Toy().double()
    om = Omega(L, "lae", "learned")
    with torch.no_grad():
        om.logits.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    mask, z0 = om.mask, om.logits.detach().double().clone()
    # brute force: central differences of f over every existing logit
    h, brute = 1e-5, torch.zeros_like(z0)
    for i, j in zip(*torch.nonzero(mask, as_tuple=True)):
        e = torch.zeros_like(z0); e[i, j] = h
        brute[i, j] = (unrolled_b2_loss(model, mask, z0 + e) - unrolled_b2_loss(model, mask, z0 - e)) / (2 * h)
    # the function under test, as the optimizer calls it: grads of L_B1 in place, then the target
    w = om.weights().detach().double()
    before = [p.detach().clone() for p in model.parameters()]
    loss1 = (w * terms64(model, B1, mask)).sum()
    loss1.backward()
    g_before = [p.grad.clone() for p in model.parameters()]
    fwd = lambda b, grad, **kw: (terms64(model, b, mask, **kw), None, None)  # noqa: E731
    with torch.no_grad():
        teacher = model(B1[0].double())
    target = darts_b2_target(fwd, B1, B2, [(p, XI) for p in model.parameters()], w, teacher=teacher)
    # without fixed teachers the difference quotient differentiates the KD teachers too, which the
    # training gradient detaches: measurably off
    loose = darts_b2_target(fwd, B1, B2, [(p, XI) for p in model.parameters()], w)
    got = omega_grad(om, target.float()).double()
    first = omega_grad(om, darts_first_order(model, mask, w).float()).double()
    err, err_first = (got - brute).abs().max(), (first - brute).abs().max()
    assert err < 2e-4 * brute.abs().max(), (err, brute.abs().max())
    assert err_first > 20 * err, "the toy must be one where the second-order term matters"
    assert (omega_grad(om, loose.float()).double() - brute).abs().max() > 5 * err
    # Θ and its gradients are left exactly as they were
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before))
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), g_before))


def darts_first_order(model, mask, w):
    """terms_B2 at the virtual step Θ* (the direct term alone: what dropping Eq. 7's second term gives)."""
    m = copy.deepcopy(model)
    grads = torch.autograd.grad((w * terms64(m, B1, mask)).sum(), list(m.parameters()))
    with torch.no_grad():
        for p, g in zip(m.parameters(), grads):
            p -= XI * g
        return terms64(m, B2, mask)


def test_second_order_blo_step_theta_as_first_order_omega_by_the_hypergradient():
    from core.training.omega import darts_b2_target

    first, second = Harness("blo"), Harness("blo")
    second.opt = OmegaOptimizer("blo", second.omega, lr=LR_OMEGA, theta_lr=LR_THETA,
                                optimizer_cls=torch.optim.SGD, omega_grad="second_order",
                                theta=lambda: [(p, LR_THETA) for p in second.model.parameters()])
    m0, z0 = snapshot(second)

    def update_theta(loss, before_step=None):  # SGD on Θ, with the hook between backward and step
        second.model.zero_grad()
        loss.backward()
        if before_step is not None:
            before_step()
        with torch.no_grad():
            for p in second.model.parameters():
                p -= LR_THETA * p.grad
    second.opt.step(1, B1, forward=second.forward, update_theta=update_theta, next_b2=lambda: B2)
    first.step(1)
    assert_theta_equal(second.model, first.model)            # Θ's own step does not change
    # Ω stepped by the hypergradient computed at the pre-step Θ
    om0 = Omega(L); om0.logits.data.copy_(z0)
    m_ref = copy.deepcopy(m0)
    loss = (om0.weights().detach() * terms_of(m_ref, B1, om0.mask)).sum()
    loss.backward()
    with torch.no_grad():
        teacher = m_ref(B1[0])
    fwd = lambda b, grad, **kw: (losses.leebert_terms(m_ref(b[0]), b[1], om0.mask, TAU, **{  # noqa: E731
        "teacher_logits": kw.get("teacher"), "detach_teacher": kw.get("detach_teacher", True)}), None, None)
    target = darts_b2_target(fwd, B1, B2, [(p, LR_THETA) for p in m_ref.parameters()], om0.weights().detach(),
                             teacher=teacher)
    torch.testing.assert_close(second.omega.logits.detach(), z0 - LR_OMEGA * omega_grad(om0, target))
    assert not torch.allclose(second.omega.logits, first.omega.logits)
    # one forward+backward on B1, one on B2 at Θ*, two forwards on B1 at Θ ± e u
    assert second.calls == {"grad": 2, "nograd": 2}


def test_second_order_needs_a_bilevel_optimizer_and_theta():
    with pytest.raises(ValueError, match="bi-level optimizer"):
        OmegaOptimizer("slo", Omega(3), omega_grad="second_order", theta=lambda: [])
    with pytest.raises(ValueError, match="needs theta"):
        OmegaOptimizer("blo", Omega(3), omega_grad="second_order")
    with pytest.raises(ValueError, match="unknown omega_grad"):
        OmegaOptimizer("blo", Omega(3), omega_grad="third_order")
