"""Traces: the samples under one exit rule, filtered; one sample's layer-by-layer story."""
import streamlit as st

from core.app import appstate, explain, figures, rundata, slice_views, trace_filters
from core.app.narrow import key_outside, legend_html
from core.app.plain import md
from core.app.plain_words import table_file_name

appstate.require_app()

st.title("Traces")
run = appstate.current_run()
if run is None:
    st.stop()
strategies = run.strategies
N, L = run.cache.N, run.L

# ---- the exit rule (starts from what Explore had open) ----------------------------------------------
shared = st.session_state.get(appstate.SETTINGS_KEY) or {}
explore = shared.get("settings", {}) if shared.get("run") == run.name else {}
home_rule = "entropy" if "entropy" in strategies else strategies[0]
start_rule = shared.get("focus") if explore and shared.get("focus") in strategies else home_rule
# one wrapping row of fixed-width boxes, the rule and then only its own knobs: columns for the most knobs any
# rule has left empty ones that stacked into a blank gap under the slider on a phone
knob_row = st.container(horizontal=True, wrap=True, gap="medium")
if explore and "t.rule" not in st.session_state:  # first visit: the rule Explore had open, in the link too
    st.session_state["t.rule"] = start_rule
    appstate.write_url({"t.rule": appstate.TAB_LABELS[start_rule]})
with knob_row.container(width=260):
    rule = st.selectbox("Exit rule", strategies, index=strategies.index(home_rule), key="t.rule",
                        format_func=appstate.TAB_LABELS.get, bind="query-params")
appstate.inherit_knobs(run, rule, explore.get(rule, {}), prefix="t.")  # first visit: Explore's knobs
params = appstate.draw_controls(run, rule, prefix="t.",
                                columns=[knob_row.container(width=260) for _ in run.controls(rule)])
ev = run.evaluate(rule, params)
st.caption(f"{rundata.EXPLAIN[rule]}  At these knobs: {rundata.metric_name(run.metric)} **{ev['score']:.4f}** "
           f"({ev['delta_vs_full']:+.4f} vs full model), mean exit layer **{ev['mean_exit_layer']:.2f}** of {L}, "
           f"layer speed-up **{ev['layer_speedup']:.2f}x**, saved fraction **{ev['saved_fraction']:.1%}**.")

_, note = run.texts()
if note:
    st.info(md(note))

# ---- filters and the table -------------------------------------------------------------------------
f1, f2, f3, f4 = st.columns([3, 3, 2, 3])
with f1:
    outcome = st.radio("At the exit", ["all", "right", "wrong"], horizontal=True, key="t.outcome",
                       bind="query-params")
with f2:
    brushed = st.session_state.get("t.layers")  # set by Explore's brushed histogram: in the link too
    if brushed is not None and tuple(brushed) != (1, L):
        appstate.write_url({"t.layers": [str(int(v)) for v in brushed]})
    layers = st.slider("Exit layer", 1, L, (1, L), key="t.layers", bind="query-params")
with f3:
    over = st.toggle("Overthinking", key="t.over", bind="query-params",
                     help="Only samples that overthink: an earlier exit was right and the last exit is wrong, "
                          "so more layers made it worse.")
with f4:
    query = st.text_input("Search", key="t.q", bind="query-params", placeholder="a word, or a row id")

table = rundata.trace_table(run, ev["exit_layer"], ev["pred"])
filters = trace_filters.Filters(outcome=outcome, layers=tuple(layers), overthinking=over, query=query)
view = filters.apply(table)
st.caption(f"**{len(view)}** of {N} samples match. In the whole run {int(table['overthinking'].sum())} samples "
           f"overthink, and {int((~table['right']).sum())} are wrong at the exit of this rule. "
           "Click a row or a point to open the sample below.")


by_row = {int(r): p for p, r in zip(table.index, table["row"])}  # one sample id everywhere: the dev row id


def _open(pos: int):
    st.session_state["sample"] = int(table.at[int(pos), "row"])
    appstate.bump_selection()  # fresh table and chart: no stale highlight of the clicked row or point


def _open_row(key, shown=view):
    rows = appstate.selected_rows(key)
    if rows and rows[0] < len(shown):
        _open(shown.index[rows[0]])


