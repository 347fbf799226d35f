"""Real-browser tests: Debian's chromium (through Playwright) against `streamlit run app.py` on a free
port, reading the synthetic run root of tests/conftest.py (EEL_CHECKPOINTS).

Every page loads with no error box; a slider move changes the chart; clicking a point of a chart
loads that setting (Explore) or opens that sample's trace (Traces); a corrupt run shows a message.
Screenshots of every page land in test-output/screenshots/ (gitignored) for a person to look at.
"""
from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import BUNDLED, NEEDS_CHROMIUM, no_error_box, open_app, screenshot, settle

pytestmark = [pytest.mark.e2e, NEEDS_CHROMIUM]


def plot_trace(pg, chart_index: int, name: str) -> dict:
    """x/y/customdata of the trace called `name` in the chart_index-th plotly chart."""
    return pg.evaluate("""([i, name]) => {
        const gd = document.querySelectorAll('.js-plotly-plot')[i];
        const k = gd.data.findIndex(t => t.name === name);
        if (k < 0) return null;
        const t = gd.data[k];
        const arr = v => (v && v.length !== undefined) ? Array.from(v) : v;
        return {index: k, x: arr(t.x), y: arr(t.y), customdata: t.customdata ? Array.from(t.customdata, r => Array.from(r)) : null};
    }""", [chart_index, name])


def point_center(pg, chart_index: int, trace_index: int, point: int) -> tuple[float, float]:
    box = pg.evaluate("""([i, k, j]) => {
        const gd = document.querySelectorAll('.js-plotly-plot')[i];
        const traces = gd.querySelectorAll('.scatterlayer .trace');
        const pts = traces[k].querySelectorAll('path.point');
        const r = pts[j].getBoundingClientRect();
        return [r.x + r.width / 2, r.y + r.height / 2];
    }""", [chart_index, trace_index, point])
    return box[0], box[1]


def most_isolated_point(pg, chart_index: int) -> dict:
    """The clickable point (one with customdata) farthest from every other drawn point, so a click
    lands on it and on nothing else: {trace, point, customdata}."""
    return pg.evaluate("""(i) => {
        const gd = document.querySelectorAll('.js-plotly-plot')[i];
        const traces = [...gd.querySelectorAll('.scatterlayer .trace')];
        const all = [];
        traces.forEach((t, k) => t.querySelectorAll('path.point').forEach((p, j) => {
            const r = p.getBoundingClientRect();
            all.push({k, j, x: r.x + r.width / 2, y: r.y + r.height / 2});
        }));
        let best = null, bestD = -1;
        for (const a of all) {
            const cd = gd.data[a.k].customdata;
            if (!cd || !gd.data[a.k].name || gd.data[a.k].name.startsWith('Oracle')) continue;
            let d = Infinity;
            for (const b of all) if (b !== a) d = Math.min(d, Math.hypot(a.x - b.x, a.y - b.y));
            if (d > bestD) { bestD = d; best = {trace: a.k, point: a.j, customdata: Array.from(cd[a.j])}; }
        }
        return best;
    }""", chart_index)


def click_point(pg, chart_index: int, trace_index: int, point: int):
    pg.evaluate("""(i) => document.querySelectorAll('.js-plotly-plot')[i]
                          .scrollIntoView({block: 'center'})""", chart_index)
    time.sleep(0.8)
    x, y = point_center(pg, chart_index, trace_index, point)
    pg.mouse.move(x, y)
    time.sleep(0.4)
    pg.mouse.click(x, y)


# ---- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path,name,title", [
    ("/?run=synth-joint", "home", "Early-Exit Lab"),
    ("/explore?run=synth-leebert", "explore", "Explore exit rules"),
    ("/traces?run=synth-pair3&sample=3", "traces", "Traces"),
    ("/compare", "compare", "Compare runs"),
])
def test_every_page_loads_without_an_error_box(app_server, page, path, name, title):
    open_app(page, app_server, path)
    assert page.locator("h1").first.inner_text().strip() == title
    no_error_box(page)
    assert page.locator(".js-plotly-plot").count() >= 1
    screenshot(page, name)


def test_corrupt_run_shows_a_message(app_server, page):
    open_app(page, app_server, "/explore?run=broken-run")
    alert = page.locator('[data-testid="stAlert"]').first
    assert "broken-run" in alert.inner_text() and "cache.npz" in alert.inner_text()
    no_error_box(page)
    screenshot(page, "explore-broken-run")


def test_moving_a_slider_changes_the_chart(app_server, page):
    open_app(page, app_server, "/explore?run=synth-joint&strategy=Entropy")
    before = plot_trace(page, 0, "Entropy: current")
    score_before = page.locator('[data-testid="stMetricValue"]').first.inner_text()
    thumb = page.locator('[data-testid="stSlider"] input[aria-label="Entropy threshold"]')
    thumb.focus()
    page.keyboard.press("End")  # threshold 0.300 -> 1.000: every sample exits at layer 1
    time.sleep(0.5)
    settle(page)
    page.wait_for_function("""(x) => {
        const gd = document.querySelectorAll('.js-plotly-plot')[0];
        const t = gd && gd.data.find(t => t.name === 'Entropy: current');
        return t && Array.from(t.x)[0] !== x; }""", arg=before["x"][0], timeout=30000)
    after = plot_trace(page, 0, "Entropy: current")
    assert after["x"] != before["x"]
    assert after["x"][0] == pytest.approx(6.0)  # layer speed-up L / 1
    assert "entropy.threshold=1" in page.url
    assert page.locator('[data-testid="stMetricValue"]').first.inner_text() != score_before or \
        after["y"] != before["y"]
    no_error_box(page)
    screenshot(page, "explore-after-slider")


