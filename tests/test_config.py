"""core.training.config: the torch-free option table's one argv serializer, shared by the recorded command and
the Train form, and the `--out` reader."""
import shlex

import pytest

from core.app import train_form
from core.training.config import command_line, out_from_argv, parse_cli, resolve_config, to_argv


@pytest.mark.parametrize("values", [
    {"method": "leebert", "optimizer": "blo", "epochs": 2, "lr": 5e-5, "lte": True},
    {"method": "joint", "bypass": True, "bypass_dim": 8, "max_train": 100, "save_weights": False},
    {"method": "two_stage", "stage2_epochs": 1, "weight_decay": 0.01},
])
def test_recorded_command_and_form_argv_are_one_serialization(values):
    """The form (its widgets start at the method's defaults) writes the recorded command's flags without
    --out, and both parse back to the same configuration."""
    form = {k: v for k, v in train_form.method_defaults(values["method"]).items() if k != "out"}
    argv = train_form.build_argv({**form, **values})
    cfg = resolve_config({**values, "out": "checkpoints/x"})
    recorded = shlex.split(command_line(cfg))
    assert recorded[:3] == ["python", "-m", "core.train"]
    i = recorded.index("--out")
    assert recorded[i + 1] == "checkpoints/x"
    assert recorded[3:i] + recorded[i + 2:] == argv
    again = resolve_config({k: v for k, v in parse_cli([*argv, "--out", "checkpoints/x"]).items() if k != "command"})
    assert {k: again[k] for k in cfg if k not in ("notes",)} == {k: cfg[k] for k in cfg if k not in ("notes",)}


def test_to_argv_keeps_defaults_out_but_the_always_passed():
    assert to_argv({"task": "rotten_tomatoes", "epochs": 3, "bypass": False}) == ["--task", "rotten_tomatoes"]
    assert to_argv({"bypass": True, "lte": False, "save_weights": False}) == ["--bypass", "--no-save-weights"]


def test_out_from_argv():
    assert out_from_argv(["--epochs", "1", "--out", "a/b"]) == "a/b"
    assert out_from_argv(["--out=a/c", "--lr", "1e-5"]) == "a/c"
    assert out_from_argv(["--out", "x", "--out", "y"]) == "y"          # the last one, as argparse reads it
    assert out_from_argv(["--epochs", "1", "--out"]) is None
