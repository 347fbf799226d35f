"""Shared fixtures: realistic synthetic run folders and a live Streamlit server.

Synthetic runs look like real ones to the app: an ExitCache whose exits grow more confident with
depth (with some samples that are right early and wrong late: overthinking), texts, per-layer
latencies, learned confidences on one run, a config.json, a status.json and a metrics.jsonl with
train / eval / omega records. A corrupt run (garbage cache.npz) sits beside them.
"""
from __future__ import annotations

import contextlib
import os
import socket
import string
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from core.engine.cache import ExitCache
from core.runs.folders import write_status
from core.runs.io import append_jsonl, atomic_write_json

REPO = Path(__file__).resolve().parent.parent

WORDS = ("a gripping , funny and tender film . the plot drags and the acting is flat . "
         "one of the best of the year . a dull , lifeless mess . beautifully shot but hollow . "
         "the cast is terrific . nothing here works . a quiet triumph . too long by an hour").split()


def synthetic_cache(n: int = 300, num_layers: int = 6, k: int = 2, *, seed: int = 0, lte: bool = False,
                    pairs: bool = False, method: str = "joint", task: str = "synthetic",
                    source: dict | None = None, metric: str = "accuracy", latency: bool = True) -> ExitCache:
    """An ExitCache shaped like a fine-tuned multi-exit encoder's dev-set output."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    ease = rng.normal(1.0, 1.0, n)                       # per-sample difficulty (negative = hard)
    depth = (np.arange(1, num_layers + 1) / num_layers) ** 0.8
    margin = 5.0 * ease[:, None] * depth[None, :]        # [N, L] grows with depth
    overthinkers = rng.random(n) < 0.08                  # right in the middle, wrong at the end
    late = np.arange(num_layers) >= num_layers - 2
    margin[overthinkers[:, None] & late[None, :]] *= -0.6
    walk = np.cumsum(rng.normal(0, 0.8, (n, num_layers, k)), axis=1) * 0.6
    logits = walk + rng.normal(0, 0.5, (n, num_layers, k))
    logits[np.arange(n), :, labels] += margin
    logits -= logits.max(-1, keepdims=True)
    probs = np.exp(logits)
    probs /= probs.sum(-1, keepdims=True)
    confidence = None
    if lte:
        right = probs.argmax(-1) == labels[:, None]
        z = 4 * (probs.max(-1) - 0.75) + 1.5 * (right - 0.5) + rng.normal(0, 0.5, (n, num_layers))
        confidence = (1 / (1 + np.exp(-z))).astype(np.float32)

    def sentence(i):
        m = rng.integers(6, 16)
        return f"#{i} " + " ".join(rng.choice(WORDS, m))

    texts = [[sentence(i), sentence(i)] if pairs else sentence(i) for i in range(n)]
    if source is not None:  # texts to be restored from a data source instead of stored
        texts, source = None, {**source, "row_ids": list(range(n))}
    layer_ms = 1.8 + 0.1 * rng.random(num_layers) if latency else None
    names = ["negative", "positive"] if k == 2 else [f"class_{j}" for j in range(k)]
    return ExitCache(probs=probs, labels=labels, label_names=names, texts=texts, source=source,
                     confidence=confidence,
                     layer_ms=layer_ms, embed_ms=0.6 if latency else None,
                     meta={"task": task, "metric": metric, "backbone": "minilm-l6", "method": method,
                           "seed": seed, "command": f"python -m core.train --task {task} --method {method}"})


def write_synthetic_run(folder: str | os.PathLike, *, omega: bool = False, epochs: int = 3, **kw) -> Path:
    """A complete run folder: cache.npz, config.json, status.json, metrics.jsonl."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cache = synthetic_cache(**kw)
    cache.save(folder)
    cfg = {k: cache.meta[k] for k in ("task", "backbone", "method", "seed", "command")}
    atomic_write_json(folder / "config.json", cfg)
    write_status(folder, "done", progress=1.0, started=time.time() - 60, finished=time.time())
    from core.engine.metrics import per_exit_scores

    scores = per_exit_scores(cache).tolist()
    L = cache.L
    t = time.time()
    for step in range(1, epochs * 10 + 1):
        append_jsonl(folder / "metrics.jsonl", {"kind": "train", "step": step, "epoch": step // 10,
                                                 "time": t + step, "loss": 1.0 / step,
                                                 "exit_losses": [1.0 / step] * L, "lr": 2e-5})
        if omega and step % 10 == 0:
            terms = ["ce"] + [f"kd:{j}" for j in range(1, L)]
            rng = np.random.default_rng(step)
            om = rng.dirichlet(np.ones(len(terms)) * (1 + step / 10), L)
            append_jsonl(folder / "metrics.jsonl", {"kind": "omega", "step": step, "epoch": step // 10,
                                                     "time": t + step, "omega": om.tolist(), "terms": terms})
        if step % 10 == 0:
            append_jsonl(folder / "metrics.jsonl", {"kind": "eval", "split": "dev", "step": step,
                                                     "epoch": step // 10, "time": t + step,
                                                     "exit_scores": scores, "metric": "accuracy"})
    return folder


