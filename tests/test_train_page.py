"""The Train page and core.app.train_form: the form's fields come from core.training.config.OPTIONS; its values become
an argv that core.train parses back to the same configuration; bad values, bad run names and bad
uploads get messages; a tiny job started from the page (AppTest) runs to the end, the live panel draws
its losses, dev scores and Ω, and its run appears on Explore; a failing job shows its error; a running
job can be cancelled; an upload ends up inside its run folder and in the recorded command.

Every job trains a tiny random BERT (hidden 32, 2 layers, vocab 99) built here, on 16 rows, so each
takes seconds (most of it the child process importing torch).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.app import train_form
from core.runs.folders import WEIGHTS_FILE, read_config, read_status
from core.runs.jobs import JobManager
from core.training.config import DEFAULTS, METHODS, OPTIONS, parse_cli, resolve_config
from tests.helpers import open_train, poll_until_final, st_active, tiny_csv, write_page_backbone

REPO = Path(__file__).resolve().parent.parent
APP = str(REPO / "app.py")


@pytest.fixture(scope="module")
def backbone(tmp_path_factory) -> str:
    return write_page_backbone(tmp_path_factory.mktemp("tiny") / "bert")


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    r = tmp_path / "checkpoints"
    r.mkdir()
    monkeypatch.setenv("EEL_CHECKPOINTS", str(r))
    return r


def wait_final(mgr: JobManager, name: str, timeout: float = 120.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = mgr.get(name)
        if not job.active:
            return job
        time.sleep(0.5)
    raise AssertionError(f"job {name} still {mgr.get(name).state} after {timeout} s:\n{mgr.logs(name)}")


# ---- fields and argv --------------------------------------------------------------------------------
def test_fields_are_core_train_options():
    fields = train_form.fields()
    assert set(fields) == {name for name, *_ in OPTIONS} - {"out"}
    for name, typ, default, help_ in OPTIONS:
        if name == "out":
            continue
        assert fields[name].default == default and fields[name].help == help_, name
    assert fields["method"].choices == METHODS
    # the papers' defaults arrive unchanged: LeeBERT Table 3, BADGE Table 5, Sun et al.
    assert (fields["cycle"].default, fields["temperature"].default) == (4, 2.0)
    assert (fields["bypass_dim"].default, fields["bypass_act"].default) == (16, "gelu")
    assert fields["lambda_div"].default == 0.2
    assert train_form.method_defaults("leebert")["optimizer"] == "clo_v2"
    every = {n for section in train_form.SECTIONS.values() for n in section}
    assert every == set(fields), "every option has a place on the form"


@pytest.mark.parametrize("method", METHODS)
def test_defaults_round_trip_through_the_cli(method):
    """The form at its defaults -> argv -> core.train's own parser -> the same configuration."""
    defaults = train_form.method_defaults(method)
    values = {n: defaults[n] for n in train_form.fields() if train_form.relevant(n, {**defaults, "method": method})}
    values["method"] = method
    argv = train_form.build_argv(values)
    assert argv[:6] == ["--task", "rotten_tomatoes", "--backbone", "minilm-l6", "--method", method]
    got = resolve_config(parse_cli([*argv, "--out", "checkpoints/x"]))
    want = resolve_config({"method": method, "out": "checkpoints/x"})
    for k in ("notes",):
        got.pop(k), want.pop(k)
    assert {k: v for k, v in got.items() if k in DEFAULTS} == {k: v for k, v in want.items() if k in DEFAULTS}


