"""Browser tests of issue 23 items 1 and 2 on the bundled default run: a link copied after a setting was
loaded by the page itself (the goal's "Load the answer", a row of the goal table) reopens that setting
in a fresh browser, and every download of Explore delivers a file, again and again, after reruns.
"""
from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import BUNDLED, NEEDS_CHROMIUM, brush_exit_histogram, no_error_box, open_app, screenshot, settle

pytestmark = [pytest.mark.e2e, NEEDS_CHROMIUM,
              pytest.mark.skipif(not BUNDLED.exists(), reason=f"no bundled default run at {BUNDLED.parent}")]

EXPLORE = "/explore?run=rotten_tomatoes-joint"


def view_of(pg) -> tuple[str, list[str]]:
    """What the page shows of the open setting: the 'Current knobs' caption and the five numbers."""
    knobs = next(c for c in pg.locator('[data-testid="stCaptionContainer"]').all_inner_texts()
                 if c.startswith("Current knobs:"))
    return knobs, pg.locator('[data-testid="stMetricValue"]').all_inner_texts()[:5]


def share_link(pg) -> str:
    """The text of the 'Link to this view' box."""
    return next(t for t in pg.locator('[data-testid="stCode"]').all_inner_texts()
                if t.strip().startswith("http") and "/explore?" in t).strip()


def opened_fresh(browser, url: str):
    """(knobs, numbers) of `url` opened in a new browser context (no session, no cookies)."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        pg = ctx.new_page()
        pg.goto(url)
        settle(pg)
        pg.wait_for_selector("h1:has-text('Explore exit rules')", timeout=30000)
        settle(pg)
        no_error_box(pg)
        return view_of(pg)
    finally:
        ctx.close()


def choose_goal_lose_at_most(pg):
    pg.locator('[data-testid="stRadio"]', has_text="Goal").get_by_text("lose at most").click()
    time.sleep(0.3)
    settle(pg)


def test_a_link_keeps_the_loaded_answer(browser, bundled_server, page):
    """Goal 'lose at most' 1 point, 'Load the answer': the link opens at the same threshold and speed-up
    (it used to hold only run and goal, and opened at the starting threshold)."""
    open_app(page, bundled_server, EXPLORE)
    start = view_of(page)
    choose_goal_lose_at_most(page)
    page.locator("button", has_text="Load the answer").click()
    time.sleep(0.3)
    settle(page)
    loaded = view_of(page)
    assert loaded != start, "the answer is not the starting setting: this test would prove nothing"
    link = share_link(page)
    assert link.split("?", 1)[1] in page.url  # the address bar and the link box agree
    assert opened_fresh(browser, link) == loaded
    no_error_box(page)
    screenshot(page, "explore-answer-loaded")


def test_a_link_keeps_a_goal_table_row(browser, bundled_server, page):
    """A row of the goal table loaded into the knobs (another rule, several knobs) is in the link too."""
    open_app(page, bundled_server, EXPLORE)
    start = view_of(page)
    table = page.locator('[data-testid="stDataFrame"]').first
    table.scroll_into_view_if_needed()
    time.sleep(0.8)
    box = table.bounding_box()
    page.mouse.click(box["x"] + 12, box["y"] + 35 * 2 + 17)  # the row marker of the second row
    time.sleep(0.3)
    settle(page)
    loaded = view_of(page)
    assert loaded != start, "the row is not the starting setting: this test would prove nothing"
    assert opened_fresh(browser, share_link(page)) == loaded


def test_every_download_arrives_after_reruns(bundled_server, browser):
    """The JSON point, the calibrated JSON, then the sweeps CSV four times, as a person clicks them: a file
    each time. A download made by a function got a new id on every rerun (and the downloads themselves
    caused reruns), so 2 of 4 CSV clicks delivered nothing."""
    ctx = browser.new_context(viewport={"width": 1400, "height": 900}, accept_downloads=True)
    try:
        pg = ctx.new_page()
        open_app(pg, bundled_server, EXPLORE)
        pg.get_by_text("Guarantee: calibrate", exact=False).click()
        settle(pg)

        def download(label: str):
            button = pg.locator('[data-testid="stDownloadButton"] button', has_text=label)
            with pg.expect_download(timeout=20000) as got:
                button.click()
            return got.value

        files = [download("Download operating point (JSON)"), download("Download the calibrated point (JSON)"),
                 *(download("Every swept setting (CSV)") for _ in range(4)), download("Pareto frontier (CSV)")]
        names = [f.suggested_filename for f in files]
        assert names[0].endswith(".json") and names[1].endswith("-calibrated.json"), names
        assert names[2:6] == ["rotten_tomatoes-joint-sweeps.csv"] * 4, names
        assert names[6].startswith("rotten_tomatoes-joint-frontier"), names
        assert all(f.path().stat().st_size > 0 for f in files)
        no_error_box(pg)
    finally:
        ctx.close()


def test_a_traces_link_keeps_the_brushed_layers(browser, bundled_server, page):
    """Layers brushed on Explore's histogram and opened in Traces are in Traces' link: a fresh browser
    shows the same selection (the link used to hold only the run and the rule)."""
    open_app(page, bundled_server, EXPLORE)
    button = brush_exit_histogram(page)
    button.click()
    page.wait_for_selector("h1:has-text('Traces')", timeout=30000)
    settle(page)
    said = page.locator('[data-testid="stCaptionContainer"]', has_text="samples match").first.inner_text()
    assert not said.startswith("854 of"), said  # the brush narrowed the samples
    assert "t.layers=" in page.url, page.url
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    try:
        again = ctx.new_page()
        again.goto(page.url)
        settle(again)
        again.wait_for_selector("h1:has-text('Traces')", timeout=30000)
        settle(again)
        assert again.locator('[data-testid="stCaptionContainer"]', has_text="samples match").first.inner_text() == said
    finally:
        ctx.close()
