"""Playground: type a sentence (or a pair) and watch the chosen run's model read it layer by layer with
an exit rule, stop, and answer; the latency is measured against running every layer."""
from __future__ import annotations

import json
import random

import streamlit as st

from core.app import appstate, figures, playground_io, rundata
from core.app.plain import md
from core.serving import playground

appstate.require_app()

RESULT_KEY = "pg.result"   # the last result's exit layer / prediction (read by tests)
POINT_MSG = "pg.point_msg"


def _take_setting(run, strategy: str, params: dict) -> None:
    """Put a rule and its knobs into the Playground's widgets (before they are drawn)."""
    appstate.load_setting(run, strategy, params, prefix="pg.", tab_key=None)
    st.session_state["pg.strategy"] = strategy


def _load_point(run) -> None:
    """Callback of the operating-point uploader: validate the file and take its rule and knobs."""
    f = st.session_state.get("pg.point_file")
    if f is None:
        st.session_state.pop(POINT_MSG, None)
        return
    try:
        data = playground_io.parse_point(f.getvalue(), f.name, run_dir=run.path, strategies=run.strategies)
    except ValueError as e:
        st.session_state[POINT_MSG] = ("error", str(e))
        return
    _take_setting(run, data["strategy"], data["params"])
    promise = data["promise"]
    st.session_state[POINT_MSG] = ("ok", f"Loaded {f.name}: {data['strategy']} "
                                         f"{json.dumps(data['params'], sort_keys=True)}; promised on "
                                         f"{promise['measured_on']['rows']} dev rows: {data['metric']} "
                                         f"{promise['score']['value']:.4f}, layer speed-up "
                                         f"{promise['layer_speedup']['value']:.2f}x.")


@st.cache_resource(max_entries=4, show_spinner=False)
def _model(path: str, mtime: float) -> playground.PlaygroundModel:
    """The run's model, loaded once per weights file version."""
    return playground.load(path)


def _example(run) -> None:
    """Put a random dev-set example into the text boxes."""
    try:
        texts = run.cache.get_texts()
    except Exception:  # texts not restorable: leave the boxes alone
        return
    if not len(texts):
        return
    t = texts[random.randrange(len(texts))]
    if isinstance(t, (list, tuple)):
        st.session_state["pg.text"], st.session_state["pg.text_pair"] = str(t[0]), str(t[1])
    else:
        st.session_state["pg.text"] = str(t)


