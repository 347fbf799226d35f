"""What learned Ω would do with no data: the "data-free drift" of LeeBERT's loss weights (no torch).

Eq. 5 is linear in the weights W = softmax(z) per exit, so ∂/∂z_j of Σ_j W_j t_j is W_j (t_j − Σ W t):
every step moves weight toward the exit's smallest term, whatever the data, and the KD terms, divided
by M |T(m)| (Eq. 4), are far smaller than the CE term. Under Adam a logit whose gradient keeps its sign
moves about λ2 per step. `drift` replays Ω's own update schedule (same optimizer, learning rate, steps,
and the relative gradient scale of CLO's plain and cross-level steps, core.training.omega) on constant terms
that say only "CE = 1, every KD term = 0", so it carries no information about the data. A learned Ω
that lands where this drift lands has learned the schedule, not the task.
"""
from __future__ import annotations

import numpy as np

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8   # torch.optim.Adam's defaults, which core.training.omega uses


def term_mask(num_exits: int, teachers: str = "lae") -> np.ndarray:
    """[L, 1 + L] bool, as core.training.losses.term_mask: column 0 the exit's CE, column 1 + t teacher t."""
    idx = np.arange(num_exits)
    kd = idx[None, :] != idx[:, None] if teachers == "lae" else idx[None, :] > idx[:, None]
    return np.concatenate([np.ones((num_exits, 1), dtype=bool), kd], axis=1)


def masked_softmax(z: np.ndarray, mask: np.ndarray) -> np.ndarray:
    e = np.where(mask, np.exp(z - np.where(mask, z, -np.inf).max(1, keepdims=True)), 0.0)
    return e / e.sum(1, keepdims=True)


def gradient_scales(optimizer: str, steps: int, *, cycle: int = 4, d1_scale: float = 0.03) -> np.ndarray:
    """[steps] the relative size of Ω's gradient at each step under `optimizer` (core.training.omega.OmegaOptimizer):
    SLO 1; BLO 1 (B2); CLO-v1 λ1/λ2 + 1 (B1 and B2); CLO-v2 λ1/λ2 on plain steps, λ1/λ2 + 1 on every C-th."""
    t = np.arange(1, steps + 1)
    if optimizer in ("slo", "blo"):
        return np.ones(steps)
    if optimizer == "clo_v1":
        return np.full(steps, d1_scale + 1.0)
    if optimizer == "clo_v2":
        return np.where(t % cycle == 0, d1_scale + 1.0, d1_scale)
    raise ValueError(f"no Ω update schedule for optimizer {optimizer!r}")


def drift(num_exits: int, steps: int, *, teachers: str = "lae", optimizer: str = "clo_v2", lr: float = 1e-3,
          cycle: int = 4, d1_scale: float = 0.03, record: list[int] | None = None) -> dict[int, np.ndarray]:
    """Ω [L, 1 + L] after each step in `record` (default: the last) of the data-free update: Adam at `lr`
    on Σ W(z) T with T = [1, 0, ..., 0] per exit (CE 1, KD 0), from the uniform start."""
    mask = term_mask(num_exits, teachers)
    target = np.zeros(mask.shape)
    target[:, 0] = 1.0
    z = np.zeros(mask.shape)
    m, v = np.zeros(mask.shape), np.zeros(mask.shape)
    (b1, b2), want = ADAM_BETAS, set(record or [steps])
    out = {0: masked_softmax(z, mask)} if 0 in want else {}
    for t, scale in enumerate(gradient_scales(optimizer, steps, cycle=cycle, d1_scale=d1_scale), start=1):
        w = masked_softmax(z, mask)
        g = scale * w * (target - (w * target).sum(1, keepdims=True))       # ∂/∂z Σ W T
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        z = z - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + ADAM_EPS)
        if t in want:
            out[t] = masked_softmax(z, mask)
    return out


def drift_for_run(config: dict, steps: int, record: list[int] | None = None,
                  num_exits: int | None = None) -> dict[int, np.ndarray] | None:
    """`drift` with a LeeBERT run's own settings (config.json); None when Ω was not learned or the
    number of exits is unknown (`num_exits` overrides the config's)."""
    if config.get("method") != "leebert" or (config.get("weights") or "learned") != "learned":
        return None
    derived = config.get("derived") or {}
    num_exits = num_exits or derived.get("num_layers") or len(derived.get("omega_terms", [])) - 1
    if num_exits < 1:
        return None
    lr, theta_lr = float(config.get("omega_lr", 1e-3)), float(config.get("lr", 3e-5))
    return drift(int(num_exits), int(steps), teachers=config.get("teachers", "lae"),
                 optimizer=config.get("optimizer") or "clo_v2", lr=lr, cycle=int(config.get("cycle", 4)),
                 d1_scale=theta_lr / lr, record=record)


def compare_to_drift(records: list[dict], config: dict) -> dict | None:
    """A LeeBERT run's learned Ω (its metrics.jsonl `omega` records) against the data-free drift over
    the same steps. None when Ω was fixed or never recorded. Keys: `steps`, `omega` and `drift` [L, T]
    at the last record, `moved` = ‖Ω − Ω_start‖ (Frobenius), `off_drift` = ‖Ω − drift‖, `ratio` =
    off_drift / moved (0: the drift explains all of Ω's movement), `ce_spread` and `drift_ce_spread`
    (max − min over exits of the own-CE weight)."""
    records = [r for r in records if r.get("kind", "omega") == "omega" and r.get("omega") is not None]
    if not records:
        return None
    last, first = records[-1], records[0]
    steps = int(last.get("step") or 0)
    d = drift_for_run(config, steps, record=[0, steps])
    if d is None or steps < 1:
        return None
    om, om0, dr = (np.asarray(x, dtype=float) for x in (last["omega"], first["omega"], d[steps]))
    if om.shape != dr.shape:
        return None
    moved, off = float(np.linalg.norm(om - om0)), float(np.linalg.norm(om - dr))
    return {"steps": steps, "omega": om, "drift": dr, "moved": moved, "off_drift": off,
            "ratio": off / moved if moved > 0 else float("nan"),
            "ce_spread": float(om[:, 0].max() - om[:, 0].min()),
            "drift_ce_spread": float(dr[:, 0].max() - dr[:, 0].min())}
