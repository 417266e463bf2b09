"""TextSAM-EUS: SAM (segment-anything modules) + LoRA + a learned text prompt token.

Shapes (S = image_size, g = S / patch_size, C = prompt_embed_dim)::

    encode_image   images (B, 3, S, S) normalised            -> embeddings (B, C, g, g)
    prompt_token   ()                                        -> (1, C)  (constant at run time: precompute_prompt())
    embed_points   coords (B, N, 2) in input pixels, labels (B, N) in {-1, 0, 1, 2, 3} -> (B, N, C)
    decode         embeddings (1, C, g, g), sparse (1, T, C)  -> low-res logits (1, 1, 4g, 4g), iou (1, 1)
    forward        images (B, 3, S, S)[, coords, labels]     -> low-res logits (B, 1, 4g, 4g), iou (B, 1)

The text token is the first sparse token; the text-only pass sends it alone. Point labels follow SAM:
1 foreground point (the centroid), 2/3 box top-left/bottom-right corners, 0 background, -1 padding.
Dense prompt: ``no_mask_embed``; single-mask output (mask token 0).
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from ..core.config import TextSamConfig
from .lora import LORA_TYPES, apply_lora, has_lora, merge_lora

#: Mask-decoder parts trained by the paper (besides LoRA).
DECODER_TRAINED_PARTS = ("iou_token", "mask_tokens", "output_upscaling", "output_hypernetworks_mlps",
                         "iou_prediction_head")


def build_sam(cfg: TextSamConfig) -> nn.Module:
    """SAM from the ``segment-anything`` package's classes, sized by ``cfg`` (random weights)."""
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    grid = cfg.embedding_grid
    encoder = ImageEncoderViT(
        depth=cfg.encoder_depth,
        embed_dim=cfg.encoder_embed_dim,
        img_size=cfg.image_size,
        mlp_ratio=4,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
        num_heads=cfg.encoder_num_heads,
        patch_size=cfg.patch_size,
        qkv_bias=True,
        use_rel_pos=True,
        global_attn_indexes=cfg.encoder_global_attn_indexes,
        window_size=cfg.encoder_window_size,
        out_chans=cfg.prompt_embed_dim,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=cfg.prompt_embed_dim,
        image_embedding_size=(grid, grid),
        input_image_size=(cfg.image_size, cfg.image_size),
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=cfg.decoder_depth, embedding_dim=cfg.prompt_embed_dim,
                                      mlp_dim=cfg.decoder_mlp_dim, num_heads=cfg.decoder_num_heads),
        transformer_dim=cfg.prompt_embed_dim,
        iou_head_depth=3,
        iou_head_hidden_dim=cfg.prompt_embed_dim,
    )
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=decoder,
               pixel_mean=list(cfg.pixel_mean), pixel_std=list(cfg.pixel_std))


