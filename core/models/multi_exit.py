"""The multi-exit model: a backbone encoder with one exit classifier after every layer.

    ids ─► embed ─► layer 1 ─► layer 2 ─► ... ─► layer L
                      │  H_1      │  H_2             │  H_L
                      ▼           ▼                  ▼
                    exit 1      exit 2     ...     exit L        logits [B, L, K]
                   (+ LTE)     (+ LTE)            (+ LTE)        confidence [B, L] (optional)

Options (all in the flat `ModelConfig`, saved under "model" in every run's config.json):
- exit_kind: `linear` (dropout + linear on the pooled vector; PCEE-BERT, LeeBERT), `mlp` (one hidden
  layer; Sun et al. 2021) or `mha` (FastBERT-style: project to a small width, self-attention over the
  layer's tokens, pool, dense + tanh, classifier; BADGE's "MHA exit", width 32).
- pooling: what the exit reads, `cls` (first token) or `mean` over non-padding tokens (default: on the
  sentence-embedding MiniLM backbone first-token exits stay at chance in the shallow layers).
- bypass: BADGE block-wise bypasses (Eq. 1-2). Exit m reads H'_m = LN_m(B_m + H_{m,F}) with
  B_m = g1(H_{m-1} W_down) W_up, while H_m = LN_m(H_{m,F}) goes on to layer m+1; LN_m is layer m's own
  final LayerNorm, so one pass yields both. W_up (and its bias) start at zero: a fresh bypass is the
  identity and H'_m = H_m.
- lte: BERxiT-style learned-exit heads, sigmoid(w · pooled + b) in [0, 1] per layer. They read the
  pooled vector DETACHED, so the confidence loss trains only the LTE heads and never reshapes the
  features the exits and the backbone learn (BERxiT's LTE is a light module on top of a trained model).

The model runs the backbone one layer at a time through `core.models.backbones.LayerRunner`; `embed` and
`layer_step` are the same steps `forward` takes, so the early-exit predictor runs exactly this code.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from core.models.backbones import DEFAULT_BACKBONE, load_backbone, make_runner, max_tokens
from core.runs.folders import CONFIG_FILE, WEIGHTS_FILE
from core.runs.io import atomic_write_bytes, atomic_write_json, read_json
from core.training.config import EXIT_KINDS, POOLINGS  # noqa: F401  (the name lists live with the options)

ACTIVATIONS = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "swish": nn.SiLU,
    "leaky_relu": nn.LeakyReLU,
    "identity": nn.Identity,
}
MHA_DIM, MHA_HEADS = 32, 2  # BADGE appendix: MHA exit bottleneck 32


@dataclass
class ModelConfig:
    backbone: str = DEFAULT_BACKBONE  # alias, local folder or hub id (core.models.backbones.resolve_backbone)
    num_labels: int = 2
    exit_kind: str = "linear"         # linear | mlp | mha
    pooling: str = "mean"             # cls | mean (over non-padding tokens)
    dropout: float = 0.1              # dropout inside the exit heads
    bypass: bool = False              # BADGE block-wise bypasses
    bypass_dim: int = 16              # bottleneck r
    bypass_act: str = "gelu"          # g1: gelu | relu | tanh | swish | leaky_relu | identity
    lte: bool = False                 # learned-exit confidence heads
    max_length: int = 128             # tokenizer truncation
    exit_dim: int = 0                 # mlp hidden width / mha width; 0 = default (H for mlp, 32 for mha)

    def __post_init__(self):
        def bad(msg):
            raise ValueError(f"ModelConfig: {msg}")
        if self.exit_kind not in EXIT_KINDS:
            bad(f"unknown exit_kind {self.exit_kind!r}; valid: {', '.join(EXIT_KINDS)}")
        if self.pooling not in POOLINGS:
            bad(f"unknown pooling {self.pooling!r}; valid: {', '.join(POOLINGS)}")
        if self.bypass_act not in ACTIVATIONS:
            bad(f"unknown bypass_act {self.bypass_act!r}; valid: {', '.join(ACTIVATIONS)}")
        if int(self.num_labels) < 2:
            bad(f"num_labels must be >= 2, got {self.num_labels}")
        if int(self.bypass_dim) < 1:
            bad(f"bypass_dim must be >= 1, got {self.bypass_dim}")
        if not 0.0 <= float(self.dropout) < 1.0:
            bad(f"dropout must be in [0, 1), got {self.dropout}")
        if int(self.max_length) < 2:
            bad(f"max_length must be >= 2, got {self.max_length}")
        if int(self.exit_dim) < 0:
            bad(f"exit_dim must be >= 0, got {self.exit_dim}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        if not isinstance(d, dict):
            raise ValueError(f"ModelConfig.from_dict needs a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"ModelConfig: unknown field(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**d)


class ExitOutput(NamedTuple):
    logits: torch.Tensor                 # [B, L, K]
    confidence: torch.Tensor | None      # [B, L] in [0, 1] (LTE heads) or None


# ---- helpers ---------------------------------------------------------------------------------------
def pool(tokens: torch.Tensor, attention_mask: torch.Tensor | None, kind: str) -> torch.Tensor:
    """[B, T, H] -> [B, H]: first token, or mean over non-padding tokens (mask None = no padding)."""
    if kind == "cls":
        return tokens[:, 0]
    if attention_mask is None:
        return tokens.mean(1)
    m = attention_mask.to(tokens.dtype).unsqueeze(-1)                                 # [B, T, 1]
    return (tokens * m).sum(1) / m.sum(1).clamp(min=1.0)


def _init_linear(lin: nn.Linear, std: float) -> nn.Linear:
    nn.init.normal_(lin.weight, std=std)
    nn.init.zeros_(lin.bias)
    return lin


class LinearExit(nn.Module):
    """dropout + linear on the pooled vector."""

    def __init__(self, hidden: int, num_labels: int, *, dropout: float, std: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = _init_linear(nn.Linear(hidden, num_labels), std)

    def forward(self, tokens, pooled, attention_mask):  # pooled [B, H] -> [B, K]
        if self.training:
            pooled = self.dropout(pooled)
        return self.classifier(pooled)


class MLPExit(nn.Module):
    """MLP with one hidden layer (Sun et al. 2021): dropout, linear, GELU, dropout, linear."""

    def __init__(self, hidden: int, num_labels: int, *, dim: int, dropout: float, std: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), _init_linear(nn.Linear(hidden, dim), std), nn.GELU(),
            nn.Dropout(dropout), _init_linear(nn.Linear(dim, num_labels), std),
        )

    def forward(self, tokens, pooled, attention_mask):  # pooled [B, H] -> [B, K]
        return self.net(pooled)


class AttentionExit(nn.Module):
    """FastBERT-style exit: project [B, T, H] -> [B, T, d], one multi-head self-attention over the
    layer's tokens (padding masked), pool, dense + tanh, classifier."""

    def __init__(self, hidden: int, num_labels: int, *, dim: int, heads: int, pooling: str,
                 dropout: float, std: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"mha exit width {dim} must be a multiple of its {heads} heads")
        self.heads, self.pooling, self.p = heads, pooling, dropout
        self.proj = _init_linear(nn.Linear(hidden, dim), std)
        self.qkv = _init_linear(nn.Linear(dim, 3 * dim), std)
        self.dense = _init_linear(nn.Linear(dim, dim), std)
        self.dropout = nn.Dropout(dropout)
        self.classifier = _init_linear(nn.Linear(dim, num_labels), std)

    def forward(self, tokens, pooled, attention_mask):  # tokens [B, T, H] -> [B, K]
        B, T, _ = tokens.shape
        x = self.proj(tokens)                                                            # [B, T, d]
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, -1).permute(2, 0, 3, 1, 4)       # 3 x [B, nh, T, hd]
        # its own mask from the [B, T] one (True = attend), whatever mask the backbone's layers take
        keep = None if attention_mask is None else attention_mask[:, None, None, :].bool()  # [B, 1, 1, T]
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=keep,
                                             dropout_p=self.p if self.training else 0.0)
        x = ctx.transpose(1, 2).reshape(B, T, -1)                                        # [B, T, d]
        z = torch.tanh(self.dense(pool(x, attention_mask, self.pooling)))                # [B, d]
        return self.classifier(self.dropout(z))