def test_changed_values_reach_the_command_and_irrelevant_ones_do_not():
    values = {**train_form.method_defaults("joint"), "lr": 5e-5, "max_train": 16, "lte": True, "epochs": 1.0,
              "optimizer": "slo", "lambda_div": 0.5, "temperature": 3.0}
    values.pop("out"), values.pop("command", None)
    values = {k: v for k, v in values.items() if k in DEFAULTS}
    argv = train_form.build_argv(values)
    cfg = resolve_config(parse_cli([*argv, "--out", "checkpoints/x"]))
    assert (cfg["lr"], cfg["max_train"], cfg["lte"], cfg["epochs"]) == (5e-5, 16, True, 1)
    for flag in ("--optimizer", "--lambda-div", "--temperature"):  # not used by joint training
        assert flag not in argv
    lee = train_form.build_argv({"method": "leebert", "optimizer": "blo", "cycle": 7, "weights": "learned"})
    assert "--cycle" not in lee, "the CLO-v2 cycle means nothing to BLO"
    assert lee[lee.index("--optimizer") + 1] == "blo"
    fixed = train_form.build_argv({"method": "leebert", "weights": "uniform", "optimizer": "clo_v2"})
    assert "--optimizer" not in fixed, "a fixed Ω has no optimizer"


@pytest.mark.parametrize("values,words", [
    ({"warmup_ratio": 1.5}, "warmup_ratio"),
    ({"lr": 0.0}, "lr must be a positive number"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"method": "leebert", "optimizer": "adam"}, "unknown optimizer"),
    ({"lr": float("nan")}, "finite"),
    ({"epochs": 1.5}, "whole number"),
    ({"frobnicate": 1}, "unknown option"),
    ({"out": "/etc"}, "run name"),
])
def test_bad_values_get_core_train_messages(values, words):
    with pytest.raises(ValueError, match=words):
        train_form.build_argv({"method": "joint", **values})


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "", ".hidden", "x" * 101, "a b", "/abs"])
def test_run_names_cannot_escape_the_root(tmp_path, name):
    with pytest.raises(ValueError, match="invalid run name"):
        train_form.check_new_run(tmp_path, name)


def test_existing_run_needs_replace(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ValueError, match="already exists"):
        train_form.check_new_run(tmp_path, "taken")
    assert train_form.check_new_run(tmp_path, "taken", overwrite=True) == tmp_path / "taken"
    assert train_form.suggest_run_name(tmp_path, "taken", "joint") == "taken-joint"
    (tmp_path / "taken-joint").mkdir()
    assert train_form.suggest_run_name(tmp_path, "taken", "joint") == "taken-joint-2"
    assert train_form.suggest_run_name(tmp_path, "/some/dir/my data", "leebert") == "my-data-leebert"


# ---- uploads ------------------------------------------------------------------------------------------
def test_upload_limits_and_types(tmp_path):
    data = tiny_csv(200).encode()
    assert len(data) > 0.001 * 1024 * 1024
    with pytest.raises(ValueError, match=r"limited to 0.001 MB"):
        train_form.save_upload(data, "big.csv", tmp_path, limit_mb=0.001)
    with pytest.raises(ValueError, match="unsupported file type"):
        train_form.save_upload(data, "notes.txt", tmp_path)
    with pytest.raises(ValueError, match="unsupported file type"):
        train_form.save_upload(data, "noext", tmp_path)
    with pytest.raises(ValueError, match="empty"):
        train_form.save_upload(b"", "a.csv", tmp_path)
    path = train_form.save_upload(data, "../../My Reviews.CSV", tmp_path, role="train")
    assert path == tmp_path / "train.csv" and path.read_bytes() == data   # never the user's path
    assert train_form.UPLOAD_LIMIT_MB == 50


def test_columns_of_an_upload_and_their_guess():
    cols = train_form.peek_columns(tiny_csv(pairs=True).encode(), "pairs.csv")
    assert cols == ["premise", "hypothesis", "gold"]
    assert train_form.guess_columns(cols) == {"text": "premise", "pair": "hypothesis", "label": "gold"}
    tsv = "sentence\tlabel\nfine film\t1\nbad film\t0\n".encode()
    assert train_form.guess_columns(train_form.peek_columns(tsv, "x.tsv")) == {"text": "sentence", "pair": None, "label": "label"}
    jsonl = b'{"text": "fine", "label": "pos"}\n{"text": "bad", "label": "neg"}\n'
    assert train_form.peek_columns(jsonl, "x.jsonl") == ["text", "label"]
    with pytest.raises(ValueError, match="cannot be read"):
        train_form.peek_columns(b'{"text": "fine", "lab', "x.jsonl")


