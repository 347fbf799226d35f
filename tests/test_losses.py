"""core.training.losses against independent hand computations (plain Python loops over probabilities)."""
import math

import numpy as np
import pytest
import torch

from core.training import losses

B, L, K = 5, 4, 3


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(B, L, K, generator=g) * 2
    labels = torch.randint(0, K, (B,), generator=g)
    return logits, labels


def softmax(row):
    e = [math.exp(v - max(row)) for v in row]
    return [v / sum(e) for v in e]


def probs_of(logits):
    """[B][L][K] python floats."""
    return [[softmax(logits[b, m].tolist()) for m in range(logits.shape[1])] for b in range(logits.shape[0])]


def hand_ce(logits, labels):
    p = probs_of(logits)
    return [sum(-math.log(p[b][m][int(labels[b])]) for b in range(B)) / B for m in range(L)]


def hand_kd(p_t, p_s, tau):
    """LeeBERT Eq. 2-3 on probability vectors: -τ² Σ_k [t^{1/τ}]_k log [s^{1/τ}]_k."""
    t = [v ** (1 / tau) for v in p_t]
    s = [v ** (1 / tau) for v in p_s]
    t = [v / sum(t) for v in t]
    s = [v / sum(s) for v in s]
    return -tau ** 2 * sum(a * math.log(b) for a, b in zip(t, s))


def close(a, b, tol=1e-5):
    np.testing.assert_allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=tol, atol=tol)


def test_exit_ce(data):
    logits, labels = data
    close(losses.exit_ce(logits, labels), hand_ce(logits, labels))


@pytest.mark.parametrize("kind", ["linear", "uniform"])
def test_joint_loss_weighted_average(data, kind):
    logits, labels = data
    ce = hand_ce(logits, labels)
    w = [m + 1 for m in range(L)] if kind == "linear" else [1] * L  # PCEE-BERT Eq. 1: w_m = m
    loss, per_exit = losses.joint_loss(logits, labels, kind)
    close(loss, sum(a * b for a, b in zip(w, ce)) / sum(w))
    close(per_exit, ce)


def test_stage_losses(data):
    logits, labels = data
    ce = hand_ce(logits, labels)
    close(losses.last_exit_loss(logits, labels)[0], ce[-1])
    close(losses.intermediate_loss(logits, labels)[0], sum(ce[:-1]))


def test_self_distill_kl_to_last_exit(data):
    logits, _ = data
    p = probs_of(logits)
    want = sum(sum(p[b][L - 1][k] * math.log(p[b][L - 1][k] / p[b][m][k]) for k in range(K))
               for m in range(L - 1) for b in range(B)) / B
    close(losses.self_distill_loss(logits), want)
    # the last exit is the teacher: no gradient reaches it
    x = logits.clone().requires_grad_(True)
    losses.self_distill_loss(x).backward()
    assert x.grad[:, -1].abs().max() == 0 and x.grad[:, :-1].abs().max() > 0


@pytest.mark.parametrize("tau", [1.0, 2.5])
def test_kd_matrix_is_eq2_with_temperature_scaled_probabilities(data, tau):
    logits, _ = data
    p = probs_of(logits)
    want = [[sum(hand_kd(p[b][t], p[b][m], tau) for b in range(B)) / B for t in range(L)] for m in range(L)]
    close(losses.kd_matrix(logits, tau), want)


def test_kd_teacher_is_detached(data):
    logits, _ = data
    x = logits.clone().requires_grad_(True)
    losses.kd_matrix(x, 2.0)[0, 2].backward()  # student exit 1 learning from teacher exit 3
    assert x.grad[:, 2].abs().max() == 0
    assert x.grad[:, 0].abs().max() > 0


def test_teacher_masks():
    lae = losses.teacher_mask(3, "lae").tolist()
    lle = losses.teacher_mask(3, "lle").tolist()
    assert lae == [[False, True, True], [True, False, True], [True, True, False]]
    assert lle == [[False, True, True], [False, False, True], [False, False, False]]
    assert losses.term_names(3) == ["ce", "kd:1", "kd:2", "kd:3"]
    with pytest.raises(ValueError, match="teachers"):
        losses.teacher_mask(3, "all")