def main() -> None:
    st.title("Playground")
    st.caption("Your own text through a trained model, one layer at a time: after each layer its exit gives "
               "class probabilities, the exit rule decides whether to stop, and the layers after the exit never "
               "run. It is the same code the command line's predictions use.")
    run = appstate.current_run()
    if run is None:
        return

    missing = playground.missing_weights_message(run.path)
    if missing:
        st.warning(f"Run **{md(run.name)}** has no weights (`model.safetensors`), so it cannot read new text; its "
                   "exit cache still works on the Explore, Traces and Compare pages.")
        cmd = playground.train_command(run.path)
        if cmd:
            st.markdown("Train it again with weights (the command from its `config.json`):")
            st.code(cmd, language="bash", wrap_lines=True)
        else:
            st.markdown(f"Its `config.json` records no command. Train a run with `python -m core.train ... --out "
                        f"checkpoints/{run.name}` (weights are saved unless `--no-save-weights`).")
        return

    try:
        with st.spinner(f"Loading the model of {run.name}..."):
            pm = _model(str(run.path), playground.weights_mtime(run.path))
    except ValueError as e:
        st.error(f"The model of **{md(run.name)}** cannot be loaded: {md(e)}")
        return

    # ---- input and settings ---------------------------------------------------------------------------------
    left, right = st.columns([3, 2], gap="large")
    with left:
        text = st.text_area("Sentence" if not pm.is_pair else "First sentence", key="pg.text", height=90,
                            placeholder="Type a sentence and press Ctrl+Enter, or take a dev-set example.")
        text_pair = None
        if pm.is_pair:
            text_pair = st.text_area("Second sentence", key="pg.text_pair", height=90,
                                     help=f"{pm.task or 'This task'} classifies sentence pairs.")
        b1, b2 = st.columns([1, 1])
        b1.button("Run", type="primary", icon=":material/play_arrow:", key="pg.run")
        b2.button("Dev-set example", icon=":material/shuffle:", key="pg.example", on_click=_example,
                   args=(run,))
    with right:
        strategies = run.strategies
        handed = playground_io.knobs_to_adopt(st.session_state, run.name)
        if handed is not None and handed["strategy"] in strategies:  # open at Explore's last knobs
            _take_setting(run, handed["strategy"], handed["params"])
            st.session_state[playground_io.ADOPTED] = handed
        if st.session_state.get("pg.strategy") not in strategies:
            st.session_state["pg.strategy"] = "entropy" if "entropy" in strategies else strategies[0]
        strategy = st.selectbox("Exit rule", strategies, key="pg.strategy", format_func=rundata.strategy_title)
        adopted = st.session_state.get(playground_io.ADOPTED) or {}
        if adopted.get("run") == run.name and adopted.get("strategy") == strategy:
            st.caption("Opened at the knobs Explore showed last for this run.")
        n = len(run.controls(strategy))
        params = appstate.draw_controls(run, strategy, prefix="pg.", columns=st.columns(max(n, 1)) if n else None)
        st.caption(rundata.EXPLAIN.get(strategy, ""))
        with st.expander("Load an operating-point file"):
            st.file_uploader("Operating-point file (.json, from Explore's export or python -m core.export)",
                             type=["json"], key="pg.point_file", on_change=_load_point, args=(run,))
            msg = st.session_state.get(POINT_MSG)
            if msg:
                (st.error if msg[0] == "error" else st.success)("Operating-point file:")
                st.text(msg[1])
        with st.expander("Timing"):
            repeats = st.number_input("Timed runs of each (median)", 1, 100, 10, key="pg.repeats")
            st.caption("Batch size 1 on one CPU thread, tokenization included. Each text runs once untimed, then "
                       "early exit and all layers alternate, each going first half the time. 'All layers' is the same predictor with the budgeted "
                       f"exit at layer {pm.L}.")

    if not (text or "").strip():
        st.info("Type a sentence to see where the model exits.")
        return

    try:
        res = playground.run_text(pm, text, text_pair, strategy=strategy, repeats=int(repeats), **params)
    except ValueError as e:
        st.warning(md(e))
        return
    st.session_state[RESULT_KEY] = {"exit_layer": res.exit_layer, "pred": res.pred, "label": res.label,
                                    "strategy": strategy, "params": dict(params), "text": res.text,
                                    "text_pair": res.text_pair}

    # ---- the answer ---------------------------------------------------------------------------------------------
    c = st.columns(5)
    c[0].metric("Prediction", md(res.label), help="The exit rule's prediction at the exit layer.")
    c[1].metric("Exit layer", f"{res.exit_layer} / {res.L}",
                help="Counted from 1; the layers after it did not run.")
    timing = playground_io.timing_summary(res.runs_ms, res.full_runs_ms, L=res.L, exit_layer=res.exit_layer)
    e_lo, e_hi = timing["early_iqr"]
    f_lo, f_hi = timing["full_iqr"]
    c[2].metric("Early-exit latency", f"{res.latency_ms:.2f} ms",
                help=f"Median over the repeats; spread (25th-75th percentile) {e_lo:.2f}-{e_hi:.2f} ms.")
    c[3].metric(f"All {res.L} layers", f"{res.full_ms:.2f} ms",
                help=f"Median over the repeats; spread (25th-75th percentile) {f_lo:.2f}-{f_hi:.2f} ms.")
    c[4].metric("Measured speed-up", f"{res.speedup:.2f}x",
                help="All-layers latency / early-exit latency, both measured just now (medians). Above L/m "
                     "it is noise, and the page says so.")
    st.caption(playground_io.timing_caption(timing))
    if timing["noise_note"]:
        st.warning(timing["noise_note"])
    if res.exit_layer == res.L:
        st.caption(f"This text went through all {res.L} layers, so both runs did the same work: any gap between "
                   "the two latencies is measurement noise (and the exit rule's per-layer decisions).")
    if res.agrees:
        st.caption(f"Running all {res.L} layers predicts **{md(res.full_label)}** too.")
    else:
        st.warning(f"Running all {res.L} layers would predict **{md(res.full_label)}** instead: the early exit changes "
                   "the answer for this text.")

    f1, f2 = st.columns([3, 2], gap="large")
    with f1:
        st.plotly_chart(figures.probs_figure(res), key="pg-probs", config={"displayModeBar": False})
    with f2:
        st.plotly_chart(figures.timing_figure(res), key="pg-timing", config={"displayModeBar": False})
        st.caption(f"Per layer (layer + exit + decision), first run: "
                   + ", ".join(f"{ms:.2f}" for ms in res.layer_ms) + " ms.")

    st.dataframe(playground.layers_table(res), hide_index=True, key="pg-table",
                 column_config={name: st.column_config.ProgressColumn(name, min_value=0.0, max_value=1.0, format="%.3f")
                                for name in res.label_names}
                 | {"ms": st.column_config.NumberColumn("ms", format="%.3f"),
                    "max-prob": st.column_config.NumberColumn(format="%.3f"),
                    "entropy (normalized)": st.column_config.NumberColumn(format="%.3f")})
    with st.expander(f"What every exit says (all {res.L} layers)"):
        st.plotly_chart(figures.full_figure(res), key="pg-full", config={"displayModeBar": False})


main()
