"""core.engine.omega_drift and its figure (core.app.figures.omega_steps_figure): the data-free drift of Ω replays Ω's real Adam update (checked
against torch on core.training.omega.Omega), and the Ω-over-steps figure draws it beside the learned weights."""
import numpy as np
import pytest
import torch

from core.app.figures import omega_ce_history, omega_steps_figure
from core.engine.omega_drift import compare_to_drift, drift, drift_for_run, gradient_scales, term_mask
from core.training.omega import Omega


@pytest.mark.parametrize("teachers", ["lae", "lle"])
@pytest.mark.parametrize("optimizer", ["slo", "clo_v2"])
def test_drift_is_torch_adam_on_constant_terms(teachers, optimizer):
    L, steps, lr = 4, 30, 0.01
    om = Omega(L, teachers, "learned")
    assert np.array_equal(term_mask(L, teachers), om.mask.numpy())
    opt = torch.optim.Adam([om.logits], lr=lr)
    target = torch.zeros(om.mask.shape)
    target[:, 0] = 1.0
    for scale in gradient_scales(optimizer, steps, cycle=4, d1_scale=0.03):
        opt.zero_grad()
        (float(scale) * (om.weights() * target).sum()).backward()
        opt.step()
    got = drift(L, steps, teachers=teachers, optimizer=optimizer, lr=lr, cycle=4, d1_scale=0.03)[steps]
    np.testing.assert_allclose(got, om.weights().detach().numpy(), atol=1e-5)


def test_drift_moves_each_logit_about_lr_per_step():
    # SLO: the CE logit falls and the 5 KD logits rise by ~λ2 per step: w_ce = 1 / (1 + 5 e^{2 λ2 n})
    w = drift(6, 100, optimizer="slo", lr=1e-3)[100]
    assert w[0, 0] == pytest.approx(1 / (1 + 5 * np.exp(0.2)), abs=1e-3)   # 0.1413 vs 0.1407
    np.testing.assert_allclose(w.sum(1), 1.0)
    assert np.ptp(w[:, 0]) < 1e-12            # LAE: the same for every exit
    # CLO-v2's plain steps carry λ1/λ2 of the gradient: Adam moves them less, so it drifts less than SLO
    assert drift(6, 100, optimizer="clo_v2", lr=1e-3)[100][0, 0] > w[0, 0]


def test_drift_for_run_and_compare_to_drift():
    cfg = {"method": "leebert", "weights": "learned", "optimizer": "blo", "teachers": "lae", "omega_lr": 1e-3,
           "lr": 3e-5, "cycle": 4, "derived": {"num_layers": 3}}
    d = drift_for_run(cfg, 50, record=[0, 50])
    assert set(d) == {0, 50} and d[0].shape == (3, 4)
    assert drift_for_run({**cfg, "weights": "uniform"}, 50) is None
    start = d[0]
    recs = [{"kind": "omega", "step": 0, "omega": start.tolist()}, {"kind": "omega", "step": 50, "omega": d[50].tolist()}]
    same = compare_to_drift(recs, cfg)
    assert same["off_drift"] == pytest.approx(0, abs=1e-6) and same["ratio"] < 1e-4 and same["moved"] > 0
    other = d[50].copy()
    other[0] = [0.7, 0.1, 0.1, 0.1]
    recs[-1]["omega"] = other.tolist()
    diff = compare_to_drift(recs, cfg)
    assert diff["ratio"] > 0.5 and diff["ce_spread"] > 0.3 and diff["drift_ce_spread"] < 1e-9


def test_omega_steps_figure_draws_learned_weights_and_the_drift():
    cfg = {"method": "leebert", "weights": "learned", "optimizer": "clo_v2", "derived": {"num_layers": 3}}
    d = drift_for_run(cfg, 40, record=[0, 20, 40])
    recs = [{"kind": "omega", "step": s, "omega": d[s].tolist()} for s in (40, 0, 20)]
    steps, ce = omega_ce_history(recs)
    assert steps.tolist() == [0, 20, 40] and ce.shape == (3, 3)
    fig = omega_steps_figure(recs, cfg, "run-a")
    solid = [t for t in fig.data if t.line.dash is None]
    dashed = [t for t in fig.data if t.line.dash == "dash"]
    assert len(solid) == len(dashed) == 3
    np.testing.assert_allclose(dashed[0].y, solid[0].y, atol=1e-9)   # this Ω *is* the drift
    fixed = omega_steps_figure(recs, {**cfg, "weights": "uniform"}, "run-b")
    assert len(fixed.data) == 3 and "nothing is learned" in fixed.layout.title.text
