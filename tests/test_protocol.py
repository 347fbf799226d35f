"""The training protocol: the default task's held-out test split, split versions (old runs keep their
rows), the validation split carved from training rows, early stopping that keeps the best validation
epoch, and the weak-budget warnings in status.json. Tiny random BERT (tests.test_train) where a model runs."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.data import splits
from core.data import tasks as data
from core.runs.folders import read_config, read_status, write_status
from core.runs.io import read_jsonl
from core.training.callbacks import BestEpoch, weak_budget_warnings
from core.training.config import parse_cli, resolve_config
from core.training.run import train
from tests.helpers import base_config


# ---- data: test split, split versions, validation split ---------------------------------------------
def test_test_split_is_held_out_of_training_and_dev():
    test = data.load_test_split()
    assert len(test) == splits.TEST_ROWS == 850
    assert test["label"].value_counts().to_dict() == {0: 425, 1: 425}  # stratified
    task = data.load_task()
    assert not set(test["row_id"]) & set(task.train["row_id"])
    assert not set(test["row_id"]) & set(task.dev["row_id"])
    for seed in (0, 1, 2):  # no seed or subset draws a test row into training
        assert not set(test["row_id"]) & set(data.load_task(max_train=4000, seed=seed).train["row_id"])
    assert data.load_test_split("Rotten-Tomatoes")["row_id"].tolist() == test["row_id"].tolist()
    source = {"kind": "builtin", "task": "rotten_tomatoes", "split": "test", "row_ids": test["row_id"][:5].tolist()}
    assert data.restore_texts(source) == test["text"][:5].tolist()


def test_split_version_1_keeps_the_old_training_rows():
    old = data.load_task(split_version=1)
    new = data.load_task()
    assert len(old.train) == 8530 - len(old.dev)
    assert set(old.train["row_id"]) == set(new.train["row_id"]) | set(data.load_test_split()["row_id"])
    assert old.dev["row_id"].tolist() == new.dev["row_id"].tolist()  # dev (and so every cache) unchanged
    with pytest.raises(ValueError, match="split_version must be one of 1, 2"):
        data.load_task(split_version=3)


def test_test_split_only_for_the_default_task():
    with pytest.raises(ValueError, match="has no held-out test split"):
        data.load_test_split("sst2")


def test_validation_split_is_stratified_fixed_and_disjoint():
    train = data.load_task(max_train=1000).train
    rest, val = splits.validation_split(train, 0.1)
    assert len(val) == 100 and len(rest) == 900
    assert not set(rest["row_id"]) & set(val["row_id"])
    counts = train["label"].value_counts()
    for label, n in val["label"].value_counts().items():
        assert n == int(np.floor(0.1 * counts[label] + 0.5))
    again = splits.validation_split(train, 0.1)[1]
    assert again["row_id"].tolist() == val["row_id"].tolist()
    assert splits.validation_split(train, 0.1, seed=5)[1]["row_id"].tolist() != val["row_id"].tolist()
    with pytest.raises(ValueError, match="between 0 and 1"):
        splits.validation_split(train, 1.5)


# ---- configuration ---------------------------------------------------------------------------------
def test_old_run_config_resolves_to_the_old_split(tmp_path):
    """A run's config.json written before split versions (no key) repeats on the old rows."""
    old = {"task": "rotten_tomatoes", "method": "joint", "max_train": 4000, "epochs": 1,
           "command": "python -m core.train --task rotten_tomatoes", "derived": {"n_train": 4000}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert parse_cli(["--config", str(path), "--out", "checkpoints/x"])["split_version"] == 1
    assert parse_cli(["--config", str(path), "--out", "checkpoints/x", "--split-version", "2"])["split_version"] == 2
    options = tmp_path / "options.json"  # a hand-written options file is not an old run
    options.write_text(json.dumps({"epochs": 2}))
    eff = resolve_config({k: v for k, v in parse_cli(["--config", str(options), "--out", "checkpoints/x"]).items()
                          if k not in ("command", "config_file")})
    assert eff["split_version"] == splits.SPLIT_VERSION == 2


def test_bundled_default_run_never_read_the_test_split():
    """The default run is trained under the protocol: split version 2, so its recorded config selects
    training rows (and a validation part of them) that share nothing with the test split or the dev set."""
    conf = read_config("checkpoints/rotten_tomatoes-joint")
    if conf is None:
        pytest.skip("no bundled default run")
    assert conf["split_version"] == 2 and conf["val_fraction"] > 0
    cfg = parse_cli(["--config", "checkpoints/rotten_tomatoes-joint/config.json"])
    task = data.load_task(conf["task"], max_train=conf["max_train"], seed=conf["seed"],
                       split_version=cfg["split_version"])
    rows = set(task.train["row_id"])
    assert not rows & set(data.load_test_split()["row_id"]) and not rows & set(task.dev["row_id"])
    kept, val = splits.validation_split(task.train, conf["val_fraction"])
    derived = conf["derived"]
    assert (len(kept), len(val)) == (derived["n_train"], derived["n_val"])


def test_protocol_options_are_checked(tiny, tmp_path):  # noqa: F811
    for bad, match in [({"val_fraction": 0.7}, "val_fraction"), ({"patience": -1}, "patience"),
                       ({"patience": 2}, "needs a validation split"), ({"split_version": 9}, "split_version")]:
        with pytest.raises(ValueError, match=match):
            resolve_config({**base_config(tiny, tmp_path / "x"), **bad})


# ---- training: validation, early stopping, kept epoch ------------------------------------------------
def test_validation_every_epoch_and_recorded(tiny, tmp_path):  # noqa: F811
    folder = train(base_config(tiny, tmp_path / "val-run", epochs=2, val_fraction=0.25, latency_samples=0))
    conf = read_config(folder)
    assert conf["val_fraction"] == 0.25 and conf["split_version"] == 2
    assert conf["derived"]["n_val"] == 10 and conf["derived"]["n_train"] == 30
    assert "--val-fraction 0.25" in conf["canonical_command"]
    vals = [r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "val"]
    assert [r["epoch"] for r in vals] == [1, 2] and all(len(r["exit_scores"]) == 3 for r in vals)
    status = read_status(folder)
    assert status["kept_epoch"] in (1, 2) and status["stopped_early"] is False
    assert f"kept the weights and cache of epoch {status['kept_epoch']}" in status["message"]


def test_early_stopping_keeps_the_best_validation_epoch(tiny, tmp_path, monkeypatch):  # noqa: F811
    """Scripted validation scores peak at epoch 2: patience 2 stops after epoch 4, and the run's cache
    holds epoch 2's model (its dev scores are those the dev record of epoch 2 shows)."""
    scripted = iter([0.6, 0.9, 0.7, 0.8, 0.95, 0.95])
    monkeypatch.setattr(BestEpoch, "scores", lambda self, trainer: [next(scripted)] * 3)
    folder = train(base_config(tiny, tmp_path / "early", epochs=6, val_fraction=0.25, patience=2,
                               lr=5e-4, head_lr=5e-2, latency_samples=0))
    status = read_status(folder)
    assert (status["kept_epoch"], status["stopped_early"], status["epoch"]) == (2, True, 4)
    assert status["step"] == 4 * 4 < status["total_steps"] == 6 * 4  # 30 rows, batch 8: 4 steps an epoch
    assert "stopped early after 2 epochs without a better validation score" in status["message"]
    recs = read_jsonl(folder / "metrics.jsonl")
    assert [r["best"] for r in recs if r["kind"] == "val"] == [True, True, False, False]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2, 3, 4, 4]  # per-epoch dev records, then the kept weights
    assert evals[-1]["exit_scores"] == evals[1]["exit_scores"]
    assert any(e["exit_scores"] != evals[1]["exit_scores"] for e in evals[2:4]), "training changed nothing"


