"""Slices: the dev samples under one exit rule, filtered and grouped (gold label, predicted class, text length,
exit layer, a text search) with per-slice metrics; and where a second rule decides otherwise, most different
first, with the slice that differs most, each sample opening in Traces beside the second rule."""
import streamlit as st

from core.app import appstate, rundata, slice_views
from core.app.plain import md

appstate.require_app()

st.title("Slices")
run = appstate.current_run()
if run is None:
    st.stop()
appstate.ensure_sweeps(run)
strategies = run.strategies
N, L, names = run.cache.N, run.L, run.cache.label_names
metric = rundata.metric_name(run.metric)


def keep_valid(key: str, ok):
    """Drop a remembered value this run cannot show (a range of another run's size, a label it lacks)."""
    if key in st.session_state and not ok(st.session_state[key]):
        del st.session_state[key]


# ---- rule A: the open rule (Explore's on a first visit, then the address bar) -----------------------------
shared = st.session_state.get(appstate.SETTINGS_KEY) or {}
explore = shared.get("settings", {}) if shared.get("run") == run.name else {}
home_rule = "entropy" if "entropy" in strategies else strategies[0]
if explore and shared.get("focus") in strategies and "s.rule" not in st.session_state:
    st.session_state["s.rule"] = shared["focus"]
    appstate.write_url({"s.rule": appstate.TAB_LABELS[shared["focus"]]})
keep_valid("s.rule", lambda v: v in strategies)
by_label = {appstate.TAB_LABELS[s]: s for s in strategies}   # as many columns as the open rule has knobs (no gaps on a phone)
guess = st.session_state.get("s.rule") or by_label.get(st.query_params.get("s.rule"), home_rule)
cols = st.columns([2] + [2] * max(len(run.controls(guess)), 1))
rule = cols[0].selectbox("Exit rule (A)", strategies, index=strategies.index(home_rule), key="s.rule",
                         format_func=appstate.TAB_LABELS.get, bind="query-params")
appstate.inherit_knobs(run, rule, explore.get(rule, {}), prefix="s.")
n_knobs = len(run.controls(rule))
params = appstate.draw_controls(run, rule, prefix="s.", columns=cols[1:] if len(cols) > n_knobs else st.columns(n_knobs))
a = slice_views.arm(run, rule, params)
sl = slice_views.slicer(run, a.exit_layer, a.pred)
_, note = run.texts()
if note:
    st.info(md(note))

view = st.tabs(["Slices", "Where two rules differ"], key="s.view", on_change="rerun", bind="query-params")

# ---- slices ---------------------------------------------------------------------------------------------
if view[0].open:
    with view[0]:
        words = sl.frame["words"]
        w_lo, w_hi = int(words.min()), max(int(words.max()), int(words.min()) + 1)
        keep_valid("s.gold", lambda v: set(v) <= set(names))
        keep_valid("s.pred", lambda v: set(v) <= set(names))
        keep_valid("s.layers", lambda v: 1 <= v[0] <= v[1] <= L)
        keep_valid("s.words", lambda v: w_lo <= v[0] <= v[1] <= w_hi)
        f = st.columns([2, 2, 3, 3])
        gold = f[0].multiselect("Gold label", names, key="s.gold", bind="query-params", placeholder="all")
        predicted = f[1].multiselect(f"Predicted by {rundata.strategy_title(rule)}", names, key="s.pred",
                                     bind="query-params", placeholder="all")
        layers = f[2].slider("Exit layer", 1, L, (1, L), key="s.layers", bind="query-params")
        words_range = f[3].slider("Text length (words)", w_lo, w_hi, (w_lo, w_hi), key="s.words", bind="query-params",
                                  disabled=not sl.has_texts)
        g = st.columns([3, 2])
        query = g[0].text_input("Text contains", key="s.q", bind="query-params",
                                placeholder="a word or phrase (plain text, any case)")
        by = g[1].selectbox("Group by", ["none", *sl.feats], index=1, key="s.by", bind="query-params")
        keep = slice_views.select(sl, gold=gold, predicted=predicted, layers=tuple(layers), query=query,
                                  words_range=tuple(words_range) if sl.has_texts else None)
        st.text(f"{int(keep.sum())} of {N} samples selected. {rundata.strategy_title(rule)} at "
                f"{rundata.describe_params(params)}: each slice's {metric}, what it gives up against the full model "
                "(lost: right at the last exit, wrong at the rule's; gained: the reverse), and where its samples exit.")
        if not keep.any():
            st.info("No sample matches every filter: clear the search or widen a range.")
        table = slice_views.slice_table(run, sl, a.pred, keep, None if by == "none" else by)
        st.dataframe(slice_views.shown_slices(table, metric), hide_index=True, key="s.table", column_config={
            "slice": st.column_config.TextColumn("slice", width=160),
            "samples": st.column_config.NumberColumn("samples", width=60),
            "lost": st.column_config.NumberColumn("lost", width=45, help="Right at the last exit, wrong at the rule's"),
            "gained": st.column_config.NumberColumn("gained", width=55, help="Wrong at the last exit, right at the rule's"),
        })
        pays = slice_views.who_pays(table, metric)
        if pays:
            st.text(pays)
        st.caption("Brackets hold 95% intervals: the score and its difference to the full model by paired percentile "
                   "bootstrap over the slice's samples (1,000 resamples; none under 20 samples); the mean exit layer by a normal "
                   "interval (mean ± 1.96 standard errors), the layer speed-up's is L over its ends. A slice's numbers "
                   "are read on its own samples: small slices have wide intervals.")
        if keep.any():
            st.plotly_chart(slice_views.slice_figure(table, metric, L), key="s.figure",
                            config={"displayModeBar": False})
            shown = sl.frame[keep]
            st.markdown(f"**The {len(shown)} selected samples**")
            st.dataframe(shown, hide_index=True, height=300, key="s.samples",
                         column_order=["row", "text", "label", "prediction", "words", "exit layer", "right"],
                         column_config={"row": st.column_config.NumberColumn(width=50),
                                        "text": st.column_config.TextColumn(width=320),
                                        "right": st.column_config.CheckboxColumn("right", width=45)})

