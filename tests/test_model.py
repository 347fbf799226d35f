"""core.models.multi_exit: exits, pooling, BADGE bypasses (Eq. 1-2), LTE heads, parameter groups, save/load."""
import json

import pytest
import torch

from core.models.multi_exit import ACTIVATIONS, EXIT_KINDS, ModelConfig, MultiExitModel
from core.runs.folders import CONFIG_FILE
from tests.conftest import write_tiny_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


WORDS = "the a film movie good bad great dull funny boring is was and but not very it this".split()


def tiny_bert(folder, **kw):
    """The shared tiny encoder (tests/conftest.py) over WORDS with the Python WordPiece tokenizer."""
    return write_tiny_backbone(folder, words=WORDS, punctuation=".,!?'", pad_vocab=False, fast=False, **kw)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return tiny_bert(tmp_path_factory.mktemp("tiny") / "bert")


TEXTS = ["the film was very good!", "a dull , boring movie", "funny", "it is not great but it was fun"]


def make(backbone, **kw):
    torch.manual_seed(0)
    return MultiExitModel(ModelConfig(backbone=backbone, num_labels=3, **kw)).eval()


def inputs(model, texts=TEXTS):
    return dict(model.tokenize(texts, padding=True, return_tensors="pt"))


@pytest.mark.parametrize("kind", EXIT_KINDS)
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_forward_shapes_and_padding_invariance(backbone, kind, pooling):
    model = make(backbone, exit_kind=kind, pooling=pooling)
    x = inputs(model)
    with torch.no_grad():
        out = model(**x)
        assert out.logits.shape == (4, 3, 3) and out.confidence is None
        # a sentence alone (no padding) gets the same logits as inside the padded batch
        for j, t in enumerate(TEXTS):
            alone = model(**inputs(model, [t])).logits[0]
            torch.testing.assert_close(alone, out.logits[j], atol=1e-5, rtol=0)


def test_bad_config_values_raise():
    for bad in (dict(exit_kind="conv"), dict(pooling="max"), dict(bypass_act="softsign"),
                dict(num_labels=1), dict(bypass_dim=0), dict(dropout=1.0)):
        with pytest.raises(ValueError, match="ModelConfig"):
            ModelConfig(**bad)
    with pytest.raises(ValueError, match="unknown field"):
        ModelConfig.from_dict({"exit_kinds": "linear"})


def test_fresh_bypass_is_identity(backbone):
    plain = make(backbone)
    with_bp = make(backbone, bypass=True)
    with_bp.load_state_dict(plain.state_dict(), strict=False)  # same backbone and exits
    x = inputs(plain)
    with torch.no_grad():
        torch.testing.assert_close(with_bp(**x).logits, plain(**x).logits, atol=1e-6, rtol=0)


@pytest.mark.parametrize("act", list(ACTIVATIONS))
def test_bypass_feeds_only_the_exit(backbone, act):
    """Eq. 1-2: exit m reads LN_m(B_m(H_{m-1}) + H_{m,F}); layer m+1 still reads H_m = LN_m(H_{m,F})."""
    model = make(backbone, bypass=True, bypass_act=act)
    for bp in model.bypasses:
        torch.nn.init.normal_(bp.up.weight, std=0.5)
    x = inputs(model)
    with torch.no_grad():
        got = model(**x).logits
        hs = model.encoder(**x, output_hidden_states=True).hidden_states  # HF's own H_0 .. H_L
        mask = x["attention_mask"].float()[..., None]
        for m in range(model.num_layers):
            _, pre_ln = model.runner.run_layer(m, hs[m], x["attention_mask"])
            h_prime = model.runner.final_ln(m, model.bypasses[m](hs[m]) + pre_ln)
            pooled = (h_prime * mask).sum(1) / mask.sum(1)
            want = model.exits[m].classifier(pooled)
            torch.testing.assert_close(got[:, m], want, atol=1e-5, rtol=0)
            plain = model.exits[m].classifier((hs[m + 1] * mask).sum(1) / mask.sum(1))
            assert not torch.allclose(plain, want, atol=1e-3)


