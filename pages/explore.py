"""Explore: the knobs of every exit rule, what the current settings cost and earn, and the
speed-up vs score curves with the Pareto frontier, a target, and an exportable operating point."""
import json

import streamlit as st

from core.app import appstate, explore_extras, figures, playground_io, precision_views, rundata, trust_views
from core.app.narrow import fixed_frame, legend_html
from core.app.plain import md
from core.app.plain_words import (
    METHOD_DETAILS,
    epsilon_in_points,
    plain_and_method,
    plain_setting,
    setting_width,
    table_file_name,
)
from core.serving import export

appstate.require_app()
from core.engine.registry import STRATEGIES

st.title("Explore exit rules")
run = appstate.current_run()
if run is None:
    st.stop()
appstate.health_warnings(run)
appstate.ensure_sweeps(run)
strategies = run.strategies

# ---- the knobs: one tab per rule; the open tab is the rule summarized below ------------------------
st.caption("One tab per exit rule. The open tab is the rule whose numbers, histogram and export you see "
           "below; the chart marks every drawn rule at its current knobs. Click a point of the chart, "
           "or a row of the goal table, to load that setting. Each rule opens at its best setting "
           f"for at least {rundata.START_SPEEDUP:g}x layer speed-up on this run.")
tabs = st.tabs([appstate.TAB_LABELS[s] for s in strategies], key="strategy", on_change="rerun", bind="query-params",
               default=appstate.TAB_LABELS["entropy"] if "entropy" in strategies else None)  # a rule newcomers know
settings, focus = {}, None
for s, tab in zip(strategies, tabs):
    with tab:
        n = len(run.controls(s))
        # one knob: a half-width box, not a pair of columns whose empty one left a gap on a phone
        settings[s] = appstate.draw_controls(run, s, columns=st.columns(n) if n > 1 else [st.container(width=560)])
        st.caption(f"{rundata.EXPLAIN[s]} *Source: {STRATEGIES[s].source}.*")
    if focus is None and tab.open:
        focus = s
focus = focus or strategies[0]
st.session_state[appstate.SETTINGS_KEY] = {"run": run.name, "settings": settings, "focus": focus}

ev = run.evaluate(focus, settings[focus])
right = ev["pred"] == run.cache.labels

# ---- what the current setting costs and earns --------------------------------------------------------
st.subheader(rundata.strategy_title(focus))
st.caption(f"Current knobs: {rundata.describe_params(settings[focus])}")
c = st.columns(5)
c[0].metric(rundata.metric_name(run.metric), f"{ev['score']:.4f}", f"{ev['delta_vs_full']:+.4f}",
            delta_description="vs full model",
            delta_color="normal" if abs(ev["delta_vs_full"]) > 1e-12 else "off")
c[1].metric("Mean exit layer", f"{ev['mean_exit_layer']:.2f} / {run.L}")
c[2].metric("Layer speed-up", f"{ev['layer_speedup']:.2f}x", help="L / mean exit layer")
c[3].metric("Saved fraction", f"{ev['saved_fraction']:.1%}",
            help="1 - mean exit layer / L: the share of layer computations skipped (PCEE-BERT's 'speed-up')")
c[4].metric("Wall-clock speed-up", appstate.fmt_speedup(ev["wallclock_speedup"]),
            help="Estimated: full-model batch-1 latency / expected latency at these exits, from the run's "
                 "measured per-layer times" if ev["wallclock_speedup"] is not None else
                 "This run has no measured per-layer latencies")
iv_score, iv_delta = trust_views.point_intervals(run, focus, settings[focus], ev["pred"])
st.text(f"95% intervals (paired bootstrap over the {run.cache.N} dev samples, 1,000 resamples): "
        f"score [{iv_score.low:.4f}, {iv_score.high:.4f}]; vs full model [{iv_delta.low:+.4f}, {iv_delta.high:+.4f}]"
        + (" - within noise of the full model" if iv_delta.covers_zero else ""))