@pytest.mark.parametrize("teachers", ["lae", "lle"])
def test_leebert_terms_and_loss_eq5(data, teachers):
    logits, labels = data
    tau = 2.0
    p = probs_of(logits)
    ce = hand_ce(logits, labels)
    T = {m: [t for t in range(L) if (t != m if teachers == "lae" else t > m)] for m in range(L)}
    mask = losses.term_mask(L, teachers)
    terms = losses.leebert_terms(logits, labels, mask, tau)
    assert terms.shape == (L, 1 + L)
    rng = np.random.default_rng(1)
    w = rng.random((L, 1 + L))
    want_loss = 0.0
    for m in range(L):
        close(terms[m, 0], ce[m])
        want_loss += w[m, 0] * ce[m]
        for t in range(L):
            if t in T[m]:
                kd = sum(hand_kd(p[b][t], p[b][m], tau) for b in range(B)) / B
                want = kd / (L * len(T[m]))  # Eq. 4: divided by M |T(m)|
                close(terms[m, 1 + t], want)
                want_loss += w[m, 1 + t] * want
            else:
                assert terms[m, 1 + t] == 0
    close(losses.leebert_loss(terms, torch.tensor(w, dtype=torch.float32)), want_loss)


@pytest.mark.parametrize("weights", ["uniform", "linear"])
def test_diversity_loss_eq14(data, weights):
    logits, labels = data
    lam = 0.2
    p = probs_of(logits)
    ce = hand_ce(logits, labels)
    alpha = [1] * L if weights == "uniform" else [m + 1 for m in range(L)]
    div = 0.0
    for i in range(1, L):  # i >= 2 in 1-based counting
        for b in range(B):
            div += min(-sum(p[b][j][k] * math.log(p[b][i][k]) for k in range(K)) for j in range(i)) / B
    want = sum(a * c for a, c in zip(alpha, ce)) - lam * div
    loss, per_exit = losses.diversity_loss(logits, labels, lam, weights)
    close(loss, want)
    close(per_exit, ce)


def test_diversity_targets_are_detached(data):
    """The earlier exit is a fixed target: the diversity term sends no gradient to exit 1 (it is
    only ever a target j, never a student i)."""
    logits, labels = data
    x = logits.clone().requires_grad_(True)
    loss, _ = losses.diversity_loss(x, labels, 0.2)
    rel = losses.exit_ce(x, labels).sum()
    g_total = torch.autograd.grad(loss, x, retain_graph=True)[0]
    g_rel = torch.autograd.grad(rel, x)[0]
    torch.testing.assert_close(g_total[:, 0], g_rel[:, 0])
    assert (g_total[:, 1:] - g_rel[:, 1:]).abs().max() > 0


def test_lte_loss_bce_against_correctness(data):
    logits, labels = data
    g = torch.Generator().manual_seed(3)
    conf = torch.rand(B, L, generator=g) * 0.98 + 0.01
    pred = logits.argmax(-1)

    def bce(exits):
        vals = []
        for b in range(B):
            for m in exits:
                y = float(pred[b, m] == labels[b])
                c = float(conf[b, m])
                vals.append(-(y * math.log(c) + (1 - y) * math.log(1 - c)))
        return sum(vals) / len(vals)

    close(losses.lte_loss(conf, logits, labels), bce(range(L)))
    close(losses.lte_loss(conf, logits, labels, exits=[L - 1]), bce([L - 1]))
    # the target is detached: no gradient to the exit logits
    x = logits.clone().requires_grad_(True)
    c = conf.clone().requires_grad_(True)
    losses.lte_loss(c, x, labels).backward()
    assert x.grad is None or x.grad.abs().max() == 0
    assert c.grad.abs().max() > 0


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\[B, L, K\]"):
        losses.exit_ce(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        losses.exit_ce(torch.zeros(3, 2, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="joint weights"):
        losses.layer_weights(3, "quadratic")