def _open_point(key):
    for p in appstate.selected_points(key):
        cd = p.get("customdata")
        if cd and str(cd[0]).isdigit():
            _open(cd[0])
            return


# layout first, filled below: the sample picker decides what the table and chart highlight
t_col, s_col = st.columns([7, 4])
st.divider()
head, pick = st.columns([4, 1])
with pick:
    row_id = st.number_input("Dev row", min_value=0, max_value=max(by_row), value=None, step=1, key="sample",
                             bind="query-params", placeholder="click a row",
                             help="The sample's row in the dev set: the 'row' column of the table")
pos = None if row_id is None else by_row.get(int(row_id))
if row_id is not None and pos is None:
    st.warning(f"No sample has dev row {int(row_id)}; showing the first match of the filters.")
if pos is None and not view.empty:
    pos = int(view.index[0])

with t_col:
    table_key = appstate.selection_key("traces-table")
    if view.empty:  # no empty table and no scatter without points: say which filter to loosen
        st.info(trace_filters.loosen_advice(table, filters, L), icon=":material/filter_alt_off:")
    else:
        st.dataframe(view, hide_index=True, height=360, key=table_key, on_select=lambda: _open_row(table_key),
                     selection_mode="single-row",  # the text last: a phone shows the short columns first
                     column_order=["row", "exit layer", "right", "label", "prediction", "overthinking",
                                   "first right layer", "text"],
                     column_config={
                         "row": st.column_config.NumberColumn(width=50),
                         "text": st.column_config.TextColumn(width=260),
                         "label": st.column_config.TextColumn(width=80),
                         "prediction": st.column_config.TextColumn(width=80),
                         "exit layer": st.column_config.NumberColumn("exit", width=40),
                         "right": st.column_config.CheckboxColumn("right", width=45),
                         "overthinking": st.column_config.CheckboxColumn("overthinks", width=75),
                         "first right layer": st.column_config.NumberColumn("first right", width=70,
                                                                            help="First exit that is right (0: none)"),
                     })
        st.download_button("Download these samples (CSV)", view.to_csv(index=False).encode(), key="t.csv",
                           file_name=table_file_name(run.name, f"traces-{rule}-{len(view)}-samples"),
                           mime="text/csv", icon=":material/download:", on_click="ignore")
with s_col:
    scatter_key = appstate.selection_key("traces-scatter")
    if not view.empty:
        st.plotly_chart(figures.samples_scatter(view, L, current=pos), key=scatter_key,
                        on_select=lambda: _open_point(scatter_key), selection_mode="points",
                        config={"displaylogo": False})
    if len(view) > 1500:
        st.caption("Showing a random 1,500 of the matching samples.")

# ---- one sample -------------------------------------------------------------------------------------
if pos is None:  # nothing matches (the advice above says what to loosen) and no row was asked for
    st.stop()
pos = int(pos)
row = table.loc[pos]
with head:
    st.subheader(f"Sample {row['row']} (dev row)")
    outside = None if pos in view.index else trace_filters.outside_note(table, pos, filters, L, n_match=len(view))
    if outside:
        st.warning(outside, icon=":material/filter_alt_off:")
parts = run.raw_text(pos)
for label, part in zip(["A", "B"] if len(parts) == 2 else [""], parts):
    st.markdown(f"> {'**' + label + '** ' if label else ''}{md(part)}")  # the text as plain text
m = st.columns(4)  # st.metric reads its value as Markdown: label names go through md()
m[0].metric("Label", md(row["label"]))
m[1].metric("Full model says", md(run.cache.label_names[int(run.argmax[pos, -1])]),
            "right" if row["full model right"] else "wrong",
            delta_color="normal" if row["full model right"] else "inverse", delta_arrow="off")
m[2].metric(f"{rundata.strategy_title(rule)} exits at", f"layer {row['exit layer']}")
m[3].metric("and predicts", md(row["prediction"]), "right" if row["right"] else "wrong",
            delta_color="normal" if row["right"] else "inverse", delta_arrow="off")
def _to_playground(texts=parts):
    st.session_state["pg.text"] = texts[0]
    if len(texts) == 2:
        st.session_state["pg.text_pair"] = texts[1]


