"""core.train: every method's step updates exactly the right parameter groups (tiny random BERT), the
run folder, reproducibility, configuration, SIGTERM -> cancelled, bad input -> failed.

The tiny backbone (hidden 32, 3 layers, vocab 99) and a 40-row CSV task live in a temp folder, so the
unit tests run offline in seconds; the integration test trains the real default backbone."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from core.runs.folders import read_config, read_status
from core.runs.io import read_jsonl
from core.training.batches import encode_rows, make_collate
from core.training.config import DEFAULTS, command_line, parse_cli, resolve_config
from core.training.loop import Trainer, TrainingCancelled
from core.training.run import train
from tests.helpers import base_config

REPO = Path(__file__).resolve().parent.parent
NUM_LAYERS = 3


# ---- parameter groups -----------------------------------------------------------------------------
def build(tiny, tmp_path, method, **over):
    from accelerate import Accelerator

    from core.data.tasks import load_task
    from core.models.multi_exit import ModelConfig, MultiExitModel

    cfg = resolve_config(base_config(tiny, tmp_path / "run", method=method, **over))
    task = load_task(cfg["task"], train_file=cfg["train_file"], dev_file=cfg["dev_file"],
                     text_column=cfg["text_column"], label_column=cfg["label_column"])
    torch.manual_seed(0)
    model = MultiExitModel(ModelConfig(backbone=cfg["backbone"], num_labels=2, bypass=cfg["bypass"],
                                       lte=cfg["lte"], exit_kind=cfg["exit_kind"]))
    rows = encode_rows(task.train, model.tokenizer, cfg["max_length"])
    acc = Accelerator()
    model = acc.prepare(model)
    return Trainer(cfg, model, rows, make_collate(model.tokenizer.pad_token_id), acc)


def snapshot(tr) -> dict[str, list[torch.Tensor]]:
    m = tr.raw
    groups = {"backbone": list(m.encoder.parameters())}
    for i in range(m.num_layers):
        groups[f"exit{i + 1}"] = list(m.exits[i].parameters())
        if m.bypasses is not None:
            groups[f"bypass{i + 1}"] = list(m.bypasses[i].parameters())
        if m.lte_heads is not None:
            groups[f"lte{i + 1}"] = list(m.lte_heads[i].parameters())
    if tr.omega is not None:
        groups["omega"] = [tr.omega.logits]
    return {k: [p.detach().clone() for p in v] for k, v in groups.items()}


def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if any(not torch.equal(x, y) for x, y in zip(a[k], b[k]))}


def run_steps(tr, stage_index=0, steps=1) -> list[set[str]]:
    """Run `steps` steps of a stage; the groups changed by each step."""
    snaps = [snapshot(tr)]
    tr.add_callback("on_step_end", lambda t, record: snaps.append(snapshot(t)))
    tr.stage_index = stage_index
    tr.run_stage(tr.stages[stage_index], max_steps=steps)
    assert len(snaps) == steps + 1, "the stage ran fewer steps than asked"
    tr.callbacks["on_step_end"].clear()
    return [changed(a, b) for a, b in zip(snaps, snaps[1:])]


def exits(*ms, kind="exit"):
    return {f"{kind}{m}" for m in ms}


ALL = {"backbone"} | exits(1, 2, 3)


def test_joint_updates_backbone_and_every_exit(tiny, tmp_path):
    tr = build(tiny, tmp_path, "joint")
    assert run_steps(tr) == [ALL]
    assert tr.cfg["weights"] == "linear"


def test_joint_with_lte_trains_the_lte_heads_too(tiny, tmp_path):
    tr = build(tiny, tmp_path, "joint", lte=True)
    assert run_steps(tr) == [ALL | exits(1, 2, 3, kind="lte")]


def test_two_stage_stage1_then_stage2_leaves_backbone_and_last_exit(tiny, tmp_path):
    tr = build(tiny, tmp_path, "two_stage", lte=True)
    assert [s.name for s in tr.stages] == ["stage1", "stage2"]
    assert run_steps(tr, 0) == [{"backbone", "exit3", "lte3"}]
    assert run_steps(tr, 1) == [exits(1, 2) | exits(1, 2, kind="lte")]
    assert all(not p.requires_grad for p in tr.raw.encoder.parameters())


def test_self_distill_stage2_trains_only_the_intermediate_exits(tiny, tmp_path):
    tr = build(tiny, tmp_path, "self_distill")
    assert run_steps(tr, 0) == [{"backbone", "exit3"}]
    assert run_steps(tr, 1) == [exits(1, 2)]


def test_alternating_odd_steps_last_exit_even_steps_joint(tiny, tmp_path):
    tr = build(tiny, tmp_path, "alternating")
    assert run_steps(tr, 0, steps=3) == [{"backbone", "exit3"}, ALL, {"backbone", "exit3"}]


def test_alternating_even_steps_sum_the_exits_ce_badge_eq8(tiny, tmp_path):
    tr = build(tiny, tmp_path, "alternating")
    recs = []
    tr.add_callback("on_step_end", lambda t, record: recs.append(record))
    tr.run_stage(tr.stages[0], max_steps=2)
    odd, even = recs
    assert (odd["objective"], even["objective"]) == ("last", "joint_sum")
    assert odd["loss"] == pytest.approx(odd["exit_losses"][-1], rel=1e-6)        # Eq. 7: CE_L
    assert even["loss"] == pytest.approx(sum(even["exit_losses"]), rel=1e-6)     # Eq. 8: Σ_m CE_m, not the mean


@pytest.mark.parametrize("optimizer", ["blo", "clo_v2"])
def test_leebert_second_order_omega_trains_everything(tiny, tmp_path, optimizer):
    tr = build(tiny, tmp_path, "leebert", optimizer=optimizer, cycle=2, omega_grad="second_order")
    assert tr.omega_opt is None or tr.omega_opt.omega_grad == "second_order"
    assert run_steps(tr, steps=2) == [ALL | {"omega"}] * 2
    assert tr.omega_opt.omega_grad == "second_order"


def test_budget_rule_gives_every_method_the_same_theta_steps(tiny, tmp_path):
    joint = build(tiny, tmp_path, "joint", epochs=2)
    lee = build(tiny, tmp_path, "leebert", epochs=2)                          # clo_v2: Θ on D1
    old = build(tiny, tmp_path, "leebert", epochs=2, budget="epochs")
    slo = build(tiny, tmp_path, "leebert", epochs=2, optimizer="slo", budget="epochs")
    assert joint.total_steps == lee.total_steps == slo.total_steps == 2 * 5   # ceil(40 / 8) per epoch
    assert old.total_steps == 2 * 3                                           # one pass over D1's 20 rows
    run_steps(lee, steps=lee.total_steps)                                     # D1 cycled: the steps exist


def test_old_run_configs_repeat_with_the_old_budget_rule(tmp_path):
    old = {"method": "leebert", "epochs": 2, "out": "checkpoints/x", "derived": {"total_steps": 126}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(old))
    assert resolve_config(parse_cli(["--config", str(path)]))["budget"] == "epochs"
    assert "--budget epochs" in command_line(resolve_config(parse_cli(["--config", str(path)])))
    new = {**old, "budget": "theta_steps"}
    path.write_text(json.dumps(new))
    assert resolve_config(parse_cli(["--config", str(path)]))["budget"] == "theta_steps"
    plain = tmp_path / "mine.json"                                            # not a run's config: the default
    plain.write_text(json.dumps({"method": "leebert", "out": "checkpoints/x"}))
    assert resolve_config(parse_cli(["--config", str(plain)]))["budget"] == "theta_steps"


def test_badge_trains_bypasses(tiny, tmp_path):
    tr = build(tiny, tmp_path, "badge")
    assert tr.cfg["bypass"] is True and tr.raw.bypasses is not None
    assert run_steps(tr) == [ALL | exits(1, 2, 3, kind="bypass")]


def test_diversity_updates_everything(tiny, tmp_path):
    tr = build(tiny, tmp_path, "diversity")
    assert run_steps(tr) == [ALL]


@pytest.mark.parametrize("optimizer,teachers", [("slo", "lae"), ("blo", "lae"), ("clo_v1", "lae"),
                                                ("clo_v2", "lae"), ("clo_v2", "lle")])
def test_leebert_learned_omega_changes(tiny, tmp_path, optimizer, teachers):
    tr = build(tiny, tmp_path, "leebert", optimizer=optimizer, cycle=2, teachers=teachers)
    steps = run_steps(tr, steps=2)
    assert steps == [ALL | {"omega"}] * 2


@pytest.mark.parametrize("weights", ["uniform", "random"])
def test_leebert_fixed_weights_leave_omega(tiny, tmp_path, weights):
    tr = build(tiny, tmp_path, "leebert", weights=weights, optimizer="clo_v2")
    assert tr.cfg["optimizer"] is None  # nothing to optimize
    assert run_steps(tr) == [ALL]


# ---- the whole run --------------------------------------------------------------------------------
def test_run_folder_contents_and_reproducibility(tiny, tmp_path):
    from core.engine.cache import ExitCache

    cfg = base_config(tiny, tmp_path / "rt-leebert", method="leebert", lte=True, epochs=2, log_every=2)
    folder = train(cfg)
    status = read_status(folder)
    assert status["state"] == "done" and status["progress"] == 1.0
    # --budget theta_steps: 2 epochs x ceil(40 rows / 8), D1's 20 rows cycled (joint's step count)
    assert status["step"] == status["total_steps"] == 2 * 5
    conf = read_config(folder)
    assert conf["derived"]["total_steps"] == 10 and conf["derived"]["n_train"] == 40
    assert conf["command"].startswith("python -m core.train")
    assert conf["model"]["lte"] is True and conf["model"]["num_labels"] == 2
    assert conf["optimizer"] == "clo_v2" and conf["cycle"] == 4 and conf["teachers"] == "lae"
    assert set(DEFAULTS) <= set(conf)  # every effective value
    recs = read_jsonl(folder / "metrics.jsonl")
    kinds = {r["kind"] for r in recs}
    assert kinds == {"train", "omega", "eval"}
    for r in recs:
        assert {"kind", "step", "epoch", "time"} <= set(r)
    om = [r for r in recs if r["kind"] == "omega"]
    assert om[0]["terms"] == ["ce", "kd:1", "kd:2", "kd:3"] and np.array(om[-1]["omega"]).shape == (3, 4)
    assert om[0]["omega"] != om[-1]["omega"]
    evals = [r for r in recs if r["kind"] == "eval"]
    assert len(evals) == 2 and len(evals[0]["exit_scores"]) == 3 and evals[0]["metric"] == "accuracy"
    train_recs = [r for r in recs if r["kind"] == "train"]
    assert len(train_recs[0]["exit_losses"]) == 3 and "lr" in train_recs[0]
    cache = ExitCache.load(folder)
    assert cache.probs.shape == (12, 3, 2) and cache.confidence.shape == (12, 3)
    assert cache.layer_ms.shape == (3,) and cache.embed_ms is not None
    assert cache.meta["method"] == "leebert" and cache.meta["command"] == conf["command"]
    assert cache.label_names == ["neg", "pos"] and len(cache.get_texts()) == 12
    assert (folder / "model.safetensors").exists()

    # the run's own config.json repeats it (flags override the file)
    again = parse_cli(["--config", str(folder / "config.json"), "--out", str(tmp_path / "rt-leebert-2")])
    again = train(again)
    np.testing.assert_array_equal(ExitCache.load(again).probs, cache.probs)
    assert read_config(again)["command"].startswith("python -m core.train --config")


def test_weights_reload_to_the_cached_probabilities(tiny, tmp_path):
    from core.engine.cache import ExitCache
    from core.models.multi_exit import MultiExitModel

    folder = train(base_config(tiny, tmp_path / "joint-run", method="badge", latency_samples=0))
    cache = ExitCache.load(folder)
    assert cache.layer_ms is None
    model = MultiExitModel.from_run(folder)
    texts = cache.get_texts()
    with torch.no_grad():
        enc = model.tokenize(texts, padding=True, return_tensors="pt")
        probs = model(**enc).logits.softmax(-1).numpy()
    np.testing.assert_allclose(probs, cache.probs, atol=1e-5)


def test_bad_column_fails_with_a_readable_error(tiny, tmp_path):
    out = tmp_path / "bad-col"
    with pytest.raises(ValueError, match="no_such_column"):
        train(base_config(tiny, out, text_column="no_such_column"))
    assert not out.exists()  # an input error creates no run folder
    out.mkdir()
    (out / "job.json").write_text("{}")  # a job's own folder (its manager made it) shows the failure
    with pytest.raises(ValueError):
        train(base_config(tiny, out, text_column="no_such_column"))
    status = read_status(out)
    assert status["state"] == "failed"
    assert status["error"].startswith("ValueError: ") and "no_such_column" in status["error"]


def test_bad_option_values_name_the_option(tiny, tmp_path):
    for bad, match in [({"method": "magic"}, "unknown method"), ({"epochs": 0}, "epochs"),
                       ({"weights": "learned"}, "not valid for joint"), ({"lr": -1.0}, "lr"),
                       ({"method": "leebert", "optimizer": "adam"}, "unknown optimizer"),
                       ({"teachers": "all"}, "teachers"), ({"out": str(tmp_path / "bad name")}, "run name"),
                       ({"method": "badge", "bypass": False}, "bypass"),
                       ({"budget": "rows"}, "unknown budget"), ({"omega_grad": "exact"}, "unknown omega_grad"),
                       ({"omega_grad": "second_order"}, "for --method leebert"),
                       ({"method": "leebert", "optimizer": "slo", "omega_grad": "second_order"}, "blo, clo_v1"),
                       ({"method": "leebert", "weights": "uniform", "omega_grad": "second_order"}, "learned Ω")]:
        with pytest.raises(ValueError, match=match):
            resolve_config({**base_config(tiny, tmp_path / "x"), **bad})
    with pytest.raises(ValueError, match="unknown option 'epoch'"):
        resolve_config({"out": "checkpoints/x", "epoch": 3})
    out = tmp_path / "bad-lr"
    with pytest.raises(ValueError, match="lr must be"):
        train(base_config(tiny, out, lr=0.0))
    assert not out.exists()  # checked before anything is written


def test_cli_config_file_and_flag_override(tmp_path):
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"method": "leebert", "batch-size": 16, "epochs": 5, "teachers": "lle"}))
    cfg = parse_cli(["--config", str(path), "--epochs", "2", "--out", "checkpoints/x", "--no-save-weights"])
    eff = resolve_config({k: v for k, v in cfg.items() if k not in ("command", "config_file")})
    assert (eff["method"], eff["batch_size"], eff["epochs"], eff["teachers"]) == ("leebert", 16, 2, "lle")
    assert eff["save_weights"] is False and eff["optimizer"] == "clo_v2" and eff["weights"] == "learned"
    assert cfg["command"].startswith("python -m core.train --config")
    canon = command_line(eff)
    assert "--method leebert" in canon and "--epochs 2" in canon and "--no-save-weights" in canon
    again = resolve_config({k: v for k, v in parse_cli(canon.split()[3:]).items() if k != "command"})
    assert {k: again[k] for k in DEFAULTS} == {k: eff[k] for k in DEFAULTS}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"epoch": 3}))
    with pytest.raises(ValueError, match="unknown option"):
        parse_cli(["--config", str(bad)])


def test_cancel_flag_between_steps(tiny, tmp_path):
    out = tmp_path / "stop-me"
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(TrainingCancelled):
        train(base_config(tiny, out, epochs=50), stop=stop)
    assert read_status(out)["state"] == "cancelled"


def _wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_sigterm_mid_run_gives_cancelled(tiny, tmp_path):
    out = tmp_path / "sigterm-run"
    args = [sys.executable, "-m", "core.train", "--backbone", tiny["backbone"], "--train-file",
            tiny["train_file"], "--dev-file", tiny["dev_file"], "--text-column", "review", "--label-column",
            "sentiment", "--epochs", "500", "--batch-size", "8", "--out", str(out), "--no-save-weights"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        def running():
            s = read_status(out) if (out / "status.json").exists() else None
            return s and s["state"] == "running" and (s.get("step") or 0) >= 1
        _wait_for(running, 90, "the run to start stepping")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read().decode(errors="replace")
    assert rc in (0, 143), log
    status = read_status(out)
    assert status["state"] == "cancelled", status
    assert 1 <= status["step"] < status["total_steps"]


@pytest.mark.integration
def test_cli_trains_the_default_backbone(tmp_path):
    from core.engine.cache import ExitCache

    out = tmp_path / "rt-int"
    args = [sys.executable, "-m", "core.train", "--task", "rotten_tomatoes", "--backbone", "minilm-l6",
            "--method", "leebert", "--max-train", "48", "--max-dev", "32", "--epochs", "1",
            "--batch-size", "16", "--latency-samples", "3", "--no-save-weights", "--out", str(out)]
    res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    assert read_status(out)["state"] == "done"
    cache = ExitCache.load(out)
    assert cache.probs.shape == (32, 6, 2) and cache.texts is None and cache.source["kind"] == "builtin"
    assert len(cache.get_texts()) == 32 and cache.layer_ms.shape == (6,)
    conf = read_config(out)
    assert conf["model"]["backbone"] == "minilm-l6" and conf["optimizer"] == "clo_v2"
