"""Early-Exit Lab (placeholder until the exploring app lands)."""
import streamlit as st

from core.runs import list_runs

st.title("Early-Exit Lab")
runs = list_runs()
st.write(f"{len(runs)} run(s) in checkpoints/." if runs else "No runs yet: train one with `python -m core.train`.")
