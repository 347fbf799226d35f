"""Training objectives for multi-exit models, as pure functions of exit logits and labels.

Shapes: `logits` [B, L, K] (batch, exits counted from 1 in names but from 0 in indices, classes),
`labels` [B] int64, `confidence` [B, L] in (0, 1). Every loss is a batch mean of per-sample values.

    exit_ce            per-exit cross entropy                                   -> [L]
    joint_loss         sum_m w_m CE_m / sum_m w_m, w_m = m or 1 (PCEE-BERT Eq. 1) -> (scalar, [L])
    summed_loss        sum_m w_m CE_m, unnormalized (ALT even steps, BADGE Eq. 8 with w_m = 1)
    last_exit_loss     CE of exit L (2ST stage 1, ALT odd steps; BADGE Eq. 5, 7)
    intermediate_loss  sum_{m<L} CE_m (2ST stage 2; BADGE Eq. 6)
    self_distill_loss  sum_{m<L} KL(p_L || p_m), p_L detached (FastBERT)
    kd_matrix          LeeBERT Eq. 2-3 for every (student m, teacher t) pair    -> [L, L]
    leebert_terms      the terms of LeeBERT Eq. 5, one row per exit              -> [L, 1 + L]
    leebert_loss       sum(Ω * terms)                                            (Eq. 5)
    diversity_loss     Sun et al. Eq. 14 (Eq. 24 with weights)
    lte_loss           BCE of learned confidence vs. "this exit is correct" (BERxiT LTE)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from core.training.config import JOINT_WEIGHTS, TEACHERS  # noqa: F401  (the name lists live with the options)


# ---- helpers -------------------------------------------------------------------------------------
def layer_weights(num_exits: int, kind: str = "linear", *, device=None) -> torch.Tensor:
    """[L] weights of the joint loss: `linear` w_m = m (PABEE, PCEE-BERT Eq. 1), `uniform` w_m = 1."""
    if kind == "linear":
        return torch.arange(1, num_exits + 1, dtype=torch.float32, device=device)
    if kind == "uniform":
        return torch.ones(num_exits, dtype=torch.float32, device=device)
    raise ValueError(f"unknown joint weights {kind!r}; valid: {', '.join(JOINT_WEIGHTS)}")


def _check(logits: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    if logits.dim() != 3:
        raise ValueError(f"logits must be [B, L, K], got shape {tuple(logits.shape)}")
    if labels is not None and labels.shape != logits.shape[:1]:
        raise ValueError(f"labels must be [B] = [{logits.shape[0]}], got shape {tuple(labels.shape)}")


# ---- cross entropy -------------------------------------------------------------------------------
def exit_ce_per_sample(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[B, L] cross entropy of every exit for every sample."""
    _check(logits, labels)
    logp = F.log_softmax(logits.float(), dim=-1)                              # [B, L, K]
    idx = labels.long()[:, None, None].expand(-1, logits.shape[1], 1)          # [B, L, 1]
    return -logp.gather(-1, idx).squeeze(-1)                                   # [B, L]


def exit_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """[L] batch-mean cross entropy of each exit."""
    return exit_ce_per_sample(logits, labels).mean(0)


def joint_loss(logits, labels, weights: str | torch.Tensor = "linear"):
    """(sum_m w_m CE_m / sum_m w_m, CE [L]). JT of PABEE / PCEE-BERT Eq. 1 (`linear`) or uniform."""
    ce = exit_ce(logits, labels)                                               # [L]
    w = layer_weights(ce.shape[0], weights, device=ce.device) if isinstance(weights, str) else weights.to(ce)
    return (w * ce).sum() / w.sum(), ce


def summed_loss(logits, labels, weights: str | torch.Tensor = "uniform"):
    """(sum_m w_m CE_m, CE [L]): ALT's even steps, BADGE App. A.3.2 Eq. 8 (w_m = 1). Eq. 8 is a sum, not a
    mean: with L exits an even step's gradient is about L times an odd (CE_L only) step's, as the paper
    has it; the mean would weigh the odd steps L times more in Adam's moments and under clipping."""
    ce = exit_ce(logits, labels)                                               # [L]
    w = layer_weights(ce.shape[0], weights, device=ce.device) if isinstance(weights, str) else weights.to(ce)
    return (w * ce).sum(), ce


