"""Compare: runs side by side: per-exit scores, S-avg / S-best, one rule across runs, learned Ω."""
import pandas as pd
import streamlit as st

from core.app import appstate, compare_tables, figures, history, history_figures, precision_views, rundata, trust_views
from core.app.narrow import key_outside, legend_html
from core.app.plain import md
from core.app.plain_words import table_file_name
from core.runs.folders import read_metrics

appstate.require_app()

st.title("Compare runs")
infos = [i for i in appstate.run_infos() if i.has_cache]
if not infos:
    st.info(f"No runs with an exit cache in {md(rundata.checkpoint_root())} yet.")
    st.stop()
loaded = {i.name: appstate.try_load(i) for i in infos}
good = [n for n, r in loaded.items() if isinstance(r, rundata.RunData)]
died = {i.name: i.died for i in infos if i.died}  # killed before it finished: not picked unless asked
default = rundata.compare_defaults([i for i in infos if i.name in good and i.name not in died],
                             st.session_state.get(appstate.RUN_KEY))
picked = st.multiselect("Runs", list(loaded), default=default, key="c.runs", bind="query-params",
                        help="Runs that cannot be opened are listed too, and say why when picked.")
for name in picked:
    if isinstance(loaded[name], str):
        st.error(f"Run **{md(name)}** cannot be shown: {md(loaded[name])}")
    elif name in died:
        st.warning(f"Run **{md(name)}** {md(died[name])}")
runs = [loaded[n] for n in picked if isinstance(loaded[n], rundata.RunData)]
compare_name = f"compare-{len(runs)}-runs" if len(runs) != 1 else f"compare-{runs[0].name}"  # table file names
configs = {r.name: rundata.config_of(r.path) for r in runs}
words = st.text_input("Filter the picked runs", key="c.filter", bind="query-params",
                      placeholder="words in the name, task, method or optimizer, e.g. leebert slo")
if words:
    shown = [r for r in runs if history.matches(words, [r.name, *history.hparams(configs[r.name]).values(), r.meta.get("task")])]
    st.text(f"{len(shown)} of {len(runs)} picked runs match the filter.")
    runs = shown
for r in runs:
    appstate.health_warnings(r, name=True)
if not runs:
    st.info("Pick at least one run that opens.")
    st.stop()

# ---- per-exit scores ------------------------------------------------------------------------------
st.subheader("Every exit on its own")
st.plotly_chart(figures.per_exit_figure(runs), key="per-exit", config={"displaylogo": False})
st.caption("The score of each exit classifier used alone (a star marks each run's best exit). A line that "
           "peaks before the last layer is the **overthinking** picture: extra layers make the answer worse, "
           "so an early exit can be both faster and better.")

summary = pd.DataFrame([rundata.run_summary(r) for r in runs])
summary = summary.merge(compare_tables.hparams_table(runs, configs).drop(columns=["task", "method", "seed"]), on="run")
st.dataframe(summary, hide_index=True, key="summary", column_config={
    "S-avg": st.column_config.NumberColumn(format="%.4f", help="Mean score over all exits (BADGE, Table 1)"),
    "S-best": st.column_config.NumberColumn(format="%.4f", help="Score of the best single exit"),
    "last exit": st.column_config.NumberColumn(format="%.4f"),
    "overthinking gap": st.column_config.NumberColumn(format="%+.4f", help="S-best minus the last exit"),
})
st.download_button("Download this table (CSV)", summary.to_csv(index=False).encode(), key="summary-csv",
                   file_name=table_file_name(compare_name, "every-exit"), mime="text/csv",
                   icon=":material/download:", on_click="ignore")
st.caption("**S-avg**: the mean score over all exits, which rewards training methods that make the shallow "
           "exits good too. **S-best**: the best single exit. Scores use each task's metric.")
if len({r.metric for r in runs}) > 1:
    st.warning("These runs use different metrics; compare their scores with care.")

# ---- seeds and noise ------------------------------------------------------------------------------
st.subheader("Seeds and noise")
seeds = trust_views.seed_summary(runs)
st.plotly_chart(figures.seed_figure(runs), key="seeds", config={"displayModeBar": False})
seeds_shown = trust_views.seed_table_text(seeds)  # "one seed" where a group has one run, not an empty cell
st.dataframe(seeds_shown, hide_index=True, key="seed-summary", column_config={
    c: st.column_config.NumberColumn(format="%.4f") for c in ("last exit mean", "S-best mean")})
