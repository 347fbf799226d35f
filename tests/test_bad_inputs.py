"""Bad inputs and what each gets: the table docs/BAD_INPUTS.md shows is TABLE below, and every row is
walked by `test_bad_input` (one check function per row). `test_the_doc_lists_exactly_these_rows` keeps
the two in step.

Runs use the tiny random BERT of tests/test_train.py (hidden 32, 3 layers), so each check takes seconds.
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from core.runs.folders import read_status
from core.training.cli import main as train_main
from core.training.run import train
from tests.helpers import write_csv

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "BAD_INPUTS.md"

# (id, the bad input, what it gets). docs/BAD_INPUTS.md holds this table, row for row.
TABLE: list[tuple[str, str, str]] = [
    ("train-out-existing-bad-data",
     "`core.train --out <existing run> --overwrite` whose data fails to load (e.g. no such label column)",
     "one error line, exit code 2; the run's files are untouched (byte for byte)"),
    ("train-config-without-out",
     "`core.train --config <run>/config.json --max-train 1` (no `--out`: the config's own run)",
     "refused before anything is written: a run already exists there, pass `--overwrite` to replace it"),
    ("train-typo-on-existing-run",
     "`core.train --out <existing run> --epochs abc` or `--method nonsense`",
     "one error line naming the option, exit code 2; the run's status is not rewritten"),
    ("train-existing-run-without-overwrite",
     "a valid `core.train` command whose `--out` already holds a run",
     "refused, exit code 2, naming `--overwrite`; nothing written"),
    ("train-overwrite-cancelled",
     "`--overwrite` of an existing run, cancelled (or failed) before it finishes",
     "the old run stays byte for byte as it was; the staging folder is removed"),
    ("train-overwrite-done",
     "`--overwrite` of an existing run that finishes",
     "the new run takes the old one's place (no staging or backup folder left)"),
    ("train-two-writers-one-out",
     "two `core.train` commands started at once with the same new `--out`",
     "one trains; the other is refused, exit code 2, with one line naming the first one's pid (one writer per "
     "run folder: `core.runs.folders.RunClaim`); the app's Train queue refuses that run too, and a command line "
     "refuses the folder of a queued job"),
    ("train-disk-full",
     "the disk fills up while `core.train` writes its run folder (here: a file size limit, `RLIMIT_FSIZE`)",
     "one line naming the file that could not be written, exit code 2, no traceback; `status.json` says "
     "failed naming it; no partial file is left"),
    ("train-killed-mid-write",
     "`core.train` killed (SIGKILL) while it writes `model.safetensors`, of a new run or of an `--overwrite`",
     "Home, Compare, the sidebar of every page and `core.report` show the run as `died`, naming the pid and "
     "the leftovers; the next command that claims the run removes the `.tmp` file and the stale "
     "`.<run>.replacing` (the old run stays as it was)"),
    ("train-rejected-input-writes-nothing",
     "`core.train ... --out runs/bad` with an input error: no such label column, a bad option value, an "
     "unparsable number, a backbone that does not load",
     "one line, exit code 2; no folder is created (only a job's own folder, made by the app, records the "
     "failure)"),
    ("app-replace-with-upload",
     "Train page \"Replace it if it exists\" with a new upload, on a run that exists",
     "the old run stays whole while the job trains beside it on the new file; the new run swaps in when done"),
    ("upload-two-sessions-one-name",
     "two browser sessions staging uploads for the same new run name",
     "each session stages in its own folder; a job trains on exactly the file its session checked"),
    ("markdown-in-sample-text",
     "a data set whose sentences hold Markdown: links, images, headings, `$maths$`, code spans",
     "Traces shows the sentence as plain text: no link, image, heading or formula"),
    ("markdown-in-task-name",
     "a task name with Markdown (the sidebar caption under the run picker)",
     "shown as plain text"),
    ("markdown-in-run-link",
     "a link `?run=` naming no run, its value holding a backtick and Markdown",
     "a warning that quotes the value as plain text and shows the default run"),
    ("json-not-an-object",
     "a run's `config.json` = `[\"a\", 1]`, `status.json` = `[1, 2, 3]` or a job's `job.json` = `7`",
     "that run is named with the file and the fault on Home; Home, Compare and the Train page keep working"),
    ("cache-header-wrong-shape",
     "a run's `cache.npz` whose JSON header is valid but not the expected object: a list, `meta: 5` or `texts: 5`",
     "`ExitCache.load` refuses it naming the file and the field; Home lists that run as unreadable with the "
     "reason, Compare and Explore say it cannot be shown, and every other run works as usual"),
    ("pick-small-or-bad-rules",
     "`core.engine.metrics.pick` on a cache of 1 to 3 samples; `strategies=[\"bogus\"]`, `[]` or `[\"oracle\"]`",
     "below 20 dev samples the 95% intervals are null and the note says why; an unknown or empty rule list, or "
     "the Oracle alone, is a ValueError naming the known rules"),
    ("calibrate-bad-arguments",
     "`core.engine.calibrate.calibrate` with `calib_fraction=nan`, `epsilon=\"0.1\"`, PCEE `patience=100` on 6 layers, "
     "or `threshold=5` (the knob it searches)",
     "one ValueError sentence naming the argument and what is wrong with it; a PCEE patience that can only exit at "
     "the last layer says there was nothing to test, not that no setting passed"),
    ("bare-url-in-run-link",
     "a link `?run=` whose value holds bare URLs and an e-mail address (`http://evil.example`, "
     "`www.evil.example`, `mail@evil.example`)",
     "the warning quotes the value as plain text with no link, bare or not (an invisible word joiner inside each "
     "pattern stops Streamlit's autolinking)"),
    ("markdown-in-label-name",
     "label names holding Markdown (`**pos**`, `_neg_`)",
     "Traces shows them literally in its metrics (the label, the full model's answer, the prediction)"),
    ("unwritable-run-folder",
     "a job's run folder that cannot be written mid-run (here: `status.json` turned into a folder)",
     "the job is `failed` naming the file and the fault (kept under `.outcomes/`, so an app restart still says it); "
     "the job list and the queue keep working"),
    ("weights-damaged",
     "Playground on a run whose `model.safetensors` is truncated, empty or garbage",
     "one error naming the file and the fault (empty, truncated or not a safetensors file), no traceback"),
    ("train-file-empty",
     "`core.train --train-file` naming an empty file (0 bytes)",
     "one line naming the file, exit code 2, no traceback (`--debug` adds it)"),
    ("train-file-header-only",
     "`core.train --train-file` naming a file with a header row and no data rows",
     "one line naming the file, exit code 2, no traceback"),
    ("train-bad-metric",
     "`core.train --metric nonsense`",
     "one line naming the metric and the valid ones, exit code 2, no traceback"),
    ("predict-output-is-input",
     "`core.predict --output` naming its own `--input` or `--point` (also spelled with `./` or through a symlink), or a file of the point's run",
     "refused before any work, exit code 2, naming both options; the input stays byte for byte. An output that is no input is replaced atomically and the command says it replaced one"),
    ("point-label-names-reordered",
     "a point file whose `label_names` are reordered (`[\"pos\", \"neg\"]`), or whose `backbone` or `task` is not its run's",
     "refused when the point is loaded (core.predict, `EarlyExitPredictor.from_point`): one line naming the field and the run's value, exit code 2"),
    ("csv-extra-field",
     "a CSV or TSV data row with more fields than the header (`text,label` then `terrible,film,negative`)",
     "refused by core.data.tables's one reader (train, dev and predict files): one line naming the file and the first such line, and how to quote"),
    ("jsonl-text-not-string",
     "a JSONL text that is a list, an object, a number or true/false",
     "refused: one line naming the file, the column and the line, never read as the value's Python spelling"),
    ("predict-unreadable-stdin",
     "`core.predict --input -` fed bytes that are not UTF-8",
     "one line saying standard input is not UTF-8 and where, exit code 2, no traceback"),
    ("predict-output-unwritable",
     "`core.predict --output` on a read-only file system, on a full disk or on a folder; `--summary-json` on a folder",
     "refused before the model loads: one line naming the option and the path, exit code 2"),
    ("point-params-malformed",
     "point `params` of the wrong type (`{\"threshold\": [0.3]}`), missing (`{}`), a 400-digit integer, a budget layer `[3]` or `\"3.0\"`; a point nested 200,000 levels deep; `\"metric\": \"nonsense\"`",
     "refused before any work: one line naming the file and the field, exit code 2 (one check of the rule's declared params in `core.engine.registry.STRATEGIES` serves core.predict, core.export and `from_point`)"),
    ("point-precision-unknown",
     "a point file whose `precision` is not one the project runs (`\"int4\"`), whose `batch_size` is `0` or `\"32\"`, or a version-2 point without `precision`; `core.export --precision int4`, or `--precision int8` on a run without `cache-int8.npz`",
     "refused before the model loads: one line naming the file (or the option) and the field, with the precisions that exist (fp32, int8, fp16, bf16) or the `core.cache_variant` command that writes the missing cache, exit code 2"),
    ("export-out-unwritable",
     "`core.export --out` on a read-only file system or a folder; `--params '{\"threshold\": [1]}'`",
     "one line naming the option and the path or the knob, exit code 2, nothing written"),
    ("app-error-details",
     "an unexpected error inside the app",
     "the browser gets the error's type only (`client.showErrorDetails = \"type\"`); message and traceback go to the server log"),
    ("upload-over-limit",
     "an upload larger than the Train page's limit",
     "the server refuses it at the same limit the widget states (`server.maxUploadSize` = the page's 50 MB)"),
    ("offline-favicon",
     "the app opened without internet access",
     "the favicon is a file shipped with the app, so nothing is fetched from the internet"),
    ("labels-one-to-five",
     "integer labels 1..5 (no 0) in a user file",
     "five classes named \"1\"..\"5\" (the labels that occur), no empty class"),
    ("labels-mixed-kinds",
     "integer and name labels mixed in one file (`0`, `pos`, `1`)",
     "refused: one line naming the file and both kinds"),
    ("dev-label-not-in-train",
     "a dev file label that never occurs in the training file",
     "refused: one line naming the label, its row count and both files"),
    ("blank-text-cells",
     "empty or \"NaN\" text cells in a user file",
     "those rows are left out, counted in a warning recorded in `status.json` and shown on Home and the Train page"),
    ("digit-label-names",
     "a run whose label names are digits (\"0\"..\"4\", any integer-label file)",
     "every chart axis of label names is categorical: each class keeps its own row, the true label's included; "
     "label names and texts in chart hovers show as text, not as Plotly markup"),
    ("model-learned-nothing",
     "a run whose exits all predict one class, or all score at chance (e.g. one short epoch on a hard task)",
     "Home, Explore, Compare and the report say so in plain words, with what to try (more epochs or rows)"),
    ("many-sessions-at-once",
     "a classroom: 30 browser sessions of one server opening the same run and moving its knobs at once",
     "one loaded run serves every session: each sweep, bootstrap or table is made once while the others wait "
     "for it, and no session loses a value to another's eviction; `bench/bench_sessions.py` measures errors "
     "and knob-move-to-rerun times for 1, 10 and 30 sessions"),
]
IDS = [row[0] for row in TABLE]


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_backbone):
    root = tmp_path_factory.mktemp("bad-inputs")
    return {"backbone": tiny_backbone,
            "train_file": write_csv(root / "train.csv", 24, 0), "dev_file": write_csv(root / "dev.csv", 8, 1),
            "text_column": "review", "label_column": "sentiment", "root": root}


def _config(tiny, out, **over) -> dict:
    keys = ("backbone", "train_file", "dev_file", "text_column", "label_column")
    return {**{k: tiny[k] for k in keys}, "out": str(out), "batch_size": 8, "epochs": 1,
            "latency_samples": 0, **over}


def _argv(cfg: dict) -> list[str]:
    argv = []
    for k, v in cfg.items():
        argv += [f"--{k.replace('_', '-')}", str(v)]
    return argv


@pytest.fixture(scope="module")
def trained(tiny) -> Path:
    """One finished tiny run; each check works on its own copy."""
    return train(_config(tiny, tiny["root"] / "runs" / "trained"))


@pytest.fixture
def run(trained, tmp_path) -> Path:
    dest = tmp_path / "runs" / "old-run"
    shutil.copytree(trained, dest)
    return dest


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def siblings(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name != ".jobs.lock")


# ---- one check per row ------------------------------------------------------------------------------
def check_train_out_existing_bad_data(tiny, run, capsys):
    before = files(run)
    rc = train_main([*_argv(_config(tiny, run, label_column="no_such_label")), "--overwrite"])
    err = capsys.readouterr().err
    assert rc == 2 and "no_such_label" in err and "Traceback" not in err
    assert files(run) == before


def check_train_config_without_out(tiny, run, capsys):
    before = files(run)
    rc = train_main(["--config", str(run / "config.json"), "--max-train", "1"])
    err = capsys.readouterr().err
    assert rc == 2 and "--overwrite" in err
    assert files(run) == before


def check_train_typo_on_existing_run(tiny, run, capsys):
    before = files(run)
    for typo in (["--epochs", "abc"], ["--method", "nonsense"]):
        rc = train_main([*_argv(_config(tiny, run)), *typo])
        err = capsys.readouterr().err
        assert rc == 2 and typo[0].lstrip("-") in err and "Traceback" not in err
        assert files(run) == before
    # a replacement job (the job manager's staging folder beside the run) gets the failure there
    from core.runs.folders import staging_folder

    staging = staging_folder(run)
    staging.mkdir()
    (staging / "job.json").write_text('{"name": "old-run"}')
    assert train_main([*_argv(_config(tiny, run)), "--overwrite", "--epochs", "abc"]) == 2
    assert read_status(staging)["state"] == "failed" and files(run) == before


def check_train_existing_run_without_overwrite(tiny, run, capsys):
    before = files(run)
    rc = train_main(_argv(_config(tiny, run, seed=1)))
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert files(run) == before and siblings(run) == [run.name]


def check_train_overwrite_cancelled(tiny, run, capsys):
    from core.training.loop import TrainingCancelled

    before = files(run)
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > 3

    with pytest.raises(TrainingCancelled):
        train(_config(tiny, run, seed=1, epochs=20), stop=stop, overwrite=True)
    assert calls["n"] > 3  # it did start training
    assert files(run) == before and siblings(run) == [run.name]
    # a replacement that fails (bad backbone, found after the data loaded) leaves it too
    with pytest.raises(Exception):
        train(_config(tiny, run, backbone=str(tiny["root"] / "no-such-backbone")), overwrite=True)
    assert files(run) == before and siblings(run) == [run.name]


def check_train_overwrite_done(tiny, run, capsys):
    from core.engine.cache import ExitCache

    old = ExitCache.load(run).probs
    rc = train_main([*_argv(_config(tiny, run, seed=3)), "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert siblings(run) == [run.name]
    assert read_status(run)["state"] == "done"
    new = ExitCache.load(run)
    assert new.meta["seed"] == 3 and new.meta["run"] == run.name and not np.allclose(new.probs, old)


def _train_cmd(cfg: dict, *extra: str, script: str | None = None) -> list[str]:
    """`python -m core.train` with `cfg` as flags (or `python -c script` with them as its argv)."""
    head = [sys.executable, "-m", "core.train"] if script is None else [sys.executable, "-c", script]
    return [*head, *_argv(cfg), *extra]


def _wait(pred, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = pred()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def check_train_two_writers_one_out(tiny, tmp_path, capsys):
    from core.runs.folders import read_config
    from core.runs.jobs import JobManager

    out = tmp_path / "runs" / "same"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = [subprocess.Popen(_train_cmd(_config(tiny, out, seed=seed, epochs=500)), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for seed in (1, 2)]
    try:
        loser = _wait(lambda: next((p for p in procs if p.poll() is not None), None), 180, "one of the two to end")
        winner = next(p for p in procs if p is not loser)
        err = loser.stderr.read()
        lines = [line for line in err.splitlines() if line.startswith("core.train: error")]
        assert loser.returncode == 2 and "Traceback" not in err, err
        assert len(lines) == 1 and f"pid {winner.pid}" in lines[0] and str(out) in lines[0], err
        assert winner.poll() is None
        _wait(lambda: (out / "config.json").exists(), 30, "the winner's config.json")
        assert read_config(out)["seed"] == (1 if winner is procs[0] else 2)  # the folder is the winner's alone
        # a command that passed its checks while the other wrote is refused when it claims the run
        from core.runs.folders import ClaimRefused, RunClaim

        with pytest.raises(ClaimRefused, match=f"pid {winner.pid}"):
            RunClaim(out).acquire()
        # the app's Train queue goes through the same claim: it does not replace a run being written
        mgr = JobManager(out.parent, module="tests.job_probe", max_concurrent=1, max_queue=2)
        with pytest.raises(ValueError, match=f"pid {winner.pid}"):
            mgr.submit(out.name, ["--steps", 1], overwrite=True)
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(60)
    assert read_status(out)["state"] == "cancelled"
    # and a command line does not write into the folder of a job waiting in the queue
    mgr.submit("busy", ["--steps", 400, "--sleep", "0.05"])
    assert mgr.submit("waiting", ["--steps", 1]).state == "queued"
    rc = train_main(_argv(_config(tiny, mgr.root / "waiting")))
    err = capsys.readouterr().err
    assert rc == 2 and "queued" in err and "Traceback" not in err, err
    assert read_status(mgr.root / "waiting")["state"] == "queued"
    assert sorted(p.name for p in (mgr.root / "waiting").iterdir()) == ["job.json", "status.json"]
    mgr.cancel("waiting")
    mgr.cancel("busy")


def _no_larger_files(limit: int):
    """For a child process: every file it writes stops at `limit` bytes, as on a full disk (the write
    fails with EFBIG instead of the process being killed by SIGXFSZ)."""
    def limit_files():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return limit_files


def check_train_disk_full(tiny, trained, tmp_path):
    out = tmp_path / "runs" / "full"
    weights = (trained / "model.safetensors").stat().st_size
    small = max(p.stat().st_size for p in trained.iterdir() if p.name != "model.safetensors")
    assert small < weights // 2  # every file fits under the limit but the weights
    res = subprocess.run(_train_cmd(_config(tiny, out)), cwd=REPO, capture_output=True, text=True, timeout=300,
                         preexec_fn=_no_larger_files(weights // 2),
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    lines = [line for line in res.stderr.splitlines() if line.startswith("core.train: error")]
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(lines) == 1 and f"cannot write {out / 'model.safetensors'}" in lines[0], res.stderr
    status = read_status(out)
    assert status["state"] == "failed" and str(out / "model.safetensors") in status["error"], status
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]


# a command line that SIGKILLs itself while it writes model.safetensors: after the bytes are in the partial
# file, before it is renamed into place (as when the OOM killer or `kill -9` strikes mid-write)
KILLED_AT_WEIGHTS = """
import os, signal, sys
fsync = os.fsync
def fsync_or_die(fd):
    if ".model.safetensors." in os.readlink(f"/proc/self/fd/{fd}"):
        os.kill(os.getpid(), signal.SIGKILL)
    fsync(fd)
