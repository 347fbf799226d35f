"""Browser test of issue 23 item 5 on the bundled default run: Traces with filters nothing matches says
which filter to loosen (no empty table, no scatter without points), and a sample opened by its row that
lies outside the filters says so. Screenshots at 1400 and 390 px."""
from __future__ import annotations

import pytest

from tests.e2e.conftest import BUNDLED, NEEDS_CHROMIUM, no_error_box, open_app, screenshot

pytestmark = [pytest.mark.e2e, NEEDS_CHROMIUM,
              pytest.mark.skipif(not BUNDLED.exists(), reason=f"no bundled default run at {BUNDLED.parent}")]


def test_an_empty_selection_says_what_to_loosen(bundled_server, page):
    open_app(page, bundled_server, "/traces?run=rotten_tomatoes-joint&t.over=true&t.layers=1&t.layers=1&sample=91")
    no_error_box(page)
    assert page.locator('[data-testid="stCaptionContainer"]', has_text="samples match").first.inner_text() \
        .startswith("0 of ")
    alerts = page.locator('[data-testid="stAlert"]').all_inner_texts()
    advice = next(a for a in alerts if "No sample matches" in a)
    assert "without exit layers 1-1" in advice and "without Overthinking" in advice and "Loosen" in advice
    assert page.locator('[class*="st-key-traces-table"]').count() == 0    # no empty table
    assert page.locator('[class*="st-key-traces-scatter"]').count() == 0  # no scatter with nothing on it
    outside = next(a for a in alerts if "Dev row 91" in a)
    assert "does not match the filters" in outside and "does not overthink" in outside
    screenshot(page, "traces-empty-selection")
    screenshot(page, "traces-empty-selection", width=390)