class Bypass(nn.Module):
    """BADGE Eq. 1: B_m = g1(H_{m-1} W_down) W_up, [B, T, H] -> [B, T, H]; W_up starts at zero."""

    def __init__(self, hidden: int, *, dim: int, act: str, std: float):
        super().__init__()
        self.down = _init_linear(nn.Linear(hidden, dim), std)
        self.act = ACTIVATIONS[act]()
        self.up = nn.Linear(dim, hidden)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h_prev):
        return self.up(self.act(self.down(h_prev)))


class LTEHead(nn.Module):
    """Learned exit confidence: sigmoid(linear(pooled.detach())) -> [B] in [0, 1]."""

    def __init__(self, hidden: int, *, std: float):
        super().__init__()
        self.linear = _init_linear(nn.Linear(hidden, 1), std)

    def forward(self, pooled):
        return torch.sigmoid(self.linear(pooled.detach())).squeeze(-1)


def make_exit(cfg: ModelConfig, hidden: int, std: float) -> nn.Module:
    if cfg.exit_kind == "linear":
        return LinearExit(hidden, cfg.num_labels, dropout=cfg.dropout, std=std)
    if cfg.exit_kind == "mlp":
        return MLPExit(hidden, cfg.num_labels, dim=cfg.exit_dim or hidden, dropout=cfg.dropout, std=std)
    if cfg.exit_kind == "mha":
        return AttentionExit(hidden, cfg.num_labels, dim=cfg.exit_dim or MHA_DIM, heads=MHA_HEADS,
                             pooling=cfg.pooling, dropout=cfg.dropout, std=std)
    raise ValueError(f"unknown exit_kind {cfg.exit_kind!r}; valid: {', '.join(EXIT_KINDS)}")


