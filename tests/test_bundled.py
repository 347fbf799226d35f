"""The bundled runs in checkpoints/: every one loads, is complete, and the report regenerates from them."""
from pathlib import Path

import numpy as np
import pytest

from core import report
from core.cache import ExitCache
from core.runs import DEFAULT_ROOT, list_runs, read_config, read_metrics, read_status

RUNS = [p for p in list_runs(DEFAULT_ROOT) if (p / "cache.npz").exists()]
DOCS = Path(__file__).resolve().parent.parent / "docs"
pytestmark = pytest.mark.skipif(not RUNS, reason="no bundled runs in checkpoints/")


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_bundled_run_is_complete(folder):
    cache = ExitCache.load(folder)
    config = read_config(folder)
    assert read_status(folder)["state"] == "done"
    assert config["command"].startswith("python -m core.train")
    assert cache.meta["task"] and cache.meta["method"] == config["method"]
    assert cache.layer_ms is not None and cache.layer_ms.shape == (cache.L,)
    assert cache.texts is None and cache.source["row_ids"], "bundled caches refer to their rows, not copies"
    evals = [r for r in read_metrics(folder) if r["kind"] == "eval"]
    assert evals and np.allclose(evals[-1]["exit_scores"], report.M.per_exit_scores(cache), atol=1e-5)


def test_default_run_has_weights_and_restores_its_texts_offline():
    folder = DEFAULT_ROOT / "rotten_tomatoes-joint"
    assert (folder / "model.safetensors").exists()
    cache = ExitCache.load(folder)
    texts = cache.get_texts()
    assert len(texts) == cache.N and all(isinstance(t, str) and t for t in texts)


def test_report_regenerates_byte_for_byte(tmp_path):
    text, figures = report.build(DEFAULT_ROOT, tmp_path)
    assert text == (DOCS / "RESULTS.md").read_text(encoding="utf-8"), "run `python -m core.report` and commit"
    assert sorted(figures) == sorted(p.name for p in (DOCS / "figures").glob("*.png"))
    assert all(data.startswith(b"\x89PNG") for data in figures.values())


def test_report_command_runs(tmp_path):
    report.main(["--out", str(tmp_path)])
    assert (tmp_path / "RESULTS.md").read_text().startswith("# Results")
    assert list((tmp_path / "figures").glob("*.png"))


def test_report_omega_table_is_each_runs_last_snapshot():
    runs = [r for r in report.load_runs(DEFAULT_ROOT)[0] if r.omega]
    if not runs:
        pytest.skip("no bundled LeeBERT run")
    text = report.omega_section(runs)
    for r in runs:
        last = [m for m in read_metrics(r.path) if m["kind"] == "omega"][-1]
        om = np.array(last["omega"])
        assert np.allclose(om.sum(1), 1.0, atol=1e-4)
        row = next(line for line in text.splitlines() if line.startswith(f"| `{r.name}` |"))
        assert " / ".join(f"{x:.3f}" for x in om[:, 0]) in row


def test_report_omega_drift_claim_matches_each_runs_replay():
    from core.omega_drift import compare_to_drift

    runs = [r for r in report.load_runs(DEFAULT_ROOT)[0] if r.omega and r.task == "rotten_tomatoes"]
    if not runs:
        pytest.skip("no bundled LeeBERT run")
    text = report.omega_drift_section(runs)
    assert 'Claim "learned Ω differs from the drift a data-free update gives"' in text
    for r in runs:
        got = compare_to_drift([m for m in read_metrics(r.path) if m["kind"] == "omega"], r.config)
        if got is None:
            assert f"| `{r.name}` |" not in text  # fixed Ω: nothing to compare
            continue
        row = next(line for line in text.splitlines() if line.startswith(f"| `{r.name}` |"))
        assert f"| {got['ratio']:.2f} |" in row


@pytest.mark.parametrize("folder", RUNS, ids=[p.name for p in RUNS])
def test_bundled_config_repeats_its_run_under_its_budget_rule(folder):
    """`python -m core.train --config <run>/config.json` resolves to the settings the run was made with;
    configs from before `--budget` repeat under the old rule, whose step count the run recorded."""
    import math

    from core.train import DEFAULTS, parse_cli, resolve_config

    stored = read_config(folder)
    again = resolve_config({k: v for k, v in parse_cli(["--config", str(folder / "config.json")]).items()
                            if k not in ("command", "config_file")})
    assert {k: again[k] for k in DEFAULTS if k in stored} == {k: stored[k] for k in DEFAULTS if k in stored}
    assert again["budget"] == stored.get("budget", "epochs")
    assert again["omega_grad"] == stored.get("omega_grad", "first_order")
    d = stored["derived"]
    if stored["method"] == "leebert" and stored.get("optimizer") in ("blo", "clo_v1", "clo_v2"):
        rows = d["n_train"] if again["budget"] == "theta_steps" else (d["n_train"] + 1) // 2
        assert d["total_steps"] == stored["epochs"] * math.ceil(rows / stored["batch_size"])