@pytest.mark.parametrize("content,columns,words", [
    ("review,sentiment\n" + "\n".join(f"nice film {i},pos" for i in range(20)) + "\n",
     {"text_column": "review", "label_column": "sentiment"}, "single class"),
    (tiny_csv(), {"text_column": "review", "label_column": "stars"}, "stars"),
    (tiny_csv(), {"text_column": "body", "label_column": "sentiment"}, "body"),
    ("\x00\x01garbage,\"unclosed\n1,2,3\n", {}, "train.csv: cannot be read as csv"),
])
def test_a_bad_upload_gets_a_message_from_load_task(tmp_path, content, columns, words):
    path = train_form.save_upload(content.encode(), "data.csv", tmp_path)
    with pytest.raises(ValueError, match=words):
        train_form.check_task({"task": "mine", **columns}, train_file=path)


def test_a_good_upload_is_summarized(tmp_path):
    path = train_form.save_upload(tiny_csv(30).encode(), "reviews.csv", tmp_path)
    s = train_form.check_task({"task": "reviews", "text_column": "review", "label_column": "sentiment", "max_dev": 4},
                     train_file=path)
    assert (s.name, s.label_names, s.is_pair) == ("reviews", ["neg", "pos"], False)
    assert s.n_dev <= 4 and s.n_train + s.n_dev <= 30
    assert "reviews:" in s.describe()


def test_staged_uploads_move_into_the_run_folder(tmp_path):
    stage = train_form.staging_dir(tmp_path, "run1")
    train_form.save_upload(b"a,b\n1,2\n", "x.csv", stage, role="train")
    train_form.save_upload(b"a,b\n1,2\n", "y.csv", stage, role="dev")
    moved = train_form.adopt_uploads(tmp_path / "run1")
    assert sorted(p.name for p in moved) == ["dev.csv", "train.csv"]
    assert (tmp_path / "run1" / "uploads" / "train.csv").read_bytes() == b"a,b\n1,2\n"
    assert not stage.exists()
    assert train_form.adopt_uploads(tmp_path / "run2") == []


# ---- live panel data --------------------------------------------------------------------------------------
def test_live_frames_and_figures():
    recs = [{"kind": "omega", "step": 0, "epoch": 0, "omega": [[0.5, 0, 0.5], [0.5, 0.5, 0]],
             "terms": ["ce", "kd:1", "kd:2"]},
            {"kind": "train", "step": 1, "epoch": 1, "loss": 1.0, "exit_losses": [0.7, 0.6]},
            {"kind": "omega", "step": 1, "epoch": 1, "omega": [[0.4, 0, 0.6], [0.45, 0.55, 0]],
             "terms": ["ce", "kd:1", "kd:2"]},
            {"kind": "eval", "step": 1, "epoch": 1, "exit_scores": [0.5, 0.75], "metric": "accuracy"}]
    d = train_form.live_data(recs)
    assert len(d.train) == 2 and list(d.evals["score"]) == [0.5, 0.75] and len(d.omega) == 2
    om = train_form.omega_frame(d.omega)
    assert set(zip(om["exit"], om["term"])) == {(1, "ce"), (1, "kd:2"), (2, "ce"), (2, "kd:1")}
    assert len(train_form.omega_lines_figure(d.omega).data) == 4
    heat = train_form.omega_heatmap(d.omega[-1])
    assert np.isnan(heat.data[0].z[0][1]) and heat.data[0].z[1][1] == 0.55  # a missing term is blank
    assert train_form.losses_figure(d.train).data and train_form.scores_figure(d.evals, "accuracy").data
    assert train_form.live_data([]).empty