st.caption("Three speed-ups, never interchangeable: **layer speed-up** = L / mean exit layer; "
           "**saved fraction** = share of layers skipped; **wall-clock speed-up** = estimated from measured "
           "per-layer latencies at batch size 1 (it includes the embeddings, which every sample pays).")

# ---- curves ------------------------------------------------------------------------------------------
has_ms = run.cache.layer_ms is not None
axes = ["layer_speedup", "saved_fraction"] + (["wallclock_speedup"] if has_ms else [])
left, mid, right_col = st.columns([3, 2, 2])
with left:
    default_curves = [s for s in ("entropy", "patience", "pcee", "voting") if s in strategies]
    curves = st.multiselect("Rules to draw", strategies, default=default_curves, key="curves",
                            format_func=appstate.TAB_LABELS.get, bind="query-params",
                            help="The budgeted exits, the Oracle and the open tab's rule are always drawn.")
with mid:
    x = st.radio("Speed-up axis", axes, format_func=figures.AXIS_SHORT.get, key="x",
                 horizontal=True, bind="query-params")
with right_col:
    kinds = ["speed-up", "loss"] + (["latency"] if has_ms else [])
    kind = st.radio("Goal", kinds, key="target_kind", horizontal=True, bind="query-params",
                    format_func=trust_views.GOAL_KINDS.get)
    if kind == "latency":
        low_ms, full_ms = rundata.latency_range_ms(run)
        target = st.slider("Latency budget (ms, batch 1)", round(low_ms, 2), round(full_ms, 2),
                           round(full_ms / 2, 2), 0.01, key="budget_ms", bind="query-params")
    elif kind == "loss":
        target = st.slider("Lose at most (points of the score vs the full model)", 0.0, 10.0, 1.0, 0.1,
                           format="%.1f pts", key="max_drop", bind="query-params")
    else:
        target = st.slider("Target layer speed-up", 1.0, float(run.L), min(2.0, float(run.L)), 0.05,
                           format="%.2fx", key="target", bind="query-params")
goal = trust_views.goal_rows(run, kind, target)
best = goal[goal["meets"]]

drawn = list(dict.fromkeys([focus, *curves]))
current = {s: (ev if s == focus else run.evaluate(s, settings[s])) for s in drawn}
target_x = None
if kind == "speed-up" and x == "layer_speedup":
    target_x = target
elif kind == "latency" and x == "wallclock_speedup":
    target_x = rundata.full_latency_ms(run) / target
elif kind == "speed-up" and x == "saved_fraction":
    target_x = 1 - 1 / target
fig = fixed_frame(figures.tradeoff_figure(run, drawn, current, x=x, target_x=target_x, best=best, focus=focus))


def _load_clicked_point(key):
    for p in appstate.selected_points(key):
        cd = p.get("customdata")
        if cd and len(cd) >= 2 and cd[0] in strategies:
            appstate.load_setting(run, cd[0], json.loads(cd[1]))
            return


curve_key = appstate.selection_key("curve")
st.plotly_chart(fig, key=curve_key, on_select=lambda: _load_clicked_point(curve_key),
                selection_mode="points", config={"displaylogo": False})
st.html(legend_html(fig))
st.caption("Each faint point is one swept setting of the open tab's rule; each rule's line is the best it can "
           "do (its small points are settings too, clickable); the wide yellow "
           "band is the **Pareto frontier** over all rules (nothing beats it on both axes). The grey dashed "
           "line is the static **budgeted exit** (everyone stops at layer m), the star the **Oracle**, which "
           "peeks at the labels. Big circles are the current knobs (outlined: the open tab); diamonds the best "
           "setting of each rule for the goal, with error bars; the shaded band around the open tab's rule is the "
           "95% interval of its score (paired bootstrap over the dev samples).")

# ---- the goal: every rule's best exact setting, whether it meets the goal, and why not -------------------
what = {"speed-up": f"layer speed-up >= {target:.2f}x", "loss": f"lose at most {target:.1f} points",
        "latency": f"expected latency <= {target:.2f} ms"}[kind]
