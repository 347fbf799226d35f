"""Early-Exit Lab: the browser app. `streamlit run app.py` (settings in .streamlit/config.toml).

Builds the navigation and the shared sidebar (which run, kept in ?run=); each page is a short script
in pages/ that reads widgets, calls core.views and draws. Run folders come from $EEL_CHECKPOINTS,
default core.runs.folders.DEFAULT_ROOT (checkpoints/).
"""
from pathlib import Path

import streamlit as st

from core.app import appstate, rundata

HERE = Path(__file__).resolve().parent

# the favicon ships with the app (an emoji or icon name would be fetched from a CDN, which fails offline)
st.set_page_config(page_title="Early-Exit Lab", page_icon=str(HERE / "assets" / "favicon.png"), layout="wide")

infos = rundata.scan_runs(rundata.checkpoint_root())
nav = {
    "Early-Exit Lab": [st.Page("pages/home.py", title="Home", icon=":material/home:", default=True)],
    "Analyze": [
        st.Page("pages/explore.py", title="Explore", icon=":material/tune:"),
        st.Page("pages/traces.py", title="Traces", icon=":material/timeline:"),
        st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:"),
        st.Page("pages/slices.py", title="Slices", icon=":material/filter_list:"),
    ],
}
build = [st.Page(f"pages/{name}.py", title=title, icon=icon)
         for name, title, icon in (("train", "Train", ":material/model_training:"),
                                   ("playground", "Playground", ":material/keyboard:"))
         if (HERE / "pages" / f"{name}.py").exists()]
if build:
    nav["Build"] = build
page = st.navigation(nav)
appstate.sidebar(infos)
appstate.run_page(page)