def test_train_page_builds_its_form_without_torch(tmp_path):
    """The Train page (and core.app.train_form / core.training.config behind it) never imports torch: the form's
    option table, name lists and argv come from the torch-free core.training.config. Run in a fresh interpreter so
    other tests' imports cannot mask an import of torch."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from streamlit.testing.v1 import AppTest\n"
        "from core.app import train_form\n"
        "assert train_form.fields() and train_form.build_argv({'method': 'leebert', 'epochs': 2})\n"
        "assert train_form.method_defaults('leebert')['optimizer'] == 'clo_v2'\n"
        "at = AppTest.from_file('app.py', default_timeout=90)\n"
        "at.run()\n"
        "at.switch_page('pages/train.py')\n"
        "at.run()\n"
        "at.selectbox(key='tr.method').select('leebert')\n"
        "at.run()\n"
        "assert not at.exception, [e.value for e in at.exception]\n"
        "assert at.number_input(key='tr.omega_lr').value == 1e-3\n"
        "print('torch loaded:', 'torch' in sys.modules)\n")
    env = {**os.environ, "EEL_CHECKPOINTS": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "torch loaded: False" in done.stdout, done.stdout


def test_column_guess_has_one_rule():
    """The form's pickers and load_task guess with the same rule (core.data.tables.guess_columns)."""
    from core.data import tables

    assert train_form.guess_columns is tables.guess_columns
    cols = ["Text_A", "text_b", "Label"]            # case-insensitive, the same lists load_task uses
    assert tables.guess_columns(cols) == {"text": "Text_A", "pair": "text_b", "label": "Label"}


# ---- the page (AppTest) --------------------------------------------------------------------------------------


def fill_tiny(at: AppTest, backbone: str, *, method: str = "leebert", name: str = "tiny") -> AppTest:
    at.text_input(key="tr.backbone").input(backbone)
    at.selectbox(key="tr.method").select(method)
    at.run()
    for key, v in {"tr.max_train": 16, "tr.max_dev": 16, "tr.epochs": 1, "tr.latency_samples": 2,
                   "tr.batch_size": 4, "tr.log_every": 1}.items():
        at.number_input(key=key).set_value(v)
    at.text_input(key="tr.run_name").input(name)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def badges(at: AppTest) -> list[str]:
    return [m.value for m in at.markdown if "-badge[" in m.value]