def test_bypass_learns_from_zero_init(backbone):
    model = make(backbone, bypass=True).train()
    model(**inputs(model)).logits.sum().backward()
    assert all(bp.up.weight.grad.abs().sum() > 0 for bp in model.bypasses)


def test_lte_confidence_in_unit_interval_and_detached(backbone):
    model = make(backbone, lte=True).train()
    out = model(**inputs(model))
    assert out.confidence.shape == (4, 3)
    assert ((out.confidence > 0) & (out.confidence < 1)).all()
    out.confidence.sum().backward()
    groups = model.param_groups()
    assert all(p.grad is not None for p in groups["lte"])
    assert all(p.grad is None for p in groups["backbone"] + groups["exits"])


def test_param_groups_partition_the_parameters(backbone):
    model = make(backbone, bypass=True, lte=True, exit_kind="mlp")
    groups = model.param_groups()
    assert set(groups) == {"backbone", "exits", "bypasses", "lte"}
    ids = [id(p) for ps in groups.values() for p in ps]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert make(backbone).param_groups()["bypasses"] == []


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_save_and_from_run_roundtrip(backbone, tmp_path, dtype):
    model = make(backbone, bypass=True, lte=True, exit_kind="mha")
    for p in model.parameters():  # move every weight off its init so the check means something
        p.data.add_(0.01 * torch.randn_like(p))
    (tmp_path / CONFIG_FILE).write_text(json.dumps({"task": "rotten_tomatoes", "seed": 3}))
    model.save_pretrained(tmp_path, dtype=getattr(torch, dtype))
    run_cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    assert run_cfg["task"] == "rotten_tomatoes" and run_cfg["model"]["exit_kind"] == "mha"
    back = MultiExitModel.from_run(tmp_path)
    assert back.cfg == model.cfg and not back.training
    x = inputs(model)
    with torch.no_grad():
        a, b = model(**x), back(**x)
    tol = 0 if dtype == "float32" else 2e-2
    torch.testing.assert_close(b.logits, a.logits, atol=tol, rtol=0)
    torch.testing.assert_close(b.confidence, a.confidence, atol=tol, rtol=0)
    # without config.json the weights file's own metadata is enough
    (tmp_path / CONFIG_FILE).unlink()
    assert MultiExitModel.from_run(tmp_path).cfg == model.cfg


def test_from_run_errors(tmp_path, backbone):
    with pytest.raises(ValueError, match="no model.safetensors"):
        MultiExitModel.from_run(tmp_path)
    make(backbone).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / CONFIG_FILE).read_text())
    cfg["model"]["bypass"] = True  # config and weights disagree
    (tmp_path / CONFIG_FILE).write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit"):
        MultiExitModel.from_run(tmp_path)
    with pytest.raises(ValueError, match="save dtype"):
        make(backbone).save_pretrained(tmp_path / "x", dtype="bfloat16")


def test_distilbert_backbone(tmp_path):
    folder = tiny_bert(tmp_path / "distil", family="distilbert", layers=2)
    model = make(folder, bypass=True)
    x = inputs(model)
    x.pop("token_type_ids", None)
    assert model(**x).logits.shape == (4, 2, 3)


@pytest.mark.integration
def test_default_backbone_model():
    torch.manual_seed(0)
    model = MultiExitModel.from_config({"num_labels": 2, "bypass": True, "lte": True}).eval()
    assert model.num_layers == 6 and model.hidden_size == 384
    with torch.no_grad():
        out = model(**inputs(model, ["a gripping film", "dull"]))
    assert out.logits.shape == (2, 6, 2) and out.confidence.shape == (2, 6)


def test_the_option_lists_name_what_the_model_builds():
    """core.training.config (torch-free, read by the CLI and the Train form) lists exactly the model's choices."""
    from core.training.config import ACTIVATION_NAMES

    assert tuple(ACTIVATIONS) == ACTIVATION_NAMES
    assert set(EXIT_KINDS) == {"linear", "mlp", "mha"}
