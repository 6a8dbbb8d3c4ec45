"""Configuration of the MuMo music + motion language model."""

from __future__ import annotations

import copy

from transformers import PretrainedConfig

MODALITIES = ("music", "motion")

# Text encoders, as T5Config keyword arguments. "tiny-t5" pairs with the byte-level
# ByT5 tokenizer (vocab 384), which needs no download: tests and the sample run use it.
TEXT_ENCODERS = {
    "tiny-t5": dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4),
    "t5-base": dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12),
}

# Caption decoders (stage 3), as T5Config keyword arguments; their encoder has no layers (MuMo encodes).
CAPTION_DECODERS = {
    "tiny-t5": dict(vocab_size=384, d_model=32, d_kv=8, d_ff=64, num_decoder_layers=2, num_heads=4),
    "t5-base": dict(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_decoder_layers=12, num_heads=12),
}

# Size presets are data. "small" is the MusicGen-small decoder shape.
PRESETS = {
    "tiny": dict(
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        ffn_dim=128,
        dropout=0.0,
        text_encoder=TEXT_ENCODERS["tiny-t5"],
        text_tokenizer="byt5",
        caption_decoder=CAPTION_DECODERS["tiny-t5"],
    ),
    "small": dict(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        ffn_dim=4096,
        dropout=0.1,
        text_encoder=TEXT_ENCODERS["t5-base"],
        text_tokenizer="t5-base",
        caption_decoder=CAPTION_DECODERS["t5-base"],
    ),
}


class MuMoConfig(PretrainedConfig):
    """Sizes and options of :class:`MuMoForConditionalGeneration`.

    Every size is an explicit field; build a preset with ``MuMoConfig.from_preset("tiny")``.

    Args:
        hidden_size, num_hidden_layers, num_attention_heads, ffn_dim: transformer shape.
        num_codebooks, codebook_size: codes per frame and ids per codebook, the same for
            both modalities; the id ``codebook_size`` is the delay-pattern pad.
        frame_rate: frames per second of both token streams (one shared timeline).
        max_position_embeddings: longest delayed sequence per stream (frames + K - 1).
        modalities: stream names, in the order they are concatenated.
        dropout, attention_dropout, activation_dropout: dropout probabilities.
        activation_function: FFN activation (as MusicGen: "gelu").
        layer_norm_eps, initializer_range: numerics and init std.
        text_encoder: ``T5Config`` keyword arguments of the frozen caption encoder.
        text_tokenizer: "byt5" (no download) or a tokenizer name/path for ``AutoTokenizer``.
        max_caption_tokens: captions are truncated to this many tokens.
        caption_dropout: per-sample, per-modality probability of dropping the caption in
            training (classifier-free guidance).
        loss_weights: weight (>= 0) of each modality's loss; the total is the weighted mean over the
            streams of a batch that have targets.
        music_codec, motion_tokenizer: names of the tokenizers the codes come from; the
            data loader refuses shards made by another.
        captioning: add the stage-3 captioning modules (per-layer ``caption_self_attn`` and the
            caption decoder); the language-model path does not use them.
        caption_decoder: ``T5Config`` keyword arguments of the caption decoder (same tokenizer
            as the text encoder).
        caption_cross_stream: in captioning mode, let the streams attend each other.
    """

    model_type = "mumo"

    def __init__(
        self,
        hidden_size: int = 1024,
        num_hidden_layers: int = 24,
        num_attention_heads: int = 16,
        ffn_dim: int = 4096,
        num_codebooks: int = 4,
        codebook_size: int = 2048,
        frame_rate: int = 50,
        max_position_embeddings: int = 4096,
        modalities: list[str] | tuple[str, ...] = MODALITIES,
        dropout: float = 0.1,
        attention_dropout: float = 0.0,
        activation_dropout: float = 0.0,
        activation_function: str = "gelu",
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 0.02,
        text_encoder: dict | None = None,
        text_tokenizer: str = "t5-base",
        max_caption_tokens: int = 128,
        caption_dropout: float = 0.3,
        loss_weights: dict | None = None,
        music_codec: str | None = "encodec_32khz",
        motion_tokenizer: str | None = None,
        captioning: bool = False,
        caption_decoder: dict | None = None,
        caption_cross_stream: bool = False,
        **kwargs,
    ):
        if hidden_size % num_attention_heads:
            raise ValueError(
                f"hidden_size={hidden_size} must be divisible by num_attention_heads={num_attention_heads}"
            )
        unknown = set(modalities) - set(MODALITIES)
        if unknown or not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities={list(modalities)}: give each of {list(MODALITIES)} at most once, at least one")
        loss_weights = dict(loss_weights if loss_weights is not None else {"music": 0.85, "motion": 0.15})
        bad = {m: loss_weights.get(m) for m in modalities
               if not isinstance(loss_weights.get(m), (int, float)) or not loss_weights[m] >= 0}
        if bad or not any(loss_weights[m] > 0 for m in modalities):
            raise ValueError(f"loss_weights={loss_weights}: give every modality of {list(modalities)} a weight >= 0, "
                             "and at least one a weight > 0")
        if not 0 <= caption_dropout <= 1:
            raise ValueError(f"caption_dropout={caption_dropout}: a probability in [0, 1]")
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.ffn_dim = ffn_dim
        self.num_codebooks = num_codebooks
        self.codebook_size = codebook_size
        self.frame_rate = frame_rate
        self.max_position_embeddings = max_position_embeddings
        self.modalities = list(modalities)
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.activation_dropout = activation_dropout
        self.activation_function = activation_function
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.text_encoder = dict(text_encoder if text_encoder is not None else TEXT_ENCODERS["t5-base"])
        self.text_tokenizer = text_tokenizer
        self.max_caption_tokens = max_caption_tokens
        self.caption_dropout = caption_dropout
        self.loss_weights = loss_weights
        self.music_codec = music_codec
        self.motion_tokenizer = motion_tokenizer
        self.captioning = captioning
        self.caption_decoder = dict(caption_decoder if caption_decoder is not None else CAPTION_DECODERS["t5-base"])
        self.caption_cross_stream = caption_cross_stream
        # The only tied tensors are the caption decoder's (T5 embeddings = LM head); music/motion heads never tie.
        kwargs["tie_word_embeddings"] = bool(captioning)
        super().__init__(**kwargs)

    def __setattr__(self, key, value):
        super().__setattr__(key, value)
        if key == "captioning":  # also when set after construction: from_pretrained(stage2_export, captioning=True)
            super().__setattr__("tie_word_embeddings", bool(value))

    @property
    def special_token_id(self) -> int:
        """The delay-pattern pad / start id: one past the last code."""
        return self.codebook_size

    @classmethod
    def from_preset(cls, name: str, **overrides) -> "MuMoConfig":
        """A config from a named size preset (``tiny``, ``small``), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**copy.deepcopy(PRESETS[name]), **overrides})
