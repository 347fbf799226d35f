"""What the Streamlit pages show, kept apart from how they lay it out (the pages) and from the engine
(core.strategies, core.metrics):

    rundata.py   run folders, RunData (a loaded run and its memoized derivations), tables
    figures.py   every Plotly figure of every page, one shared layout

Nothing here imports streamlit (core.appstate is the one module that does, besides the pages).
"""