os.fsync = fsync_or_die
from core.training.cli import main
sys.exit(main(sys.argv[1:]))
"""


def check_train_killed_mid_write(tiny, run, monkeypatch, capsys):
    from core.app import rundata
    from core.engine import report
    from core.runs.folders import staging_folder

    root, before = run.parent, files(run)
    killed = root / "killed"
    res = subprocess.run(_train_cmd(_config(tiny, killed, seed=2), script=KILLED_AT_WEIGHTS), cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == -signal.SIGKILL, res.stderr
    status = read_status(killed)
    partial = [p for p in killed.iterdir() if p.name.endswith(".tmp")]
    assert status["state"] == "running" and [p.name[:19] for p in partial] == [".model.safetensors."]
    # every listing says so: the pages' run list, Home's table, the report
    info = {i.name: i for i in rundata.scan_runs(root)}["killed"]
    assert info.state == "died" and f"pid {status['pid']}" in info.died and partial[0].name in info.died
    row = rundata.runs_table([info], {}).iloc[0]
    assert row["state"] == "died" and partial[0].name in row["note"]
    runs, problems = report.load_runs(root)
    assert [r.name for r in runs] == [run.name], problems
    assert any(p.startswith("killed: did not finish") and f"pid {status['pid']}" in p for p in problems), problems
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    at = open_app()
    assert at.dataframe[0].value.set_index("run")["state"]["killed"] == "died"
    for page in ("pages/compare.py", "pages/explore.py", "pages/traces.py"):
        at = open_app(page, run="killed", **{"c.runs": "killed"})
        assert any("killed" in w.value and "did not finish" in w.value for w in at.sidebar.warning), page
        if page == "pages/compare.py":
            assert any("did not finish" in w.value for w in at.main.warning)
    # killed during --overwrite: the old run stays whole, its staging folder is left behind
    res = subprocess.run(_train_cmd(_config(tiny, run, seed=4), "--overwrite", script=KILLED_AT_WEIGHTS),
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    staging = staging_folder(run)
    assert res.returncode == -signal.SIGKILL and staging.is_dir(), res.stderr
    assert files(run) == before and {i.name: i for i in rundata.scan_runs(root)}[run.name].state == "done"
    # the next command that claims a run removes what the killed one left there
    from core.runs.folders import RunClaim

    with RunClaim(run) as claim:
        assert claim.removed == [staging] and not staging.exists()
    with RunClaim(killed) as claim:
        assert claim.removed == partial and not partial[0].exists()
    assert train_main([*_argv(_config(tiny, killed)), "--overwrite"]) == 0, capsys.readouterr().err
    assert read_status(killed)["state"] == "done" and siblings(run) == sorted([run.name, "killed"])
    assert not [p.name for p in killed.iterdir() if p.name.startswith(".")]


def check_train_rejected_input_writes_nothing(tiny, tmp_path, capsys):
    root = tmp_path / "runs"
    out = root / "bad"
    for bad in ({"label_column": "stars"}, {"lr": "0"}, {"epochs": "abc"}, {"metric": "nonsense"},
                {"backbone": str(tmp_path / "no-such-backbone")}, {"train_file": str(tmp_path / "missing.csv")}):
        argv = _argv(_config(tiny, out, **bad))
        rc = train_main(argv)
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("core.train: error")]
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (bad, err)
        assert not root.exists(), (bad, sorted(p.name for p in root.rglob("*")))
    # a job's own folder (the app made it, with job.json) is where the job's failure is shown
    out.mkdir(parents=True)
    (out / "job.json").write_text('{"name": "bad"}')
    assert train_main(_argv(_config(tiny, out, label_column="stars"))) == 2
    assert read_status(out)["state"] == "failed" and "stars" in read_status(out)["error"]


def _form_argv(tiny, out: Path, **over) -> list[str]:
    """What the Train page submits for an uploaded file (the file's final path in the run folder)."""
    cfg = _config(tiny, out, train_file=str(out / "uploads" / "train.csv"), **over)
    cfg.pop("dev_file")
    return _argv(cfg)


def check_app_replace_with_upload(tiny, run, monkeypatch):
    """Through the Train page: upload a new file, name the existing run, tick Replace, start."""
    import time

    from core.app import rundata
    from core.runs.folders import read_config
    from tests.helpers import open_train, poll_until_final

    monkeypatch.setenv(rundata.ROOT_ENV, str(run.parent))
    before = files(run)
    new_csv = Path(write_csv(tiny["root"] / "replacement.csv", 30, 5)).read_bytes()
    at = open_train()
    at.radio(key="tr.source").set_value("Upload a file").run()
    at.file_uploader(key="tr.up_train").upload("mine.csv", new_csv, "text/csv").run()
    at.text_input(key="tr.backbone").input(tiny["backbone"])
    for key, v in {"tr.epochs": 1, "tr.batch_size": 8, "tr.latency_samples": 0}.items():
        at.number_input(key=key).set_value(v)
    at.text_input(key="tr.run_name").input(run.name).run()
    assert at.button(key="tr.start").disabled  # an existing run needs Replace ticked
    at.checkbox(key="tr.overwrite").check().run()
    assert "--overwrite" in at.code[0].value
    at.button(key="tr.start").click().run()
    assert not at.exception and any("started" in x.value for x in at.success), [e.value for e in at.error]
    assert files(run) == before  # the old run is whole while the new one trains
    at = poll_until_final(at)
    deadline = time.time() + 30
    while time.time() < deadline and (run.parent / f".{run.name}.replacing").exists():
        time.sleep(0.2)  # the job swaps the new run in just before it exits
    assert (run / "uploads" / "train.csv").read_bytes() == new_csv
    derived = read_config(run)["derived"]
    assert derived["n_train"] + derived["n_dev"] == 30  # the new file's rows (the old run had 24 + 8)
    assert read_status(run)["state"] == "done" and sorted(p.name for p in run.parent.iterdir()
                                                           if not p.name.startswith(".")) == [run.name]


def check_upload_two_sessions_one_name(tiny, tmp_path, capsys):
    from core.app import train_form

    root = tmp_path / "runs"
    mine, theirs = write_csv(tmp_path / "a.csv", 20, 1), write_csv(tmp_path / "b.csv", 40, 2)
    a, b = train_form.staging_dir(root, "same", "sessA"), train_form.staging_dir(root, "same", "sessB")
    train_form.save_upload(Path(mine).read_bytes(), "a.csv", a, role="train")
    train_form.save_upload(Path(theirs).read_bytes(), "b.csv", b, role="train")
    assert a != b
    out = root / "same"
    rc = train_form.main([*_form_argv(tiny, out), train_form.UPLOADS_FROM, str(a), "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    assert (out / "uploads" / "train.csv").read_bytes() == Path(mine).read_bytes()
    assert (b / "train.csv").read_bytes() == Path(theirs).read_bytes()  # the other session's file stays
    # only a folder under <root>/.uploads is taken
    rc = train_form.main([*_form_argv(tiny, root / "other"), train_form.UPLOADS_FROM, str(tmp_path), "--out", str(root / "other")])
    assert rc == 2 and "must name a folder under" in capsys.readouterr().err


HOSTILE = ("see [click](http://evil.example/a) ![img](http://evil.example/i.png) `tick` *em* __strong__ "
           "$x^2$ :red[red] <b>bold</b> &lt; \n# Heading\n- item")


def rendered(body: str) -> str:
    """What a CommonMark renderer makes of an element's Markdown body (HTML)."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table").enable("strikethrough").render(body)


def assert_plain(body: str, value: str) -> None:
    """`body` shows `value` as plain text: no link, image, heading, emphasis, code or maths from it."""
    html = rendered(body)
    for tag in ("<a ", "<img", "<h1", "<h2", "<em>", "<code>", "<ul>", "<b>"):
        assert tag not in html, (tag, body, html)
    assert not re.search(r"(?<!\\)\$", body), body  # no unescaped $ (Streamlit renders $...$ as LaTeX)
    assert not autolinks(body), (autolinks(body), body)
    assert "http://evil.example/a" in html.replace(WORD_JOINER, "")  # the characters themselves are all there


WORD_JOINER = "\u2060"  # what core.app.plain.md puts inside bare-URL patterns (invisible)
# Streamlit's Markdown (remark-gfm: mdast-util-gfm-autolink-literal, as in its frontend bundle) turns these
# into links in the text *after* escapes are resolved, so escaping alone does not stop them. JavaScript's
# \w is ASCII; the e-mail pattern's look-behind is left out (this finds a superset).
GFM_AUTOLINK = (re.compile(r"(https?://|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.I | re.A),
                re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)", re.A))


def visible_text(body: str) -> str:
    """The characters a Markdown body shows (tags dropped, entities resolved)."""
    from html import unescape

    return unescape(re.sub(r"<[^>]+>", "", rendered(body))).strip()


def autolinks(body: str) -> list[str]:
    """What Streamlit's Markdown would turn into links in `body`'s text: bare URLs, www., e-mail addresses."""
    text = visible_text(body)
    return [m.group(0) for rx in GFM_AUTOLINK for m in rx.finditer(text)]


@pytest.fixture
def hostile_root(tmp_path, monkeypatch):
    from core.app import rundata
    from tests.conftest import synthetic_cache

    cache = synthetic_cache(n=40, num_layers=3, k=2, seed=7, task=HOSTILE)
    cache.texts = [HOSTILE + f" {i}" for i in range(cache.N)]
    root = tmp_path / "runs"
    cache.save(root / "hostile")
    from core.runs.io import atomic_write_json

    atomic_write_json(root / "hostile" / "config.json", {"task": HOSTILE, "method": "joint", "backbone": "b"})
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    return root


def open_app(page: str | None = None, **params):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    if page:
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def check_markdown_in_sample_text(hostile_root):
    at = open_app("pages/traces.py", run="hostile")
    quotes = [m.value for m in at.markdown if "evil" in m.value]
    assert quotes, [m.value for m in at.markdown]
    for body in quotes:
        assert_plain(body, HOSTILE)


def check_markdown_in_task_name(hostile_root):
    at = open_app(run="hostile")
    bodies = [c.value for c in at.sidebar.caption if "evil" in c.value]
    assert bodies
    for body in bodies:
        assert_plain(body, HOSTILE)


def check_markdown_in_run_link(hostile_root):
    link = "x` [click](http://evil.example/a) ![i](http://evil.example/i.png) $x$"
    at = open_app(run=link)
    bodies = [w.value for w in at.sidebar.warning if "evil" in w.value]
    assert bodies and "hostile" in bodies[0]
    for body in bodies:
        assert_plain(body, link)


def check_json_not_an_object(tmp_path, monkeypatch):
    from core.app import rundata
    from core.runs.io import atomic_write_json
    from tests.conftest import write_synthetic_run

    root = tmp_path / "runs"
    write_synthetic_run(root / "good", n=60, num_layers=3, seed=1)
    (write_synthetic_run(root / "bad-config", n=60, num_layers=3, seed=2) / "config.json").write_text('["a", 1]')
    (write_synthetic_run(root / "bad-status", n=60, num_layers=3, seed=3) / "status.json").write_text("[1, 2, 3]")
    job = root / "bad-job"
    job.mkdir()
    (job / "job.json").write_text("7")
    (job / "status.json").write_text('"running"')
    atomic_write_json(root / "bad-job" / "config.json", {"task": "x"})
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    at = open_app(run="good")
    notes = at.dataframe[0].value.set_index("run")["note"]
    for name, file in (("bad-config", "config.json"), ("bad-status", "status.json")):
        assert file in notes[name] and "JSON object" in notes[name], notes
    for page in ("pages/compare.py", "pages/train.py", "pages/explore.py"):
        open_app(page, run="good")


def _rewrite_cache_header(run: Path, change) -> Path:
    """Replace the JSON header of `run`'s cache.npz by `change(header)`, arrays untouched."""
    import json

    path = run / "cache.npz"
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    header = change(json.loads(bytes(arrays["header"]).decode("utf-8")))
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)
    np.savez_compressed(path, **arrays)
    return run


def check_cache_header_wrong_shape(tmp_path, monkeypatch):
    from core.app import rundata
    from core.engine.cache import ExitCache
    from tests.conftest import write_synthetic_run

    root = tmp_path / "runs"
    write_synthetic_run(root / "good", n=60, num_layers=3, seed=1)
    faults = {"header-list": (lambda h: [h], "the header must be a JSON object, got a list"),
              "meta-number": (lambda h: {**h, "meta": 5}, "'meta' must be a JSON object, got a number"),
              "texts-number": (lambda h: {**h, "texts": 5}, "'texts' must be a list")}
    for i, (name, (change, words)) in enumerate(faults.items()):
        _rewrite_cache_header(write_synthetic_run(root / name, n=60, num_layers=3, seed=2 + i), change)
        with pytest.raises(ValueError, match=re.escape(words)) as e:
            ExitCache.load(root / name)
        assert str(root / name / "cache.npz") in str(e.value)
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    table = open_app(run="good").dataframe[0].value.set_index("run")
    for name, (_, words) in faults.items():
        assert table.at[name, "state"] == "unreadable", table
        assert "cache.npz" in table.at[name, "note"] and words in table.at[name, "note"], table.at[name, "note"]
    assert table.at["good", "samples"] == 60 and table.at["good", "state"] == "done"
    compare = open_app("pages/compare.py", run="good")
    compare.multiselect(key="c.runs").set_value(["good", *faults]).run()
    assert not compare.exception, [e.value for e in compare.exception]
    errors = [e.value for e in compare.error]
    assert all(any(name in e and "cache.npz" in e for e in errors) for name in faults), errors
    assert compare.dataframe  # the good run's tables are drawn
    assert not open_app("pages/explore.py", run="good").error
    at = open_app("pages/explore.py", run="meta-number")
    assert any("cannot be shown" in e.value and "meta" in e.value for e in at.error), [e.value for e in at.error]


def check_pick_small_or_bad_rules():
    from core.engine import metrics
    from core.engine.cache import ExitCache
    from tests.conftest import synthetic_cache

    base = synthetic_cache(n=200, num_layers=4, k=2, seed=3)
    for n in (1, 2, 3):
        small = ExitCache(probs=base.probs[:n], labels=base.labels[:n], label_names=base.label_names, meta=base.meta)
        op = metrics.pick(small, max_drop=0.01)
        assert op.score_interval is None and op.delta_interval is None, (n, op.score_interval)
        assert f"{n} dev sample" in op.interval_note and f"at least {metrics.MIN_INTERVAL_N}" in op.interval_note
        assert metrics.OperatingPoint.from_json(op.to_json()).score_interval is None
    op = metrics.pick(base, max_drop=0.01)  # enough samples: an interval of real width, and the sample count
    assert op.score_interval[0] < op.score_interval[1] and "200 dev samples" in op.interval_note
    for rules, words in ((["bogus"], "unknown rule(s) 'bogus'"), ([], "names no rule"),
                         (["oracle"], "the Oracle reads the labels")):
        with pytest.raises(ValueError, match=re.escape(words)) as e:
            metrics.pick(base, max_drop=0.01, strategies=rules)
        assert "budget" in str(e.value) and "entropy" in str(e.value) and "voting" in str(e.value), e.value
    assert metrics.pick(base, max_drop=0.01, strategies=["oracle", "entropy"]).strategy == "entropy"


def check_calibrate_bad_arguments():
    from core.engine import calibrate as CAL
    from tests.conftest import synthetic_cache

    cache = synthetic_cache(n=200, num_layers=6, seed=2)
    for kw, words in ((dict(strategy="entropy", calib_fraction=float("nan")), "calib_fraction must lie in (0, 1)"),
                      (dict(strategy="entropy", epsilon="0.1"), "epsilon must be a number in (0, 1)"),
                      (dict(strategy="pcee", patience=100), "pcee.patience = 100 can never be met on a 6-layer"),
                      (dict(strategy="entropy", threshold=5), "calibrate chooses entropy's threshold itself")):
        with pytest.raises(ValueError, match=re.escape(words)):
            CAL.calibrate(cache, **{"epsilon": 0.1, **kw})
    last = CAL.calibrate(cache, "pcee", epsilon=0.1, patience=6)  # in range, but can only exit at layer 6
    assert last.searched == 0 and last.fallback and last.params == {"layer": 6}
    assert "nothing to test" in last.guarantee and "passed" not in last.guarantee, last.guarantee


def check_bare_url_in_run_link(hostile_root):
    link = "x http://evil.example/a HTTPS://www.evil.example/b www.evil.example mail@evil.example"
    at = open_app(run=link)
    bodies = [w.value for w in at.sidebar.warning if "evil" in w.value]
    assert bodies and "hostile" in bodies[0]
    for body in bodies:
        assert_plain(body, link)
        assert link in visible_text(body).replace(WORD_JOINER, "")


def check_markdown_in_label_name(tmp_path, monkeypatch):
    from core.app import rundata
    from core.engine.cache import ExitCache
    from tests.conftest import synthetic_cache

    names = ["**pos**", "_neg_"]
    base = synthetic_cache(n=40, num_layers=3, k=2, seed=7)
    ExitCache(probs=base.probs, labels=base.labels, label_names=names, texts=base.texts,
              meta=base.meta).save(tmp_path / "runs" / "marked")
    monkeypatch.setenv(rundata.ROOT_ENV, str(tmp_path / "runs"))
    at = open_app("pages/traces.py", run="marked")
    shown = {m.label: m.value for m in at.metric if m.label in ("Label", "Full model says", "and predicts")}
    assert len(shown) == 3, [(m.label, m.value) for m in at.metric]
    for label, body in shown.items():
        html = rendered(body)
        assert "<strong>" not in html and "<em>" not in html, (label, body, html)
        assert visible_text(body) in names, (label, body)


def check_unwritable_run_folder(tmp_path, monkeypatch):
    import time

    from core.runs import jobs as jobs_mod
    from core.runs.jobs import JobManager

    mgr = JobManager(tmp_path / "runs", module="tests.job_probe", max_concurrent=1, max_queue=2,
                     term_timeout=1.0)
    mgr.submit("stuck", ["--steps", 200, "--sleep", "0.02"])
    nxt = mgr.submit("next", ["--steps", 1, "--sleep", "0.01"])
    assert nxt.state == "queued"
    deadline = time.time() + 20
    while not mgr.get("stuck").step and time.time() < deadline:
        time.sleep(0.05)
    status = mgr.root / "stuck" / "status.json"
    while not status.is_dir():  # every later write of status.json fails, as on a read-only folder
        try:
            status.unlink(missing_ok=True)
            status.mkdir()
        except FileExistsError:  # the job wrote it again in between
            pass
    write_json = jobs_mod.atomic_write_json

    def refuse_in_stuck(path, obj):  # and the manager cannot write job.json there either
        if Path(path).parent.name == "stuck":
            raise PermissionError(13, "Permission denied", str(path))
        return write_json(path, obj)

    monkeypatch.setattr(jobs_mod, "atomic_write_json", refuse_in_stuck)
    jobs = {}
    while time.time() < deadline:
        jobs = {j.name: j for j in mgr.poll()}  # never raises
        if jobs["stuck"].state == "failed" and jobs["next"].state == "done":
            break
        time.sleep(0.05)
    assert jobs["stuck"].state == "failed", jobs["stuck"]
    assert "status.json" in jobs["stuck"].error and "Is a directory" in jobs["stuck"].error
    assert jobs["next"].state == "done"  # the queue went on
    assert "status.json" in mgr.logs("stuck")  # the job's own report of the fault
    # an app restart (a new manager, no memory of the process) still knows why it failed
    monkeypatch.setattr(jobs_mod, "_OUTCOMES", {})
    monkeypatch.setattr(jobs_mod, "_CHILDREN", {})
    again = JobManager(tmp_path / "runs", module="tests.job_probe").get("stuck")
    assert again.state == "failed" and "cannot be written" in again.error and "killed" not in again.error, again.error


def check_weights_damaged(run, monkeypatch):
    from core.app import rundata
    from core.serving import playground

    weights = run / "model.safetensors"
    good = weights.read_bytes()
    monkeypatch.setenv(rundata.ROOT_ENV, str(run.parent))
    for bad, fault in ((good[: len(good) // 2], "truncated"), (b"", "empty"), (b"\x00garbage" * 50, "truncated")):
        weights.write_bytes(bad)
        with pytest.raises(ValueError, match=fault) as e:
            playground.load(run)
        assert "model.safetensors" in str(e.value)
        at = open_app("pages/playground.py", run=run.name)
        assert any("model.safetensors" in x.value and fault in x.value for x in at.error), [x.value for x in at.error]


def _cli_fails_in_one_line(argv: list[str], capsys, *needles: str) -> str:
    rc = train_main(argv)
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.startswith("core.train: error")]
    assert len(lines) == 1 and all(n in lines[0] for n in needles), err
    return err


def check_train_file_empty(tiny, tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    argv = _argv(_config(tiny, tmp_path / "runs" / "e", train_file=str(empty)))
    _cli_fails_in_one_line(argv, capsys, "empty.csv", "empty")
    assert train_main([*argv, "--debug"]) == 2
    assert "Traceback" in capsys.readouterr().err


def check_train_file_header_only(tiny, tmp_path, capsys):
    head = tmp_path / "head.csv"
    head.write_text("review,sentiment\n")
    _cli_fails_in_one_line(_argv(_config(tiny, tmp_path / "runs" / "h", train_file=str(head))), capsys,
                           "head.csv", "no data rows")


def check_train_bad_metric(tiny, tmp_path, capsys):
    _cli_fails_in_one_line(_argv(_config(tiny, tmp_path / "runs" / "m", metric="nonsense")), capsys,
                           "nonsense", "accuracy")


# ---- core.predict, core.export, point files, the data reader (issue 20) ------------------------------
def _point(run: Path, folder: Path, strategy: str = "entropy", params: dict | None = None,
           edit: dict | None = None) -> Path:
    """A point file on `run` (core.export), with the fields in `edit` replaced as a hand edit would."""
    import json

    from core.serving.export import write_point

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "point.json"
    write_point(run, strategy, {"threshold": 0.5} if params is None else params, path)
    if edit:
        data = json.loads(path.read_text())
        data.update(edit)
        path = folder / f"point-{'-'.join(edit)}.json"
        path.write_text(json.dumps(data))
    return path


def _fails_in_one_line(main, argv: list[str], capsys, prog: str, *needles: str) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith(f"{prog}: error")]
    assert rc == 2 and "Traceback" not in err and len(lines) == 1, err
    assert all(n in lines[0] for n in needles), (needles, err)
    return lines[0]


def _two_texts(path: Path) -> Path:
    path.write_text('review,sentiment\n"the film was good, and fine",pos\nthe film was bad and dull,neg\n')
    return path


def _in_small_mounts(tmp_path: Path, cases: list) -> tuple[list, bool, str] | None:
    """Run `main(argv)` of each (module, argv) case in one child process that has `tmp_path/ro` (a
    read-only tmpfs) and `tmp_path/full` (a tmpfs filled to the last byte) mounted in a mount namespace
    of its own: (exit codes, whether torch was imported, stderr). None where this machine cannot mount
    (not root, no unshare)."""
    import json
    import shlex
    import subprocess
    import sys

    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir(exist_ok=True)
    full.mkdir(exist_ok=True)
    if not shutil.which("unshare") or subprocess.run(
            ["unshare", "-m", "sh", "-c", f"mount -t tmpfs -o size=16k tmpfs {shlex.quote(str(ro))}"],
            capture_output=True, check=False).returncode:
        return None
    code = ("import json, sys\nfrom importlib import import_module\n"
            "rcs = [import_module(m).main(argv) for m, argv in json.loads(sys.argv[1])]\n"
            "print(json.dumps({'rc': rcs, 'torch': 'torch' in sys.modules}))\n")
    q_ro, q_full = shlex.quote(str(ro)), shlex.quote(str(full))
    script = (f"mount -t tmpfs -o size=64k tmpfs {q_ro} && mount -o remount,ro {q_ro} && "
              f"mount -t tmpfs -o size=32k tmpfs {q_full} && "
              f"(dd if=/dev/zero of={q_full}/fill bs=1k count=64 2>/dev/null; true) && exec \"$0\" -c \"$1\" \"$2\"")
    r = subprocess.run(["unshare", "-m", "sh", "-c", script, sys.executable, code, json.dumps(cases)], cwd=REPO,
                       capture_output=True, text=True, timeout=300, check=False,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.stdout.strip(), r.stderr
    got = json.loads(r.stdout.strip().splitlines()[-1])
    return got["rc"], got["torch"], r.stderr


def check_predict_output_is_input(run, tmp_path, capsys, monkeypatch):
    from core.serving.predict import main as predict_main

    point = _point(run, tmp_path / "points")
    data = _two_texts(tmp_path / "in.csv")
    (tmp_path / "link.csv").symlink_to(data)
    before = {p: p.read_bytes() for p in (point, data, run / "config.json")}
    monkeypatch.chdir(tmp_path)  # the `./` spelling, relative to where the command runs
    for output, other in (("./in.csv", "--input"), (str(tmp_path / "link.csv"), "--input"),
                          (str(tmp_path / "points" / ".." / "points" / "point.json"), "--point"),
                          (str(run / "config.json"), "the run's config.json")):
        _fails_in_one_line(predict_main, ["--point", str(point), "--input", str(data), "--output", output],
                           capsys, "core.predict", f"--output {output} is the same file as {other}")
        _fails_in_one_line(predict_main, ["--point", str(point), "--input", str(data), "--output", str(tmp_path / "o.jsonl"),
                                          "--summary-json", output], capsys, "core.predict", "--summary-json", other)
    assert {p: p.read_bytes() for p in before} == before and not (tmp_path / "o.jsonl").exists()
    # an output that is no input: written, and replaced (atomically) on the next run, saying so
    argv = ["--point", str(point), "--input", str(data), "--output", "o.jsonl"]
    assert predict_main(argv) == 0 and "replaced" not in capsys.readouterr().err
    (tmp_path / "o.jsonl").write_text("an older file\n")
    assert predict_main(argv) == 0 and "(replaced the file that was there)" in capsys.readouterr().err
    assert len((tmp_path / "o.jsonl").read_text().splitlines()) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".o.jsonl")) == []  # no temp left


def check_point_label_names_reordered(run, tmp_path, capsys):
    from core.serving.export import read_point
    from core.serving.predict import main as predict_main
    from core.serving.predictor import EarlyExitPredictor

    data = _two_texts(tmp_path / "in.csv")
    good = _point(run, tmp_path / "points")
    assert read_point(good).label_names == ["neg", "pos"]
    for field, value, words in (("label_names", ["pos", "neg"], "the same names in another order"),
                                ("backbone", "bert-base-uncased", "backbone"), ("task", "sst2", "task")):
        bad = _point(run, tmp_path / "points", edit={field: value})
        out = tmp_path / f"{field}.jsonl"
        line = _fails_in_one_line(predict_main, ["--point", str(bad), "--input", str(data), "--output", str(out)],
                                  capsys, "core.predict", str(bad), field, words)
        assert "is not the run's" in line and not out.exists()
        with pytest.raises(ValueError, match=f"{field} .* is not the run's"):
            EarlyExitPredictor.from_point(bad)


def check_point_precision_unknown(run, tmp_path, capsys):
    import json

    from core.serving.export import main as export_main
    from core.serving.predict import main as predict_main
    from core.serving.predictor import EarlyExitPredictor

    data = _two_texts(tmp_path / "in.csv")
    for edit, words in (({"precision": "int4"}, "precision 'int4' is not one of fp32, int8, fp16, bf16"),
                        ({"batch_size": 0}, "batch_size must be a positive integer or null, got 0"),
                        ({"batch_size": "32"}, "batch_size must be a positive integer or null, got '32' (a string)")):
        bad = _point(run, tmp_path / "points", edit=edit)
        out = tmp_path / "o.jsonl"
        _fails_in_one_line(predict_main, ["--point", str(bad), "--input", str(data), "--output", str(out)],
                           capsys, "core.predict", str(bad), words)
        assert not out.exists()
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            EarlyExitPredictor.from_point(bad)
    v2 = json.loads(_point(run, tmp_path / "points").read_text())
    del v2["precision"]
    (tmp_path / "no-precision.json").write_text(json.dumps(v2))
    _fails_in_one_line(predict_main, ["--point", str(tmp_path / "no-precision.json"), "--input", str(data), "--output",
                                      str(tmp_path / "o.jsonl")], capsys, "core.predict", "missing field 'precision'")
    argv = ["--run", str(run), "--strategy", "entropy", "--params", '{"threshold": 0.5}', "--out", str(tmp_path / "e.json")]
    _fails_in_one_line(export_main, [*argv, "--precision", "int4"], capsys, "core.export",
                       "--precision 'int4' is not one of fp32, int8")
    _fails_in_one_line(export_main, [*argv, "--precision", "int8"], capsys, "core.export",
                       "no int8 cache (cache-int8.npz)", "python -m core.cache_variant")
    assert not (tmp_path / "e.json").exists()


def check_csv_extra_field(tiny, run, tmp_path, capsys):
    from core.data.tasks import load_task
    from core.serving.predict import main as predict_main
    from core.serving.predict import read_input

    first = tmp_path / "first.csv"   # the file: the extra field on the only data row
    first.write_text("text,label\nterrible,film,negative\n")
    with pytest.raises(ValueError, match=r"first\.csv: line 2 has 3 comma-separated fields but the header has 2 "
                                         r"\(text, label\); put a text that holds commas in double quotes"):
        read_input(str(first))
    later = tmp_path / "later.csv"   # a training file: the extra field further down
    rows = [f"the film was good {i},pos" if i % 2 else f"the film was bad {i},neg" for i in range(20)]
    rows[6] = "the film was long,slow and bad,neg"
    later.write_text("review,sentiment\n" + "\n".join(rows) + "\n")
    with pytest.raises(ValueError, match=r"later\.csv: line 8 has 3 comma-separated fields"):
        load_task("x", train_file=later)
    good = _labelled_csv(tmp_path / "good.csv", ["neg", "pos"] * 10)
    with pytest.raises(ValueError, match=r"later\.csv: line 8 has 3"):     # the dev file: the same reader
        load_task("x", train_file=good, dev_file=later)
    tsv = tmp_path / "extra.tsv"
    tsv.write_text("text\tlabel\nterrible\tfilm\tnegative\n")
    with pytest.raises(ValueError, match=r"extra\.tsv: line 2 has 3 tab-separated fields"):
        read_input(str(tsv))
    _cli_fails_in_one_line(_argv(_config(tiny, tmp_path / "runs" / "x", train_file=str(later))), capsys,
                           "later.csv", "line 8 has 3 comma-separated fields")
    quoted = tmp_path / "quoted.csv"  # quoted commas are one field, as before
    quoted.write_text('text,label\n"terrible,film",negative\n')
    assert read_input(str(quoted))[0] == ["terrible,film"]
    point = _point(run, tmp_path / "p")
    _fails_in_one_line(predict_main, ["--point", str(point), "--input", str(first), "--output", str(tmp_path / "o.jsonl")],
                       capsys, "core.predict", "first.csv: line 2 has 3")


def check_jsonl_text_not_string(run, tmp_path, capsys):
    import json

    from core.data.tasks import load_task
    from core.serving.predict import main as predict_main
    from core.serving.predict import read_input

    for value, kind in ((["a", "b"], "a list"), ({"a": 1}, "an object"), (5, "a number"), (True, "true/false")):
        path = tmp_path / "texts.jsonl"  # a blank line 2: rows are counted by their line in the file
        path.write_text(json.dumps({"text": "a fine film"}) + "\n\n" + json.dumps({"text": value}) + "\n")
        with pytest.raises(ValueError, match=rf"texts\.jsonl: the text in column 'text' at line 3 is {kind} "):
            read_input(str(path))
    rows = [{"review": f"the film was {'good' if i % 2 else 'bad'} {i}", "sentiment": ["neg", "pos"][i % 2]}
            for i in range(20)]
    rows[4]["review"] = ["the film", "was bad"]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ValueError, match=r"train\.jsonl: the text in column 'review' at line 5 is a list "
                                         r"\(\[\"the film\", \"was bad\"\]\), not a string"):
        load_task("x", train_file=train)
    point = _point(run, tmp_path / "p")
    _fails_in_one_line(predict_main, ["--point", str(point), "--input", str(tmp_path / "texts.jsonl"),
                                      "--output", str(tmp_path / "o.jsonl")], capsys, "core.predict", "line 3")
    assert not (tmp_path / "o.jsonl").exists()


def check_predict_unreadable_stdin(run, tmp_path):
    import subprocess
    import sys

    point = _point(run, tmp_path / "p")
    noise = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes()  # /dev/urandom's kind
    r = subprocess.run([sys.executable, "-m", "core.predict", "--point", str(point), "--input", "-",
                        "--output", str(tmp_path / "o.jsonl")], cwd=REPO, input=noise, capture_output=True,
                       timeout=300, check=False, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "standard input is not UTF-8 text" in err and "line" in err and not (tmp_path / "o.jsonl").exists()


def check_predict_output_unwritable(run, tmp_path, capsys):
    from core.serving.predict import main as predict_main

    point = _point(run, tmp_path / "p")
    data = str(_two_texts(tmp_path / "in.csv"))
    base = ["--point", str(point), "--input", data]
    _fails_in_one_line(predict_main, [*base, "--output", str(tmp_path)], capsys, "core.predict",
                       f"--output: {tmp_path} is a folder")
    _fails_in_one_line(predict_main, [*base, "--output", str(tmp_path / "o.jsonl"), "--summary-json", str(tmp_path)],
                       capsys, "core.predict", f"--summary-json: {tmp_path} is a folder")
    _fails_in_one_line(predict_main, [*base, "--output", str(tmp_path / "no" / "o.jsonl")], capsys, "core.predict",
                       "--output: folder", "does not exist")
    assert not (tmp_path / "o.jsonl").exists()
    ro, full = tmp_path / "ro" / "o.jsonl", tmp_path / "full" / "o.jsonl"
    got = _in_small_mounts(tmp_path, [["core.predict", [*base, "--output", str(ro)]],
                                      ["core.predict", [*base, "--output", str(full)]],
                                      ["core.predict", [*base, "--output", str(tmp_path / "o.jsonl"),
                                                        "--summary-json", str(tmp_path / "ro" / "s.json")]]])
    if got is None:  # no mounts here: /sys refuses new files even to root
        _fails_in_one_line(predict_main, [*base, "--output", "/sys/o.jsonl"], capsys, "core.predict",
                           "--output: cannot write in /sys")
        pytest.skip("cannot mount a read-only or a full file system here (needs root and unshare); "
                    "checked /sys and folders only")
    rcs, torch_loaded, err = got
    lines = [line for line in err.splitlines() if line.startswith("core.predict: error")]
    assert rcs == [2, 2, 2] and "Traceback" not in err and len(lines) == 3, err
    assert f"--output: cannot write in {ro.parent} (Read-only file system)" in lines[0]
    assert f"--output: {full.parent} has 0 bytes free" in lines[1] and "disk is full" in lines[1]
    assert f"--summary-json: cannot write in {ro.parent} (Read-only file system)" in lines[2]
    assert not torch_loaded  # refused before the model (or torch) was loaded
    assert not (tmp_path / "o.jsonl").exists()


def check_point_params_malformed(run, tmp_path, capsys):
    import json

    from core.serving.export import read_point, validate
    from core.serving.predict import main as predict_main
    from core.serving.predictor import EarlyExitPredictor

    data = str(_two_texts(tmp_path / "in.csv"))
    budget = _point(run, tmp_path / "b", "budget", {"layer": 2})
    cases = [
        (_point(run, tmp_path / "p1", edit={"params": {"threshold": [0.3]}}),
         "params: entropy.threshold must be a number, got [0.3] (a list)"),
        (_point(run, tmp_path / "p2", edit={"params": {}}), "params: missing 'threshold'"),
        (_point(run, tmp_path / "p3", edit={"params": {"threshold": 10 ** 400}}),
         "params: entropy.threshold is too large to be a number here, got a 401-digit integer"),
        (_point(run, tmp_path / "p4", "budget", {"layer": 2}, edit={"params": {"layer": [3]}}),
         "params: budget.layer must be a whole number, got [3] (a list)"),
        (_point(run, tmp_path / "p5", "budget", {"layer": 2}, edit={"params": {"layer": "3.0"}}),
         "params: budget.layer must be a whole number, got '3.0' (a string)"),
        (_point(run, tmp_path / "p6", edit={"metric": "nonsense"}), "metric 'nonsense' is not one core.engine.metrics scores"),
    ]
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    cases.append((deep, "nested too deeply"))
    for i, (path, words) in enumerate(cases):
        out = tmp_path / f"o{i}.jsonl"
        _fails_in_one_line(predict_main, ["--point", str(path), "--input", data, "--output", str(out)], capsys,
                           "core.predict", str(path), words)
        assert not out.exists()
        with pytest.raises(ValueError, match=re.escape(words)):   # the same check, wherever a point is read
            EarlyExitPredictor.from_point(path)
    assert read_point(budget).params == {"layer": 2}
    with pytest.raises(ValueError, match=re.escape("upload.json: params: budget.layer must be a whole number")):
        validate({**json.loads(budget.read_text()), "params": {"layer": "3.0"}}, where="upload.json")


def check_export_out_unwritable(run, tmp_path, capsys):
    from core.serving.export import main as export_main

    base = ["--run", str(run), "--strategy", "entropy"]
    _fails_in_one_line(export_main, [*base, "--out", str(tmp_path)], capsys, "core.export",
                       f"--out: {tmp_path} is a folder")
    _fails_in_one_line(export_main, [*base, "--params", '{"threshold":[1]}', "--out", str(tmp_path / "p.json")],
                       capsys, "core.export", "--params: entropy.threshold must be a number, got [1] (a list)")
    _fails_in_one_line(export_main, [*base, "--out", str(run / "cache.npz")], capsys, "core.export",
                       "is the same file as the run's cache.npz")
    assert not (tmp_path / "p.json").exists()
    got = _in_small_mounts(tmp_path, [["core.export", [*base, "--out", str(tmp_path / "ro" / "p.json")]],
                                      ["core.export", [*base, "--out", str(tmp_path / "full" / "p.json")]]])
    if got is None:
        _fails_in_one_line(export_main, [*base, "--out", "/sys/p.json"], capsys, "core.export",
                           "--out: cannot write in /sys")
        pytest.skip("cannot mount a read-only or a full file system here (needs root and unshare); "
                    "checked /sys and a folder only")
    rcs, _, err = got
    lines = [line for line in err.splitlines() if line.startswith("core.export: error")]
    assert rcs == [2, 2] and "Traceback" not in err and len(lines) == 2, err
    assert f"--out: cannot write in {tmp_path / 'ro'} (Read-only file system)" in lines[0]
    assert f"--out: {tmp_path / 'full'} has 0 bytes free" in lines[1]


def _streamlit_config() -> dict:
    import tomllib

    return tomllib.loads((REPO / ".streamlit" / "config.toml").read_text(encoding="utf-8"))


def check_app_error_details():
    assert _streamlit_config()["client"]["showErrorDetails"] in ("type", "none")


def check_upload_over_limit():
    from core.app import train_form

    assert _streamlit_config()["server"]["maxUploadSize"] == train_form.UPLOAD_LIMIT_MB
    assert f"max_upload_size=train_form.UPLOAD_LIMIT_MB" in (REPO / "pages" / "train.py").read_text()


def check_offline_favicon():
    import ast

    tree = ast.parse((REPO / "app.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "set_page_config"]
    assert len(calls) == 1
    icon = next(k.value for k in calls[0].keywords if k.arg == "page_icon")
    source = ast.unparse(icon)
    assert "assets" in source and "favicon.png" in source, source  # a local file, not ":name:" or an emoji
    from PIL import Image

    with Image.open(REPO / "assets" / "favicon.png") as im:
        assert im.size[0] == im.size[1] >= 32


def _labelled_csv(path: Path, labels, texts=None) -> Path:
    import csv

    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["review", "sentiment"])
        for i, lab in enumerate(labels):
            w.writerow([texts[i] if texts else f"the film was good {i}", lab])
    return path


def check_labels_one_to_five(tmp_path):
    from core.data.tasks import load_task

    path = _labelled_csv(tmp_path / "five.csv", [1, 2, 3, 4, 5] * 6)
    task = load_task("five", train_file=path)
    assert task.label_names == ["1", "2", "3", "4", "5"]
    assert set(task.train["label"]) == {0, 1, 2, 3, 4}


def check_labels_mixed_kinds(tiny, tmp_path, capsys):
    path = _labelled_csv(tmp_path / "mixed.csv", [0, "pos", 1] * 8)
    _cli_fails_in_one_line(_argv(_config(tiny, tmp_path / "runs" / "mx", train_file=str(path))), capsys,
                           "mixed.csv", "mix integers", "'pos'")


def check_dev_label_not_in_train(tiny, tmp_path, capsys):
    train_csv = _labelled_csv(tmp_path / "tr.csv", ["neg", "pos"] * 10)
    dev_csv = _labelled_csv(tmp_path / "dv.csv", ["neg", "pos", "meh"] * 3)
    _cli_fails_in_one_line(_argv(_config(tiny, tmp_path / "runs" / "dv", train_file=str(train_csv),
                                         dev_file=str(dev_csv))), capsys,
                           "dv.csv", "'meh' (3 rows)", "never occurs in the training file", "tr.csv")


def check_blank_text_cells(tiny, tmp_path, monkeypatch):
    import time

    from core.app import rundata
    from core.runs.jobs import JobManager

    texts = [f"the film was {'good' if i % 2 else 'bad'} {i}" for i in range(24)]
    texts[3], texts[8], texts[13] = "", "   ", "NaN"
    path = _labelled_csv(tmp_path / "blank.csv", ["neg", "pos"] * 12, texts)
    root = tmp_path / "runs"
    mgr = JobManager(root, max_concurrent=1)
    cfg = _config(tiny, root / "x", train_file=str(path), dev_file=str(path))
    cfg.pop("out")
    mgr.submit("blanks", _argv(cfg))
    deadline = time.time() + 240
    while mgr.get("blanks").active and time.time() < deadline:
        time.sleep(0.5)
    job = mgr.get("blanks")
    assert job.state == "done", (job.error, mgr.logs("blanks"))
    status = read_status(root / "blanks")
    assert any("3 of 24 rows left out" in w and "blank.csv" in w for w in status["warnings"]), status
    assert any("3 of 24 rows left out" in w for w in job.warnings)
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    home = open_app(run="blanks")
    assert any("3 of 24 rows left out" in w.value for w in home.warning), [w.value for w in home.warning]
    page = open_app("pages/train.py")
    assert any("3 of 24 rows left out" in w.value for w in page.warning), [w.value for w in page.warning]


def check_digit_label_names(tmp_path, monkeypatch):
    from core.app import figures, rundata
    from core.app.figures import heatmap
    from core.engine.cache import ExitCache
    from tests.conftest import synthetic_cache

    base = synthetic_cache(n=30, num_layers=3, k=5, seed=11)
    cache = ExitCache(probs=base.probs, labels=base.labels, label_names=[str(j) for j in range(5)],
                      texts=base.texts, meta=base.meta)
    cache.save(tmp_path / "runs" / "digits")
    run = rundata.load_run(tmp_path / "runs" / "digits")
    i = int(np.flatnonzero(cache.labels == 3)[0])
    fig = figures.sample_figure(run, i, rundata.sample_exits(run, i, {s: run.default_params(s) for s in run.strategies}))
    assert fig.layout.yaxis.type == "category"
    assert list(fig.data[0].y) == ["0", "1", "2", "3 ✓", "4"]
    pg = heatmap(cache.probs[i], cache.label_names, exit_layer=2, label="3")
    # Plotly reads tags in every text: sample texts and label names in hovers are escaped
    hostile = rundata.load_run(tmp_path / "runs" / "digits")
    hostile.cache.label_names[0] = '<a href="http://evil.example/">x</a>'
    table = rundata.trace_table(hostile, np.full(30, 2), np.zeros(30, dtype=int))
    table["text"] = '<a href="http://evil.example/">click</a>'
    hover = figures.samples_scatter(table, 3).data[0].customdata
    assert all("<a" not in str(row[2]) and "&lt;a" in str(row[2]) for row in hover)
    assert pg.layout.xaxis.type == "category" and list(pg.data[0].x) == ["0", "1", "2", "3", "4"]


def _cache_like(base, probs):
    from core.engine.cache import ExitCache

    return ExitCache(probs=probs, labels=base.labels, label_names=base.label_names, texts=base.texts,
                     layer_ms=base.layer_ms, embed_ms=base.embed_ms, meta=base.meta)


def check_model_learned_nothing(tmp_path, monkeypatch):
    from core.app import rundata
    from core.engine import report
    from core.engine.health import assess
    from tests.conftest import synthetic_cache, write_synthetic_run

    base = synthetic_cache(n=200, num_layers=4, k=2, seed=5)
    assert assess(base) == []  # a model that learned something is not flagged
    one = base.probs.copy()
    one[..., 0], one[..., 1] = 0.8, 0.2  # every exit says class 0 for every sample
    rng = np.random.default_rng(0)
    coin = rng.dirichlet([1, 1], size=base.probs.shape[:2]).astype(np.float32)  # guesses
    root = tmp_path / "runs"
    for name, probs, words in (("one-class", one, "answers 'negative' for nearly every sample"),
                               ("at-chance", coin, "No exit does better than always answering")):
        cache = _cache_like(base, probs)
        found = assess(cache)
        assert len(found) == 1 and words in found[0] and "more epochs" in found[0], found
        write_synthetic_run(root / name, n=200, num_layers=4, seed=5)
        cache.save(root / name)
    write_synthetic_run(root / "fine", n=200, num_layers=4, seed=5)
    monkeypatch.setenv(rundata.ROOT_ENV, str(root))
    for page in (None, "pages/explore.py"):
        for name, words in (("one-class", "answers"), ("at-chance", "No exit does better")):
            at = open_app(page, run=name)
            assert any(words in w.value for w in at.warning), [w.value for w in at.warning]
        assert not any("more epochs" in w.value for w in open_app(page, run="fine").warning)
    at = open_app("pages/compare.py", run="one-class")
    at.multiselect(key="c.runs").set_value(["one-class", "at-chance", "fine"]).run()
    flagged = [w.value for w in at.warning if "more epochs" in w.value]
    assert len(flagged) == 2 and "**one-class**" in flagged[0] + flagged[1], flagged
    text, _ = report.build(root, tmp_path / "docs")
    assert "learned nothing usable" in text and "- one-class: Every exit answers" in text
    assert "- fine:" not in text


def check_many_sessions_at_once():
    from core.app import rundata
    from core.engine.cache import ExitCache
    from tests.helpers import at_once, random_cache

    probs, labels, _ = random_cache(0, n=60, num_layers=4, k=2)
    run = rundata.RunData(name="toy", path=None, cache=ExitCache(
        probs=probs, labels=labels, label_names=["neg", "pos"], texts=["t"] * 60,
        meta={"task": "toy", "metric": "accuracy"}))
    got = at_once(lambda i: run.sweeps(), threads=30)   # each session's script runs in its own thread
    assert all(g is got[0] for g in got) and run.has_sweeps and len(got[0])


CHECKS = {row: globals()["check_" + row.replace("-", "_")] for row in IDS}


@pytest.mark.parametrize("row", IDS)
def test_bad_input(row, request):
    fn = CHECKS[row]
    names = fn.__code__.co_varnames[:fn.__code__.co_argcount]
    fn(*(request.getfixturevalue(n) for n in names))


def test_the_doc_lists_exactly_these_rows():
    """docs/BAD_INPUTS.md's table is TABLE: same ids, same order, same words."""
    rows = []
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\|\s*`([a-z0-9-]+)`\s*\|(.*)\|(.*)\|\s*$", line)
        if m:
            rows.append((m.group(1), m.group(2).strip(), m.group(3).strip()))
    assert rows == TABLE


def doc_text() -> str:
    """The Markdown table of TABLE (what docs/BAD_INPUTS.md holds between its intro and its end)."""
    lines = ["| id | bad input | what it gets |", "|---|---|---|"]
    lines += [f"| `{i}` | {bad} | {gets} |" for i, bad, gets in TABLE]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("value", [HOSTILE, "- a list", "# a heading", "1) one", "12. twelve", "> quote",
                                   "www.evil.example", "mail@evil.example", "a | b", "~~gone~~", "a\\*b",
                                   "http://evil.example", "see HTTPS://evil.example/a?b=1.", "(www.evil.example)",
                                   "x,mail@evil.example.org"])
def test_md_renders_user_text_as_its_characters(value):
    from html import unescape

    from core.app.plain import md

    html = rendered(md(value))
    assert re.fullmatch(r"<p>.*</p>\n", html, re.S), html  # one paragraph, nothing else
    assert "<" not in html[3:-5], html  # no tag inside it
    assert not autolinks(md(value)), autolinks(md(value))  # nor a bare link Streamlit would make
    assert unescape(html[3:-5]).replace(WORD_JOINER, "") == " ".join(value.splitlines())