st.markdown("**Best setting of each rule for the goal**")
st.text(f"Goal: {what}. {int(goal['meets'].sum())} of {len(goal)} rules meet it.")


def _load_answer(table=goal):
    r = table.iloc[0]
    appstate.load_setting(run, r["strategy"], json.loads(r["params"]))


if goal["meets"].any():
    top = goal.iloc[0]
    st.button(f"Load the answer: {rundata.strategy_title(top['strategy'])}, {top['setting']}", key="pick",
              on_click=_load_answer, icon=":material/target:", type="primary")


def _load_goal_row(key, table=goal):
    rows = appstate.selected_rows(key)
    if rows:
        r = table.iloc[rows[0]]
        appstate.load_setting(run, r["strategy"], json.loads(r["params"]))


best_key = appstate.selection_key("best")
shown = goal.assign(meets=goal["meets"].map({True: "yes", False: "no"}),
                    strategy=goal["strategy"].map(appstate.TAB_LABELS), saved_fraction=100 * goal["saved_fraction"],
                    interval=[f"[{lo:+.4f}, {hi:+.4f}]" for lo, hi in zip(goal["delta_low"], goal["delta_high"])],
                    knobs=goal["setting"],  # the exact knobs last; the setting in the knobs' own words first
                    setting=[plain_setting(s, json.loads(p)) for s, p in zip(goal["strategy"], goal["params"])])
shown = shown[["meets", "strategy", "setting", "score", "delta", "interval", "noise", "layer_speedup",
               "saved_fraction", "wallclock_speedup", "why", "knobs"]]
if not has_ms:
    shown = shown.drop(columns=["wallclock_speedup"])
st.dataframe(shown, hide_index=True, key=best_key, on_select=lambda: _load_goal_row(best_key),
             selection_mode="single-row", column_config={
                 "meets": st.column_config.TextColumn("meets goal", width=70),
                 "strategy": st.column_config.TextColumn("rule", width=80),
                 "setting": st.column_config.TextColumn("setting", width=setting_width(shown["setting"]),
                                                        help="Every knob of the setting"),
                 "score": st.column_config.NumberColumn(rundata.metric_name(run.metric), format="%.4f"),
                 "delta": st.column_config.NumberColumn("vs full model", format="%+.4f"),
                 "interval": st.column_config.TextColumn("vs full, 95% interval", width=140),
                 "noise": st.column_config.TextColumn("noise", width=90,
                                                      help="'within noise' when the 95% interval covers zero"),
                 "layer_speedup": st.column_config.NumberColumn("layer speed-up", format="%.2fx"),
                 "saved_fraction": st.column_config.NumberColumn("saved fraction", format="%.1f%%"),
                 "wallclock_speedup": st.column_config.NumberColumn("wall-clock speed-up", format="%.2fx"),
                 "why": st.column_config.TextColumn("why it misses the goal", width=260),
                 "knobs": st.column_config.TextColumn("knobs (exact)", width=setting_width(shown["knobs"])),
             })
st.download_button("Download this table (CSV)", shown.to_csv(index=False).encode(), key="goal-csv",
                   file_name=table_file_name(run.name, f"best-per-rule-{kind}-{target:g}"),
                   mime="text/csv", icon=":material/download:", on_click="ignore")
st.caption("Searched over every setting where some sample's exit changes (exact, not a grid). A rule that cannot "
           "meet the goal shows its closest setting and "
           "why. Intervals: 95% paired bootstrap over the dev samples; 'within noise' when the interval of the "
           "difference covers zero. Click a row to load it into the knobs.")

