"""Bad inputs and what each gets: the table docs/BAD_INPUTS.md shows is TABLE below, and every row is
walked by `test_bad_input` (one check function per row). `test_the_doc_lists_exactly_these_rows` keeps
the two in step.

Runs use the tiny random BERT of tests/test_train.py (hidden 32, 3 layers), so each check takes seconds.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.runs import read_status
from core.train import main as train_main
from core.train import train
from tests.test_train import write_csv, write_tiny_backbone

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
]
IDS = [row[0] for row in TABLE]


# ---- fixtures ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs")
    return {"backbone": write_tiny_backbone(root / "bert"),
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


def check_train_existing_run_without_overwrite(tiny, run, capsys):
    before = files(run)
    rc = train_main(_argv(_config(tiny, run, seed=1)))
    assert rc == 2 and "--overwrite" in capsys.readouterr().err
    assert files(run) == before and siblings(run) == [run.name]


def check_train_overwrite_cancelled(tiny, run, capsys):
    from core.train import TrainingCancelled

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
    from core.cache import ExitCache

    old = ExitCache.load(run).probs
    rc = train_main([*_argv(_config(tiny, run, seed=3)), "--overwrite"])
    assert rc == 0, capsys.readouterr().err
    assert siblings(run) == [run.name]
    assert read_status(run)["state"] == "done"
    new = ExitCache.load(run)
    assert new.meta["seed"] == 3 and new.meta["run"] == run.name and not np.allclose(new.probs, old)


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
