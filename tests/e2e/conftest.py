"""What both browser test files share: Debian's chromium through Playwright, a page per test (or one per
module), waiting for a rerun to settle, full-page screenshots into test-output/screenshots/ (gitignored)
and the no-error-box check. The servers themselves are in tests/conftest.py (`streamlit_server`)."""
from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ERROR_BOX = '[data-testid="stException"], .stException'
NEEDS_CHROMIUM = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason=f"no chromium at {CHROMIUM} (apt-get install chromium)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _new_page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 900})
    return ctx, ctx.new_page()


@pytest.fixture
def page(browser):
    """A fresh page per test."""
    ctx, pg = _new_page(browser)
    yield pg
    ctx.close()


@pytest.fixture(scope="module")
def module_page(browser):
    """One page for every test of a module (tests that carry on where the last one stopped)."""
    ctx, pg = _new_page(browser)
    yield pg
    ctx.close()


def settle(pg, timeout: float = 60.0, *, ready: str = '[data-testid="stMain"]'):
    """Wait until the app has rendered (`ready` is there) and no script run is in progress."""
    pg.wait_for_selector(ready, timeout=timeout * 1000)
    deadline = time.time() + timeout
    quiet = 0
    while time.time() < deadline:
        running = pg.evaluate("""() => !!document.querySelector('[data-testid="stStatusWidget"]')
                                 || !!document.querySelector('[data-testid="stSkeleton"]')""")
        quiet = 0 if running else quiet + 1
        if quiet >= 4:
            return
        time.sleep(0.25)
    raise AssertionError("the app kept running")


def screenshot(pg, name: str, *, width: int = 1400):
    """The whole page: Streamlit scrolls inside its main container, so grow the viewport to fit it.
    `width` 390 gives a phone's layout (saved as `<name>-390.png`)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    if width != 1400:
        pg.set_viewport_size({"width": width, "height": 844})
        time.sleep(1.0)
    height = pg.evaluate("""() => { const m = document.querySelector('[data-testid="stMain"]');
                                    return m ? m.scrollHeight : 900 }""")
    pg.set_viewport_size({"width": width, "height": min(int(height) + 40, 9000)})
    time.sleep(1.0)  # plotly re-lays out on resize
    pg.screenshot(path=str(SHOTS / (f"{name}.png" if width == 1400 else f"{name}-{width}.png")), full_page=True)
    pg.set_viewport_size({"width": 1400, "height": 900})


def no_error_box(pg):
    boxes = pg.locator(ERROR_BOX)
    assert boxes.count() == 0, boxes.first.inner_text()


BUNDLED = Path(__file__).resolve().parents[2] / "checkpoints" / "rotten_tomatoes-joint" / "cache.npz"


def open_app(pg, base: str, path: str):
    """Open `path` of the app at `base` and wait until it has drawn its title and settled."""
    pg.goto(base + path)
    settle(pg)
    pg.wait_for_selector("h1", timeout=30000)
    settle(pg)


def narrow_shot(browser, base: str, path: str, name: str) -> dict:
    """The page at 390 px wide (a phone), whole height: a screenshot `<name>-390.png`, how wide the page
    is (`page`, > 390 means it scrolls sideways), the Plotly figures that stick out (`wide`) and every
    figure's height (`plots`)."""
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    pg = ctx.new_page()
    try:
        open_app(pg, base, path)
        no_error_box(pg)
        height = pg.evaluate("""() => document.querySelector('[data-testid="stMain"]').scrollHeight""")
        pg.set_viewport_size({"width": 390, "height": min(int(height) + 40, 9000)})
        time.sleep(1.5)
        SHOTS.mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(SHOTS / f"{name}-390.png"), full_page=True)
        return pg.evaluate("""() => ({
            wide: [...document.querySelectorAll('.js-plotly-plot .main-svg:first-child')]
                    .map(s => s.getBoundingClientRect()).filter(r => r.right > 392).length,
            plots: [...document.querySelectorAll('.js-plotly-plot')].map(p => p.getBoundingClientRect().height),
            page: document.documentElement.scrollWidth})""")
    finally:
        ctx.close()


def brush_exit_histogram(pg):
    """Drag across Explore's exit-layer histogram (about layers 1 to 4 of 6); returns the button that
    opens the brushed samples in Traces once it shows."""
    chart = pg.locator('[data-testid="stVegaLiteChart"]').first
    chart.scroll_into_view_if_needed()
    time.sleep(1.0)
    box = chart.locator("canvas, svg").first.bounding_box()
    y = box["y"] + box["height"] * 0.6
    pg.mouse.move(box["x"] + box["width"] * 0.15, y)
    pg.mouse.down()
    pg.mouse.move(box["x"] + box["width"] * 0.55, y, steps=8)
    pg.mouse.up()
    button = pg.locator("button", has_text="in Traces")
    button.wait_for(timeout=30000)
    return button
