"""`accelerate launch` with two CPU processes (gloo): core.predict shards rows and writes one output equal
to the one-process output; core.train trains data-parallel into one run folder, and its first step's
loss equals the one-process loss on the same global batch.

Tiny random BERT (hidden 32, 3 layers) with dropout switched off, so a training step is deterministic
given its rows. Each launch starts two Python processes, so these tests take tens of seconds."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from core.runs.folders import read_config, read_status
from core.runs.io import read_jsonl
from core.serving.predict import main as predict_main
from core.training.cli import main as train_main
from tests.conftest import write_tiny_backbone
from tests.helpers import write_csv

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def launch(module: str, args: list[str]) -> subprocess.CompletedProcess:
    """`accelerate launch` of `python -m module` on two CPU processes (torchrun + gloo)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", _port(), "-m", module, *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


def in_process(main, args: list[str], capsys) -> str:
    """The same command on one process, run in this one (what the two processes are compared with)."""
    assert main(args) == 0
    return capsys.readouterr().out


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    bert = Path(write_tiny_backbone(root / "bert"))
    cfg = json.loads((bert / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)   # deterministic steps
    (bert / "config.json").write_text(json.dumps(cfg))
    return {"root": root, "backbone": str(bert), "train_file": write_csv(root / "train.csv", 40, 0),
            "dev_file": write_csv(root / "dev.csv", 13, 1)}


def train_args(data, out: Path, batch_size: int, *extra) -> list[str]:
    return ["--backbone", data["backbone"], "--train-file", data["train_file"], "--dev-file", data["dev_file"],
            "--text-column", "review", "--label-column", "sentiment", "--method", "joint", "--epochs", "1",
            "--batch-size", str(batch_size), "--dropout", "0", "--latency-samples", "0", "--out", str(out), *extra]


def first_loss(folder: Path) -> float:
    rec = [r for r in read_jsonl(folder / "metrics.jsonl") if r["kind"] == "train"][0]
    assert rec["step"] == 1
    return rec["loss"]


def test_two_process_training_writes_one_run_and_matches_the_first_step(data, capsys):
    root = data["root"]
    two = root / "two-proc"
    launch("core.train", train_args(data, two, 8))                      # 2 x 8 rows = global batch 16
    one = root / "one-proc"
    in_process(train_main, train_args(data, one, 16), capsys)          # 1 x 16 rows, the same 16 rows
    half = root / "one-proc-half"
    in_process(train_main, train_args(data, half, 8), capsys)          # a different (smaller) batch
    assert read_status(two)["state"] == "done"
    assert {p.name for p in two.iterdir()} >= {"config.json", "status.json", "metrics.jsonl", "cache.npz",
                                                 "model.safetensors"}
    assert not any(p.name.startswith(".") for p in two.iterdir()), "no stray temporary files"
    assert read_config(two)["derived"]["devices"]["num_processes"] == 2
    assert read_config(two)["derived"]["total_steps"] == read_config(one)["derived"]["total_steps"] == 3
    # Same weights (seeded init), same 16 rows, no dropout: the losses differ only by float32 rounding of
    # differently shaped sums (each process pads its 8 rows to its own length; a mean of two means instead of
    # one mean), a few ulps of a value near 0.7, so 1e-5 relative is ~100x that and ~1000x below the gap to
    # a different batch (checked against the 8-row run below).
    l2, l1, lh = first_loss(two), first_loss(one), first_loss(half)
    print(f"first-step loss: two processes {l2!r}, one process {l1!r}, one process half batch {lh!r}")
    assert l2 == pytest.approx(l1, rel=1e-5), (l2, l1)
    assert abs(lh - l1) > 1e-3, "the control batch should give a clearly different loss"


def test_two_process_predict_equals_one_process(data, tmp_path, capsys):
    from core.serving.export import write_point

    run = data["root"] / "for-predict"
    in_process(train_main, train_args(data, run, 8), capsys)
    point = tmp_path / "p.json"
    write_point(run, "entropy", {"threshold": 0.95}, point)
    rows = [f"the film was {w} and the movie is {v}" for w, v in zip(["good", "bad", "dull", "fun", "great"] * 3,
                                                                       ["very", "not", "a", "the", "so"] * 3)]
    src = tmp_path / "in.csv"
    src.write_text("text\n" + "".join(f"{r} {'!' * i}\n" for i, r in enumerate(rows)))   # 15 rows, varied lengths
    args = ["--point", str(point), "--input", str(src), "--batch-size", "4", "--compare-full"]
    out1 = in_process(predict_main, [*args, "--output", str(tmp_path / "one.jsonl")], capsys)
    r2 = launch("core.predict", [*args, "--output", str(tmp_path / "two.jsonl")])
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert [x["row"] for x in two] == list(range(15))
    assert [(x["prediction"], x["exit_layer"]) for x in two] == [(x["prediction"], x["exit_layer"]) for x in one]
    assert [x["probability"] for x in two] == pytest.approx([x["probability"] for x in one], abs=1e-5)
    assert not list(tmp_path.glob("two.jsonl.part*")), "shard files are cleaned up"
    assert "rows: 15" in r2.stdout and "rows: 15" in out1
