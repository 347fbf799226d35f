"""What the pages share through Streamlit: cached run loading, the run picker, strategy controls that
live in the URL, and the callbacks that load a setting into them.

URL state. The run lives in `?run=` (written on every rerun, so a copied link names it even when it is
the default). Every other control is a widget bound to a query parameter of the same name as its key
(`bind="query-params"`): `entropy.threshold=0.25`, `strategy=PCEE`, `curves=...`. Streamlit seeds a
bound widget from the URL when a page opens and writes it back when it changes, leaving out values
equal to the widget's default, so a link reopens the same view.
"""
from __future__ import annotations

import streamlit as st

from core.app import knob_scale, narrow, rundata
from core.app.plain import md
from core.engine import health
from core.engine.registry import STRATEGIES, RegistryField

RUN_KEY = "run"
INFOS_KEY = "eel_runs"            # list[RunInfo] of this rerun (set by app.py)
SETTINGS_KEY = "eel_settings"     # {"run", "settings": {strategy: params}, "focus"} last seen on Explore
SELECTION_GEN = "eel_sel_gen"     # bumps to give selectable charts/tables a fresh key (clears selection)

TAB_LABELS = RegistryField("label")   # each rule's short label, from its core.engine.strategies registry entry


# ---- entry ------------------------------------------------------------------------------------------
VIA_APP = "eel_via_app"


def run_page(page) -> None:
    """app.py: run the chosen page, marking that it runs under app.py's navigation and sidebar."""
    st.session_state[VIA_APP] = True
    st.html(narrow.PHONE_CSS)  # style only: takes no room on the page
    try:
        page.run()
    finally:
        st.session_state[VIA_APP] = False


def require_app() -> None:
    """First line of every page. Streamlit decides once per server whether a folder called pages/ means
    the legacy multipage mode: until app.py has called st.navigation, a fresh server's first visitor who
    opens a page URL (a shared link to /explore) gets pages/explore.py run on its own, without app.py's
    navigation and sidebar. Leave that mode (what st.navigation itself does) and rerun through app.py."""
    if st.session_state.get(VIA_APP):
        return
    try:
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
    except (ImportError, AttributeError):  # a later Streamlit without the legacy mode
        pass
    st.rerun()


# ---- loading, cached by run path and cache mtime -------------------------------------------------
@st.cache_resource(max_entries=16, show_spinner=False)
def _load(path: str, mtime: float) -> rundata.RunData:
    return rundata.load_run(path)


def load(info: rundata.RunInfo) -> rundata.RunData:
    """The run's data (cached until cache.npz changes). ValueError names the file when corrupt."""
    return _load(str(info.path), info.mtime)


def try_load(info: rundata.RunInfo) -> rundata.RunData | str:
    try:
        return load(info)
    except (ValueError, OSError) as e:
        return str(e)


def ensure_sweeps(run: rundata.RunData):
    """The run's sweeps; the first call per run computes them under a spinner (cached after)."""
    if not run.has_sweeps:
        with st.spinner(f"Sweeping every strategy on {run.name} (once per run)..."):
            return run.sweeps()
    return run.sweeps()


def run_infos() -> list[rundata.RunInfo]:
    infos = st.session_state.get(INFOS_KEY)
    if infos is None:
        infos = rundata.scan_runs(rundata.checkpoint_root())
    return infos


# ---- the shared sidebar --------------------------------------------------------------------------
def _clear_strategy_state():
    """A new run has other ranges (layers, divergences): start its controls from their defaults."""
    for key in list(st.session_state.keys()):
        head = str(key).removeprefix("t.").split(".")[0]
        if head in STRATEGIES or key in ("sample", "t.layers"):
            del st.session_state[key]


def _first_loadable(infos: list[rundata.RunInfo]) -> str:
    """The default run: rotten_tomatoes-joint if it loads, else the first run that loads."""
    preferred = rundata.default_run(infos)
    ordered = sorted((i for i in infos if i.has_cache), key=lambda i: (i.died is not None, i.name != preferred))
    for info in ordered:
        if not isinstance(try_load(info), str):
            return info.name
    return ordered[0].name


