"""ExitCache: exact round trip, atomic writes, and every validation error naming file and fault."""
import json

import numpy as np
import pytest

from core.engine.cache import ExitCache


def make_cache(**overrides):
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=(20, 4)).astype(np.float32)
    fields = dict(probs=probs, labels=rng.integers(0, 3, 20), label_names=["neg", "neu", "pos"],
                  texts=[f"sentence {i}" for i in range(20)],
                  confidence=rng.random((20, 4)).astype(np.float32),
                  layer_ms=np.array([1.5, 1.4, 1.6, 1.5]), embed_ms=0.3,
                  meta={"task": "toy", "metric": "accuracy", "backbone": "tiny", "method": "joint",
                        "seed": 1, "command": "python -m core.train --task toy"})
    fields.update(overrides)
    return ExitCache(**fields)


def test_round_trip_is_exact(tmp_path):
    cache = make_cache()
    path = cache.save(tmp_path / "run")
    assert path == tmp_path / "run" / "cache.npz"
    for where in (tmp_path / "run", path):
        back = ExitCache.load(where)
        assert np.array_equal(back.probs, cache.probs) and back.probs.dtype == np.float32
        assert np.array_equal(back.labels, cache.labels)
        assert np.array_equal(back.confidence, cache.confidence)
        assert np.array_equal(back.layer_ms, cache.layer_ms)
        assert back.embed_ms == cache.embed_ms
        assert back.texts == cache.texts and back.label_names == cache.label_names
        assert back.meta == cache.meta
        assert (back.N, back.L, back.K) == (20, 4, 3)


def test_pairs_and_source_round_trip(tmp_path):
    pairs = [[f"a{i}", f"b{i}"] for i in range(20)]
    back = ExitCache.load(make_cache(texts=pairs, confidence=None, layer_ms=None, embed_ms=None)
                          .save(tmp_path / "c.npz"))
    assert back.texts == pairs and back.confidence is None and back.layer_ms is None
    src = {"task": "rotten_tomatoes", "split": "dev", "row_ids": list(range(20))}
    back = ExitCache.load(make_cache(texts=None, source=src).save(tmp_path / "d.npz"))
    assert back.source == src and back.texts is None


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    make_cache().save(tmp_path)
    make_cache(meta={"metric": "accuracy", "seed": 2}).save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.npz"]
    assert ExitCache.load(tmp_path).meta["seed"] == 2


def test_texts_or_source_required_for_get_texts():
    with pytest.raises(ValueError, match="neither texts nor a data source"):
        make_cache(texts=None).get_texts()


@pytest.mark.parametrize("change, message", [
    (lambda c: c.update(probs=c["probs"][0]), "probs must be [N, L, K]"),
    (lambda c: c.update(probs=c["probs"] * 1.01), "sum to 1 within 0.0001"),
    (lambda c: c["probs"].__setitem__((0, 0, 0), np.nan), "NaN"),
    (lambda c: c.update(labels=np.full(20, 3)), "labels must lie in [0, 3)"),
    (lambda c: c.update(labels=np.zeros(19, int)), "labels must have shape [20]"),
    (lambda c: c.update(label_names=["a", "b"]), "label_names has 2 names for K = 3"),
    (lambda c: c.update(texts=["x"]), "texts has 1 entries for N = 20"),
    (lambda c: c.update(confidence=np.full((20, 4), 1.5)), "confidence must be finite and lie in [0, 1]"),
    (lambda c: c.update(confidence=np.zeros((20, 3))), "confidence must have shape [20, 4]"),
    (lambda c: c.update(layer_ms=np.ones(3)), "layer_ms must have shape [4]"),
    (lambda c: c.update(layer_ms=-np.ones(4)), "layer_ms must be finite and positive"),
    (lambda c: c.update(source={"task": "x", "row_ids": [1, 2]}, texts=None), "row_ids has 2 entries"),
])
def test_construction_validates(change, message):
    rng = np.random.default_rng(0)
    fields = dict(probs=rng.dirichlet(np.ones(3), size=(20, 4)).astype(np.float32),
                  labels=rng.integers(0, 3, 20), label_names=["a", "b", "c"],
                  texts=[str(i) for i in range(20)])
    change(fields)
    with pytest.raises(ValueError) as err:
        ExitCache(**fields)
    assert message in str(err.value)


def _rewrite(path, **arrays):
    """Rewrite a saved cache with some arrays replaced (bypassing validation, as a bad writer would)."""
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data.update(arrays)
    for k in [k for k, v in arrays.items() if v is None]:
        data.pop(k)
    np.savez(path, **data)


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b"not a zip"), "unreadable exit cache"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "unreadable exit cache"),
    (lambda p: _rewrite(p, labels=None), "missing arrays ['labels']"),
    (lambda p: _rewrite(p, labels=np.zeros(20, np.float32)), "labels has dtype float32"),
    (lambda p: _rewrite(p, probs=np.full((20, 4, 3), 0.5, np.float32)), "sum to 1"),
    (lambda p: _rewrite(p, labels=np.full(20, 7)), "labels must lie in [0, 3)"),
    (lambda p: _rewrite(p, header=np.frombuffer(json.dumps({"format_version": 99}).encode(), np.uint8)),
     "cache format 99"),
])
def test_load_names_the_file_and_the_fault(tmp_path, damage, message):
    path = make_cache().save(tmp_path / "run")
    damage(path)
    with pytest.raises(ValueError) as err:
        ExitCache.load(tmp_path / "run")
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_run_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ExitCache.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty/cache.npz"):
        ExitCache.load(tmp_path / "empty")