# ---- "lose at most x": the dev-set best beside a guaranteed setting ------------------------------------
if kind == "loss":
    st.markdown("**Lose at most: the dev-set best, and a setting with a guarantee**")
    a1, a2 = st.columns([1, 3])
    sure = a1.select_slider("Guarantee confidence", [0.8, 0.9, 0.95, 0.99], 0.9, key="l.conf",
                            bind="query-params", help="1 - delta: how sure the guarantee is")
    try:
        answers = trust_views.lose_at_most(run, target, delta=round(1 - sure, 4))
    except ValueError as err:  # e.g. 0 points: no setting but the full model loses nothing for sure
        answers = None
        a2.warning(md(err))
    if answers is not None:
        two = trust_views.two_answers(answers)
        a2.dataframe(two, hide_index=True, key="l.table", column_config={
            "answer": st.column_config.TextColumn("answer", width=100),
            "setting": st.column_config.TextColumn("setting", width=setting_width(two["setting"])),
            "layer_speedup": st.column_config.NumberColumn("layer speed-up", format="%.2fx"),
            "points_lost": st.column_config.NumberColumn("points lost (all dev rows)", format="%.2f"),
            "heldout_lost": st.column_config.TextColumn("inputs lost on held-out rows, 95% interval", width=260),
        })
        plain, exact = plain_and_method(answers.guarantee)
        st.text(plain)
        if exact:
            with st.expander("How the guarantee is tested (the exact method)"):
                st.text(exact + ". " + METHOD_DETAILS["ltt"])
        st.text(answers.why + (" " + answers.metric_note if answers.metric_note else ""))
        st.button("Load the guaranteed setting into the knobs", key="l.load", icon=":material/verified:",
                  on_click=lambda g=answers.guaranteed: appstate.load_setting(run, g.strategy, g.params))

# ---- guarantee: a setting calibrated on held-out samples ---------------------------------------------
with st.expander("Guarantee: calibrate the open rule's knob on held-out samples", expanded=False):
    g = st.columns(4)
    risk = g[0].radio("Risk", ["consistency", "gap"], key="g.risk", bind="query-params",
                      format_func={"consistency": "differs from full model",
                                   "gap": "wrong where full model is right"}.get)
    eps = g[1].slider("At most (epsilon)", 0.005, 0.10, 0.01, 0.005, format="%.3f", key="g.eps",
                      bind="query-params", help="The share of new inputs allowed to go wrong (see the line below)")
    conf = g[2].select_slider("Confidence (1 - delta)", [0.8, 0.9, 0.95, 0.99], 0.9, key="g.conf",
                              bind="query-params")
    method = g[3].radio("Method", ["ltt", "crc"], key="g.method", bind="query-params",
                        format_func={"ltt": "Learn then Test", "crc": "conformal risk control"}.get)
    st.caption(epsilon_in_points(eps, risk, metric=run.metric, goal_points=target if kind == "loss" else None))
    try:
        cal = trust_views.calibrated(run, focus, settings[focus], risk=risk, epsilon=eps, delta=round(1 - conf, 4),
                            method=method)
    except ValueError as err:  # knobs calibration cannot use, e.g. a DGE patience this model cannot meet
        cal = None
        st.warning(md(err))
    if cal is not None:
        plain, exact = plain_and_method(cal.guarantee)
        st.text(plain)
        if exact:
            with st.expander("How the guarantee is tested (the exact method)"):
                st.text(exact + ". " + METHOD_DETAILS[method])
        st.dataframe(trust_views.calibration_table(run, cal), hide_index=True, key="g.table", column_config={
            "risk": st.column_config.NumberColumn("risk", format="%.4f"),
            "score": st.column_config.NumberColumn(rundata.metric_name(run.metric), format="%.4f"),
            "full model": st.column_config.NumberColumn("full model", format="%.4f"),
            "layer_speedup": st.column_config.NumberColumn("layer speed-up", format="%.2fx"),
        })
        st.caption("Half of the dev samples (seeded) choose the setting; the held-out half reports it. Learn then "
                   "Test holds the risk at most epsilon with the stated confidence; conformal risk control holds it in "
                   "expectation. The whole-dev-set row is what the other tables show, chosen and scored on the same "
                   "samples, hence optimistic.")
        cal_point, cal_name, _, _ = export.app_export(run.path, run.cache, run.evaluate(cal.strategy, cal.params),
                                                 guarantee=trust_views.guarantee_record(cal), suffix="-calibrated")
        b1, b2 = st.columns(2)
        b1.button("Load the calibrated setting into the knobs", key="g.load", disabled=cal.fallback,
                  on_click=lambda: appstate.load_setting(run, cal.strategy, cal.params))
        b2.download_button("Download the calibrated point (JSON)", export.point_json(cal_point), file_name=cal_name,
                           mime="application/json", key="g.export", icon=":material/download:", on_click="ignore")