def write_run_root(root: str | os.PathLike, *, n: int = 300) -> Path:
    """A checkpoint root with five good runs (one with learned confidences and Ω, one of sentence pairs
    scored by macro-F1, one deep, one without texts or latencies), a corrupt one and one still training."""
    root = Path(root)
    write_synthetic_run(root / "synth-joint", n=n, num_layers=6, k=2, seed=1, method="joint")
    write_synthetic_run(root / "synth-leebert", n=n, num_layers=6, k=2, seed=2, method="leebert",
                        omega=True, lte=True)
    write_synthetic_run(root / "synth-pair3", n=n, num_layers=6, k=3, seed=3, method="badge", pairs=True,
                        task="synthetic-pairs", metric="macro_f1")
    write_synthetic_run(root / "synth-deep", n=200, num_layers=12, k=2, seed=4, method="two_stage")
    write_synthetic_run(root / "synth-notexts", n=200, num_layers=6, k=2, seed=5, latency=False,
                        source={"kind": "files", "task": "synthetic", "split": "dev",
                                "file": str(root / "gone" / "dev.csv")})
    bad = root / "broken-run"
    bad.mkdir(parents=True, exist_ok=True)
    (bad / "cache.npz").write_bytes(b"this is not a zip file")
    atomic_write_json(bad / "config.json", {"task": "sst2", "method": "joint"})
    busy = root / "still-training"
    busy.mkdir(parents=True, exist_ok=True)
    write_status(busy, "running", progress=0.4)
    return root


@pytest.fixture(scope="session")
def run_root(tmp_path_factory) -> Path:
    return write_run_root(tmp_path_factory.mktemp("checkpoints"))


# ---- a tiny random backbone (real transformers parts, no download) -----------------------------------
TINY_WORDS = ("the", "a", "film", "movie", "was", "is", "and", "but", "not", "very")
POS = ["good", "great", "funny", "fun", "best"]
NEG = ["bad", "dull", "boring", "flat", "worst"]


def write_tiny_backbone(folder: str | os.PathLike, *, layers: int = 3, family: str = "bert",
                        words=(*TINY_WORDS, *POS, *NEG), punctuation: str = ".,!?", pad_vocab: bool = True,
                        fast: bool = True, max_positions: int = 64) -> str:
    """A tiny random encoder (hidden 32, `layers` layers, 4 heads, vocab 99, seed 0) with a WordPiece
    tokenizer over `words`, saved as a backbone folder core.models.backbones loads. `family` bert | distilbert;
    `fast` saves a BertTokenizerFast (else the Python BertTokenizer); `pad_vocab` fills the vocabulary
    to the model's 99 entries."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer, BertTokenizerFast, DistilBertConfig, DistilBertModel

    folder = Path(folder)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *string.ascii_lowercase,
             *("##" + c for c in string.ascii_lowercase), *words, *punctuation]
    if pad_vocab:
        vocab += [f"tok{i}" for i in range(99 - len(vocab))]
        assert len(vocab) == 99
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (BertTokenizerFast if fast else BertTokenizer)(str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    if family == "distilbert":
        enc = DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=layers, n_heads=4,
                                               hidden_dim=37, max_position_embeddings=max_positions))
    else:
        enc = BertModel(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                   intermediate_size=37, max_position_embeddings=max_positions))
    enc.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory) -> str:
    """A 3-layer tiny BERT backbone folder (fast tokenizer), one per test module."""
    return write_tiny_backbone(tmp_path_factory.mktemp("tiny") / "bert")


# ---- a live server for browser tests ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(root: Path, log: Path, *, start_timeout: float = 60, extra_args: tuple = ()):
    """`streamlit run app.py` on a free port with EEL_CHECKPOINTS = root; yields its URL."""
    port = free_port()
    env = {**os.environ, "EEL_CHECKPOINTS": str(root), "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.headless", "true", "--browser.gatherUsageStats", "false", *extra_args],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://localhost:{port}"
    try:
        deadline = time.time() + start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"streamlit did not start; log:\n{log.read_text()[-3000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="session")
def app_server(run_root, tmp_path_factory):
    """The app on the synthetic run root."""
    with streamlit_server(run_root, tmp_path_factory.mktemp("server") / "streamlit.log") as url:
        yield url


@pytest.fixture(scope="session")
def bundled_server(tmp_path_factory):
    """The app on the committed runs in checkpoints/ (what a newcomer opens)."""
    with streamlit_server(REPO / "checkpoints", tmp_path_factory.mktemp("server") / "bundled.log") as url:
        yield url


# ---- fixtures of the model tests ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and steadier on a shared machine (restored afterwards). Modules
    of torch tests use it with `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def spread_backbone(tmp_path_factory):
    """The predictor tests' tiny BERT (helpers.SPREAD_LAYERS layers, a vocabulary of helpers.WORDS)."""
    from tests.helpers import SPREAD_LAYERS, WORDS

    return write_tiny_backbone(tmp_path_factory.mktemp("tiny") / "bert", layers=SPREAD_LAYERS, words=WORDS,
                               punctuation=".,!?'", pad_vocab=False, fast=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_backbone):
    """A tiny backbone and a 40-row / 12-row CSV task (the training tests' default)."""
    from tests.helpers import write_csv

    root = tmp_path_factory.mktemp("tiny")
    return {"backbone": tiny_backbone,
            "train_file": write_csv(root / "train.csv", 40, 0), "dev_file": write_csv(root / "dev.csv", 12, 1),
            "text_column": "review", "label_column": "sentiment"}