def _torch_dtype(dtype) -> torch.dtype:
    table = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             torch.float32: torch.float32, torch.float16: torch.float16}
    if dtype not in table:
        raise ValueError(f"save dtype must be float32 or float16, got {dtype!r}")
    return table[dtype]


# ---- the model -------------------------------------------------------------------------------------
class MultiExitModel(nn.Module):
    """Backbone + one exit per layer (+ optional BADGE bypasses and LTE heads).

    `MultiExitModel(cfg)` loads the backbone's pretrained weights; pass `encoder=`/`tokenizer=` to
    use a given encoder, or `pretrained=False` to build the architecture only (from_run does).
    The exit, bypass and LTE modules are fixed at construction (the per-layer path keeps tuples of
    them): change their weights in place, do not swap the modules.
    """

    def __init__(self, cfg: ModelConfig | dict, *, encoder: nn.Module | None = None, tokenizer=None,
                 pretrained: bool = True):
        super().__init__()
        cfg = ModelConfig.from_dict(cfg) if isinstance(cfg, dict) else cfg
        if encoder is None:
            encoder, loaded_tok, _ = load_backbone(cfg.backbone, pretrained=pretrained)
            tokenizer = tokenizer if tokenizer is not None else loaded_tok
        limit = max_tokens(encoder.config)
        if limit is not None and int(cfg.max_length) > limit:  # truncate to what the position table holds
            cfg = replace(cfg, max_length=limit)
        self.cfg = cfg
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.runner = make_runner(encoder)
        self.num_layers = L = self.runner.num_layers
        H = self.hidden_size = self.runner.hidden_size
        std = float(getattr(encoder.config, "initializer_range", 0.02))
        self.exits = nn.ModuleList(make_exit(cfg, H, std) for _ in range(L))
        self.bypasses = (nn.ModuleList(Bypass(H, dim=cfg.bypass_dim, act=cfg.bypass_act, std=std)
                                       for _ in range(L)) if cfg.bypass else None)
        self.lte_heads = nn.ModuleList(LTEHead(H, std=std) for _ in range(L)) if cfg.lte else None
        # plain tuples of the same modules for the per-layer path (indexing a ModuleList costs more)
        self._steps = tuple(zip(self.exits, self.bypasses or [None] * L, self.lte_heads or [None] * L))

    @classmethod
    def from_config(cls, cfg: ModelConfig | dict) -> "MultiExitModel":
        """Fresh model on the backbone's pretrained weights (exits, bypasses, LTE heads newly initialised)."""
        return cls(cfg)

    # ---- the two steps forward and the predictor share ----------------------------------------
    def embed(self, input_ids, attention_mask=None, token_type_ids=None):
        """-> (hidden [B, T, H], the layers' attention mask (`LayerRunner.extended_mask`) | None).
        attention_mask None = no padding."""
        h = self.runner.embed(input_ids, attention_mask, token_type_ids)
        return h, self.runner.extended_mask(attention_mask, h)

    def layer_step(self, i: int, hidden, *, attention_mask=None, ext_mask=None):
        """Run layer i (from 0) and its exit: -> (H_i [B, T, H], logits [B, K], confidence [B] | None).
        attention_mask [B, T] (None = no padding) is what the exit reads; ext_mask is `embed`'s mask
        for the layer (a 2-D mask there is built into one)."""
        h_out, pre_ln = self.runner.run_layer(i, hidden, ext_mask)
        logits, conf = self.exit_logits(i, hidden_in=hidden, hidden_out=h_out, pre_ln=pre_ln,
                                         attention_mask=attention_mask)
        return h_out, logits, conf

    def exit_logits(self, i: int, *, hidden_in, hidden_out, pre_ln, attention_mask=None):
        """Exit i on layer i's representation: -> (logits [B, K], confidence [B] | None).
        hidden_in = H_{m-1}, hidden_out = H_m, pre_ln = H_{m,F}, all [B, T, H]; attention_mask [B, T]."""
        exit_, bypass, lte = self._steps[i]
        x = hidden_out                                                             # H_m
        if bypass is not None:
            x = self.runner.final_ln(i, bypass(hidden_in) + pre_ln)                # Eq. 1-2: H'_m
        pooled = pool(x, attention_mask, self.cfg.pooling)                         # [B, H]
        logits = exit_(x, pooled, attention_mask)                                  # [B, K]
        return logits, (lte(pooled) if lte is not None else None)                  # [B, K], [B] | None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None) -> ExitOutput:
        if attention_mask is not None and bool(attention_mask.all()):
            attention_mask = None  # no padding: the predictor's path, op for op (it matters in half precision)
        h, ext = self.embed(input_ids, attention_mask, token_type_ids)
        logits, confs = [], []
        for i in range(self.num_layers):
            h, lg, conf = self.layer_step(i, h, attention_mask=attention_mask, ext_mask=ext)
            logits.append(lg)
            confs.append(conf)
        conf = torch.stack(confs, 1) if self.lte_heads is not None else None      # [B, L]
        return ExitOutput(torch.stack(logits, 1), conf)                           # [B, L, K]

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Named parameter groups (a group is empty when its part is switched off)."""
        def params(m):
            return list(m.parameters()) if m is not None else []
        return {"backbone": params(self.encoder), "exits": params(self.exits),
                "bypasses": params(self.bypasses), "lte": params(self.lte_heads)}

    def tokenize(self, text, text_pair=None, **kw):
        """Tokenize with this model's tokenizer and max_length (truncation on)."""
        if self.tokenizer is None:
            raise ValueError("this model has no tokenizer; pass tokenizer= when building it")
        return self.tokenizer(text, text_pair, truncation=True, max_length=self.cfg.max_length, **kw)

    # ---- persistence ----------------------------------------------------------------------------
    def save_pretrained(self, folder: str | os.PathLike, *, dtype=torch.float32,
                        write_config: bool = True) -> Path:
        """Write <folder>/model.safetensors (float32 or float16; atomic) and, unless write_config is
        False, set "model" in <folder>/config.json to this ModelConfig (other keys kept)."""
        from safetensors.torch import save

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        dt = _torch_dtype(dtype)
        tensors = {}
        for k, v in self.state_dict().items():
            v = v.detach().to("cpu")
            v = v.to(dt) if v.is_floating_point() else v
            tensors[k] = v.clone().contiguous()  # clone: no storage shared between entries
        meta = {"format": "pt", "model_config": json.dumps(self.cfg.to_dict())}
        path = folder / WEIGHTS_FILE
        atomic_write_bytes(path, save(tensors, metadata=meta))
        if write_config:
            cfg_path = folder / CONFIG_FILE
            run_cfg = read_json(cfg_path) if cfg_path.exists() else {}
            run_cfg["model"] = self.cfg.to_dict()
            atomic_write_json(cfg_path, run_cfg)
        return path

    @classmethod
    def from_run(cls, folder: str | os.PathLike, *, device: str | torch.device = "cpu") -> "MultiExitModel":
        """Rebuild from a run folder: ModelConfig from config.json["model"] (or the weights file's own
        metadata), architecture from the backbone's config, every weight from model.safetensors."""
        from safetensors import safe_open
        from safetensors.torch import load_file

        folder = Path(folder)
        path = folder / WEIGHTS_FILE
        if not path.is_file():
            raise ValueError(f"{folder}: no {WEIGHTS_FILE}; this run saved no weights")
        cfg_path = folder / CONFIG_FILE
        model_cfg = (read_json(cfg_path) if cfg_path.exists() else {}).get("model")
        if model_cfg is None:
            with safe_open(str(path), framework="pt") as f:
                raw = (f.metadata() or {}).get("model_config")
            if raw is None:
                raise ValueError(f"{folder}: no 'model' entry in {CONFIG_FILE} and none in {WEIGHTS_FILE}")
            model_cfg = json.loads(raw)
        model = cls(ModelConfig.from_dict(model_cfg), pretrained=False)
        state = load_file(str(path))
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(f"{path}: weights do not fit the model config; missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
        return model.to(device).eval()
