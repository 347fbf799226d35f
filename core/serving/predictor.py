"""Real early-exit inference: batch size 1, one layer at a time, stop when the strategy fires.

    text ─► tokenize ─► embed ─► layer 1 + exit 1 ─► decide? ─► layer 2 + exit 2 ─► decide? ─► ...

After each layer m the exit's softmax joins the probabilities so far and the rule code
`core.engine.strategies.decide(strategy, probs[:m], confidence=conf[:m], **params)` runs says whether to stop
(its inputs checked once per rule, not at every layer).
At the last layer `core.engine.strategies.apply` on the full [1, L, K] array gives the rule's final
prediction. The rules are causal, so this makes the same decision as `apply` on the exit cache.

Latencies are wall-clock milliseconds at batch size 1 of the MODEL: from token ids to the decision
(embeddings, layers, exits, softmax, decisions). Tokenization is the same fixed cost with or without
early exit and is reported on its own (`PredictResult.tokenize_ms`); `latency_ms + tokenize_ms` is
what a caller waits for. `measure_layer_ms` reports `embed_ms` (embeddings only) and each layer with
its exit, the numbers an exit cache stores to estimate latency from exit layers.

Batched (`predict_batch`, `run_batch`): a right-padded batch runs layer by layer; after layer m the
rule decides for every row still running at once (`decide_rows`: the rule code `decide` uses, over
rows); rows that exit leave the batch (hidden states and masks shrink, all-padding columns are cut,
and the masks are dropped once no padding is left). At the last layer `apply` gives the rule's final
prediction. Batches are length-sorted by default. `from_point(path)` builds a predictor from an
operating-point file (core.export) and uses its rule.
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from core.engine import strategies


@dataclass
class PredictResult:
    probs: np.ndarray                # [m, K] float32, softmax of exits 1..m
    exit_layer: int                  # m, counted from 1
    pred: int                        # predicted class
    latency_ms: float                # token ids to decision (embeddings, m layers, exits, decisions)
    layer_ms: list[float]            # [m] layer + exit + softmax + decision, per layer
    confidence: np.ndarray | None = None  # [m] learned exit confidence (LTE heads) or None
    tokenize_ms: float = 0.0         # text to token ids (not in latency_ms)
    label: str | None = None         # label name of `pred` when the predictor knows the names


def _softmax(logits: torch.Tensor) -> list[float]:
    """[1, K] logits -> K probabilities. One transfer (`tolist`) and plain Python: at K of 2-3 classes
    this is several times cheaper than torch or numpy calls right after a layer has run."""
    z = logits.tolist()[0]
    top = max(z)
    e = [math.exp(x - top) for x in z]
    s = sum(e)
    return [x / s for x in e]


def decide_rows(strategy: str, probs_prefix: np.ndarray, *, confidence=None, **params):
    """`core.engine.strategies.decide` for many rows at once: probs_prefix [n, m, K] (layers 1..m of each row
    still running) -> (fires at layer m [n] bool, prediction if it exits there [n]). Same rule code,
    vectorized over the rows."""
    f = strategies.features(probs_prefix, confidence=confidence)
    return _decide(strategy, f, strategies.resolve_params(strategy, params))


def _decide(strategy: str, f, spec_params: dict):
    """decide_rows on ready features and checked params (the predictor's per-layer hot path)."""
    fire, pred_at, _ = strategies.STRATEGIES[strategy].rule(f, **spec_params)   # [m, n]
    return fire[-1].astype(bool), (f.argmax[-1] if pred_at is None else pred_at[-1])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class EarlyExitPredictor:
    """Early-exit inference with a `core.models.multi_exit.MultiExitModel`. Runs in eval mode (a model in training
    mode is switched to eval for the call and back after); build it after moving the model to its
    device."""

    def __init__(self, model, tokenizer=None):
        self.model = model
        self.tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if self.tokenizer is None:
            raise ValueError("EarlyExitPredictor needs a tokenizer (the model carries none)")
        self.device = next(model.parameters()).device
        self.num_layers = model.num_layers
        self.num_labels = model.cfg.num_labels
        self.max_length = model.cfg.max_length
        self.has_confidence = model.lte_heads is not None
        self._checked: set = set()  # (strategy, params) already validated
        self._specs: dict = {}      # (strategy, params) -> resolved params
        # Fast path: a private copy of the Rust tokenizer with truncation fixed once. It yields the same
        # ids as `tokenizer(text, pair, truncation=True, max_length=...)` (tested) at half the cost.
        self._backend = None
        self._use_tt = "token_type_ids" in getattr(self.tokenizer, "model_input_names", ["token_type_ids"])
        backend = getattr(self.tokenizer, "backend_tokenizer", None)
        if getattr(self.tokenizer, "is_fast", False) and backend is not None:
            self._backend = copy.deepcopy(backend)
            self._backend.no_padding()
            self._backend.enable_truncation(self.max_length)

    # ---- pieces --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _inference(self):
        """inference_mode, and eval mode for the duration if the model is training."""
        was_training = self.model.training
        if was_training:
            self.model.eval()
        try:
            with torch.inference_mode():
                yield
        finally:
            if was_training:
                self.model.train()

    def _encode(self, text, text_pair=None):
        """Tokenize one input: (input_ids [1, T], token_type_ids [1, T] | None) on the model's device.
        No padding at batch size 1, so no attention mask is needed anywhere."""
        if not isinstance(text, str) or (text_pair is not None and not isinstance(text_pair, str)):
            raise ValueError("predict takes one text (str) and optionally one text_pair (str)")
        if self._backend is not None:
            enc = self._backend.encode(text, text_pair)
            ids = torch.tensor([enc.ids], device=self.device)                        # [1, T]
            if not self._use_tt or not any(enc.type_ids):  # all segment 0: embed treats None as zeros
                return ids, None
            return ids, torch.tensor([enc.type_ids], device=self.device)
        enc = self.tokenizer(text, text_pair, truncation=True, max_length=self.max_length, return_tensors="pt")
        ids = enc["input_ids"].to(self.device)
        tt = enc.get("token_type_ids")
        return ids, (tt.to(self.device) if tt is not None else None)

    def _check(self, strategy: str, params: dict) -> None:
        try:
            key = (strategy, tuple(sorted(params.items())))
            if key in self._checked:
                return
        except TypeError:  # unhashable parameter value: validate every time (and fail below)
            key = None
        spec = strategies.STRATEGIES.get(strategy)
        if spec is not None and "confidence" in spec.needs_for(params) and not self.has_confidence:
            raise ValueError(f"strategy {strategy!r} needs learned exit heads; this model has none "
                             "(train with ModelConfig.lte=True)")
        # one dry run of the rule on a dummy sample: unknown strategy or parameter, bad type or range,
        # a rule that needs gold labels (oracle) all raise ValueError here, before any layer runs
        L, K = self.num_layers, self.num_labels
        strategies.apply(strategy, np.full((1, L, K), 1.0 / K, dtype=np.float32),
                         confidence=np.full((1, L), 0.5, dtype=np.float32) if self.has_confidence else None,
                         **params)
        if key is not None:
            self._checked.add(key)

    def _spec(self, strategy: str, params: dict) -> dict:
        """`strategies.resolve_params` of a rule, resolved once per (strategy, params)."""
        try:
            key = (strategy, tuple(sorted(params.items())))
            hit = self._specs.get(key)
        except TypeError:  # unhashable parameter value: resolve every time
            return strategies.resolve_params(strategy, params)
        if hit is None:
            hit = self._specs[key] = strategies.resolve_params(strategy, params)
        return hit

    # ---- an operating-point file ----------------------------------------------------------------
    @classmethod
    def from_point(cls, path, *, device: str | torch.device = "cpu", precision: str | None = None) -> "EarlyExitPredictor":
        """A predictor for the run and exit rule an operating-point file (core.export, v1 or v2) names, at
        the point's precision (v1: fp32; `precision` overrides it, e.g. "fp32" for the full-model
        baseline): the weights' sha256 is checked first, then the model is converted as
        `core.serving.cache_variant.convert` converts it for that precision's cache (int8: dynamic
        quantization on CPU). `predict_batch` then uses the point's rule by default."""
        from core.models.multi_exit import MultiExitModel
        from core.serving.cache_variant import convert
        from core.serving.export import read_point

        point = read_point(path)
        precision = point.precision if precision is None else precision
        if precision == "int8" and torch.device(device).type != "cpu":
            raise ValueError(f"{point.path}: precision int8 (dynamic quantization) runs on CPU; run it with device cpu")
        if precision in ("fp16", "bf16") and torch.device(device).type != "cuda":
            raise ValueError(f"{point.path}: precision {precision} is for CUDA devices; run it on a GPU, or export "
                             "the point at fp32 or int8 for CPU")
        model = convert(MultiExitModel.from_run(point.run_dir, device=device), precision)
        if model.num_layers != point.data["num_layers"] or model.cfg.num_labels != len(point.label_names):
            raise ValueError(f"{point.path}: the point is for {point.data['num_layers']} layers and "
                             f"{len(point.label_names)} classes, the weights have {model.num_layers} and "
                             f"{model.cfg.num_labels}; export the point again")
        pred = cls(model)
        pred.point = point
        pred.precision = precision
        pred.label_names = point.label_names
        pred._check(point.strategy, point.params)
        return pred

    # ---- batched inference ---------------------------------------------------------------------
    def encode_many(self, texts, text_pairs=None) -> list[tuple[list[int], list[int] | None]]:
        """Token ids (and segment ids when not all zero) of every input, unpadded, truncated."""
        texts = list(texts)
        if text_pairs is not None:
            text_pairs = list(text_pairs)
            if len(text_pairs) != len(texts):
                raise ValueError(f"text_pairs has {len(text_pairs)} entries for {len(texts)} texts")
        if any(not isinstance(t, str) for t in texts) or (
                text_pairs is not None and any(not isinstance(t, str) for t in text_pairs)):
            raise ValueError("predict_batch takes lists of strings (texts and, for pairs, text_pairs)")
        if self._backend is not None:
            inputs = texts if text_pairs is None else list(zip(texts, text_pairs))
            encs = self._backend.encode_batch(inputs) if inputs else []
            return [(e.ids, e.type_ids if self._use_tt and any(e.type_ids) else None) for e in encs]
        out = []
        for i, t in enumerate(texts):
            enc = self.tokenizer(t, None if text_pairs is None else text_pairs[i], truncation=True,
                                 max_length=self.max_length)
            tt = enc.get("token_type_ids")
            out.append((enc["input_ids"], tt if tt is not None and any(tt) else None))
        return out

    def _pad(self, encs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Right-pad one batch: input_ids [B, T], attention_mask [B, T], token_type_ids [B, T] | None."""
        d = self.device
        if len(encs) == 1:  # one row (every row at batch size 1): nothing to pad
            a, b = encs[0]
            ids = torch.tensor([a], device=d)
            return ids, torch.ones_like(ids), (None if b is None else torch.tensor([b], device=d))
        T = max(len(ids) for ids, _ in encs)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((len(encs), T), pad, dtype=torch.long)
        mask = torch.zeros((len(encs), T), dtype=torch.long)
        tt = torch.zeros((len(encs), T), dtype=torch.long) if any(t is not None for _, t in encs) else None
        for r, (a, b) in enumerate(encs):
            ids[r, :len(a)] = torch.tensor(a)
            mask[r, :len(a)] = 1
            if b is not None:
                tt[r, :len(b)] = torch.tensor(b)
        return ids.to(d), mask.to(d), (tt.to(d) if tt is not None else None)

    def batches(self, encs, batch_size: int, *, sort_by_length: bool = True) -> list[np.ndarray]:
        """Row indices of each batch; sorted by token length (less padding) unless told otherwise."""
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        n = len(encs)
        order = (np.argsort([len(ids) for ids, _ in encs], kind="stable") if sort_by_length
                 else np.arange(n))
        return [order[i:i + int(batch_size)] for i in range(0, n, int(batch_size))]

    def run_batch(self, encs, *, strategy: str, params: dict):
        """Early exit on one padded batch; rows leave the batch at their exit layer.

        Returns (exit_layer [B], pred [B], probs [B, L, K] filled up to each exit, conf [B, L] | None,
        done_ms [B]: ms from the batch's embeddings to the layer where the row exited).
        """
        model, L, K = self.model, self.num_layers, self.num_labels
        B = len(encs)
        probs = np.zeros((B, L, K), dtype=np.float32)
        conf = np.zeros((B, L), dtype=np.float32) if self.has_confidence else None
        exit_layer = np.zeros(B, dtype=np.int64)
        pred = np.zeros(B, dtype=np.int64)
        done_ms = np.zeros(B)
        ids, mask, tt = self._pad(encs)
        spec = self._spec(strategy, params)
        t0 = time.perf_counter()
        mask = None if B == 1 or bool(mask.all()) else mask                     # no padding: no masks
        h, ext = model.embed(ids, mask, tt)                                     # [B, T, H], the layers' mask
        alive = np.arange(B)                                                    # batch rows still running
        for i in range(L):
            h, logits, c = model.layer_step(i, h, attention_mask=mask, ext_mask=ext)
            # one row left (every row at batch size 1): index by a slice, a view, not a fancy-index copy
            rows = slice(alive[0], alive[0] + 1) if len(alive) == 1 else alive
            probs[rows, i] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if conf is not None:
                conf[rows, i] = c.float().cpu().numpy()
            sub_c = None if conf is None else conf[rows, :i + 1]
            if i < L - 1:  # probabilities straight from softmax: no need to re-validate them each layer
                fired, p = _decide(strategy, strategies.ExitFeatures(probs[rows, :i + 1], confidence=sub_c), spec)
            else:  # last layer: the rule's own final prediction over all L exits, as `apply` gives it
                _, p = strategies.apply(strategy, probs[rows], confidence=sub_c, **params)
                fired = np.ones(len(alive), dtype=bool)
            out = alive[fired]
            exit_layer[out], pred[out] = i + 1, p[fired]
            done_ms[out] = (time.perf_counter() - t0) * 1e3
            if fired.all():
                break
            if fired.any():  # shrink the batch: hidden states and masks of the rows still running
                keep = torch.from_numpy(np.flatnonzero(~fired)).to(self.device)
                h = h.index_select(0, keep)
                alive = alive[~fired]
                if mask is not None:
                    mask = mask.index_select(0, keep)
                    T = int(mask.sum(1).max())                                  # drop all-padding columns
                    if T < mask.shape[1]:
                        h, mask = h[:, :T], mask[:, :T]
                    mask = None if bool(mask.all()) else mask                   # no padding left: no masks
                    ext = model.runner.extended_mask(mask, h)
        return exit_layer, pred, probs, conf, done_ms

    def run_pooled(self, encs, *, strategy: str, params: dict, batch_size: int):
        """Early exit on all `encs` with batches kept full at every depth: rows waiting for layer i from
        different input batches are pooled, and a layer runs on `batch_size` of them at a time (the
        deepest full queue first; at the end the shallowest first). Fewer, fuller layer calls than
        shrinking each batch on its own, same decisions. -> (exit_layer [N], pred [N], probs [N, L, K],
        conf [N, L] | None), in input order."""
        from torch.nn.utils.rnn import pad_sequence

        model, L, K, B = self.model, self.num_layers, self.num_labels, int(batch_size)
        n = len(encs)
        probs = np.zeros((n, L, K), dtype=np.float32)
        conf = np.zeros((n, L), dtype=np.float32) if self.has_confidence else None
        exit_layer = np.zeros(n, dtype=np.int64)
        pred = np.zeros(n, dtype=np.int64)
        spec = self._spec(strategy, params)
        queues: list[list] = [[] for _ in range(L)]          # queues[i]: (row, hidden [T_r, H]) before layer i
        feed = iter(self.batches(encs, B))

        def run_layer(i: int, items: list) -> None:
            rows = np.array([r for r, _ in items])
            lens = torch.tensor([x.shape[0] for _, x in items], device=self.device)
            h = pad_sequence([x for _, x in items], batch_first=True)                 # [b, T, H]
            mask = (torch.arange(h.shape[1], device=self.device)[None] < lens[:, None]).long()
            mask = None if bool(mask.all()) else mask
            ext = model.runner.extended_mask(mask, h)
            h, logits, c = model.layer_step(i, h, attention_mask=mask, ext_mask=ext)
            probs[rows, i] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
            if conf is not None:
                conf[rows, i] = c.float().cpu().numpy()
            sub_c = None if conf is None else conf[rows, :i + 1]
            if i < L - 1:
                fired, p = _decide(strategy, strategies.ExitFeatures(probs[rows, :i + 1], confidence=sub_c), spec)
            else:
                _, p = strategies.apply(strategy, probs[rows], confidence=sub_c, **params)
                fired = np.ones(len(rows), dtype=bool)
            exit_layer[rows[fired]], pred[rows[fired]] = i + 1, p[fired]
            for k in np.flatnonzero(~fired):
                queues[i + 1].append((int(rows[k]), h[k, :int(lens[k])]))

        while True:
            i = next((i for i in reversed(range(L)) if len(queues[i]) >= B), None)
            if i is None:
                idx = next(feed, None)
                if idx is not None:                                                    # embed the next batch
                    ids, mask, tt = self._pad([encs[j] for j in idx])
                    h, _ = model.embed(ids, None if bool(mask.all()) else mask, tt)
                    lens = mask.sum(1).tolist()
                    queues[0] += [(int(j), h[k, :lens[k]]) for k, j in enumerate(idx)]
                    continue
                i = next((i for i in range(L) if queues[i]), None)                     # drain, shallow first
                if i is None:
                    break
            items, queues[i] = queues[i][:B], queues[i][B:]
            run_layer(i, items)
        return exit_layer, pred, probs, conf

    def predict_batch(self, texts, text_pairs=None, *, batch_size: int = 32, strategy: str | None = None,
                      params: dict | None = None, sort_by_length: bool = True) -> list[PredictResult]:
        """Early exit on many inputs, `batch_size` at a time, results in input order.

        The rule is `strategy`/`params`, or the operating point's (`from_point`). Decisions are those
        of `core.engine.strategies.apply` on the same rows' per-layer probabilities. `latency_ms` of a row is
        the time from its batch's embeddings to its exit (batch-shared work included); `tokenize_ms`
        is the row's share of tokenizing everything.
        """
        strategy, params = self._rule(strategy, params)
        self._check(strategy, params)
        t_tok = time.perf_counter()
        encs = self.encode_many(texts, text_pairs)
        tok_ms = (time.perf_counter() - t_tok) * 1e3 / max(1, len(encs))
        results: list[PredictResult | None] = [None] * len(encs)
        names = getattr(self, "label_names", None)
        with self._inference():
            for idx in self.batches(encs, batch_size, sort_by_length=sort_by_length):
                layer, pred, probs, conf, done = self.run_batch([encs[j] for j in idx], strategy=strategy,
                                                                params=params)
                for r, j in enumerate(idx):
                    m = int(layer[r])
                    results[j] = PredictResult(
                        probs=probs[r, :m].copy(), exit_layer=m, pred=int(pred[r]), latency_ms=float(done[r]),
                        layer_ms=[], confidence=None if conf is None else conf[r, :m].copy(),
                        tokenize_ms=tok_ms, label=None if names is None else names[int(pred[r])])
        return results

    def full_batch(self, encs) -> np.ndarray:
        """The plain full model on one padded batch: embeddings, all L layers, the last exit only.
        -> probabilities [B, K] (the static baseline batched early exit is measured against)."""
        model, L = self.model, self.num_layers
        ids, mask, tt = self._pad(encs)
        mask = None if len(encs) == 1 or bool(mask.all()) else mask
        h, ext = model.embed(ids, mask, tt)
        for i in range(L - 1):
            h, _ = model.runner.run_layer(i, h, ext)
        _, logits, _ = model.layer_step(L - 1, h, attention_mask=mask, ext_mask=ext)
        return torch.softmax(logits.float(), dim=-1).cpu().numpy()

    def predict_full(self, texts, text_pairs=None, *, batch_size: int = 32,
                     sort_by_length: bool = True) -> np.ndarray:
        """Last-exit probabilities [N, K] of the full model, in input order."""
        encs = self.encode_many(texts, text_pairs)
        out = np.zeros((len(encs), self.num_labels), dtype=np.float32)
        with self._inference():
            for idx in self.batches(encs, batch_size, sort_by_length=sort_by_length):
                out[idx] = self.full_batch([encs[j] for j in idx])
        return out

    def _rule(self, strategy, params) -> tuple[str, dict]:
        point = getattr(self, "point", None)
        if strategy is None:
            if point is None:
                raise ValueError("predict_batch needs strategy= (or a predictor made with from_point)")
            return point.strategy, point.params if params is None else dict(params)
        return strategy, dict(params or {})

    # ---- inference -----------------------------------------------------------------------------
    def predict(self, text: str, text_pair: str | None = None, *, strategy: str, **params) -> PredictResult:
        """Run layer by layer until `strategy` fires; see the module docstring."""
        self._check(strategy, params)
        model, L, spec = self.model, self.num_layers, self._spec(strategy, params)
        probs = np.empty((L, self.num_labels), dtype=np.float32)               # [L, K], filled to m
        conf = np.empty(L, dtype=np.float32) if self.has_confidence else None  # [L]
        layer_ms = []
        with self._inference():
            t_tok = time.perf_counter()
            ids, tt = self._encode(text, text_pair)                             # [1, T]
            t0 = time.perf_counter()
            h, _ = model.embed(ids, None, tt)                                   # [1, T, H]
            t_prev = time.perf_counter()
            for i in range(L):
                h, logits, c = model.layer_step(i, h)                          # [1, T, H], [1, K], [1]
                probs[i] = _softmax(logits)
                if conf is not None:
                    conf[i] = float(c[0])
                m = i + 1
                if m < L:  # `decide`'s rule code on the layers so far, inputs already checked (_check)
                    fire, at = _decide(strategy, strategies.ExitFeatures(
                        probs[None, :m], confidence=None if conf is None else conf[None, :m]), spec)
                    fired, pred = bool(fire[0]), int(at[0])
                else:  # last layer: the rule's own final prediction over all L exits
                    _, preds = strategies.apply(strategy, probs[None],
                                                confidence=None if conf is None else conf[None], **params)
                    fired, pred = True, int(preds[0])
                t = time.perf_counter()
                layer_ms.append((t - t_prev) * 1e3)
                t_prev = t
                if fired:
                    break
        return PredictResult(probs=probs[:m].copy(), exit_layer=m, pred=int(pred),
                             latency_ms=(t_prev - t0) * 1e3, layer_ms=layer_ms,
                             confidence=None if conf is None else conf[:m].copy(),
                             tokenize_ms=(t0 - t_tok) * 1e3)

    def full_latency_ms(self, text: str, text_pair: str | None = None, *, repeats: int = 1) -> float:
        """Median wall-clock ms of the plain full model at batch size 1, from token ids (as
        `latency_ms`): embeddings, all L layers, the last exit and its softmax; no intermediate exits
        and no decisions (the static baseline early exit is measured against)."""
        model, L, times = self.model, self.num_layers, []
        with self._inference():
            for _ in range(max(1, int(repeats))):
                ids, tt = self._encode(text, text_pair)
                t0 = time.perf_counter()
                h, _ = model.embed(ids, None, tt)
                for i in range(L - 1):
                    h, _ = model.runner.run_layer(i, h)
                _, logits, _ = model.layer_step(L - 1, h)  # last layer with its exit (bypass included)
                _softmax(logits)
                times.append((time.perf_counter() - t0) * 1e3)
        return float(np.median(times))

    def measure_layer_ms(self, texts, *, repeats: int = 3, warmup: int = 1):
        """Median batch-1 latency of the embeddings and of each layer with its exit.

        Returns (embed_ms, layer_ms: np.ndarray [L], layer m + exit m + softmax), tokenization
        excluded. `texts` are strings or (text, text_pair) pairs; each runs `repeats` times after
        `warmup` untimed passes over the first text.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("measure_layer_ms needs at least one text")
        model, L, dev = self.model, self.num_layers, self.device
        embed_t, layer_t = [], [[] for _ in range(L)]

        def one(item, record):
            a, b = (item, None) if isinstance(item, str) else tuple(item)
            ids, tt = self._encode(a, b)
            _sync(dev)
            t0 = time.perf_counter()
            h, _ = model.embed(ids, None, tt)
            _sync(dev)
            t_prev = time.perf_counter()
            if record:
                embed_t.append((t_prev - t0) * 1e3)
            for i in range(L):
                h, logits, _ = model.layer_step(i, h)
                _softmax(logits)
                t = time.perf_counter()
                if record:
                    layer_t[i].append((t - t_prev) * 1e3)
                t_prev = t

        # Batch 1 is timed on one CPU thread: on a shared machine, thread hand-offs swamp a single
        # small layer and the per-layer numbers stop meaning anything.
        threads = torch.get_num_threads()
        if dev.type == "cpu":
            torch.set_num_threads(1)
        try:
            with self._inference():
                for _ in range(max(0, int(warmup))):
                    one(texts[0], False)
                for _ in range(max(1, int(repeats))):
                    for item in texts:
                        one(item, True)
        finally:
            torch.set_num_threads(threads)
        return float(np.median(embed_t)), np.array([np.median(t) for t in layer_t])
