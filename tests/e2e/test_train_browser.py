"""Real browser, Build pages: Debian's chromium (Playwright) against `streamlit run app.py` on a free port
with EEL_CHECKPOINTS = an empty tmp root.

Train: fill the form (a tiny random BERT built here, LeeBERT so Ω exists, a few dozen rows), start the
job, watch the progress bar and the Ω panel change while it runs, and see the finished run in the run
picker. Playground: type a sentence into that run and read the exit layer, the prediction and the
timings. Screenshots go to test-output/screenshots/ (train-form, train-running, train-done,
playground).
"""
from __future__ import annotations

import functools
import time

import pytest

from tests.conftest import streamlit_server
from tests.e2e.conftest import NEEDS_CHROMIUM, SHOTS, no_error_box, screenshot
from tests.e2e.conftest import settle as _settle

RUN = "tiny-leebert"
settle = functools.partial(_settle, timeout=90.0, ready='[data-testid="stApp"]')

pytestmark = [pytest.mark.e2e, NEEDS_CHROMIUM]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`streamlit run app.py` on a free port over an empty checkpoint root; yields (url, root, backbone)."""
    from tests.helpers import write_page_backbone

    tmp = tmp_path_factory.mktemp("e2e-train")
    backbone = write_page_backbone(tmp / "bert")
    root = tmp / "checkpoints"
    root.mkdir()
    with streamlit_server(root, tmp / "streamlit.log", start_timeout=90,
                          extra_args=("--server.fileWatcherType", "none")) as url:
        yield url, root, backbone


@pytest.fixture(scope="module")
def page(module_page):
    """One page through the whole module: the Playground test opens the run the Train test made."""
    return module_page


def set_number(pg, label: str, value):
    box = pg.get_by_label(label, exact=True)
    box.scroll_into_view_if_needed()
    box.fill(str(value))
    box.press("Enter")
    settle(pg)


def set_text(pg, label: str, value: str):
    box = pg.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Enter")
    settle(pg)


def choose(pg, label: str, option: str):
    """Pick `option` in the selectbox labelled `label`."""
    pg.locator('[data-testid="stSelectbox"]').filter(has=pg.get_by_text(label, exact=True)).click()
    pg.get_by_role("option", name=option, exact=True).click()
    settle(pg)


def open_expander(pg, label: str):
    pg.locator('[data-testid="stExpander"] summary').filter(has_text=label).click()
    time.sleep(0.3)


def omega_state(pg) -> dict:
    """The live panel as the browser has it: progress text, Ω heatmap title and values."""
    return pg.evaluate("""() => {
        const prog = document.querySelector('[data-testid="stProgress"]');
        const plots = Array.from(document.querySelectorAll('.js-plotly-plot'));
        const heat = plots.find(gd => gd.data && gd.data[0] && gd.data[0].type === 'heatmap');
        const badge = Array.from(document.querySelectorAll('[data-testid="stMarkdownContainer"]'))
                           .map(e => e.innerText).find(t => /(running|done|failed|queued|cancelled)$/m.test(t));
        return {progress: prog ? prog.innerText : null, badge: badge || null,
                omega_title: heat ? heat.layout.title.text : null,
                omega: heat ? JSON.stringify(heat.data[0].z) : null, charts: plots.length};
    }""")


# ---- tests ------------------------------------------------------------------------------------------------
def test_train_a_tiny_leebert_run_and_watch_it(server, page):
    url, root, backbone = server
    page.goto(f"{url}/train")
    settle(page)
    page.wait_for_selector("h1:has-text('Train a multi-exit model')", timeout=60000)
    no_error_box(page)

    set_text(page, "Backbone", backbone)
    choose(page, "Method", "leebert")
    set_number(page, "Epochs", 3)
    set_number(page, "Max training rows", 256)  # 192 steps: long enough for several live refreshes
    set_number(page, "Max dev rows", 32)
    set_number(page, "Ω learning rate λ2", 0.05)   # so Ω visibly moves during the run
    open_expander(page, "Training hyperparameters")
    set_number(page, "Batch size", 4)
    open_expander(page, "Exits, bypasses and what the run writes")
    set_number(page, "Latency samples", 4)
    set_number(page, "Log every (steps)", 2)
    set_text(page, "Run name", RUN)
    command = page.locator('[data-testid="stCode"]').first.inner_text()
    assert "--method leebert" in command and f"--out {root / RUN}" in command, command
    assert "--omega-lr 0.05" in command and "--max-train 256" in command
    screenshot(page, "train-form")

    page.get_by_role("button", name="Start training").click()
    page.wait_for_selector("text=started", timeout=30000)

    # watch the fragment refresh while the job runs: the progress text and Ω must change
    seen, deadline, shot = [], time.time() + 240, False
    while time.time() < deadline:
        s = omega_state(page)
        seen.append(s)
        if s["omega"] is not None and not shot and s["badge"] and s["badge"].endswith("running"):
            time.sleep(1.5)
            screenshot(page, "train-running")
            shot = True
        if s["badge"] and s["badge"].endswith("done"):
            break
        assert not (s["badge"] or "").endswith("failed"), page.locator('[data-testid="stAlert"]').all_inner_texts()
        time.sleep(0.7)
    else:
        raise AssertionError(f"the job did not finish; last state {seen[-1]}")
    progress = [s["progress"] for s in seen if s["progress"]]
    omegas = [s["omega_title"] for s in seen if s["omega_title"]]
    assert len(set(progress)) >= 3, progress          # the bar moved while we watched
    assert len(set(omegas)) >= 2, omegas              # Ω snapshots at new steps arrived live
    first_om = next(s["omega"] for s in seen if s["omega"])
    settle(page)
    time.sleep(2.0)  # the rerun a finished job triggers
    settle(page)
    final = omega_state(page)
    assert final["omega"] != first_om, "Ω changed during training"
    assert final["charts"] == 5, final  # losses, dev scores, Ω heatmap, Ω lines, Ω against its data-free drift
    no_error_box(page)
    screenshot(page, "train-done")

    # the finished run is in the run picker without restarting the app
    picker = page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.evaluate(
        "e => e.innerText + ' ' + Array.from(e.querySelectorAll('input')).map(i => i.value).join(' ')")
    assert RUN in picker, picker
    assert (root / RUN / "model.safetensors").is_file()


def read_a_sentence(page, url: str):
    """Open the Playground on the trained run, type a sentence, run it, wait for the numbers."""
    page.goto(f"{url}/playground?run={RUN}")
    settle(page)
    page.wait_for_selector("h1:has-text('Playground')", timeout=60000)
    box = page.get_by_label("Sentence", exact=True)
    box.fill("the film was great and very funny")
    box.press("Control+Enter")
    settle(page)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=60000)


def test_playground_reads_a_typed_sentence(server, page):
    url, root, _ = server
    if not (root / RUN / "cache.npz").is_file():
        pytest.skip("the training test did not produce the run")
    read_a_sentence(page, url)
    metrics = dict(zip(page.locator('[data-testid="stMetricLabel"]').all_inner_texts(),
                       page.locator('[data-testid="stMetricValue"]').all_inner_texts()))
    metrics = {k.strip(): v.strip() for k, v in metrics.items()}
    assert metrics["Prediction"] in ("negative", "positive"), metrics
    assert metrics["Exit layer"] in ("1 / 2", "2 / 2"), metrics
    assert metrics["Early-exit latency"].endswith("ms") and metrics["All 2 layers"].endswith("ms")
    no_error_box(page)
    screenshot(page, "playground")

    # a budgeted exit at layer 1 stops after the first layer
    choose(page, "Exit rule", "Budgeted exit")
    page.wait_for_function("""() => Array.from(document.querySelectorAll('[data-testid="stMetricValue"]'))
                                   .some(e => e.innerText.trim() === '1 / 2')""", timeout=30000)
    screenshot(page, "playground-budget")


def test_playground_at_390_px(server, browser):
    """A phone: the probability heatmap keeps its numbers apart and nothing scrolls sideways."""
    url, root, _ = server
    if not (root / RUN / "cache.npz").is_file():
        pytest.skip("the training test did not produce the run")
    ctx = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=1)
    page = ctx.new_page()
    try:
        read_a_sentence(page, url)
        page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30000)
        got = page.evaluate("""() => {
            const gd = document.querySelectorAll('.js-plotly-plot')[0];
            const boxes = [...gd.querySelectorAll('.heatmap-label text')].map(t => t.getBoundingClientRect());
            let overlaps = 0;
            for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
                const a = boxes[i], b = boxes[j];
                if (a.left < b.right && b.left < a.right && a.top < b.bottom && b.top < a.bottom) overlaps++;
            }
            const plot = gd.querySelector('.nsewdrag').getBoundingClientRect();
            return {overlaps, cells: boxes.length, plot_width: plot.width, page: document.documentElement.scrollWidth};
        }""")
        assert got["cells"] >= 2 and got["overlaps"] == 0, got
        assert got["page"] <= 400 and got["plot_width"] >= 150, got
        no_error_box(page)
        height = page.evaluate("""() => document.querySelector('[data-testid="stMain"]').scrollHeight""")
        page.set_viewport_size({"width": 390, "height": min(int(height) + 40, 9000)})
        time.sleep(1.0)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / "playground-text-390.png"), full_page=True)
    finally:
        ctx.close()


def test_traces_opens_a_sample_in_the_playground_to_edit_and_rerun(server, page):
    """Traces' 'Open in Playground' carries the dev sentence over; edited, it runs through the real model."""
    url, root, _ = server
    if not (root / RUN / "cache.npz").is_file():
        pytest.skip("the training test did not produce the run")
    page.goto(f"{url}/traces?run={RUN}&sample=0")
    settle(page)
    page.wait_for_selector("h1:has-text('Traces')", timeout=60000)
    quote = page.locator('[data-testid="stMarkdownContainer"] blockquote').first.inner_text().strip()
    page.get_by_role("button", name="Open in Playground: edit this text and rerun it through the model").click()
    page.wait_for_selector("h1:has-text('Playground')", timeout=60000)
    settle(page)
    box = page.get_by_label("Sentence", exact=True)
    carried = box.input_value()
    assert carried and carried.split()[:3] == quote.split()[:3], (carried, quote)
    box.fill(carried + " and the ending was wonderful")
    box.press("Control+Enter")
    settle(page)
    page.wait_for_selector('[data-testid="stMetric"]', timeout=60000)
    values = page.locator('[data-testid="stMetricValue"]').all_inner_texts()
    assert any(v.strip() in ("negative", "positive") for v in values), values
    assert "and the ending was wonderful" in page.get_by_label("Sentence", exact=True).input_value()
    no_error_box(page)
    screenshot(page, "playground-from-traces")
