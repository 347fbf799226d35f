"""core.app.history / history_figures / compare_tables: training history from a run's metrics.jsonl."""
import numpy as np
import pytest

from core.app import rundata
from core.app.compare_tables import binomial_half_width, hparams_table, rules_at_target
from core.app.history import dev_history, distinct_colors, hparams, matches, smooth, train_history
from core.app.history_figures import history_figure
from core.runs.folders import read_metrics
from tests.conftest import write_synthetic_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return rundata.load_run(write_synthetic_run(tmp_path_factory.mktemp("h") / "r", n=80, epochs=3, seed=2))


def test_histories_read_every_logged_step_and_evaluation(run):
    recs = read_metrics(run.path)
    tr, dev = train_history(recs), dev_history(recs)
    assert len(tr) == 30 and tr["step"].is_monotonic_increasing
    assert tr["exit 6"].iloc[-1] == pytest.approx(1 / 30)
    assert len(dev) == 3 and dev["last exit"].iloc[0] == pytest.approx(float(run.per_exit[-1]), abs=1e-6)


def test_smoothing_is_a_debiased_moving_average():
    x = np.array([1.0, 0.0, 0.0, 0.0])
    assert smooth(x, 0.0).tolist() == x.tolist()
    s = smooth(x, 0.5)
    assert s[0] == pytest.approx(1.0)            # debiased: not pulled toward zero
    assert s[1] == pytest.approx(0.5 * 0.5 / 0.75)
    assert np.all(np.diff(s) < 0)


def test_thirty_colours_are_distinct():
    c = distinct_colors(30)
    assert len(set(c)) == 30 and all(len(x) == 7 for x in c)


def test_hparams_and_filter():
    h = hparams({"optimizer": "slo", "lr": 3e-05, "method": "leebert"})
    assert h["optimizer"] == "slo" and h["lr"] == "3e-05" and h["epochs"] == ""
    assert matches("leebert slo", ["rt-leebert-slo", "leebert", "slo"]) and not matches("blo", ["slo"])


def test_rules_table_and_figure(run):
    t = rules_at_target([run], 1.5, {"entropy": "Entropy"})
    assert t["run"].tolist() == [run.name] and "Entropy" in t
    assert t["Entropy"].iloc[0] <= 1.0
    full, n = t["full model"].iloc[0], run.cache.N
    assert run.metric == "accuracy"  # the binomial half-width at the full model's accuracy on N samples
    assert t["± 95%"].iloc[0] == pytest.approx(1.96 * (full * (1 - full) / n) ** 0.5)
    assert binomial_half_width(0.5, 100) == pytest.approx(0.098) and binomial_half_width(1.0, 100) == 0.0
    assert hparams_table([run], {run.name: {"optimizer": "adam"}})["optimizer"].tolist() == ["adam"]
    fig = history_figure({run.name: train_history(read_metrics(run.path))}, "exit 1", smoothing=0.6)
    assert len(fig.data) == 2 and fig.data[1].y[-1] > 0
