"""Speed as a person sees it, measured in the browser: Explore's first full paint (every chart drawn and
the script's run over) after the server is warm, and a slider move to a redrawn chart and to the end
of the rerun it started. The numbers are written to
test-output/timings.json (label from EEL_TIMING_LABEL) and printed; they are measurements, not
assertions (the machine is shared), but the test fails if a chart never draws or never changes.
"""
from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import BUNDLED, CHROMIUM, no_error_box, settle  # browser / page fixtures come from there too

OUT = Path(__file__).resolve().parents[2] / "test-output" / "timings.json"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no chromium at {CHROMIUM}"),
    pytest.mark.skipif(not BUNDLED.exists(), reason=f"no bundled default run at {BUNDLED.parent}"),
]

# true once the script has finished and every plotly chart the page holds has drawn its SVG
ALL_DRAWN = """() => {
    if (document.querySelector('[data-testid="stStatusWidget"]')) return false;
    if (!document.querySelector('h1')) return false;
    const boxes = document.querySelectorAll('[data-testid="stPlotlyChart"], [data-testid="stVegaLiteChart"]');
    if (boxes.length === 0) return false;
    for (const b of boxes) {
        const gd = b.querySelector('.js-plotly-plot');
        const vega = b.querySelector('canvas, svg.marks');
        if (!(gd && gd._fullLayout && gd.querySelector('.main-svg')) && !vega) return false;
    }
    return boxes.length;
}"""


def first_full_paint(pg, url: str, charts_at_least: int) -> float:
    """Seconds from navigation start until every chart is drawn (and stays so for 0.6 s)."""
    pg.goto(url)
    pg.evaluate("""(js) => { window.__drawn = null; const f = eval(js); let n = -1, since = null;
        const tick = () => { const k = f(); const now = performance.now();
            if (k && k === n) { if (since === null) since = now; }
            else { since = k ? now : null; n = k; }
            if (since !== null && now - since > 600 && n >= window.__want) { window.__drawn = since; return; }
            requestAnimationFrame(tick); };
        requestAnimationFrame(tick); }""", ALL_DRAWN)
    pg.evaluate("(w) => { window.__want = w }", charts_at_least)
    pg.wait_for_function("() => window.__drawn !== null", timeout=90000, polling=100)
    return pg.evaluate("() => window.__drawn") / 1000.0


def record(name: str, values: list[float]):
    label = os.environ.get("EEL_TIMING_LABEL", "now")
    data = json.loads(OUT.read_text()) if OUT.exists() else {}
    data.setdefault(label, {})[name] = {"median": statistics.median(values), "runs": values}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1))
    print(f"{label} {name}: median {statistics.median(values):.3f}  runs {[round(v, 3) for v in values]}")


def test_explore_first_full_paint(bundled_server, page):
    url = bundled_server + "/explore?run=rotten_tomatoes-joint"
    page.goto(url)            # warm the server: imports, run load, sweeps
    settle(page, 120)
    no_error_box(page)
    n_charts = page.locator('[data-testid="stPlotlyChart"], [data-testid="stVegaLiteChart"]').count()
    assert n_charts >= 2
    times = [first_full_paint(page, url, n_charts) for _ in range(3)]
    record("explore_first_full_paint_s", times)


def test_explore_slider_to_redrawn_chart(bundled_server, page):
    page.goto(bundled_server + "/explore?run=rotten_tomatoes-joint&strategy=Entropy")
    settle(page, 120)
    thumb = page.locator('[data-testid="stSlider"] [role="slider"][aria-label="Entropy threshold"]')
    if thumb.count() == 0:
        thumb = page.locator('[data-testid="stSlider"] input[aria-label="Entropy threshold"]')
    times, done = [], []
    for key in ["ArrowRight"] * 6 + ["ArrowLeft"] * 6:
        thumb.focus()
        before = page.evaluate("""() => { const gd = document.querySelectorAll('.js-plotly-plot')[0];
            const t = gd.data.find(t => t.name === 'Entropy: current'); return JSON.stringify(Array.from(t.x)); }""")
        t0 = page.evaluate("() => performance.now()")
        page.keyboard.press(key)
        t1 = page.wait_for_function("""(b) => { const gd = document.querySelectorAll('.js-plotly-plot')[0];
            const t = gd && gd.data && gd.data.find(t => t.name === 'Entropy: current');
            return t && JSON.stringify(Array.from(t.x)) !== b && performance.now(); }""",
                                    arg=before, timeout=30000, polling="raf").json_value()
        # the whole rerun: Streamlit's running indicator gone and the chart redrawn
        t2 = page.wait_for_function("""() => !document.querySelector('[data-testid="stStatusWidget"]')
            && performance.now()""", timeout=30000, polling="raf").json_value()
        times.append((t1 - t0) / 1000.0)
        done.append((max(t1, t2) - t0) / 1000.0)
        settle(page)
        time.sleep(0.3)
    no_error_box(page)
    record("explore_slider_to_redraw_s", times)
    record("explore_slider_to_run_done_s", done)