# ---- precision x rule x setting: one frontier, in wall clock at a batch size (issue 22) ------------------
st.subheader("Precision and wall clock")
precisions = precision_views.available(run)
if len(precisions) == 1 and not precision_views.batch_sizes(run):
    st.caption("This run has only its fp32 cache, with no latency table by batch size. Write an int8 cache and the "
               "tables with the command below (or train with `--precisions int8`), then open this page again.")
    st.code(f"python -m core.cache_variant --run {run.path} --precision int8", language="bash", wrap_lines=True)
else:
    q1, q2, q3 = st.columns([2, 1, 2])
    chosen = q1.multiselect("Precisions", precisions, default=precisions, key="p.prec", bind="query-params",
                            help="The run's exit caches by precision; fp32 is the reference every score loss and "
                                 "wall-clock speed-up is measured against")
    sizes = [str(b) for b in precision_views.batch_sizes(run, chosen)]
    batch = q2.radio("Batch size", sizes, index=len(sizes) - 1, key="p.batch", horizontal=True, bind="query-params",
                     help="The batch size the wall-clock speed-up is read at (the caches' latency tables)") if sizes else None
    batch = None if batch is None else int(batch)
    p_axis = q3.radio("Speed-up axis ", list(precision_views.AXES) if batch else ["layer"], key="p.axis",
                      format_func=precision_views.AXES.get, horizontal=True, bind="query-params")
    p_table = precision_views.setting_table(run, focus, settings[focus], chosen, batch)
    st.plotly_chart(precision_views.frontier_figure(run, chosen, batch_size=batch, axis=p_axis, focus=focus,
                                                    current=precision_views.current_points(p_table, p_axis)),
                    key="p.chart", config={"displaylogo": False})
    st.dataframe(p_table, hide_index=True, key="p.table", column_config={
        "score": st.column_config.NumberColumn(rundata.metric_name(run.metric), format="%.4f"),
        "vs fp32 full": st.column_config.NumberColumn(format="%+.4f"),
        "mean exit layer": st.column_config.NumberColumn(format="%.2f"),
        "layer speed-up": st.column_config.NumberColumn(format="%.2fx"),
        "wall-clock speed-up": st.column_config.NumberColumn(format="%.2fx")})
    st.caption(f"{rundata.strategy_title(focus)} at the current knobs, scored on each precision's own cache (its "
               "probabilities are that precision's). Wall-clock speed-up: fp32 full's ms per row at the batch size "
               "over this precision's expected ms per row at these exits, from the latency tables measured with the "
               "caches (one measurement each, no interval). Interval: 95% paired bootstrap against fp32 full's "
               "predictions. Faint points: every exact setting of every rule; lines: each precision's frontier.")
    if kind == "loss" and (batch or len(chosen) == 1):
        p_goal = precision_views.goal_table(run, target, chosen, batch)
        st.text(f"Lose at most {target:.1f} points against fp32 full, fastest "
                + (f"in wall clock at batch size {batch}:" if batch else "by layer speed-up:"))
        st.dataframe(p_goal[["meets", "precision", "strategy", "setting", "score", "delta", "layer_speedup",
                             "wallclock_speedup"]], hide_index=True, key="p.goal", column_config={
            "score": st.column_config.NumberColumn(format="%.4f"),
            "delta": st.column_config.NumberColumn("vs fp32 full", format="%+.4f"),
            "layer_speedup": st.column_config.NumberColumn("layer speed-up", format="%.2fx"),
            "wallclock_speedup": st.column_config.NumberColumn("wall-clock speed-up", format="%.2fx")})
    p_export = st.selectbox("Export the current knobs at", chosen or ["fp32"], key="p.export_at")
    try:
        p_cache, p_ev = export.evaluate_at(run.path, focus, settings[focus], precision=p_export, batch_size=batch,
                                           cache=precision_views.caches(run).get(p_export))
        p_point, p_name, p_cmd, p_problem = export.app_export(run.path, p_cache, p_ev, precision=p_export,
                                                             batch_size=batch)
        st.download_button(f"Download the {p_export} operating point (JSON)", export.point_json(p_point),
                           file_name=p_name, mime="application/json", icon=":material/download:", key="p.download",
                           on_click="ignore", disabled="labels" in STRATEGIES[focus].needs)
        st.code(p_cmd, language="bash", wrap_lines=True)
    except ValueError as err:
        st.warning(md(err))

