"""An independent, plain per-sample reference of every exit rule, written from the issue's table.

Deliberately naive (Python loops, one sample and one layer at a time, no shared code with
core.engine.strategies) so the vectorized engine can be checked against it and timed against it.
"""
import math

EPS = 1e-12


def _norm_entropy(p):
    return -sum(x * math.log(max(x, EPS)) for x in p) / math.log(len(p))


def _argmax(p):
    best = 0
    for k in range(1, len(p)):
        if p[k] > p[best]:
            best = k
    return best


def _div(measure, pm, pi):
    if measure == "kd":
        return -sum(a * math.log(max(b, EPS)) for a, b in zip(pm, pi))
    if measure == "kl":
        return sum(a * (math.log(max(a, EPS)) - math.log(max(b, EPS))) for a, b in zip(pm, pi))
    mix = [(a + b) / 2 for a, b in zip(pm, pi)]
    kl = lambda p, q: sum(a * (math.log(max(a, EPS)) - math.log(max(b, EPS))) for a, b in zip(p, q))
    return 0.5 * kl(pm, mix) + 0.5 * kl(pi, mix)


def _vote(preds, K):
    counts = [0] * K
    last = [0] * K
    for j, c in enumerate(preds, start=1):
        counts[c] += 1
        last[c] = j
    top = max(counts)
    tied = [c for c in range(K) if counts[c] == top]
    return max(tied, key=lambda c: last[c]), top


def exit_one(strategy, p, *, label=None, conf=None, **params):
    """(exit_layer 1..L, pred) for one sample's probs p [L][K]."""
    L, K = len(p), len(p[0])
    preds = [_argmax(row) for row in p]
    cnt = 0
    for m in range(1, L + 1):
        row = p[m - 1]
        if strategy == "budget":
            fire = m == params["layer"]
        elif strategy == "entropy":
            fire = _norm_entropy(row) < params["threshold"]
        elif strategy == "maxprob":
            fire = max(row) >= params["threshold"]
        elif strategy == "patience":
            cnt = cnt + 1 if m > 1 and preds[m - 1] == preds[m - 2] else 0
            fire = cnt >= params["patience"]
        elif strategy == "pcee":
            signal = params.get("signal", "entropy")
            t = params["threshold"]
            confident = (_norm_entropy(row) < t if signal == "entropy" else
                         max(row) >= t if signal == "maxprob" else conf[m - 1] >= t)
            cnt = cnt + 1 if confident else 0
            fire = cnt >= params["patience"]
            run_only = params.get("ensemble_span", "all_passed") == "confident_run"
            if fire and params.get("ensemble"):
                window = p[m - params["patience"]: m] if run_only else p[:m]
                return m, _argmax([sum(r[k] for r in window) for k in range(K)])
            if m == L and params.get("ensemble") and not fire:
                window = p[L - max(cnt, 1): L] if run_only else p[:L]
                return L, _argmax([sum(r[k] for r in window) for k in range(K)])
        elif strategy == "dge":
            c = sum(1 for i in range(1, m) if _div(params.get("measure", "kd"), row, p[i - 1]) < params["threshold"])
            fire = c >= params["patience"]
        elif strategy == "voting":
            pred, top = _vote(preds[:m], K)
            fire = top / m ** params["k"] >= params["delta"]
            if fire or m == L:
                return m, pred
        elif strategy == "lte":
            fire = conf[m - 1] >= params["threshold"]
        elif strategy == "oracle":
            fire = preds[m - 1] == label
        else:
            raise ValueError(strategy)
        if fire:
            return m, preds[m - 1]
    return L, preds[L - 1]


def exit_all(strategy, probs, *, labels=None, confidence=None, **params):
    exits, preds = [], []
    for i in range(len(probs)):
        e, y = exit_one(strategy, probs[i].tolist(),
                        label=None if labels is None else int(labels[i]),
                        conf=None if confidence is None else confidence[i].tolist(), **params)
        exits.append(e)
        preds.append(y)
    return exits, preds