# ---- weak-budget warnings ----------------------------------------------------------------------------
def test_warnings_name_exits_near_chance_and_a_rising_curve():
    labels = np.array([0, 0, 0, 1])  # majority class scores 0.75 in accuracy
    out = weak_budget_warnings("accuracy", labels, [0.75, 0.76, 1.0], [(1, 0.70), (2, 0.80)],
                               curve_split="validation")
    assert len(out) == 2
    assert "2 of 3 exits score near chance" in out[0] and "1 (0.750), 2 (0.760)" in out[0] and "0.750" in out[0]
    assert "validation accuracy (mean over exits) was still rising" in out[1] and "0.700" in out[1]
    assert weak_budget_warnings("accuracy", labels, [0.9, 1.0], [(1, 0.8), (2, 0.8)], curve_split="dev") == []
    assert weak_budget_warnings("accuracy", labels, [0.9, 1.0], [(1, 0.7), (2, 0.8)], curve_split="dev",
                                stopped_early=True) == []
    assert weak_budget_warnings("accuracy", labels, [0.9, 1.0], [(1, 0.7)], curve_split="dev") == []
    mcc = weak_budget_warnings("mcc", np.array([0, 1, 0, 1]), [0.01, 0.6], [], curve_split="dev")
    assert len(mcc) == 1 and "1 of 2 exits" in mcc[0] and "scores 0.000" in mcc[0]


def test_run_appends_its_warnings_to_the_status(tiny, tmp_path):  # noqa: F811
    """A barely trained run says so in status.json, after any warning already there."""
    out = tmp_path / "weak"
    out.mkdir()
    write_status(out, "queued", warnings=["an earlier warning"])
    folder = train(base_config(tiny, out, lr=1e-9, head_lr=1e-9, latency_samples=0))
    warnings = read_status(folder)["warnings"]
    assert warnings[0] == "an earlier warning"
    assert len(warnings) == 2 and "exits score near chance on the dev set" in warnings[1]


def test_early_stopping_restores_leebert_omega_of_the_kept_epoch(tiny, tmp_path, monkeypatch):  # noqa: F811
    scripted = iter([0.9, 0.5, 0.4])
    monkeypatch.setattr(BestEpoch, "scores", lambda self, trainer: [next(scripted)] * 3)
    folder = train(base_config(tiny, tmp_path / "lee", method="leebert", epochs=3, val_fraction=0.25,
                               patience=2, log_every=1, omega_lr=0.1, latency_samples=0))
    assert read_status(folder)["kept_epoch"] == 1
    omegas = [r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "omega"]
    at_epoch1 = [r for r in omegas if r["epoch"] == 1][-1]["omega"]
    assert omegas[-1]["omega"] == at_epoch1
    assert any(r["omega"] != at_epoch1 for r in omegas if r["epoch"] > 1), "Ω did not move after epoch 1"


def test_train_form_counts_the_rows_training_will_use():
    from core.app import train_form

    assert train_form.check_task({"task": "rotten_tomatoes"}).n_train == 8530 - 854 - splits.TEST_ROWS
    assert train_form.check_task({"task": "rotten_tomatoes", "split_version": 1}).n_train == 8530 - 854
