"""The exit cache: every exit's class probabilities for one model on one dev set.

Everything the app shows about a trained model comes from this file, and everything a training run
leaves for the app goes into it. It is one `.npz` (numpy arrays plus a JSON header), small and
self-describing; loading validates it and names the file and the fault when something is wrong.
"""
from __future__ import annotations

import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.runs.folders import CACHE_FILE
from core.runs.io import atomic_write_bytes

FORMAT_VERSION = 1
PROB_SUM_TOL = 1e-4
PRECISIONS = ("fp32", "int8", "fp16", "bf16")   # a run's caches: cache.npz (fp32), cache-<precision>.npz


def variant_file(precision: str) -> str:
    """The cache file name of a precision inside a run folder (fp32 is the run's own cache.npz)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    return CACHE_FILE if precision == "fp32" else f"cache-{precision}.npz"


def precision_caches(run_folder) -> dict[str, Path]:
    """{precision: cache path} of the caches a run folder holds (fp32 first)."""
    folder = Path(run_folder)
    return {p: folder / variant_file(p) for p in PRECISIONS if (folder / variant_file(p)).is_file()}


@dataclass
class ExitCache:
    probs: np.ndarray                      # [N, L, K] float32, exit m's softmax for sample i
    labels: np.ndarray                     # [N] int64 in [0, K)
    label_names: list[str]                 # [K]
    texts: list | None = None              # [N] str, or [a, b] pairs; None when `source` is given
    source: dict | None = None             # {"task", "split", "row_ids", ...} for core.data.tasks.restore_texts
    confidence: np.ndarray | None = None   # [N, L] float32 in [0, 1], learned exit confidence (LTE)
    layer_ms: np.ndarray | None = None     # [L] batch-1 latency of layer m with its exit head
    embed_ms: float | None = None          # batch-1 latency of the embeddings
    meta: dict[str, Any] = field(default_factory=dict)  # task, metric, backbone, method, seed, created, command, precision
    latency: dict | None = None            # measured ms per batch by batch size (see `latency_fault`), or None

    def __post_init__(self):
        self.probs = np.asarray(self.probs, dtype=np.float32)
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)
        self.label_names = [str(n) for n in self.label_names]
        if self.confidence is not None:
            self.confidence = np.asarray(self.confidence, dtype=np.float32)
        if self.layer_ms is not None:
            self.layer_ms = np.asarray(self.layer_ms, dtype=np.float64)
        if self.embed_ms is not None:
            self.embed_ms = float(self.embed_ms)
        self.meta = dict(self.meta)
        if self.latency is not None:
            self.latency = dict(self.latency)
        self.meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S"))
        self.validate()

    # ---- shape -------------------------------------------------------------------------------
    @property
    def N(self) -> int:
        return self.probs.shape[0]

    @property
    def L(self) -> int:
        return self.probs.shape[1]

    @property
    def K(self) -> int:
        return self.probs.shape[2]

    @property
    def metric(self) -> str:
        return self.meta.get("metric", "accuracy")

    def validate(self, where: str = "ExitCache") -> None:
        """Raise ValueError naming `where` and the fault when any array is malformed."""
        def fail(msg):
            raise ValueError(f"{where}: {msg}")

        p = self.probs
        if p.ndim != 3:
            fail(f"probs must be [N, L, K], got shape {p.shape}")
        n, num_layers, k = p.shape
        if n == 0 or num_layers == 0 or k < 2:
            fail(f"probs needs N >= 1, L >= 1 and K >= 2 classes, got shape {p.shape}")
        if not np.isfinite(p).all():
            fail("probs contains NaN or infinite values")
        if (p < 0).any():
            fail("probs contains negative values")
        worst = np.abs(p.sum(-1) - 1.0).max()
        if worst > PROB_SUM_TOL:
            fail(f"rows of probs must sum to 1 within {PROB_SUM_TOL}; worst row is off by {worst:.3g}")
        if self.labels.shape != (n,):
            fail(f"labels must have shape [{n}], got {self.labels.shape}")
        if n and (self.labels.min() < 0 or self.labels.max() >= k):
            fail(f"labels must lie in [0, {k}); found {self.labels.min()}..{self.labels.max()}")
        if len(self.label_names) != k:
            fail(f"label_names has {len(self.label_names)} names for K = {k} classes")
        if self.texts is not None and len(self.texts) != n:
            fail(f"texts has {len(self.texts)} entries for N = {n} samples")
        if self.source is not None:
            if not isinstance(self.source, dict):
                fail("source must be a dict such as {'task': ..., 'split': ..., 'row_ids': [...]}")
            ids = self.source.get("row_ids")
            if ids is not None and len(ids) != n:
                fail(f"source.row_ids has {len(ids)} entries for N = {n} samples")
        if self.confidence is not None:
            c = self.confidence
            if c.shape != (n, num_layers):
                fail(f"confidence must have shape [{n}, {num_layers}], got {c.shape}")
            if not np.isfinite(c).all() or (c < 0).any() or (c > 1).any():
                fail("confidence must be finite and lie in [0, 1]")
        if self.layer_ms is not None:
            if self.layer_ms.shape != (num_layers,):
                fail(f"layer_ms must have shape [{num_layers}], got {self.layer_ms.shape}")
            if not np.isfinite(self.layer_ms).all() or (self.layer_ms <= 0).any():
                fail("layer_ms must be finite and positive")
        if self.embed_ms is not None and not (np.isfinite(self.embed_ms) and self.embed_ms >= 0):
            fail("embed_ms must be finite and non-negative")
        if self.latency is not None:
            fault = latency_fault(self.latency, num_layers)
            if fault:
                fail(fault)

    @property
    def precision(self) -> str:
        """The precision the probabilities were computed at (caches written before precisions: fp32)."""
        return str(self.meta.get("precision", "fp32"))

    # ---- texts -------------------------------------------------------------------------------
    def get_texts(self) -> list:
        """The inputs, either stored or restored from the data source (via core.data.tasks)."""
        if self.texts is not None:
            return list(self.texts)
        if self.source is None:
            raise ValueError("this cache stores neither texts nor a data source to restore them from")
        from core.data.tasks import restore_texts  # lazy: keeps the engine light

        return restore_texts(self.source)

    # ---- persistence -------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> Path:
        """Write atomically to `path` (a .npz file, or a run folder -> <folder>/cache.npz)."""
        path = _cache_path(path, for_write=True)
        header = {
            "format_version": FORMAT_VERSION,
            "label_names": self.label_names,
            "texts": self.texts,
            "source": self.source,
            "embed_ms": self.embed_ms,
            "meta": self.meta,
        }
        if self.latency is not None:  # optional: caches without it keep loading
            header["latency"] = self.latency
        arrays = {"probs": self.probs, "labels": self.labels,
                  "header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
        if self.confidence is not None:
            arrays["confidence"] = self.confidence
        if self.layer_ms is not None:
            arrays["layer_ms"] = self.layer_ms
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "ExitCache":
        """Load from a .npz file or a run folder; ValueError names the file and the fault."""
        path = _cache_path(path, for_write=False)
        if path.is_file() and not zipfile.is_zipfile(path):
            raise ValueError(f"{path}: unreadable exit cache (not an .npz archive; truncated or overwritten?); "
                             "re-create it with `python -m core.train` or delete the run folder")
        try:
            with np.load(path, allow_pickle=False) as z:
                missing = {"probs", "labels", "header"} - set(z.files)
                if missing:
                    raise ValueError(f"missing arrays {sorted(missing)} (found {sorted(z.files)})")
                header = json.loads(bytes(z["header"]).decode("utf-8"))
                arrays = {name: z[name] for name in z.files if name != "header"}
        except ValueError as e:
            raise ValueError(f"{path}: not a valid exit cache: {e}") from e
        except Exception as e:  # zipfile.BadZipFile, OSError, EOFError, ...
            raise ValueError(f"{path}: unreadable exit cache ({type(e).__name__}: {e}); "
                             "re-create it with `python -m core.train` or delete the run folder") from e
        redo = "; re-create it with `python -m core.train` or delete the run folder"
        if not isinstance(header, dict):
            raise ValueError(f"{path}: not a valid exit cache: {header_fault(header)}{redo}")
        if header.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{path}: cache format {header.get('format_version')!r} is not "
                             f"{FORMAT_VERSION}; re-create the cache")
        fault = header_fault(header)
        if fault:
            raise ValueError(f"{path}: not a valid exit cache: {fault}{redo}")
        for name, dtype in (("probs", np.floating), ("labels", np.integer), ("confidence", np.floating),
                            ("layer_ms", np.floating)):
            if name in arrays and not np.issubdtype(arrays[name].dtype, dtype):
                raise ValueError(f"{path}: {name} has dtype {arrays[name].dtype}, expected {dtype.__name__}")
        cache = object.__new__(cls)
        cache.probs = arrays["probs"]
        cache.labels = arrays["labels"]
        cache.label_names = header.get("label_names") or []
        cache.texts = header.get("texts")
        cache.source = header.get("source")
        cache.confidence = arrays.get("confidence")
        cache.layer_ms = arrays.get("layer_ms")
        cache.embed_ms = header.get("embed_ms")
        cache.meta = header.get("meta") or {}
        cache.latency = header.get("latency")
        try:
            cls.__post_init__(cache)
        except ValueError as e:
            raise ValueError(f"{path}: {str(e).removeprefix('ExitCache: ')}") from None
        except (TypeError, AttributeError) as e:  # a shape the checks above did not foresee
            raise ValueError(f"{path}: not a valid exit cache ({type(e).__name__}: {e}){redo}") from e
        return cache


# meta fields the pages show or compute with, and the JSON types they must have when present
_META_TYPES = {"task": str, "metric": str, "backbone": str, "method": str, "run": str, "created": str,
               "command": str, "seed": int, "precision": str}


def _kind(value) -> str:
    """A JSON value's kind in JSON's own words, for messages."""
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


def _is_text(t) -> bool:
    """One stored input: a string, or a [a, b] pair of strings."""
    return isinstance(t, str) or (isinstance(t, list) and len(t) == 2 and all(isinstance(x, str) for x in t))


def header_fault(header) -> str | None:
    """What is wrong with the shape of a cache's JSON header (naming the field), or None. The arrays
    and the lengths are checked afterwards by `ExitCache.validate`."""
    if not isinstance(header, dict):
        return f"the header must be a JSON object, got {_kind(header)}"
    names = header.get("label_names")
    if not isinstance(names, list):
        return f"header field 'label_names' must be a list of strings, got {_kind(names)}"
    bad = next((i for i, n in enumerate(names) if not isinstance(n, str)), None)
    if bad is not None:
        return f"header field 'label_names' entry {bad} must be a string, got {_kind(names[bad])}"
    texts = header.get("texts")
    if texts is not None:
        if not isinstance(texts, list):
            return f"header field 'texts' must be a list of strings (or [a, b] pairs) or null, got {_kind(texts)}"
        bad = next((i for i, t in enumerate(texts) if not _is_text(t)), None)
        if bad is not None:
            return (f"header field 'texts' entry {bad} must be a string or a pair of strings, "
                    f"got {_kind(texts[bad])}")
    source = header.get("source")
    if source is not None:
        if not isinstance(source, dict):
            return f"header field 'source' must be a JSON object or null, got {_kind(source)}"
        ids = source.get("row_ids")
        if ids is not None and (not isinstance(ids, list) or
                                not all(isinstance(i, int) and not isinstance(i, bool) for i in ids)):
            return f"header field 'source.row_ids' must be a list of integers, got {_kind(ids)}"
    embed = header.get("embed_ms")
    if embed is not None and (isinstance(embed, bool) or not isinstance(embed, (int, float))):
        return f"header field 'embed_ms' must be a number or null, got {_kind(embed)}"
    latency = header.get("latency")
    if latency is not None:
        fault = latency_fault(latency)
        if fault:
            return fault
    meta = header.get("meta")
    if meta is not None:
        if not isinstance(meta, dict):
            return f"header field 'meta' must be a JSON object, got {_kind(meta)}"
        for key, kind in _META_TYPES.items():
            value = meta.get(key)
            if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
                return f"header field 'meta.{key}' must be {_kind(kind())} or null, got {_kind(value)}"
    return None


def _positive_list(value, n: int | None) -> bool:
    return (isinstance(value, list) and (n is None or len(value) == n) and
            all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in value))


def latency_fault(latency, num_layers: int | None = None) -> str | None:
    """What is wrong with a cache's latency table (naming the field), or None. The table:
    {"precision": str, "machine": str, "threads": int, "torch": str, "measured": str,
     "batches": {"<B>": {"rows": B, "embed_ms": ms, "layer_ms": [L] ms, "head_ms": [L] ms}}},
    milliseconds per batch of B rows: embeddings, each layer alone, each exit head (+ softmax)."""
    where = "header field 'latency'"
    if not isinstance(latency, dict):
        return f"{where} must be a JSON object or null, got {_kind(latency)}"
    for key in ("precision", "machine", "torch"):
        if not isinstance(latency.get(key), str):
            return f"{where}.{key} must be a string, got {_kind(latency.get(key))}"
    threads = latency.get("threads")
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 1:
        return f"{where}.threads must be a positive integer, got {_kind(threads)}"
    batches = latency.get("batches")
    if not isinstance(batches, dict) or not batches:
        return f"{where}.batches must be a non-empty object of batch size -> timings, got {_kind(batches)}"
    for size, row in batches.items():
        if not size.isdigit() or int(size) < 1:
            return f"{where}.batches key {size!r} must be a positive batch size"
        if not isinstance(row, dict):
            return f"{where}.batches.{size} must be an object, got {_kind(row)}"
        embed = row.get("embed_ms")
        if isinstance(embed, bool) or not isinstance(embed, (int, float)) or not np.isfinite(embed) or embed < 0:
            return f"{where}.batches.{size}.embed_ms must be a non-negative number, got {_kind(embed)}"
        for key in ("layer_ms", "head_ms"):
            if not _positive_list(row.get(key), num_layers):
                n = f"{num_layers} " if num_layers is not None else ""
                return f"{where}.batches.{size}.{key} must be a list of {n}positive numbers (one per layer)"
    return None


def _cache_path(path: str | os.PathLike, *, for_write: bool) -> Path:
    path = Path(path)
    if path.suffix == ".npz":
        return path
    if path.is_dir() or (for_write and not path.suffix):
        return path / CACHE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run folder or cache file")
    return path