def last_exit_loss(logits, labels):
    """(CE_L, CE [L] detached): 2ST stage 1 and ALT odd steps (BADGE Eq. 5, 7)."""
    return exit_ce(logits[:, -1:], labels)[0], exit_ce(logits.detach(), labels)


def intermediate_loss(logits, labels):
    """(sum_{m<L} CE_m, CE [L] detached): 2ST stage 2 (BADGE Eq. 6); with the backbone frozen the
    exits are disjoint, so the sum trains each exit on its own CE."""
    return exit_ce(logits[:, :-1], labels).sum(), exit_ce(logits.detach(), labels)


# ---- distillation --------------------------------------------------------------------------------
def self_distill_loss(logits, temperature: float = 1.0):
    """sum_{m<L} KL(p_L || p_m) with the last exit's distribution p_L detached (FastBERT)."""
    _check(logits)
    z = logits.float() / temperature
    p_last = F.softmax(z[:, -1].detach(), dim=-1)                              # [B, K]
    logp_last = F.log_softmax(z[:, -1].detach(), dim=-1)
    logq = F.log_softmax(z[:, :-1], dim=-1)                                    # [B, L-1, K]
    kl = (p_last[:, None] * (logp_last[:, None] - logq)).sum(-1)               # [B, L-1]
    return kl.mean(0).sum() * temperature ** 2


def kd_matrix(logits, temperature: float = 1.0, teacher_logits=None, detach_teacher: bool = True) -> torch.Tensor:
    """[L, L]: entry (m, t) = L_KD(p_t, p_m) of LeeBERT Eq. 2-3, the batch mean of
    -τ² Σ_k [p_t^{1/τ}]_k log [p_m^{1/τ}]_k. For p = softmax(z), p^{1/τ} renormalized is softmax(z/τ).
    Choice (LeeBERT leaves it open): the teacher side is detached, so exit m learns from t and gradients
    reach only the student. `teacher_logits` (default: `logits`) supplies the teachers' logits;
    `detach_teacher=False` keeps the teachers' gradient (the derivative of the loss's value, which the
    second-order Ω gradient needs of L_B2)."""
    _check(logits)
    z = logits.float() / temperature
    zt = z if teacher_logits is None else teacher_logits.float() / temperature
    pt = F.softmax(zt.detach() if detach_teacher else zt, dim=-1)               # [B, L(t), K]
    logs = F.log_softmax(z, dim=-1)                                             # [B, L(m), K]
    return -(temperature ** 2) * torch.einsum("btk,bmk->mt", pt, logs) / logits.shape[0]


def teacher_mask(num_exits: int, teachers: str = "lae", *, device=None) -> torch.Tensor:
    """[L, L] bool, entry (m, t) True when t ∈ T(m): `lae` all other exits, `lle` later exits only."""
    idx = torch.arange(num_exits, device=device)
    if teachers == "lae":
        return idx[None, :] != idx[:, None]
    if teachers == "lle":
        return idx[None, :] > idx[:, None]
    raise ValueError(f"unknown teachers {teachers!r}; valid: {', '.join(TEACHERS)}")


def term_mask(num_exits: int, teachers: str = "lae", *, device=None) -> torch.Tensor:
    """[L, 1 + L] bool: which terms of LeeBERT Eq. 5 exist for each exit (column 0 = its CE)."""
    ce = torch.ones(num_exits, 1, dtype=torch.bool, device=device)
    return torch.cat([ce, teacher_mask(num_exits, teachers, device=device)], dim=1)


def term_names(num_exits: int) -> list[str]:
    """Column names of the Ω matrix: `ce`, then `kd:t` for teacher exit t (counted from 1)."""
    return ["ce"] + [f"kd:{t}" for t in range(1, num_exits + 1)]