def test_clicking_a_curve_point_loads_that_setting(app_server, page):
    open_app(page, app_server, "/explore?run=synth-joint&strategy=Budget&curves=DGE&curves=Voting")
    page.evaluate("""() => document.querySelectorAll('.js-plotly-plot')[0].scrollIntoView({block: 'center'})""")
    time.sleep(0.8)
    target = most_isolated_point(page, 0)
    strategy, params_json, title, setting = target["customdata"]
    click_point(page, 0, target["trace"], target["point"])
    page.wait_for_function("""(t) => [...document.querySelectorAll('h3')].some(h => h.innerText === t)""",
                           arg=title, timeout=30000)
    settle(page)
    knobs = next(c for c in page.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
                 if c.startswith("Current knobs:"))
    assert all(part in knobs for part in setting.split(", ")), (setting, knobs)
    assert "strategy=" in page.url
    no_error_box(page)
    screenshot(page, "explore-after-click")


def test_clicking_a_sample_point_opens_its_trace(app_server, page):
    open_app(page, app_server, "/traces?run=synth-joint")
    page.evaluate("""() => document.querySelectorAll('.js-plotly-plot')[0].scrollIntoView({block: 'center'})""")
    time.sleep(0.8)
    target = most_isolated_point(page, 0)  # never the open sample: its ring sits on it
    pos = int(target["customdata"][0])
    assert page.locator("h3", has_text=f"Sample {pos} ").count() == 0
    click_point(page, 0, target["trace"], target["point"])
    page.wait_for_function("""(p) => [...document.querySelectorAll('h3')]
                              .some(h => h.innerText.startsWith('Sample ' + p + ' '))""", arg=pos, timeout=30000)
    settle(page)
    assert f"sample={pos}" in page.url
    no_error_box(page)
    screenshot(page, "traces-after-click")


def test_run_choice_survives_page_navigation(app_server, page):
    open_app(page, app_server, "/explore?run=synth-pair3")
    page.locator('[data-testid="stSidebarNav"] a', has_text="Compare").click()
    page.wait_for_selector("h1:has-text('Compare runs')", timeout=30000)
    settle(page)
    page.locator('[data-testid="stSidebarNav"] a', has_text="Traces").click()
    page.wait_for_selector("h1:has-text('Traces')", timeout=30000)
    settle(page)
    assert "run=synth-pair3" in page.url
    assert "synthetic-pairs · badge" in page.locator('[data-testid="stSidebar"]').inner_text()  # its config
    no_error_box(page)


# ---- the committed runs: what a newcomer opens ----------------------------------------------------------
@pytest.mark.skipif(not BUNDLED.exists(), reason=f"no bundled default run at {BUNDLED.parent}")
def test_the_bundled_runs_in_a_browser(bundled_server, page):
    """Home opens on the default run; Explore and Traces work on it with the real Rotten Tomatoes
    sentences restored through core.data.tasks; Compare opens on the runs of the same task."""
    open_app(page, bundled_server, "/")
    assert "run=rotten_tomatoes-joint" in page.url
    assert "rotten_tomatoes · joint" in page.locator('[data-testid="stSidebar"]').inner_text()
    no_error_box(page)
    screenshot(page, "bundled-home")

    open_app(page, bundled_server, "/explore?run=rotten_tomatoes-joint&strategy=PCEE")
    no_error_box(page)
    assert page.locator('[data-testid="stMetricValue"]').count() >= 4
    key = page.locator(".chart-key").inner_text()            # the chart's key, drawn outside Plotly
    for name in ["Pareto frontier", "PCEE patient & confident", "Best at target", "95% interval"]:
        assert name in key, key
    screenshot(page, "bundled-explore")

    open_app(page, bundled_server, "/traces?run=rotten_tomatoes-joint&sample=0")
    no_error_box(page)
    quote = page.locator('[data-testid="stMarkdownContainer"] blockquote').first.inner_text()
    assert len(quote.split()) >= 3 and "row" not in quote.lower()[:10], quote
    screenshot(page, "bundled-traces")

    open_app(page, bundled_server, "/compare?run=rotten_tomatoes-joint")
    no_error_box(page)
    chosen = page.locator('[data-testid="stMultiSelect"]').first.inner_text()
    assert "rotten_tomatoes-joint" in chosen and "mrpc" not in chosen and "sst2" not in chosen
    assert page.locator('[data-testid="stAlert"]', has_text="different metrics").count() == 0
    screenshot(page, "bundled-compare")