st.download_button("Download this table (CSV)", seeds_shown.to_csv(index=False).encode(), key="seed-csv",
                   file_name=table_file_name(compare_name, "seeds"), mime="text/csv", icon=":material/download:",
                   on_click="ignore")
st.caption("Runs that differ only in their seed (same task, method and backbone; names ending in -seedN) are "
           "grouped and picked together: grey points are the seeds, the bar the mean +- one standard deviation. "
           "A method trained once says 'one seed': it has no spread to show.")
diffs = trust_views.method_differences(runs)
if not diffs.empty:
    st.dataframe(diffs, hide_index=True, key="method-diffs", column_config={
        c: st.column_config.NumberColumn(format="%+.4f") for c in ("A - B (last exit)", "95% low", "95% high")})
    st.caption("Last-exit difference of each pair of runs on the same dev set, with a 95% paired bootstrap "
               "interval over the dev samples (1,000 resamples): 'within noise' when it covers zero. It does not "
               "include seed-to-seed spread; compare the s.d. above for that.")

# ---- one rule across runs --------------------------------------------------------------------------
st.subheader("One exit rule across runs")
options = list(dict.fromkeys(s for r in runs for s in r.strategies))
c1, c2 = st.columns([2, 3])
with c1:
    strategy = st.selectbox("Rule", options, index=options.index("entropy") if "entropy" in options else 0,
                            format_func=appstate.TAB_LABELS.get, key="c.strategy", bind="query-params")
with c2:
    has_ms = all(r.cache.layer_ms is not None for r in runs)
    axes = ["layer_speedup", "saved_fraction"] + (["wallclock_speedup"] if has_ms else [])
    x = st.radio("Speed-up axis", axes, format_func=figures.AXIS_SHORT.get, key="c.x",
                 horizontal=True, bind="query-params")
for r in runs:
    appstate.ensure_sweeps(r)
lacking = [r.name for r in runs if strategy not in r.strategies]
st.plotly_chart(figures.strategy_across_runs_figure(runs, strategy, x), key="across", config={"displaylogo": False})
st.caption("Each run's best score at each speed-up for this rule (its swept settings' upper envelope; faint "
           "points are all settings).")
if lacking:
    st.caption(f"Not available in {md(', '.join(lacking))} (needs learned confidences).")

# ---- every run x every rule at one target ---------------------------------------------------------------
st.subheader("Every run and every rule at one speed-up")
at_least = st.slider("At least this layer speed-up", 1.0, float(max(r.L for r in runs)), 1.5, 0.05,
                     format="%.2fx", key="c.target", bind="query-params")
grid = compare_tables.rules_at_target(runs, at_least, appstate.TAB_LABELS)
st.dataframe(grid, hide_index=True, key="rules-grid", column_config={
    c: st.column_config.NumberColumn(format="%.4f") for c in grid.columns if c not in ("run", "method")})
st.download_button("Download this table (CSV)", grid.to_csv(index=False).encode(), key="rules-grid-csv",
                   file_name=table_file_name(compare_name, f"rules-at-{at_least:g}x"), mime="text/csv",
                   icon=":material/download:", on_click="ignore")
st.caption("Each cell: the rule's best dev score among its swept settings that reach the speed-up (empty: none "
           "does). **± 95%**: how far one dev set of this size moves an accuracy like the full model's (binomial, "
           "per run; empty for scores that are not accuracies), so two cells closer than that are not told apart. "
           "Explore's goal table gives each setting its own paired bootstrap interval.")

