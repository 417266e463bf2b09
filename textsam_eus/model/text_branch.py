"""The text branch: frozen BiomedCLIP text tower + CoOp deep prompt learning + adapter -> one SAM prompt token.

Pipeline (B = 1 prompt, L = tokens of ``"X X X X tumor."`` incl. [CLS]/[SEP], H = text width, E = CLIP width,
C = SAM prompt width)::

    ids (1, L) --word_embeddings--> (1, L, H); positions 1..n_ctx := ctx set 0   (before the embedding LayerNorm)
      --BertEmbeddings (+pos, +type, LayerNorm)--> (1, L, H)
      --layer 0--> ... before layer i (1 <= i < prompt_depth): positions 1..n_ctx := ctx set i ... --layer N-1-->
      --CLS pooling--> (1, H) --open_clip mlp projection--> (1, E) --adapter Linear(E,C) GELU Linear(C,C)-->
      --L2 normalise--> (1, C)

The tower is open_clip's ``HFTextEncoder`` over an HF ``BertModel`` built from a local config (no hub). It is
frozen and always kept in eval mode. Trainable: the ``prompt_depth`` context sets and the adapter.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import TextSamConfig, TextTowerConfig


def build_text_tower(cfg: TextTowerConfig) -> nn.Module:
    """open_clip ``HFTextEncoder`` for a BERT of the given sizes (random weights; load them separately)."""
    from open_clip.hf_model import HFTextEncoder
    from transformers import BertConfig

    bert_cfg = BertConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.max_position_embeddings,
        type_vocab_size=2,
        pad_token_id=cfg.pad_token_id,
        layer_norm_eps=cfg.layer_norm_eps,
        hidden_act="gelu",
    )
    tower = HFTextEncoder(
        "local-bert",  # never resolved: config is given, so nothing is fetched
        output_dim=cfg.embed_dim,
        config=bert_cfg,
        pooler_type="cls_last_hidden_state_pooler",
        proj_type=cfg.proj_type,
        pretrained=False,
    )
    # BiomedCLIP pools the [CLS] hidden state; BERT's own pooler layer is unused (and absent from its checkpoint).
    tower.transformer.pooler = None
    return tower


class TextPromptLearner(nn.Module):
    """CoOp with deep prompts. ``ctx``: (prompt_depth, n_ctx, H); set 0 is the input context."""

    def __init__(self, cfg: TextSamConfig, tower: nn.Module, token_ids: torch.Tensor, length: int) -> None:
        super().__init__()
        self.n_ctx = cfg.n_ctx
        self.prompt_depth = cfg.prompt_depth
        hidden = cfg.text.hidden_size
        self.ctx = nn.Parameter(torch.empty(cfg.prompt_depth, cfg.n_ctx, hidden))
        nn.init.normal_(self.ctx, std=0.02)
        self.tower = tower
        # Only the real tokens are run: trailing [PAD]s are masked out in BERT, so dropping them is exact.
        self.register_buffer("token_ids", token_ids[:length].unsqueeze(0).clone(), persistent=False)
        self.adapter = nn.Sequential(
            nn.Linear(cfg.text.embed_dim, cfg.prompt_embed_dim),
            nn.GELU(),
            nn.Linear(cfg.prompt_embed_dim, cfg.prompt_embed_dim),
        )
        for p in tower.parameters():
            p.requires_grad_(False)
        tower.eval()

    def train(self, mode: bool = True) -> "TextPromptLearner":
        super().train(mode)
        self.tower.eval()  # the frozen tower always runs in eval mode (no dropout)
        return self

    def _replace(self, hidden: torch.Tensor, index: int) -> torch.Tensor:
        ctx = self.ctx[index].to(hidden.dtype).unsqueeze(0).expand(hidden.shape[0], -1, -1)
        return torch.cat([hidden[:, :1], ctx, hidden[:, 1 + self.n_ctx:]], dim=1)

    def forward(self) -> torch.Tensor:
        """The prompt token, shape (1, C), unit L2 norm."""
        bert = self.tower.transformer
        ids = self.token_ids
        hidden = bert.embeddings(inputs_embeds=self._replace(bert.embeddings.word_embeddings(ids), 0))
        # No padding is run, so no attention mask is needed (identical to BERT with its pad mask).
        for i, layer in enumerate(bert.encoder.layer):
            if 0 < i < self.prompt_depth:
                hidden = self._replace(hidden, i)
            hidden = layer(hidden)
            if isinstance(hidden, tuple):  # transformers 4.x layers return tuples
                hidden = hidden[0]
        pooled = hidden[:, 0]  # CLS pooling (open_clip's cls_last_hidden_state_pooler)
        projected = self.tower.proj(pooled)
        return F.normalize(self.adapter(projected), dim=-1)