# ---- where two rules differ -----------------------------------------------------------------------------
if view[1].open:
    with view[1]:
        infos = [i for i in appstate.run_infos() if i.has_cache]
        task = (next((i for i in infos if i.name == run.name), None) or infos[0]).config or {}
        runs_b = [run.name] + [i.name for i in infos if i.name != run.name
                               and (i.config or {}).get("task") == task.get("task")]
        keep_valid("s.vs.run", lambda v: v in runs_b)
        st.caption("Rule B: another rule, the same rule at other knobs, or a rule of another run evaluated on the "
                   "same dev set. Rule A is the one above.")
        b_cols = st.columns([3, 2, 2, 2])
        b_run_name = b_cols[0].selectbox("Run (B)", runs_b, key="s.vs.run", bind="query-params")
        run_b = run
        if b_run_name != run.name:
            got = appstate.try_load(next(i for i in infos if i.name == b_run_name))
            why_not = got if isinstance(got, str) else slice_views.same_samples(run, got)
            if why_not:
                st.warning(md(why_not) + " Comparing with this run instead.")
            else:
                appstate.ensure_sweeps(got)
                run_b = got
        b_rules = run_b.strategies
        second = "patience" if "patience" in b_rules else b_rules[min(1, len(b_rules) - 1)]
        keep_valid("s.vs.rule", lambda v: v in b_rules)
        rule_b = b_cols[1].selectbox("Exit rule (B)", b_rules, index=b_rules.index(second), key="s.vs.rule",
                                     format_func=appstate.TAB_LABELS.get, bind="query-params")
        what = b_cols[2].selectbox("Counts as differing", list(slice_views.DIFFER_KINDS), key="s.vs.what",
                                   format_func=slice_views.DIFFER_KINDS.get, bind="query-params")
        min_size = b_cols[3].number_input("Smallest slice", 1, N, min(20, N), key="s.vs.min", bind="query-params",
                                          help="The slice finder only names slices of at least this many samples")
        n_b = len(run_b.controls(rule_b))
        params_b = appstate.draw_controls(run_b, rule_b, prefix="s.vs.", columns=st.columns(max(n_b, 2)))
        b = slice_views.arm(run_b, rule_b, params_b)
        st.text(f"A: {a.name} on {run.name}.\nB: {b.name} on {run_b.name}.\n" + slice_views.summary(a, b))
        diff = slice_views.difference_table(sl, a, b, what)
        if diff.empty:
            st.info("A and B decide the same on every sample: pick another rule or move a knob of B.")
            st.stop()
        top = slice_views.top_slices(sl, a, b, what=what, min_size=int(min_size))
        st.text(slice_views.finder_sentence(top, float(slice_views.differ_mask(a, b, what).mean()), int(min_size), what))
        st.dataframe(top[["slice", "rate", "low", "high", "n", "differ"]].assign(
                         rate=100 * top["rate"], low=100 * top["low"], high=100 * top["high"]), hide_index=True,
                     key="s.finder",
                     column_config={"slice": st.column_config.TextColumn("slice", width=330),
                                    "rate": st.column_config.NumberColumn("differ rate", format="%.0f%%", width=70),
                                    "low": st.column_config.NumberColumn("95% low", format="%.0f%%", width=65),
                                    "high": st.column_config.NumberColumn("95% high", format="%.0f%%", width=65),
                                    "n": st.column_config.NumberColumn("samples", width=60),
                                    "differ": st.column_config.NumberColumn("differ", width=50)})
        st.markdown(f"**The {len(diff)} samples that differ, most different first**")
        st.caption("A changed prediction first, then the larger gap between the exit layers (B exit - A exit). "
                   "Click a row to open the sample in Traces with A and B side by side.")
        table_key = appstate.selection_key("s.diff")
        st.dataframe(diff, hide_index=True, height=360, key=table_key, on_select="rerun", selection_mode="single-row",
                     column_order=["row", "flip", "gap", "A exit", "B exit", "A predicts", "B predicts", "label", "right",
                                   "text"],
                     column_config={
                         "row": st.column_config.NumberColumn(width=50),
                         "flip": st.column_config.CheckboxColumn("flips", width=45, help="The prediction changes"),
                         "gap": st.column_config.NumberColumn("gap", width=40, help="B exit - A exit"),
                         "A exit": st.column_config.NumberColumn(width=50),
                         "B exit": st.column_config.NumberColumn(width=50),
                         "right": st.column_config.TextColumn("right under", width=80),
                         "text": st.column_config.TextColumn(width=360)})
        picked = appstate.selected_rows(table_key)
        if picked and picked[0] < len(diff):
            row = diff.iloc[picked[0]]
            appstate.bump_selection()  # coming back: no stale selection
            for key in [k for k in st.session_state if str(k).startswith("t.") or k == "sample"]:
                del st.session_state[key]  # Traces opens at what the link says, not at its last view
            url = {"run": run.name, "sample": str(int(row["row"])), "t.rule": appstate.TAB_LABELS[rule],
                   **{f"t.{c.key}": appstate.url_text(run, c, params[c.name], st.session_state, "s.")
                      for c in run.controls(rule) if params[c.name] != c.default},
                   **slice_views.second_rule_params(run.name, b)}
            st.switch_page("pages/traces.py", query_params=url)