# ---- precisions side by side (issue 22; core.app.precision_views) --------------------------------------
have = list(dict.fromkeys(p for r in runs for p in precision_views.available(r)))
if len(have) > 1:
    st.subheader("Precisions side by side")
    v1, v2, v3 = st.columns([2, 1, 2])
    side = v1.multiselect("Precisions", have, default=have, key="c.prec", bind="query-params",
                          help="Each run's exit caches by precision (python -m core.cache_variant, core.train --precisions)")
    sizes = ["1", "32"]
    side_batch = int(v2.radio("Batch size", sizes, index=1, key="c.batch", horizontal=True, bind="query-params",
                              help="Wall-clock speed-ups over each run's fp32 full model at this batch size"))
    side_drop = v3.slider("Lose at most (points vs fp32 full)", 0.0, 5.0, 1.0, 0.1, format="%.1f pts", key="c.pdrop",
                          bind="query-params")
    st.dataframe(precision_views.across_runs(runs, side, side_batch, side_drop), hide_index=True, key="c.precisions",
                 column_config={c: st.column_config.NumberColumn(format="%.4f") for c in ("last exit", "S-avg", "score")}
                 | {c: st.column_config.NumberColumn(format="%.2fx") for c in
                    ("full model wall-clock", "layer speed-up", "wall-clock speed-up")})
    st.caption("One row per run and precision: its exits scored on that precision's own cache, its full model in wall "
               "clock over the run's fp32 full model, and the fastest setting of any rule within the points chosen of "
               "fp32 full at that precision (wall clock from the caches' latency tables at the batch size: one "
               "measurement each, no interval; empty where a cache has no table at this batch size).")

# ---- training history -----------------------------------------------------------------------------------
st.subheader("Training history")
records = {r.name: read_metrics(r.path) for r in runs}
train = {n: history.train_history(recs) for n, recs in records.items()}
dev = {n: history.dev_history(recs) for n, recs in records.items()}
max_exits = max((len([c for c in d.columns if c.startswith("exit ")]) for d in train.values()), default=0)
curves = (["loss"] + [f"exit {m} loss" for m in range(1, max_exits + 1)]
          + ["dev: last exit", "dev: best exit"] + [f"dev: exit {m}" for m in range(1, max_exits + 1)])
h1, h2 = st.columns([3, 2])
curve = h1.selectbox("Curve", curves, key="c.curve", bind="query-params",
                     help="Training loss (all exits together, or one exit's own loss) over steps, or a dev score "
                          "at each evaluation")
weight = h2.slider("Smoothing", 0.0, 0.99, 0.6, 0.01, key="c.smooth", bind="query-params",
                   help="Exponential moving average, debiased as TensorBoard does; the raw curve stays faint")
if curve.startswith("dev: "):
    col = curve[5:]
    st.plotly_chart(history_figures.history_figure(dev, col, markers=True, y_title=f"dev score, {col}"), key="hist-dev",
                    config={"displaylogo": False})
else:
    col = "loss" if curve == "loss" else curve[:-5]
    st.plotly_chart(history_figures.history_figure(train, col, smoothing=weight, y_title=curve), key="hist-train",
                    config={"displaylogo": False})
st.caption("From each run's metrics.jsonl. Dev scores are single evaluations on the dev set, without an "
           "interval; Ω over steps (for runs that learned it) is below.")

# ---- learned loss weights ------------------------------------------------------------------------------
st.subheader("Learned loss weights Ω")
with_omega = [(r, appstate.omega_records(r)) for r in runs]
with_omega = [(r, recs) for r, recs in with_omega if recs]
if not with_omega:
    st.caption("None of these runs learned Ω (LeeBERT writes its loss weights to metrics.jsonl).")
else:
    st.caption("The final Ω of each run that learned it: row m holds the weights of exit m's loss terms "
               "(its own cross-entropy, ce, and its distillation from exit j, kd:j).")
    cols = st.columns(min(len(with_omega), 3))
    for k, (r, recs) in enumerate(with_omega):
        with cols[k % len(cols)]:
            st.plotly_chart(figures.omega_heatmap(recs[-1], r.name), key=f"omega-{r.name}",
                            config={"displayModeBar": False})
    st.caption("Ω over training steps: each exit's own-CE weight (solid) against the data-free drift (dashed), "
               "the same Ω updates fed constant terms (CE 1, distillation 0) and no data. Solid lines on "
               "their dashed twins mean Ω moved by its update schedule, not by what the data says.")
    cols = st.columns(min(len(with_omega), 2))
    for k, (r, recs) in enumerate(with_omega):
        with cols[k % len(cols)]:
            steps_fig = key_outside(figures.omega_steps_figure(recs, rundata.config_of(r.path), r.name))
            st.plotly_chart(steps_fig, key=f"omega-steps-{r.name}", config={"displayModeBar": False})
            st.html(legend_html(steps_fig))  # under the plot: above it, Plotly's legend ran into the title
