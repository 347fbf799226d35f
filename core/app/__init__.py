"""Torch-free. What the Streamlit pages show, kept apart from how they lay it out (the pages) and from
the engine (core.engine).

    rundata.py          run folders, RunData (a loaded run and its memoized derivations), tables
    figures.py          every Plotly figure of the pages, one shared layout
    history_figures.py  Compare's training-history figures (smoothed curves)
    appstate.py         the pages' shared Streamlit state: sidebar run picker, controls, URL binding
    trust_views.py      Explore's goal table, bootstrap intervals and calibration panel, Compare's seed groups
    explain.py          Traces: why a rule lets a sample out where it does (the rule's entry writes it), markers
    knob_scale.py       quantile slider stops for the swept knob of every rule with a signal
    explore_extras.py   brushable exit histogram, CSV exports, share link
    history.py          training history and hyper-parameters from a run folder
    compare_tables.py   Compare's runs x rules table
    playground_io.py    hand-over from Explore and operating-point files for the Playground
    narrow.py           figure tweaks for narrow screens
    plain.py            user text shown as text (never Markdown, HTML or Plotly markup)
    train_form.py       the Train page's logic; `python -m core.app.train_form` is what its jobs run

Only appstate.py imports streamlit (besides the pages).
"""