def embed_points(prompt_encoder: nn.Module, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """SAM's point/box embedding in one formula (matches ``_embed_points(pad=False)`` and ``_embed_boxes``).

    coords (B, N, 2) in input pixels, labels (B, N) -> (B, N, C).
    """
    pe = prompt_encoder
    emb = pe.pe_layer.forward_with_coords(coords + 0.5, pe.input_image_size)
    labels = labels.unsqueeze(-1).to(emb.dtype)
    for k in range(4):
        emb = emb + (labels == k).to(emb.dtype) * pe.point_embeddings[k].weight
    pad = (labels == -1).to(emb.dtype)
    out = emb * (1 - pad) + pad * pe.not_a_point_embed.weight
    return out.to(pe.not_a_point_embed.weight.dtype)


def to_dtype(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast ``model`` to ``dtype`` but keep SAM's random-Fourier positional encoding in fp32 (SAM builds its
    coordinate grids in fp32; the encodings are cast to the model's dtype where they are used)."""
    model.to(dtype)
    for m in model.modules():
        if hasattr(m, "positional_encoding_gaussian_matrix"):
            m.positional_encoding_gaussian_matrix = m.positional_encoding_gaussian_matrix.float()
    return model


def decode_single_mask(sam: nn.Module, embeddings: torch.Tensor, sparse: torch.Tensor
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """SAM's mask decoder with the ``no_mask_embed`` dense prompt, single-mask output (mask token 0).

    embeddings (1, C, g, g), sparse (1, T, C) -> low-res logits (1, 1, 4g, 4g), iou (1, 1).
    """
    pe = sam.prompt_encoder
    g = embeddings.shape[-1]
    dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, g, g)
    masks, iou = sam.mask_decoder.predict_masks(
        image_embeddings=embeddings,
        image_pe=pe.get_dense_pe().to(embeddings.dtype),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense.to(embeddings.dtype),
    )
    return masks[:, :1], iou[:, :1]


class TextSam(nn.Module):
    def __init__(self, cfg: TextSamConfig, sam: nn.Module, text: nn.Module | None) -> None:
        super().__init__()
        self.cfg = cfg
        self.sam = sam
        self.text = text  # TextPromptLearner; None once dropped for deployment
        self.register_buffer("cached_prompt", torch.zeros(1, cfg.prompt_embed_dim), persistent=False)
        self.prompt_cached = False
        if not has_lora(sam):
            apply_lora(sam, cfg.lora_rank, cfg.lora_scaling)
        self.set_trainable()

    # ------------------------------------------------------------------ parameters
    def set_trainable(self) -> None:
        """requires_grad only where the paper trains (plus all of SAM for ``finetune='full'``)."""
        for p in self.parameters():
            p.requires_grad_(False)
        if self.text is not None:
            self.text.ctx.requires_grad_(True)
            for p in self.text.adapter.parameters():
                p.requires_grad_(True)
        if self.cfg.finetune == "full":
            for p in self.sam.parameters():
                p.requires_grad_(True)
            return
        for module in self.sam.modules():
            if isinstance(module, LORA_TYPES):
                for name, p in module.named_parameters():
                    if not name.startswith("base."):
                        p.requires_grad_(True)
        for part in DECODER_TRAINED_PARTS:
            for p in getattr(self.sam.mask_decoder, part).parameters():
                p.requires_grad_(True)

    def train(self, mode: bool = True) -> "TextSam":
        super().train(mode)
        if self.text is not None:
            self.text.train(mode)  # keeps the frozen tower in eval mode
        return self

    def count_parameters(self) -> tuple[int, int]:
        """(total, trainable) parameter counts."""
        total = sum(p.numel() for p in self.parameters())
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return total, trainable

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        names = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in self.state_dict().items() if k in names}

    # ------------------------------------------------------------------ text prompt
    def prompt_token(self) -> torch.Tensor:
        """The text prompt token (1, C): cached when precomputed, else computed by the text branch."""
        if self.prompt_cached:
            return self.cached_prompt
        if self.text is None:
            raise RuntimeError("the text branch was dropped and no prompt token is cached")
        return self.text()

    @torch.no_grad()
    def precompute_prompt(self, drop_text_tower: bool = False) -> torch.Tensor:
        """Compute the constant prompt token once; optionally free the text tower (deployment)."""
        if self.text is None and not self.prompt_cached:
            raise RuntimeError("no text branch to compute the prompt from")
        if self.text is not None:
            self.cached_prompt.copy_(self.text().to(self.cached_prompt))
        self.prompt_cached = True
        if drop_text_tower:
            self.text = None
        return self.cached_prompt

    def set_prompt_token(self, token: torch.Tensor) -> None:
        """Use a given prompt token (1, C), e.g. from a deployment bundle."""
        self.cached_prompt.copy_(token.reshape(1, -1).to(self.cached_prompt))
        self.prompt_cached = True

    # ------------------------------------------------------------------ SAM parts
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.sam.image_encoder(images)

    def embed_points(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return embed_points(self.sam.prompt_encoder, coords, labels)

    def sparse_prompts(self, text_token: torch.Tensor, coords: torch.Tensor | None = None,
                       labels: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1 + N, C): the text token first, then the geometric prompts."""
        batch = 1 if coords is None else coords.shape[0]
        tokens = text_token.reshape(1, 1, -1).expand(batch, -1, -1)
        if coords is None:
            return tokens
        return torch.cat([tokens, self.embed_points(coords, labels).to(tokens.dtype)], dim=1)

    def decode(self, embeddings: torch.Tensor, sparse: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One image's embeddings (1, C, g, g) and its sparse tokens (1, T, C) -> (1, 1, 4g, 4g), (1, 1)."""
        return decode_single_mask(self.sam, embeddings, sparse)

    def forward(self, images: torch.Tensor, coords: torch.Tensor | None = None,
                labels: torch.Tensor | None = None,
                prompts: list[tuple[torch.Tensor, torch.Tensor] | None] | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training/eval forward for a batch.

        Geometric prompts are optional: ``coords`` (B, N, 2) / ``labels`` (B, N) for the whole batch, or
        ``prompts``, one ``(coords (N, 2), labels (N,))`` or None (text only) per sample.
        """
        embeddings = self.encode_image(images)
        token = self.prompt_token()
        masks, ious = [], []
        for b in range(images.shape[0]):
            if prompts is not None:
                p = prompts[b]
                c, lab = (None, None) if p is None else (p[0].reshape(1, -1, 2), p[1].reshape(1, -1))
            else:
                c = None if coords is None else coords[b:b + 1]
                lab = None if labels is None else labels[b:b + 1]
            m, i = self.decode(embeddings[b:b + 1], self.sparse_prompts(token, c, lab))
            masks.append(m)
            ious.append(i)
        return torch.cat(masks), torch.cat(ious)

    # ------------------------------------------------------------------ deployment
    def merge_lora(self) -> int:
        """Fold LoRA into plain Linear layers (export sees no wrappers); returns the number merged."""
        return merge_lora(self.sam)

    def deployable(self) -> "TextSam":
        """A copy for inference: prompt precomputed, LoRA merged, text tower dropped (this model is kept as is)."""
        import copy

        self.eval()
        if not self.prompt_cached:
            self.precompute_prompt()
        text, self.text = self.text, None
        try:
            dep = copy.deepcopy(self)
        finally:
            self.text = text
        dep.merge_lora()
        return dep.eval()