if parts and st.button("Open in Playground: edit this text and rerun it through the model", key="t.playground",
                       on_click=_to_playground, icon=":material/edit:"):
    st.switch_page("pages/playground.py", query_params={"run": run.name})
why = explain.explain(run.cache, pos, rule, params)
st.text(f"Why {rundata.strategy_title(rule)} exits at layer {why.exit_layer}: {why.sentence}")

# ---- this sample under a second rule B beside the open one (Slices' "where two rules differ" links here) ----
vs = slice_views.second_arm(st.query_params.to_dict(), run, lambda name: next(
    (appstate.try_load(i) for i in appstate.run_infos() if i.name == name), "it is not in the run folder."))
if isinstance(vs, str):
    st.warning(md(vs))
elif vs is not None:
    st.subheader(f"Sample {row['row']} under A (the rule above) and B, side by side")
    for col, (tag, side) in zip(st.columns(2), [("A", slice_views.Arm(run, rule, params, ev["exit_layer"], ev["pred"])),
                                                ("B", vs)]):
        w = explain.explain(side.run.cache, pos, side.rule, side.params)
        col.text(slice_views.side_sentence(tag, side, pos, w.sentence))
        fig = key_outside(explain.add_markers(figures.sample_figure(
            side.run, pos, rundata.sample_exits(side.run, pos, {side.rule: side.params})), w))
        col.plotly_chart(fig, key=f"vs-figure-{tag}", config={"displayModeBar": False})
    st.button("Close B", key="t.vs.close", on_click=lambda: slice_views.close_second_rule(st.query_params))
if row["overthinking"]:
    k = int(row["first right layer"])
    st.warning(f"Overthinking: exit {k} was already right (label probability "
               f"{run.cache.probs[pos, k - 1, run.cache.labels[pos]]:.3f}), the last exit is wrong.")

marker_settings = {**{s: explore.get(s, run.default_params(s)) for s in strategies}, rule: params}
exits = rundata.sample_exits(run, pos, marker_settings)
sample_fig = key_outside(explain.add_markers(figures.sample_figure(run, pos, exits), why))
st.plotly_chart(sample_fig, key="sample-figure", config={"displaylogo": False})
st.html(legend_html(sample_fig))
st.caption("Top: each exit's class probabilities (✓ marks the label). Middle: what the rules read at each "
           "layer: normalized **entropy** (low = sure), **max-prob**, **vote share** (how many layers so far "
           "agree with the majority), mean **divergence** (KD) of this layer's distribution to the earlier ones"
           + (", and the **learned confidence** of the LTE head" if run.cache.confidence is not None else "")
           + ". The dashed line is the open rule's threshold, the green band its patience window. Bottom strip: the layer where each rule lets the sample out (green = right there, red = wrong); "
           "the rule picked above uses its knobs here, the others the knobs Explore last had (or their defaults).")
st.dataframe(exits.drop(columns=["strategy"]), hide_index=True, key="sample-exits",
             column_config={"title": "rule", "setting": st.column_config.TextColumn(width="medium")})

# ---- pin a sample, compare it side by side with the open one ----------------------------------------------
pinned = st.session_state.get("t.pinned")
p1, p2 = st.columns([1, 3])
p1.button("Pin this sample", key="t.pin", icon=":material/push_pin:",
          on_click=lambda r=int(row["row"]): st.session_state.__setitem__("t.pinned", r),
          help="Keep it on screen: open another sample to see both side by side")
if pinned is not None and by_row.get(int(pinned)) not in (None, pos):
    p2.button("Unpin", key="t.unpin", on_click=lambda: st.session_state.pop("t.pinned", None))
    st.subheader(f"Sample {row['row']} beside pinned sample {int(pinned)}")
    for col, p in zip(st.columns(2), (pos, by_row[int(pinned)])):
        with col:
            st.text(f"Dev row {int(table.at[p, 'row'])}: " + " | ".join(run.raw_text(p)))
            w = explain.explain(run.cache, p, rule, params)
            st.text(w.sentence)
            side = key_outside(explain.add_markers(figures.sample_figure(run, p, rundata.sample_exits(run, p, marker_settings)), w))
            st.plotly_chart(side, key=f"pinned-figure-{p}", config={"displayModeBar": False})
            st.html(legend_html(side))
