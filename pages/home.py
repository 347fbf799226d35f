"""Home: early exiting in a few sentences and one figure, the runs available, where to go next."""
import streamlit as st

from core.app import appstate, figures, home_notes, rundata
from core.app.plain import md
from core.runs.folders import run_warnings

appstate.require_app()

st.title("Early-Exit Lab")
st.markdown(
    "A transformer classifier reads a sentence through a stack of layers, and normally only the last "
    "layer gives the answer. An **early-exit** model puts a small classifier after *every* layer. "
    "Easy sentences are often settled after a few layers, so the model can stop there and answer; "
    "only the hard ones go all the way up. An **exit rule** decides when to stop (for example: "
    "*stop when the prediction is confident enough*, or *stop when it has not changed for two layers*). "
    "This lab lets you see what each rule costs and earns on a trained model: how much faster it gets, "
    "and how much of the score it keeps."
)

infos = appstate.run_infos()
run = appstate.current_run()
if run is not None:
    appstate.health_warnings(run)
    st.plotly_chart(figures.home_figure(run), key="home-figure", config={"displayModeBar": False})
    st.caption(
        f"Run **{md(run.name)}**. The line is the score each exit reaches on its own; often it climbs fast "
        "and flattens, and sometimes falls at the top (the model *overthinks*). The bars show where "
        f"a simple confidence rule ({rundata.home_rule_text(run)}) lets the samples stop: "
        "every sample stopping before the last layer is computation saved."
    )

st.subheader("Runs")
loaded = {i.name: appstate.try_load(i) for i in infos if i.has_cache}
if infos:
    table = rundata.runs_table(infos, loaded)
    st.dataframe(table, hide_index=True, key="home-runs",
                 column_config={"full model": st.column_config.NumberColumn(format="%.4f"),
                                "note": st.column_config.TextColumn(width="large")})
    broken = {k: v for k, v in loaded.items() if isinstance(v, str)}
    for name, err in broken.items():
        st.warning(f"Run **{md(name)}** cannot be opened: {md(err)}")
    # what training left out or noticed (status.json "warnings"): one line per kind, the runs behind it
    notes = [(info.name, warning) for info in infos for warning in run_warnings(info.status)]
    for k, group in enumerate(home_notes.group_notes(notes)):
        st.warning(md(group.line), icon=":material/info:")
        if len(group.runs) > 1:
            with st.expander(f"The {len(group.runs)} runs behind it", key=f"home-notes-{k}"):
                st.text("\n".join(f"{name}: {text}" for name, text in group.runs))
        else:
            st.caption(f"Run: {md(group.runs[0][0])}")
    st.caption(f"Run folders under {md(rundata.checkpoint_root())} (set `EEL_CHECKPOINTS` to look elsewhere). "
               "Pick the run to study in the sidebar; the choice travels with every page and link.")
else:
    st.info(f"No run folders in {md(rundata.checkpoint_root())} yet. Train one, e.g. "
            "`python -m core.train --task rotten_tomatoes --method joint --out checkpoints/rotten_tomatoes-joint`.")

st.subheader("Where to go next")
c1, c2, c3 = st.columns(3)
with c1:
    st.page_link("pages/explore.py", label="Explore", icon=":material/tune:")
    st.caption("Move the knobs of every exit rule and watch score and speed-up change; find the best "
               "setting for a target speed-up; export it.")
with c2:
    st.page_link("pages/traces.py", label="Traces", icon=":material/timeline:")
    st.caption("Open single sentences: how each layer's prediction evolves and where each rule stops. "
               "Find the overthinking cases.")
with c3:
    st.page_link("pages/compare.py", label="Compare", icon=":material/compare_arrows:")
    st.caption("Put training methods side by side: per-exit scores, S-avg / S-best, one rule across "
               "runs, learned loss weights.")