def leebert_terms(logits, labels, mask: torch.Tensor, temperature: float = 1.0,
                  teacher_logits=None, detach_teacher: bool = True) -> torch.Tensor:
    """[L, 1 + L] loss terms of LeeBERT Eq. 5 before weighting: column 0 holds CE_m; column 1 + t
    holds L_KD(p_t, p_m) / (M |T(m)|) (Eq. 4's normalization) where t ∈ T(m), else 0. `mask` is
    `term_mask(L, teachers)`; `teacher_logits` and `detach_teacher` as in `kd_matrix`."""
    num_exits = logits.shape[1]
    ce = exit_ce(logits, labels)                                                # [L]
    kd_mask = mask[:, 1:]
    n_teachers = kd_mask.sum(1, keepdim=True).clamp(min=1)                      # |T(m)|, [L, 1]
    kd = kd_matrix(logits, temperature, teacher_logits, detach_teacher) / (num_exits * n_teachers)              # [L, L]
    kd = torch.where(kd_mask, kd, torch.zeros_like(kd))
    return torch.cat([ce[:, None], kd], dim=1)


def leebert_loss(terms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """LeeBERT Eq. 5: Σ_m w_m CE_m + Σ_m Σ_{t∈T(m)} w_{m,t} L_KD(p_t, p_m) / (M |T(m)|)."""
    return (weights * terms).sum()


# ---- diversity -----------------------------------------------------------------------------------
def diversity_loss(logits, labels, lam: float = 0.2, weights: str = "uniform"):
    """(loss, CE [L]) of Sun et al. Eq. 14: Σ_i CE(x_i, y) − λ Σ_{i≥2} min_{j<i} CE(x_i, x_j), where
    CE(x_i, x_j) = −Σ_k x_j(k) log x_i(k) and the min is per sample. Choice (the paper leaves it open):
    the earlier exit's distribution x_j is a fixed (detached) target, so only the later exit is pushed. `weights="linear"` is their Eq. 24 with α_i = i, β_i = λ."""
    ce_bl = exit_ce_per_sample(logits, labels)                                  # [B, L]
    ce = ce_bl.mean(0)
    num_exits = logits.shape[1]
    alpha = layer_weights(num_exits, weights, device=ce.device)
    rel = (alpha * ce).sum()
    if num_exits < 2:
        return rel, ce
    logq = F.log_softmax(logits.float(), dim=-1)                                # [B, L(i), K]
    p = F.softmax(logits.float().detach(), dim=-1)                              # [B, L(j), K]
    cross = -torch.einsum("bjk,bik->bij", p, logq)                               # [B, i, j]
    idx = torch.arange(num_exits, device=logits.device)
    earlier = idx[None, :] < idx[:, None]                                        # [i, j]: j < i
    cross = cross.masked_fill(~earlier, float("inf"))
    div = cross[:, 1:].min(dim=-1).values.mean(0).sum()                          # Σ_{i≥2} E_b min_{j<i}
    return rel - lam * div, ce


# ---- learned exits (LTE) -------------------------------------------------------------------------
def lte_loss(confidence: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor,
             exits: list[int] | None = None, eps: float = 1e-6) -> torch.Tensor:
    """Mean BCE of each exit's sigmoid confidence [B, L] against whether that exit's prediction is
    correct (the target is a detached 0/1). `exits` (0-based) restricts it to the exits being trained."""
    _check(logits, labels)
    if confidence.shape != logits.shape[:2]:
        raise ValueError(f"confidence must be [B, L] = {tuple(logits.shape[:2])}, got {tuple(confidence.shape)}")
    if exits is not None:
        idx = list(exits)
        confidence, logits = confidence[:, idx], logits[:, idx]
    target = (logits.detach().argmax(-1) == labels[:, None]).float()             # [B, L']
    c = confidence.float().clamp(eps, 1 - eps)
    bce = -(target * torch.log(c) + (1 - target) * torch.log1p(-c))              # [B, L']
    return bce.mean()