def sidebar(infos: list[rundata.RunInfo]) -> rundata.RunInfo | None:
    """The run picker (kept in ?run=) and a short description of the chosen run."""
    st.session_state[INFOS_KEY] = infos
    names = [r.name for r in infos if r.has_cache]
    by_name = {r.name: r for r in infos}
    with st.sidebar:
        if not names:
            st.info(f"No runs with an exit cache in {md(rundata.checkpoint_root())} yet. Train one with "
                    "`python -m core.train --out checkpoints/<name>` (or set `EEL_CHECKPOINTS`).")
            return None
        wanted = st.query_params.get(RUN_KEY)
        if RUN_KEY not in st.session_state or st.session_state[RUN_KEY] not in names:
            if wanted in names:
                st.session_state[RUN_KEY] = wanted
            else:
                st.session_state[RUN_KEY] = _first_loadable(infos)
        if wanted and wanted not in names:
            st.warning(f"Run {md(wanted)} from the link is not in {md(rundata.checkpoint_root())}; "
                       f"showing {md(st.session_state[RUN_KEY])}.")
        name = st.selectbox("Run", names, key=RUN_KEY, on_change=_clear_strategy_state,
                            help=f"Run folders under {md(rundata.checkpoint_root())}")
        st.query_params[RUN_KEY] = name
        info = by_name[name]
        cfg = info.config or {}
        bits = [cfg.get("task"), cfg.get("method"), cfg.get("backbone")]
        st.caption(md(" · ".join(str(b) for b in bits if b) or "no config.json"))
        if info.died:  # every page: this run's cache is from a training that never finished
            st.warning(f"Run **{md(name)}** {md(info.died)}", icon=":material/dangerous:")
    return info


def current_run() -> rundata.RunData | None:
    """The sidebar's run, loaded; on failure an error naming the run and its file, and None."""
    infos = run_infos()
    name = st.session_state.get(RUN_KEY)
    info = next((r for r in infos if r.name == name), None)
    if info is None:
        st.info("Pick a run in the sidebar. A run folder appears here once its training wrote `cache.npz`.")
        return None
    try:
        run = load(info)
    except (ValueError, OSError) as e:
        st.error(f"Run **{md(info.name)}** cannot be shown: {md(e)}")
        st.caption("Other runs still work: pick one in the sidebar.")
        return None
    st.sidebar.caption(f"{run.cache.N} dev samples · {run.L} exits · {run.cache.K} classes · "
                       f"metric: {rundata.metric_name(run.metric)}")
    return run


def health_warnings(run: rundata.RunData, *, name: bool = False) -> list[str]:
    """Warn when the run's exits learned nothing usable (core.engine.health), in plain words with what to try."""
    found = health.assess(run.cache)
    for sentence in found:
        st.warning((f"Run **{md(run.name)}**: " if name else "") + md(sentence), icon=":material/report:")
    return found


# ---- controls -----------------------------------------------------------------------------------
def draw_controls(run: rundata.RunData, strategy: str, *, prefix: str = "", columns=None) -> dict:
    """One bound widget per parameter of `strategy` (spec from core.engine.strategies); returns the params."""
    controls = run.controls(strategy)
    cols = columns if columns is not None else [st.container()] * max(len(controls), 1)
    params = {}
    for c, col in zip(controls, cols):
        key = prefix + c.key
        if key in st.session_state:  # a stale or hand-made value: keep it inside the widget's range
            fixed = c.coerce(st.session_state[key])
            if fixed != st.session_state[key]:
                st.session_state[key] = fixed
        with col:
            stops = knob_scale.run_stops(run, c, st.session_state, prefix) if c.widget == "slider" else None
            if stops:  # quantile scale: each step moves about the same share of samples
                now = float(st.session_state.get(key, c.default))
                for extra in (now, knob_scale.url_value(st.query_params.get(key), c), float(c.default)):
                    stops = knob_scale.with_value(stops, extra)
                # the widget's default is the knob's default, never its current value: Streamlit leaves a bound
                # widget's value out of the URL when it equals the default, so a setting loaded by a callback
                # (goal row, chart click, "Load the answer") would otherwise never reach the address bar
                v = st.select_slider(c.label, stops, float(c.default), format_func=knob_scale.label_format(stops),
                                     key=key,
                                     help=(c.help + " " if c.help else "") + knob_scale.HELP, bind="query-params")
            elif c.widget == "slider":
                v = st.slider(c.label, c.low, c.high, c.default, c.step, format=c.fmt, key=key,
                              help=c.help or None, bind="query-params")
            elif c.widget == "select":
                v = st.selectbox(c.label, c.options, index=c.options.index(c.default), key=key,
                                 help=c.help or None, bind="query-params")
            else:
                v = st.toggle(c.label, c.default, key=key, help=c.help or None, bind="query-params")
        params[c.name] = v
    return params


