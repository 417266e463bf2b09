"""Size presets: a config function per preset (``PRESETS``) and :func:`build_textsam`.

``vit_b``: the paper — SAM ViT-B at 1024, BiomedCLIP's text tower (PubMedBERT), LoRA r=16, 4 context tokens,
prompt depth 12. ``tiny``: the same classes at small sizes (ViT 192-d, depth 4, input 256; a 4-layer 128-d BERT
with a shipped vocabulary) for tests and the CPU demo.
"""

from __future__ import annotations

from typing import Any, Callable

from ..core.config import ConfigError, TextSamConfig, TextTowerConfig
from .pretrained import biomedclip_vocab, load_biomedclip_text, load_sam_checkpoint
from .text_branch import TextPromptLearner, build_text_tower
from .textsam import TextSam, build_sam
from .tokenizer import WordPieceTokenizer, tiny_vocab_path


def vit_b_config(**overrides: Any) -> TextSamConfig:
    return TextSamConfig(preset="vit_b").replace(**overrides)


def tiny_config(**overrides: Any) -> TextSamConfig:
    base = TextSamConfig(
        preset="tiny",
        image_size=256,
        patch_size=16,
        encoder_embed_dim=192,
        encoder_depth=4,
        encoder_num_heads=3,
        encoder_global_attn_indexes=(1, 3),
        encoder_window_size=8,
        prompt_embed_dim=128,
        decoder_depth=2,
        decoder_num_heads=4,
        decoder_mlp_dim=512,
        text=TextTowerConfig(vocab_size=197, hidden_size=128, num_layers=4, num_heads=4, intermediate_size=512,
                             context_length=32, max_position_embeddings=64, embed_dim=128, vocab="tiny"),
        prompt_depth=4,
        lora_rank=4,
        finetune="full",
    )
    return base.replace(**overrides)


PRESETS: dict[str, Callable[..., TextSamConfig]] = {"vit_b": vit_b_config, "tiny": tiny_config}


def get_config(preset: str, **overrides: Any) -> TextSamConfig:
    """The preset's config with fields overridden (validated)."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; available presets: {sorted(PRESETS)}")
    return PRESETS[preset](**overrides)


def build_tokenizer(cfg: TextSamConfig) -> WordPieceTokenizer:
    """The vocabulary of the BiomedCLIP folder when given, else the shipped tiny vocabulary.

    A randomly initialised ``vit_b`` (shape checks, no BiomedCLIP folder) tokenises with the tiny vocabulary: its ids
    are valid for the 30522-entry embedding, and the weights are random anyway.
    """
    if cfg.biomedclip_dir is not None:
        tok = WordPieceTokenizer(biomedclip_vocab(cfg.biomedclip_dir), cfg.text.context_length)
    else:
        tok = WordPieceTokenizer(tiny_vocab_path(), cfg.text.context_length)
    if tok.vocab_size > cfg.text.vocab_size:
        raise ConfigError(f"text.vocab_size={cfg.text.vocab_size} is invalid: the vocabulary {tok.vocab_file} has "
                          f"{tok.vocab_size} tokens")
    return tok


def prompt_text(cfg: TextSamConfig) -> str:
    """CoOp's template: n_ctx placeholder words after [CLS], then the class name: ``"X X X X tumor."``."""
    return " ".join(["X"] * cfg.n_ctx) + f" {cfg.class_name.strip()}."


def build_textsam(config: TextSamConfig | str = "tiny", load_base_weights: bool = True,
                  **overrides: Any) -> TextSam:
    """Build a TextSAM-EUS model; base weights come from ``cfg.sam_checkpoint`` / ``cfg.biomedclip_dir`` if set."""
    cfg = get_config(config, **overrides) if isinstance(config, str) else (
        config.replace(**overrides) if overrides else config)
    sam = build_sam(cfg)
    if load_base_weights and cfg.sam_checkpoint is not None:
        load_sam_checkpoint(sam, cfg.sam_checkpoint, cfg.preset)
    tower = build_text_tower(cfg.text)
    if load_base_weights and cfg.biomedclip_dir is not None:
        load_biomedclip_text(tower, cfg.biomedclip_dir, cfg)
    tokenizer = build_tokenizer(cfg)
    ids, length = tokenizer.encode(prompt_text(cfg))
    text = TextPromptLearner(cfg, tower, ids, length)
    return TextSam(cfg, sam, text)
