"""Browser tests of issue 13: Traces says why (sentence + threshold on the chart), Explore opens on the
entropy rule and its brushed histogram filters Traces, CSV export and link, Compare's training history,
and every page at 390 px wide. Screenshots (desktop and narrow) land in test-output/screenshots/.
"""
from __future__ import annotations

import pytest

from tests.e2e.conftest import SHOTS, brush_exit_histogram, narrow_shot, no_error_box, open_app, screenshot, settle  # noqa: F401

pytestmark = [pytest.mark.e2e]


def test_traces_says_why_and_draws_the_threshold(app_server, page):
    open_app(page, app_server, "/traces?run=synth-joint&sample=3")
    why = page.locator('[data-testid="stText"]', has_text="Why Entropy exits at layer").first.inner_text()
    assert "normalized entropy" in why.lower() and ("<" in why or "never" in why)
    shapes = page.evaluate("""() => { const gds = [...document.querySelectorAll('.js-plotly-plot')];
        const gd = gds[gds.length - 1]; return (gd.layout.shapes || []).map(s => s.line && s.line.dash); }""")
    assert "dash" in shapes  # the threshold line on the signals strip
    no_error_box(page)
    screenshot(page, "traces-why")


def test_explore_opens_on_entropy_and_the_brush_filters_traces(app_server, page):
    open_app(page, app_server, "/explore?run=synth-joint")
    assert page.locator("h3", has_text="Entropy").count() >= 1
    assert page.locator('[data-testid="stSlider"]', has_text="Entropy threshold").count() == 1
    assert page.locator('[data-testid="stDownloadButton"]', has_text="Pareto frontier (CSV)").count() == 1
    link = page.locator('[data-testid="stCode"]', has_text="run=synth-joint").first.inner_text()
    assert "/explore?" in link
    button = brush_exit_histogram(page)
    label = button.inner_text()
    button.click()
    page.wait_for_selector("h1:has-text('Traces')", timeout=30000)
    settle(page)
    no_error_box(page)
    n = int(label.split("Open the ")[1].split(" ")[0])
    caption = page.locator('[data-testid="stCaptionContainer"]', has_text="samples match").first.inner_text()
    assert caption.startswith(f"{n} of "), (label, caption)
    screenshot(page, "traces-from-brush")


def test_compare_shows_training_history(app_server, page):
    open_app(page, app_server, "/compare?c.runs=synth-joint&c.runs=synth-leebert&c.runs=synth-deep")
    assert page.locator("h3", has_text="Training history").count() == 1
    names = page.evaluate("""() => [...document.querySelectorAll('.js-plotly-plot')]
        .flatMap(gd => gd.data.map(t => t.name)).filter(Boolean)""")
    assert {"synth-joint", "synth-leebert", "synth-deep"} <= set(names)
    no_error_box(page)
    screenshot(page, "compare-history")


@pytest.mark.parametrize("path,name", [
    ("/?run=synth-joint", "home"), ("/explore?run=synth-joint", "explore"),
    ("/traces?run=synth-joint&sample=3", "traces"), ("/compare", "compare"), ("/playground", "playground"),
    ("/train", "train"), ("/slices?run=synth-joint", "slices"),
])
def test_every_page_at_390_px(browser, app_server, path, name):
    got = narrow_shot(browser, app_server, path, name)
    assert got["page"] <= 400, got          # nothing makes the page scroll sideways
    assert all(h >= 150 for h in got["plots"]), got  # no squashed figure


def test_traces_pins_a_second_sample(app_server, page):
    open_app(page, app_server, "/traces?run=synth-joint&sample=3")
    page.get_by_role("button", name="Pin this sample", exact=True).click()
    settle(page)
    box = page.locator('[data-testid="stNumberInput"] input').first
    box.fill("7")
    box.press("Enter")
    page.wait_for_selector("h3:has-text('Sample 7 beside pinned sample 3')", timeout=30000)
    settle(page)
    assert page.locator('[data-testid="stText"]', has_text="Dev row 3: ").count() == 1
    no_error_box(page)
    screenshot(page, "traces-pinned")


def test_a_traces_link_keeps_the_knobs_it_inherited_from_explore(browser, app_server, page):
    """Knobs moved in Explore carry into Traces; Traces' own URL then reproduces that view in a new browser."""
    open_app(page, app_server, "/explore?run=synth-joint&strategy=PCEE")
    for knob in ("Patience", "Confidence threshold"):
        page.locator('[data-testid="stSlider"]', has_text=knob).first.locator('input[type="range"]').first.focus()
        for _ in range(2):
            page.keyboard.press("ArrowRight")
            settle(page)
    page.get_by_role("link", name="traces").first.click()
    page.wait_for_selector("h1:has-text('Traces')", timeout=30000)
    settle(page)
    no_error_box(page)
    said = page.locator('[data-testid="stCaptionContainer"]', has_text="At these knobs").first.inner_text()
    url = page.url
    assert "t.rule=PCEE" in url and "t.pcee.threshold=" in url, url  # knobs at their defaults stay out
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        again = ctx.new_page()
        again.goto(url)
        settle(again)
        again.wait_for_selector("h1:has-text('Traces')", timeout=30000)
        settle(again)
        assert again.locator('[data-testid="stCaptionContainer"]', has_text="At these knobs").first.inner_text() == said
    finally:
        ctx.close()
