"""core.app.knob_scale: slider stops that move about the same number of exits per step."""
import numpy as np

from core.app.knob_scale import quantile_stops, stops_for, with_value
from core.engine.strategies import apply
from tests.conftest import synthetic_cache

CACHE = synthetic_cache(n=400, num_layers=6, k=2, seed=3)


def test_entropy_stops_spread_the_effect_evenly():
    stops = stops_for(CACHE, "entropy", "threshold", {}, 0.0, 1.0)
    assert stops[0] == 0.0 and stops[-1] == 1.0 and stops == sorted(stops)
    mean_exit = np.array([apply("entropy", CACHE.probs, threshold=t)[0].mean() for t in stops])
    steps = -np.diff(mean_exit)
    # on a linear track the last tenth holds most of the change; here no tenth of the stops holds half
    tenths = [steps[i:i + len(steps) // 10].sum() for i in range(0, len(steps), len(steps) // 10)]
    assert max(tenths) < 0.5 * steps.sum()
    linear = np.array([apply("entropy", CACHE.probs, threshold=t)[0].mean() for t in np.linspace(0, 1, 101)])
    lin_tenths = [-np.diff(linear)[i:i + 10].sum() for i in range(0, 100, 10)]
    assert max(tenths) < max(lin_tenths)


def test_linear_knobs_keep_their_slider():
    assert stops_for(CACHE, "patience", "patience", {}, 1, 6) is None
    assert stops_for(CACHE, "budget", "layer", {}, 1, 6) is None


def test_a_loaded_exact_value_stays():
    stops = quantile_stops(np.array([0.1, 0.2, 0.3]), 0.0, 1.0, n=5)
    assert 0.123456789 in with_value(stops, 0.123456789) and 0.2 in stops