def url_text(run: rundata.RunData, control, value, state, prefix: str = "") -> str:
    """How a bound widget spells `value` in the address bar (what it reads back from a link): the stop's
    label on a quantile knob, a number without a trailing .0 on a slider, true/false on a toggle."""
    if control.widget == "toggle":
        return str(bool(value)).lower()
    if control.widget == "select":
        return str(value)
    stops = knob_scale.run_stops(run, control, state, prefix) if control.widget == "slider" else None
    if stops:
        return knob_scale.label_format(knob_scale.with_value(stops, float(value)))(float(value))
    v = float(value)
    return str(int(v)) if v == int(v) else str(v)


def inherit_knobs(run: rundata.RunData, strategy: str, values: dict, *, prefix: str):
    """Seed a page's knobs with `values` carried over from another page, and write them into the address
    bar too: a bound widget only writes the URL when the user moves it, so without this a link copied
    right after arriving would open at the defaults. Call before the widgets are drawn. Knobs already in
    the URL, or already drawn in this session, are left alone."""
    seeded = {}
    for c in run.controls(strategy):
        key = prefix + c.key
        if c.name in values and key not in st.session_state:
            st.session_state[key] = c.coerce(values[c.name])
            if st.session_state[key] != c.default:
                seeded[c] = st.session_state[key]
    write_url({prefix + c.key: url_text(run, c, v, st.session_state, prefix) for c, v in seeded.items()})


def write_url(values: dict[str, str]):
    """Put values the address bar lacks into it (see inherit_knobs); a key already bound to a drawn widget
    is skipped, as that widget keeps the URL itself."""
    for key, text in values.items():
        if key not in st.query_params:
            try:
                st.query_params[key] = text
            except st.errors.StreamlitAPIException:
                pass


def bump_selection():
    st.session_state[SELECTION_GEN] = st.session_state.get(SELECTION_GEN, 0) + 1


def selection_key(name: str) -> str:
    return f"{name}-{st.session_state.get(SELECTION_GEN, 0)}"


def load_setting(run: rundata.RunData, strategy: str, params: dict, *, prefix: str = "", tab_key: str | None = "strategy"):
    """Put a setting into the controls (call from a widget callback, before the widgets are drawn)."""
    if strategy not in run.strategies:
        return
    for name, value in run.coerce_params(strategy, params).items():
        st.session_state[f"{prefix}{strategy}.{name}"] = value
    if tab_key:
        st.session_state[tab_key] = TAB_LABELS[strategy]
    bump_selection()


def selected_points(key: str) -> list[dict]:
    state = st.session_state.get(key)
    try:
        return list(state.selection.points)
    except AttributeError:
        try:
            return list(state["selection"]["points"])
        except (KeyError, TypeError):
            return []


def selected_rows(key: str) -> list[int]:
    state = st.session_state.get(key)
    try:
        return list(state.selection.rows)
    except AttributeError:
        try:
            return list(state["selection"]["rows"])
        except (KeyError, TypeError):
            return []


def fmt_speedup(x) -> str:
    return "n/a" if x is None else f"{x:.2f}x"


@st.cache_data(max_entries=32, show_spinner=False)
def _omega_records(path: str, mtime: float) -> list[dict]:
    return rundata.omega_records(path)


def omega_records(run: rundata.RunData) -> list[dict]:
    """The run's Ω records (cached until metrics.jsonl changes)."""
    return _omega_records(str(run.path), rundata.metrics_mtime(run.path))
