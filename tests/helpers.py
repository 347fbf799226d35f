"""Helpers shared by several test modules (fixtures live in conftest.py); no test module imports another."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from streamlit.testing.v1 import AppTest

from tests.conftest import NEG, POS, REPO, write_tiny_backbone

APP = str(REPO / "app.py")


# ---- app pages ---------------------------------------------------------------------------------------
def open_page(page: str | None = None, **params) -> AppTest:
    """Open `page` the way a link does: query parameters set before the first run."""
    at = AppTest.from_file(APP, default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page and page != "pages/home.py":
        at.switch_page(page)
        for k, v in params.items():
            at.query_params[k] = v
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


# ---- many sessions at once ------------------------------------------------------------------------
THREADS = 12


def at_once(work, threads: int | None = None):
    """Start `threads` (default THREADS) threads running work(i) at the same moment, as Streamlit runs
    each session's script in its own thread; their results in order."""
    threads = threads or THREADS
    start = threading.Barrier(threads)
    out, errors = [None] * threads, []

    def body(i):
        start.wait()
        try:
            out[i] = work(i)
        except Exception as e:  # noqa: BLE001 - the test reports any failure of any thread
            errors.append(e)

    workers = [threading.Thread(target=body, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join(30)
    assert not errors, errors
    return out


# ---- predictor ---------------------------------------------------------------------------------------
# the predictor tests' tiny model: SPREAD_LAYERS layers, SPREAD_CLASSES classes, a vocabulary of WORDS
SPREAD_LAYERS, SPREAD_CLASSES = 4, 3
WORDS = "the a film movie good bad great dull funny boring is was and but not very it this".split()
TEXTS = ["the film was very good!", "a dull , boring movie", "funny", "it is not great but it was fun",
         "bad", "this movie is very very dull", "it was not bad , it was good", "boring but funny"]


def full_probs(model, texts):
    import torch

    x = model.tokenize(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(**x)
    conf = None if out.confidence is None else out.confidence.float().numpy()
    return out.logits.float().softmax(-1).numpy(), conf


def gap_threshold(values, q):
    """A threshold near quantile q of `values` in the middle of a gap >= 1e-3 (no ties either side)."""
    v = np.unique(np.round(np.asarray(values, dtype=np.float64).ravel(), 9))
    v = v[np.isfinite(v)]
    gaps = np.diff(v)
    ok = np.flatnonzero(gaps > 1e-3)
    j = ok[np.argmin(np.abs(ok - q * len(v)))]
    return float((v[j] + v[j + 1]) / 2)


def signals(probs):
    """The quantities rules threshold, computed here from their definitions (for tie-free thresholds)."""
    logp = np.log(np.clip(probs, 1e-12, None))
    entropy = -(probs * logp).sum(-1) / np.log(SPREAD_CLASSES)                                   # [N, L]
    kd = -np.einsum("nmk,nik->nmi", probs, logp)                                    # [N, m, i]
    mix = 0.5 * (probs[:, :, None] + probs[:, None, :])                             # [N, m, i, K]
    kl = lambda p, q: (p * (np.log(np.clip(p, 1e-12, None)) - np.log(np.clip(q, 1e-12, None)))).sum(-1)
    js = 0.5 * kl(probs[:, :, None], mix) + 0.5 * kl(probs[:, None, :], mix)
    lower = np.tri(SPREAD_LAYERS, k=-1, dtype=bool)
    onehot = probs.argmax(-1)[..., None] == np.arange(SPREAD_CLASSES)                            # [N, L, K]
    top_votes = np.cumsum(onehot, 1).max(-1)                                        # [N, L]
    return dict(entropy=entropy, maxprob=probs.max(-1), kd=kd[:, lower], js=js[:, lower], votes=top_votes)


def strategy_cases(probs, conf):
    s = signals(probs)
    cases = [("budget", dict(layer=m)) for m in range(1, SPREAD_LAYERS + 1)]
    for q in (0.25, 0.6):
        cases += [("entropy", dict(threshold=gap_threshold(s["entropy"], q))),
                  ("maxprob", dict(threshold=gap_threshold(s["maxprob"], q))),
                  ("lte", dict(threshold=gap_threshold(conf, q))),
                  ("dge", dict(patience=1, threshold=gap_threshold(s["kd"], q), measure="kd")),
                  ("dge", dict(patience=2, threshold=gap_threshold(s["js"], q), measure="js"))]
    cases += [("patience", dict(patience=p)) for p in (1, 2)]
    for ens in (False, True):
        cases += [("pcee", dict(patience=2, threshold=gap_threshold(s["entropy"], 0.5), signal="entropy",
                                ensemble=ens)),
                  ("pcee", dict(patience=1, threshold=gap_threshold(s["maxprob"], 0.5), signal="maxprob",
                                ensemble=ens)),
                  ("pcee", dict(patience=2, threshold=gap_threshold(conf, 0.4), signal="learned", ensemble=ens))]
    for k in (0.0, 0.5):
        v = s["votes"] / (np.arange(SPREAD_LAYERS) + 1.0) ** k
        cases.append(("voting", dict(k=k, delta=gap_threshold(v, 0.6))))
    return cases


def spread_model(backbone, **kw):
    """A random model whose exits disagree and are confident enough for every rule to fire somewhere."""
    import torch

    from core.models.multi_exit import ModelConfig, MultiExitModel

    torch.manual_seed(0)
    model = MultiExitModel(ModelConfig(backbone=backbone, num_labels=SPREAD_CLASSES, **kw)).eval()
    with torch.no_grad():
        for ex in model.exits:
            for p in ex.parameters():
                p.normal_(std=1.5)
        for part in (model.bypasses or []), (model.lte_heads or []):
            for mod in part:
                for p in mod.parameters():
                    p.normal_(std=1.0)
    return model


# ---- train -------------------------------------------------------------------------------------------
def write_csv(path: Path, n: int, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lines = ["review,sentiment"]
    for i in range(n):
        lab = i % 2
        a, b = rng.choice(POS if lab else NEG, 2, replace=False)
        lines.append(f"the film was {a} and {b},{'pos' if lab else 'neg'}")
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def base_config(tiny, out, **over) -> dict:
    return {**tiny, "out": str(out), "batch_size": 8, "epochs": 1, "latency_samples": 2, **over}


# ---- train page --------------------------------------------------------------------------------------
def write_page_backbone(folder: Path, layers: int = 2) -> str:
    """The shared tiny BERT with 2 layers, 512 positions and "'-" in its vocabulary: what the app's tests
    train on `tiny_csv`'s sentences."""
    return write_tiny_backbone(folder, layers=layers, punctuation=".,!?'-", max_positions=512)


def tiny_csv(n: int = 24, seed: int = 0, *, pairs: bool = False) -> str:
    rng = np.random.default_rng(seed)
    lines = ["premise,hypothesis,gold" if pairs else "review,sentiment"]
    for i in range(n):
        lab = i % 2
        a, b = rng.choice(POS if lab else NEG, 2, replace=False)
        if pairs:
            lines.append(f"the film was {a},it was {b if lab else rng.choice(POS)},{'same' if lab else 'diff'}")
        else:
            lines.append(f"the film was {a} and {b},{'pos' if lab else 'neg'}")
    return "\n".join(lines) + "\n"


def open_train(**query) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=90)
    for k, v in query.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/train.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def st_active(at: AppTest) -> bool:
    return bool(at.session_state["tr.active"]) if "tr.active" in at.session_state else False


def poll_until_final(at: AppTest, timeout: float = 120.0) -> AppTest:
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(1.0)
        at.run()
        assert not at.exception, [e.value for e in at.exception]
        if not st_active(at):
            at.run()  # the rerun a finished job asks for
            return at
    raise AssertionError("the job did not finish")


# ---- strategies --------------------------------------------------------------------------------------
def random_cache(seed, n=400, num_layers=6, k=3):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, num_layers, k)) * rng.uniform(0.2, 4.0, size=(n, num_layers, 1))
    probs = np.exp(logits)
    probs = (probs / probs.sum(-1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, k, n)
    conf = rng.random((n, num_layers)).astype(np.float32)
    return probs, labels, conf
