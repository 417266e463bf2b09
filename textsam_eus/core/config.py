"""Typed, validated configuration of a TextSAM-EUS model.

Every field is checked in ``__post_init__``; a bad value raises :class:`ConfigError` naming the field, the value
and what would be accepted, e.g. ``ConfigError: lora_rank=0 is invalid: must be an int >= 1``.
Configs round-trip through JSON (``to_dict`` / ``from_dict``), which is how checkpoints store them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError

FINETUNE_MODES = ("lora", "full")
RESIZE_METHODS = ("area", "bilinear")  # "area": OpenCV INTER_AREA (ours); "bilinear": PIL's BILINEAR (the authors')
PRESENCE_LIMIT = 1e6  # |presence_threshold|: the score is a raw IoU-head output, so no [0, 1] bound


class ConfigError(UserError, ValueError):
    """A configuration field has an invalid value."""


def _fail(field_name: str, value: Any, why: str) -> None:
    raise ConfigError(f"{field_name}={value!r} is invalid: {why}")


MAX_REFINE_ITERATIONS = 20  # refinement passes after the first (the paper uses 2); more is a typo, not a setting
MAX_PRESENCE_FRAMES = 1000  # presence_show_frames / presence_hide_frames


def _check_int(name: str, value: Any, lo: int, hi: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, value, "must be an int")
    if value < lo or (hi is not None and value > hi):
        _fail(name, value, f"must be in [{lo}, {hi}]" if hi is not None else f"must be >= {lo}")


@dataclass
class TextTowerConfig:
    """The frozen text tower: an HF BERT wrapped by open_clip's ``HFTextEncoder``.

    BiomedCLIP (PubMedBERT): vocab 30522, hidden 768, 12 layers, 12 heads, context 256, CLS pooling,
    ``mlp`` projection 768 -> 640 -> 512 without bias.
    """

    vocab_size: int = 30522
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    context_length: int = 256
    max_position_embeddings: int = 512
    embed_dim: int = 512  # open_clip output dim (after the projection)
    proj_type: str = "mlp"
    pad_token_id: int = 0
    layer_norm_eps: float = 1e-12
    vocab: str = "biomedclip"  # "biomedclip" (vocab.txt of the BiomedCLIP folder) or "tiny" (shipped)

    def __post_init__(self) -> None:
        _check_int("text.vocab_size", self.vocab_size, 8)
        _check_int("text.hidden_size", self.hidden_size, 8)
        _check_int("text.num_layers", self.num_layers, 1)
        _check_int("text.num_heads", self.num_heads, 1)
        if self.hidden_size % self.num_heads:
            _fail("text.num_heads", self.num_heads, f"must divide text.hidden_size={self.hidden_size}")
        _check_int("text.intermediate_size", self.intermediate_size, 1)
        _check_int("text.context_length", self.context_length, 8)
        _check_int("text.max_position_embeddings", self.max_position_embeddings, self.context_length)
        _check_int("text.embed_dim", self.embed_dim, 1)
        if self.proj_type not in ("mlp", "linear"):
            _fail("text.proj_type", self.proj_type, "must be 'mlp' or 'linear'")
        if self.vocab not in ("biomedclip", "tiny"):
            _fail("text.vocab", self.vocab, "must be 'biomedclip' or 'tiny'")


@dataclass
class TextSamConfig:
    """Everything needed to build a TextSAM-EUS model.

    Image side (SAM): ``image_size`` input (long side resized to it, then padded square), ``patch_size``,
    ViT width/depth/heads, windowed attention with global blocks at ``global_attn_indexes``.
    Decoder: SAM's two-way transformer at ``prompt_embed_dim``. Text side: ``text`` (frozen tower), CoOp
    prompt learning with ``n_ctx`` context tokens after [CLS] of ``"X X X X <class_name>."``, ``prompt_depth``
    sets of deep prompts (set 0 at the input, set i before text layer i). LoRA of rank ``lora_rank`` on the
    q/v parts of the encoder's fused qkv and on the decoder's ``q_proj``/``v_proj``.
    """

    preset: str = "custom"
    # image encoder
    image_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    encoder_window_size: int = 14
    # prompt encoder / mask decoder
    prompt_embed_dim: int = 256
    decoder_depth: int = 2
    decoder_num_heads: int = 8
    decoder_mlp_dim: int = 2048
    # text branch
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    n_ctx: int = 4
    prompt_depth: int = 12
    class_name: str = "tumor"
    # adaptation
    lora_rank: int = 16
    lora_alpha: float | None = None  # None: alpha = rank (scaling 1)
    finetune: str = "lora"  # "lora": the paper; "full": also train SAM itself (for randomly initialised presets)
    # inference
    refine_iterations: int = 2
    mask_threshold: float = 0.0
    # tumour presence: the IoU head's prediction on the text-only pass ("how much would this outline overlap a
    # tumour"); trained to 0 on lesion-free images. None = presence off (every outline is shown; old checkpoints)
    presence_threshold: float | None = None  # calibrated on validation data by `train`
    presence_show_frames: int = 3  # stream: frames in a row at or above the threshold before the outline shows
    presence_hide_frames: int = 5  # stream: frames in a row below it before the outline hides
    pixel_mean: tuple[float, float, float] = (123.675, 116.28, 103.53)
    pixel_std: tuple[float, float, float] = (58.395, 57.12, 57.375)
    # how a frame is resized into the input: "area" (ours) or "bilinear" (PIL's, for weights of the authors' code)
    resize: str = "area"
    # base weights (local files; None = random initialisation)
    sam_checkpoint: str | None = None
    biomedclip_dir: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.text, dict):
            self.text = TextTowerConfig(**self.text)
        self.encoder_global_attn_indexes = tuple(self.encoder_global_attn_indexes)
        self.pixel_mean = tuple(float(v) for v in self.pixel_mean)
        self.pixel_std = tuple(float(v) for v in self.pixel_std)
        _check_int("patch_size", self.patch_size, 2)
        _check_int("image_size", self.image_size, 32)
        if self.image_size % self.patch_size:
            _fail("image_size", self.image_size, f"must be a multiple of patch_size={self.patch_size}")
        _check_int("encoder_embed_dim", self.encoder_embed_dim, 8)
        _check_int("encoder_depth", self.encoder_depth, 1)
        _check_int("encoder_num_heads", self.encoder_num_heads, 1)
        if self.encoder_embed_dim % self.encoder_num_heads:
            _fail("encoder_num_heads", self.encoder_num_heads,
                  f"must divide encoder_embed_dim={self.encoder_embed_dim}")
        for i in self.encoder_global_attn_indexes:
            if not isinstance(i, int) or not 0 <= i < self.encoder_depth:
                _fail("encoder_global_attn_indexes", self.encoder_global_attn_indexes,
                      f"entries must be block indices in [0, {self.encoder_depth - 1}]")
        _check_int("encoder_window_size", self.encoder_window_size, 0)
        _check_int("prompt_embed_dim", self.prompt_embed_dim, 8)
        _check_int("decoder_depth", self.decoder_depth, 1)
        _check_int("decoder_num_heads", self.decoder_num_heads, 1)
        if self.prompt_embed_dim % (2 * self.decoder_num_heads):
            _fail("decoder_num_heads", self.decoder_num_heads,
                  f"2*decoder_num_heads must divide prompt_embed_dim={self.prompt_embed_dim}")
        _check_int("decoder_mlp_dim", self.decoder_mlp_dim, 1)
        _check_int("n_ctx", self.n_ctx, 1, 32)
        if self.n_ctx + 4 > self.text.context_length:
            _fail("n_ctx", self.n_ctx, f"does not fit text.context_length={self.text.context_length}")
        _check_int("prompt_depth", self.prompt_depth, 1, self.text.num_layers)
        if not isinstance(self.class_name, str) or not self.class_name.strip():
            _fail("class_name", self.class_name, "must be a non-empty string such as 'tumor'")
        _check_int("lora_rank", self.lora_rank, 1, 256)
        if self.lora_alpha is not None and (not isinstance(self.lora_alpha, (int, float)) or self.lora_alpha <= 0):
            _fail("lora_alpha", self.lora_alpha, "must be a positive number or None (alpha = rank)")
        if self.finetune not in FINETUNE_MODES:
            _fail("finetune", self.finetune, f"must be one of {FINETUNE_MODES}")
        _check_int("refine_iterations", self.refine_iterations, 0, MAX_REFINE_ITERATIONS)
        # on the presence score's own scale (the IoU head's raw output, not confined to [0, 1]): finite, bounded
        if self.presence_threshold is not None and (isinstance(self.presence_threshold, bool) or not isinstance(
                self.presence_threshold, (int, float)) or not abs(self.presence_threshold) <= PRESENCE_LIMIT):
            _fail("presence_threshold", self.presence_threshold,
                  f"must be a finite number in [-{PRESENCE_LIMIT:g}, {PRESENCE_LIMIT:g}] on the presence score's "
                  "scale, or None (presence off)")
        _check_int("presence_show_frames", self.presence_show_frames, 1, MAX_PRESENCE_FRAMES)
        _check_int("presence_hide_frames", self.presence_hide_frames, 1, MAX_PRESENCE_FRAMES)
        if len(self.pixel_mean) != 3 or len(self.pixel_std) != 3 or min(self.pixel_std) <= 0:
            _fail("pixel_std", self.pixel_std, "pixel_mean and pixel_std must be 3 values, std > 0")
        if self.resize not in RESIZE_METHODS:
            _fail("resize", self.resize, f"must be one of {RESIZE_METHODS}")

    # ------------------------------------------------------------------ derived
    @property
    def embedding_grid(self) -> int:
        """Side of the image-embedding grid (tokens per side)."""
        return self.image_size // self.patch_size

    @property
    def lowres_mask_size(self) -> int:
        """Side of the decoder's low-resolution mask (SAM upscales the grid 4x)."""
        return 4 * self.embedding_grid

    @property
    def lora_scaling(self) -> float:
        alpha = self.lora_rank if self.lora_alpha is None else self.lora_alpha
        return float(alpha) / float(self.lora_rank)

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["encoder_global_attn_indexes"] = list(self.encoder_global_attn_indexes)
        d["pixel_mean"] = list(self.pixel_mean)
        d["pixel_std"] = list(self.pixel_std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TextSamConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**d)

    def replace(self, **overrides: Any) -> "TextSamConfig":
        """A copy with fields replaced (validated). ``text`` may be a dict of TextTowerConfig fields to update."""
        d = self.to_dict()
        text_over = overrides.pop("text", None)
        if isinstance(text_over, TextTowerConfig):
            d["text"] = dataclasses.asdict(text_over)
        elif text_over:
            d["text"].update(text_over)
        known = {f.name for f in dataclasses.fields(self)}
        for k in overrides:
            if k not in known:
                raise ConfigError(f"unknown config field {k!r}; known fields: {sorted(known)}")
        d.update(overrides)
        return TextSamConfig.from_dict(d)