# ---- where the samples exit, and the export ---------------------------------------------------------
h, e = st.columns([1, 1])
with h:
    st.markdown("**Where the samples exit**")
    counts, spec = explore_extras.brushable_histogram(ev["exit_layer"], right, run.L)
    picked = st.vega_lite_chart(counts, spec, key="exit-histogram", on_select="rerun", selection_mode=explore_extras.BRUSH)
    st.caption(f"{rundata.strategy_title(focus)} at the current knobs: samples per exit layer, "
               "split into right and wrong at the exit. Drag across layers to pick them, then open them in Traces.")
    span = explore_extras.brushed_layers(picked, run.L)
    if span:
        n_in = int(((ev["exit_layer"] >= span[0]) & (ev["exit_layer"] <= span[1])).sum())

        def _to_traces(lo=span[0], hi=span[1]):
            st.session_state["t.layers"] = (lo, hi)
            for key in ["t.rule", *(f"t.{focus}.{name}" for name in settings[focus])]:
                st.session_state.pop(key, None)  # Traces then inherits this rule and knobs, URL included

        if st.button(f"Open the {n_in} samples exiting at layers {span[0]}-{span[1]} in Traces", key="to-traces",
                     on_click=_to_traces, icon=":material/filter_alt:"):
            st.switch_page("pages/traces.py", query_params={"run": run.name})
with e:
    st.markdown("**Export this operating point**")
    point, point_name, predict_cmd, problem = export.app_export(
        run.path, run.cache, ev, intervals={"score": (iv_score.low, iv_score.high)})
    st.session_state[playground_io.EXPLORE_LAST] = playground_io.explore_record(run.name, focus, ev["params"])  # the Playground opens here
    st.download_button("Download operating point (JSON)", export.point_json(point), file_name=point_name,
                       mime="application/json", icon=":material/download:", key="export", on_click="ignore",
                       disabled="labels" in STRATEGIES[focus].needs)
    if problem:
        st.warning("This point cannot be run as it is:")
        st.text(problem)
    st.caption("Apply it to a CSV, TSV or JSONL file of texts (or `-` for standard input) after saving the "
               "download; it names this run's folder and the sha256 of its weights:")
    st.code(predict_cmd, language="bash", wrap_lines=True)
    st.code(export.point_json(point), language="json", height=300)
    st.markdown("**Export the sweeps**")
    d1, d2 = st.columns(2)
    # bytes made once per run, not a function: a download works after any number of reruns (explore_extras)
    d1.download_button("Every swept setting (CSV)", explore_extras.sweeps_csv_bytes(run), file_name=f"{run.name}-sweeps.csv",
                       mime="text/csv", icon=":material/download:", key="sweeps-csv", on_click="ignore")
    d2.download_button("Pareto frontier (CSV)", explore_extras.frontier_csv_bytes(run, x),
                       file_name=f"{run.name}-frontier-{x}.csv", mime="text/csv", icon=":material/download:",
                       key="frontier-csv", on_click="ignore")
    st.markdown("**Link to this view**")
    st.code(explore_extras.share_link(st.context.url, {k: st.query_params.get_all(k) for k in st.query_params}),
            language=None, wrap_lines=True)
    st.caption("The link holds the run and every knob; the copy button at its right copies it.")