def test_page_starts_a_tiny_leebert_job_that_shows_up_on_explore(root, backbone):
    at = fill_tiny(open_train(), backbone, method="leebert")
    cmd = at.code[0].value
    assert cmd.startswith("python -m core.train --task rotten_tomatoes") and "--method leebert" in cmd
    assert f"--out {root / 'tiny'}" in cmd and "--optimizer clo_v2" in cmd
    at.button(key="tr.start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("started" in s.value for s in at.success)
    assert "tiny" in "\n".join(badges(at)) and st_active(at)

    at = poll_until_final(at)
    assert any("done" in b for b in badges(at)), badges(at)
    status = read_status(root / "tiny")
    assert status["state"] == "done" and (root / "tiny" / WEIGHTS_FILE).is_file()
    # the live panel: losses, per-exit dev scores, Ω heatmap, Ω lines and Ω against its data-free drift
    charts = at.get("plotly_chart")
    assert len(charts) == 5, len(charts)
    figs = [json.loads(c.proto.spec) for c in charts]
    heat = next(f for f in figs if f["data"][0]["type"] == "heatmap")
    assert heat["data"][0]["x"] == ["ce", "kd:1", "kd:2"] and len(heat["data"][0]["y"]) == 2
    drift = [t for f in figs for t in f["data"] if t.get("legendgroup") == "drift"]
    assert len(drift) == 2  # one data-free drift line per exit
    # the run is in the run picker of every page, without restarting anything
    assert "tiny" in at.sidebar.selectbox(key="run").options
    at.switch_page("pages/explore.py").run()
    at.sidebar.selectbox(key="run").select("tiny").run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert at.title[0].value == "Explore exit rules"
    assert any(m.label == "Mean exit layer" and m.value.endswith("/ 2") for m in at.metric)


def test_page_refuses_bad_names_and_values_with_messages(root, backbone):
    at = open_train()
    at.text_input(key="tr.run_name").input("../outside").run()
    assert at.button(key="tr.start").disabled
    assert any("invalid run name" in w.value for w in at.warning)
    at.text_input(key="tr.run_name").input("fine-name").run()
    at.number_input(key="tr.warmup_ratio").set_value(0.999).run()
    assert not at.button(key="tr.start").disabled
    at.radio(key="tr.source").set_value("GLUE folder").run()
    at.text_input(key="tr.data_dir").input(str(root / "no-such-glue")).run()
    at.button(key="tr.start").click().run()
    assert not at.exception
    assert any("Not started" in e.value for e in at.error), [e.value for e in at.error]
    assert not (root / "fine-name").exists()


def test_a_failing_job_shows_its_error_and_a_running_one_can_be_cancelled(root, backbone):
    at = fill_tiny(open_train(), str(root / "no-such-backbone"), method="joint", name="broken")
    at.button(key="tr.start").click().run()
    at = poll_until_final(at)
    assert any("failed" in b for b in badges(at))
    assert any("no-such-backbone" in e.value for e in at.error), [e.value for e in at.error]

    fill_tiny(at, backbone, method="joint", name="long")
    at.number_input(key="tr.epochs").set_value(50)
    at.run()
    at.button(key="tr.start").click().run()
    at.button(key="cancel-long").click().run()
    at = poll_until_final(at, timeout=30)
    assert read_status(root / "long")["state"] == "cancelled"
    assert any("cancelled" in b for b in badges(at))


def test_page_upload_bad_files_get_messages_and_a_good_one_trains_from_its_run_folder(root, backbone):
    at = open_train()
    at.radio(key="tr.source").set_value("Upload a file").run()
    assert at.button(key="tr.start").disabled
    assert any("50 MB" in c.value for c in at.caption)
    assert at.file_uploader(key="tr.up_train").proto.max_upload_size_mb == train_form.UPLOAD_LIMIT_MB == 50

    at.file_uploader(key="tr.up_train").upload("broken.csv", b'review,"sentiment\nfine,1\n', "text/csv").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("cannot be used" in e.value for e in at.error), [e.value for e in at.error]

    one_class = "review,sentiment\n" + "".join(f"nice film {i},pos\n" for i in range(20))
    at.file_uploader(key="tr.up_train").upload("one.csv", one_class.encode(), "text/csv").run()
    at.text_input(key="tr.run_name").input("upl").run()
    at.button(key="tr.start").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Not started" in e.value and "single class" in e.value for e in at.error), [e.value for e in at.error]
    assert not (root / "upl").exists() and not train_form.staging_dir(root, "upl").exists()

    at.file_uploader(key="tr.up_train").upload("my reviews.csv", tiny_csv(24).encode(), "text/csv").run()
    assert at.selectbox(key="tr.text_column").value == "review"
    assert at.selectbox(key="tr.label_column").value == "sentiment"
    assert at.text_input(key="tr.task_name.my reviews.csv").value == "my reviews"
    at.text_input(key="tr.backbone").input(backbone)
    at.number_input(key="tr.epochs").set_value(1)
    at.number_input(key="tr.batch_size").set_value(8)
    at.number_input(key="tr.latency_samples").set_value(1)
    at.text_input(key="tr.run_name").input("upl").run()
    assert f"--train-file {root / 'upl' / 'uploads' / 'train.csv'}" in at.code[0].value
    at.button(key="tr.start").click().run()
    assert any("started" in s.value for s in at.success), [e.value for e in at.error]
    at = poll_until_final(at)
    assert read_status(root / "upl")["state"] == "done", read_status(root / "upl")
    cfg = read_config(root / "upl")
    assert cfg["command"].startswith("python -m core.train ")
    assert str(root / "upl" / "uploads" / "train.csv") in cfg["command"]
    assert (root / "upl" / "uploads" / "train.csv").read_text() == tiny_csv(24)
    assert not train_form.staging_dir(root, "upl").exists()
