"""The bundled runs in checkpoints/: every one loads, is complete, and the report regenerates from them."""
from pathlib import Path

import numpy as np
import pytest

from core.engine import report
from core.engine.cache import ExitCache
from core.runs.folders import DEFAULT_ROOT, list_runs, read_config, read_metrics, read_status

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
    assert evals and np.allclose(evals[-1]["exit_scores"], report.metrics.per_exit_scores(cache), atol=1e-5)


def test_default_run_has_weights_and_restores_its_texts_offline():
    folder = DEFAULT_ROOT / "rotten_tomatoes-joint"
    assert (folder / "model.safetensors").exists()
    cache = ExitCache.load(folder)
    texts = cache.get_texts()
    assert len(texts) == cache.N and all(isinstance(t, str) and t for t in texts)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    """`python -m core.report --out <tmp>` run once for every report test (it takes a while)."""
    out = tmp_path_factory.mktemp("report")
    report.main(["--out", str(out)])
    return out


@pytest.fixture(scope="module")
def loaded_runs():
    return report.load_runs(DEFAULT_ROOT)[0]


def test_report_regenerates_byte_for_byte(generated):
    text = (generated / "RESULTS.md").read_text(encoding="utf-8")
    assert text == (DOCS / "RESULTS.md").read_text(encoding="utf-8"), "run `python -m core.report` and commit"
    figures = {p.name: p.read_bytes() for p in (generated / "figures").glob("*.png")}
    assert sorted(figures) == sorted(p.name for p in (DOCS / "figures").glob("*.png"))
    assert all(data.startswith(b"\x89PNG") for data in figures.values())


def test_report_command_runs(generated):
    assert (generated / "RESULTS.md").read_text().startswith("# Results")
    assert list((generated / "figures").glob("*.png"))


def test_report_omega_table_is_each_runs_last_snapshot(loaded_runs):
    runs = [r for r in loaded_runs if r.omega]
    if not runs:
        pytest.skip("no bundled LeeBERT run")
    text = report.omega_section(runs)
    for r in runs:
        last = [m for m in read_metrics(r.path) if m["kind"] == "omega"][-1]
        om = np.array(last["omega"])
        assert np.allclose(om.sum(1), 1.0, atol=1e-4)
        row = next(line for line in text.splitlines() if line.startswith(f"| `{r.name}` |"))
        assert " / ".join(f"{x:.3f}" for x in om[:, 0]) in row


def test_report_omega_drift_claim_matches_each_runs_replay(loaded_runs):
    from core.engine.omega_drift import compare_to_drift

    runs = [r for r in loaded_runs if r.omega and r.task == "rotten_tomatoes"]
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

    from core.training.config import DEFAULTS, parse_cli, resolve_config

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


def test_report_keeps_budgets_apart():
    """Runs of the protocol and quick runs are never paired in one method row or one claim."""
    from tests.conftest import synthetic_cache

    def run(name, method, seed, val):
        cache = synthetic_cache(n=120, num_layers=3, k=2, seed=seed)
        config = {"method": method, "seed": seed, "val_fraction": val}
        r = report.Run(name, Path(name), config, cache, report.variant_of(config), seed)
        r.sweep = report.metrics.sweep_all(cache)
        return r

    runs = report.label_runs([run("a", "joint", 0, 0.1), run("b", "joint", 1, 0.1), run("c", "badge", 0, 0.1),
                              run("d", "joint", 0, None), run("e", "badge", 0, None)])
    assert [r.label for r in runs] == ["joint (protocol)", "joint (protocol)", "badge (protocol)",
                                       "joint (quick)", "badge (quick)"]
    text = report.claims_section(runs)
    badge = [line for line in text.splitlines() if "BADGE bypasses" in line]
    assert len(badge) == 2 and badge[0].startswith("- [protocol runs]") and badge[1].startswith("- [quick runs]")
    assert "over 2 seeds" in badge[0] and "one seed" in badge[1]
    alone = report.label_runs([run("a", "joint", 0, 0.1)])
    assert alone[0].label == "joint" and "[protocol runs]" not in report.claims_section(alone)
