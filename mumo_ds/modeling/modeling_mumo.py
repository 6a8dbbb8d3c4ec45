"""MuMo: one transformer decoder over music and motion code streams, conditioned on text.

::

    music codes [B,K,T] --delay--> embeddings["music"] (sum of K) --+           +--> heads["music"]  -> [B,K,S,V]
                                                                    | L x layer |
    motion codes [B,K,T] --delay--> embeddings["motion"] ----------+  shared self-attn (frame-causal, both streams)
                                                                      shared cross-attn (each stream -> its caption)
                                                                      ModalityExpertFFN (one expert per modality)
                                                                    +--> heads["motion"] -> [B,K,S,V]

The model file is single-device code: ZeRO and data parallelism are applied from outside.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.utils.checkpoint
from torch import nn
from transformers import PreTrainedModel, T5Config, T5EncoderModel
from transformers.utils import ModelOutput

from .attention import FrameCausal, KVCache, MuMoAttention, causal_path_skips_masked_keys
from .captioning import CaptionDecoder, bidirectional_stream_mask
from .configuration_mumo import MuMoConfig
from .delay_pattern import build_delay_pattern, delayed_frame_mask
from .generation import generate, in_eval_mode
from .losses import IGNORE_INDEX, codebook_cross_entropy
from .moe import FeedForward, ModalityExpertFFN, Segments, split_segments

TextStates = dict[str, tuple[torch.Tensor, torch.Tensor]]  # modality -> (states [B,Lc,D], key mask [B,1,1,Lc])


def sinusoidal_positions(num_positions: int, dim: int, device=None, offset: int = 0) -> torch.Tensor:
    """MusicGen's sinusoidal table [num_positions, dim] for positions offset.., ``cat(cos, sin)`` each."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -(math.log(10000) / (half - 1)))
    positions = torch.arange(offset, offset + num_positions, device=device, dtype=torch.float32)
    angles = positions.unsqueeze(1) * freqs  # [N, D/2]
    table = torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)
    if dim % 2:
        table = torch.nn.functional.pad(table, (0, 1))
    return table


class CodebookEmbedding(nn.Module):
    """K embedding tables of ``codebook_size + 1`` ids (the last is the delay pad), summed per step.

    Stored as one table [K * (V + 1), D] indexed with per-codebook offsets: one lookup, no loop.
    """

    def __init__(self, num_codebooks: int, codebook_size: int, hidden_size: int):
        super().__init__()
        self.num_codebooks = num_codebooks
        self.ids_per_codebook = codebook_size + 1
        self.table = nn.Embedding(num_codebooks * self.ids_per_codebook, hidden_size)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(self.num_codebooks, device=codes.device) * self.ids_per_codebook  # [K]
        return self.table(codes + offsets[:, None]).sum(dim=1)  # [B, K, S] -> [B, K, S, D] -> [B, S, D]


class CodebookHeads(nn.Module):
    """K linear heads (no bias) as one [K * V, D] projection."""

    def __init__(self, num_codebooks: int, codebook_size: int, hidden_size: int):
        super().__init__()
        self.num_codebooks = num_codebooks
        self.proj = nn.Linear(hidden_size, num_codebooks * codebook_size, bias=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.proj(hidden)  # [B, S, D] -> [B, S, K*V]
        return logits.unflatten(-1, (self.num_codebooks, -1)).transpose(1, 2)  # -> [B, K, S, V]


class MuMoDecoderLayer(nn.Module):
    """Pre-norm block: shared self-attention, shared cross-attention, modality-expert FFN."""

    def __init__(self, config: MuMoConfig):
        super().__init__()
        d = config.hidden_size
        self.self_attn_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.self_attn = MuMoAttention(config)
        if config.captioning:  # stage 3: bidirectional attention inside each stream, see captioning.py
            self.caption_self_attn = MuMoAttention(config)
        self.encoder_attn_layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.encoder_attn = MuMoAttention(config)
        self.ffn = ModalityExpertFFN(
            {
                m: FeedForward(d, config.ffn_dim, config.activation_function, config.activation_dropout, config.layer_norm_eps)
                for m in config.modalities
            }
        )
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        hidden: torch.Tensor,
        segments: Segments,
        self_mask: torch.Tensor | None,
        text: TextStates,
        cache: tuple[KVCache, int] | None = None,
        cross_kv: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None,
        captioning: bool = False,
    ) -> torch.Tensor:
        """``self_mask`` None means causal over the input, or, with ``cache``, "see everything so far";
        in captioning mode it is the bidirectional stream mask (None: no mask)."""
        x = self.self_attn_layer_norm(hidden)
        attn = self.caption_self_attn if captioning else self.self_attn
        causal = self_mask is None and cache is None and not captioning
        hidden = hidden + self.dropout(attn(x, attn_mask=self_mask, is_causal=causal, cache=cache))

        x = self.encoder_attn_layer_norm(hidden)
        parts = []
        for (modality, _), part in zip(segments, split_segments(x, segments)):  # each stream attends its own caption
            states, key_mask = text[modality]
            kv = cross_kv[modality] if cross_kv is not None else None
            parts.append(self.encoder_attn(part, key_value_states=states, attn_mask=key_mask, kv=kv))
        hidden = hidden + self.dropout(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])

        return hidden + self.dropout(self.ffn(hidden, segments))


@dataclass
class MuMoOutput(ModelOutput):
    """Losses and logits of one forward. Per-modality entries are None when that stream is absent."""

    loss: torch.Tensor | None = None
    music_loss: torch.Tensor | None = None
    motion_loss: torch.Tensor | None = None
    music_codebook_losses: torch.Tensor | None = None
    motion_codebook_losses: torch.Tensor | None = None
    music_logits: torch.Tensor | None = None
    motion_logits: torch.Tensor | None = None
    music_caption_loss: torch.Tensor | None = None
    motion_caption_loss: torch.Tensor | None = None


def _check_inputs(streams: dict) -> None:
    """Shapes of ``forward``'s per-stream inputs (codes, frame mask, caption ids, caption mask), each named.

    Every tensor has the codes' batch; a frame mask is [B, T]. Streams may differ in length, but padded ones share
    one timeline and one mask: a frame of one stream attends the frames of the other up to its time, padding included.
    """
    batches = {m: codes.shape[0] for m, (codes, *_) in streams.items()}
    if len(set(batches.values())) > 1:
        raise ValueError(f"streams of different batch sizes {batches}: pair each music item with its motion item")
    masks = {}
    for m, (codes, frame_mask, caption_ids, caption_mask) in streams.items():
        batch, frames = codes.shape[0], codes.shape[-1]
        if frame_mask is not None and tuple(frame_mask.shape) != (batch, frames):
            raise ValueError(f"{m}_mask: shape {list(frame_mask.shape)}, expected [{batch}, {frames}] like {m}_codes")
        if caption_ids is not None and (caption_ids.dim() != 2 or caption_ids.shape[0] != batch):
            raise ValueError(f"{m}_caption_ids: shape {list(caption_ids.shape)}, expected [{batch}, L]: one caption "
                             "per item (an empty caption, mask all 0, is the null condition)")
        if caption_mask is not None and (caption_ids is None or caption_mask.shape != caption_ids.shape):
            raise ValueError(f"{m}_caption_mask: shape {list(caption_mask.shape)}, expected that of {m}_caption_ids "
                             f"({None if caption_ids is None else list(caption_ids.shape)})")
        masks[m] = None if frame_mask is None else frame_mask.bool()
    if len(streams) < 2 or torch.compiler.is_compiling():  # the mask check reads values: skipped when compiled
        return
    padded = [m for m, mask in masks.items() if mask is not None and not bool(mask.all())]
    (a, (codes_a, *_)), (b, (codes_b, *_)) = streams.items()
    if padded and (codes_a.shape[-1] != codes_b.shape[-1] or masks[a] is None or masks[b] is None
                   or not torch.equal(masks[a], masks[b])):
        raise ValueError(f"{padded[0]}_mask pads frames the other stream does not: paired streams share one "
                         "timeline and one frame mask (a real frame of either stream attends both up to its time); "
                         "give both streams the same mask, or the streams in separate batches")


class MuMoPreTrainedModel(PreTrainedModel):
    config_class = MuMoConfig
    base_model_prefix = "mumo"
    main_input_name = "music_codes"
    supports_gradient_checkpointing = True
    _no_split_modules = ["MuMoDecoderLayer", "T5Block"]
    _supports_sdpa = True


class MuMoForConditionalGeneration(MuMoPreTrainedModel):
    """The MuMo language model: text-conditioned generation of music and motion codes.

    ``forward`` takes ``music_codes`` and/or ``motion_codes`` ([B, K, T] ints in
    0..codebook_size-1), optional frame masks ([B, T], True = real frame) and
    tokenized captions per modality, and returns the weighted loss, the loss of
    each modality and each codebook, and the logits over the delayed grid.
    """

    def __init__(self, config: MuMoConfig):
        super().__init__(config)
        d, k, v = config.hidden_size, config.num_codebooks, config.codebook_size
        self.text_encoder = T5EncoderModel(T5Config(**config.text_encoder))
        self.text_projection = nn.Linear(config.text_encoder["d_model"], d)
        self.embeddings = nn.ModuleDict({m: CodebookEmbedding(k, v, d) for m in config.modalities})
        self.layers = nn.ModuleList([MuMoDecoderLayer(config) for _ in range(config.num_hidden_layers)])
        self.norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.heads = nn.ModuleDict({m: CodebookHeads(k, v, d) for m in config.modalities})
        if config.captioning:
            self.caption_decoder = CaptionDecoder(d, config.caption_decoder)
            # the T5 decoder's embeddings and LM head are one tensor; say so at the top level for save/load
            self._tied_weights_keys = {
                f"caption_decoder.t5.{name}": "caption_decoder.t5.shared.weight"
                for name in ("encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight")
            }
        self.dropout = nn.Dropout(config.dropout)
        self.gradient_checkpointing = False
        self.post_init()
        self.freeze_text_encoder()

    # ----------------------------------------------------------------- weights
    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        """HF ``from_pretrained``; loading builds fresh parameters, so the text encoder is frozen again."""
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        model.freeze_text_encoder()
        return loaded

    def freeze_text_encoder(self) -> None:
        """The T5 encoder is frozen in every stage, and kept in eval mode (see :meth:`train`)."""
        self.text_encoder.requires_grad_(False)
        self.text_encoder.eval()

    def train(self, mode: bool = True):
        """``nn.Module.train``, except that a frozen text encoder stays in eval mode: its dropout would only
        add noise to the caption states it is not learning from (as audiocraft keeps its frozen T5)."""
        super().train(mode)
        if not any(p.requires_grad for p in self.text_encoder.parameters()):
            self.text_encoder.eval()
        return self

    @torch.no_grad()
    def init_motion_from_music(self) -> None:
        """Copy (never alias) the music embeddings and FFN experts into the motion ones."""
        self.embeddings["motion"].load_state_dict(self.embeddings["music"].state_dict())
        for layer in self.layers:
            layer.ffn.experts["motion"].load_state_dict(layer.ffn.experts["music"].state_dict())

    @torch.no_grad()
    def init_captioning(self) -> None:
        """Start every layer's ``caption_self_attn`` as a copy of its ``self_attn`` (stage 3)."""
        if not self.config.captioning:
            raise ValueError("init_captioning needs a model built with config.captioning=True")
        for layer in self.layers:
            layer.caption_self_attn.load_state_dict(layer.self_attn.state_dict())

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None) -> None:
        self.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.gradient_checkpointing = False

    # ------------------------------------------------------------------- text
    def encode_text(
        self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None, batch_size: int, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Caption -> (projected states [B, Lc, D], key mask [B, 1, 1, Lc]).

        No caption (``input_ids`` None) gives the null condition: one all-zero key,
        whose cross-attention output is exactly zero. In training each sample's
        caption is replaced by the null condition with probability ``caption_dropout``.
        """
        if input_ids is None:
            zeros = torch.zeros(batch_size, 1, self.config.text_encoder["d_model"], device=device)
            states = self.text_projection(zeros.to(self.text_projection.weight.dtype)) * 0.0  # keeps the graph uniform
            return states, torch.ones(batch_size, 1, 1, 1, dtype=torch.bool, device=device)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        trainable = any(p.requires_grad for p in self.text_encoder.parameters())
        with torch.set_grad_enabled(torch.is_grad_enabled() and trainable):
            encoded = self.text_encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        states = self.text_projection(encoded) * attention_mask[..., None].to(encoded.dtype)  # [B, Lc, D]
        key_mask = attention_mask.bool().clone()
        key_mask[:, 0] |= ~key_mask.any(dim=1)  # an empty caption (mask all 0) is the null condition: one zero key
        if self.training and self.config.caption_dropout > 0:
            keep = torch.rand(batch_size, device=device) >= self.config.caption_dropout  # [B]
            states = states * keep[:, None, None].to(states.dtype)
            first_only = torch.zeros_like(key_mask)
            first_only[:, 0] = True
            key_mask = torch.where(keep[:, None], key_mask, first_only)
        return states, key_mask[:, None, None, :]

    # -------------------------------------------------------------- backbone
    def decode(self, inputs: dict[str, torch.Tensor], text: TextStates) -> dict[str, torch.Tensor]:
        """Run the transformer over delayed input grids and return logits per stream.

        Args:
            inputs: modality -> delayed input ids [B, K, S_m] (0..codebook_size).
            text: modality -> output of :meth:`encode_text`.
        Returns:
            modality -> logits [B, K, S_m, V].
        """
        return {m: self.heads[m](h) for m, h in self.backbone(inputs, text).items()}

    def embed(self, inputs: dict[str, torch.Tensor], order: list[str], positions: torch.Tensor) -> torch.Tensor:
        """The residual stream at the first layer: each stream's summed codebook embeddings plus its sinusoidal
        positions (``positions[:S_m]``), concatenated in ``order`` -> [B, sum S_m, D].

        Under autocast the stream is carried in the autocast dtype: every layer then runs in that dtype end to
        end (no cast after each LayerNorm, no mixed-dtype residual add), as it does when the weights themselves
        are bf16 (DeepSpeed ``bf16``, the way train.py trains in bf16). Weights and optimizer state stay fp32.
        """
        hidden = torch.cat(
            [self.embeddings[m](inputs[m]) + positions[: inputs[m].shape[-1]].to(self.dtype) for m in order], dim=1
        )
        device = hidden.device.type
        return hidden.to(torch.get_autocast_dtype(device)) if torch.is_autocast_enabled(device) else hidden

    def backbone(
        self, inputs: dict[str, torch.Tensor], text: TextStates, caption_keys: dict[str, torch.Tensor] | None = None
    ) -> dict[str, torch.Tensor]:
        """Embeddings, layers and final norm over the concatenated streams -> hidden states per stream.

        Language-model mode (default): frame-causal self-attention. Captioning mode (``caption_keys``
        given: modality -> [B, S] True for real positions): each layer's ``caption_self_attn``,
        bidirectional within each stream, padded positions hidden as keys.
        """
        order = [m for m in self.config.modalities if m in inputs]
        segments = [(m, inputs[m].shape[-1]) for m in order]
        device = inputs[order[0]].device
        positions = sinusoidal_positions(max(n for _, n in segments), self.config.hidden_size, device)
        hidden = self.dropout(self.embed(inputs, order, positions))
        captioning = caption_keys is not None
        lengths = [n for _, n in segments]
        if captioning:
            keys = torch.cat([caption_keys[m] for m in order], dim=1)[:, None, None, :]  # [B, 1, 1, L]
            streams = bidirectional_stream_mask(lengths, self.config.caption_cross_stream, device)
            self_mask = keys if streams is None else keys & streams
        else:
            # chunked unless one stream meets a kernel that skips the masked half itself
            chunked = len(lengths) > 1 or not causal_path_skips_masked_keys(
                self.config._attn_implementation, device, lengths[0]
            )
            self_mask = FrameCausal(lengths, device) if chunked else None  # None: is_causal
        for layer in self.layers:
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(
                    layer, hidden, segments, self_mask, text, None, None, captioning, use_reentrant=False
                )
            else:
                hidden = layer(hidden, segments, self_mask, text, captioning=captioning)
        hidden = self.norm(hidden)
        return {m: part for (m, _), part in zip(segments, split_segments(hidden, segments))}

    def new_cache(self, batch: int, max_positions: int) -> KVCache:
        """An empty self-attention cache for ``max_positions`` positions (all streams together)."""
        cfg = self.config
        head_dim = cfg.hidden_size // cfg.num_attention_heads
        return KVCache(
            cfg.num_hidden_layers, batch, cfg.num_attention_heads, head_dim, max_positions, self.dtype, self.device
        )

    def cross_attention_kv(self, text: TextStates) -> list[dict[str, tuple[torch.Tensor, torch.Tensor]]]:
        """Cross-attention keys/values of every layer and stream, computed once per generation."""
        return [{m: layer.encoder_attn.project_kv(states) for m, (states, _) in text.items()} for layer in self.layers]

    def decode_step(
        self,
        inputs: dict[str, torch.Tensor],
        position: int,
        text: TextStates,
        cache: KVCache,
        cross_kv: list[dict[str, tuple[torch.Tensor, torch.Tensor]]],
    ) -> dict[str, torch.Tensor]:
        """One incremental step: the delayed column at ``position`` of each stream -> logits.

        Args:
            inputs: modality -> ids [B, K, 1] (the delayed column ``position - 1``, or pads at 0).
            cache: holds every earlier position of every stream; a new query sees all of it and
                the new column of every stream, which is exactly the frame-causal rule.
        Returns:
            modality -> logits [B, K, V].
        """
        order = [m for m in self.config.modalities if m in inputs]
        segments = [(m, 1) for m in order]
        pos = sinusoidal_positions(1, self.config.hidden_size, cache.keys.device, offset=position)
        hidden = self.embed(inputs, order, pos)  # [B, n_streams, D]
        for i, layer in enumerate(self.layers):
            hidden = layer(hidden, segments, None, text, cache=(cache, i), cross_kv=cross_kv[i])
        cache.advance(len(order))
        hidden = self.norm(hidden)
        return {m: self.heads[m](hidden[:, j : j + 1])[:, :, 0] for j, m in enumerate(order)}

    def _ghost_loss(self, present: set[str]) -> torch.Tensor | float:
        """0.0 times the output of absent modalities' trainable embeddings and heads (see ModalityExpertFFN)."""
        ghost = 0.0
        if not torch.is_grad_enabled():
            return ghost
        for m in self.config.modalities:
            modules = (self.embeddings[m], self.heads[m])
            if m in present or not any(p.requires_grad for mod in modules for p in mod.parameters()):
                continue
            pad = torch.full((1, self.config.num_codebooks, 1), self.config.special_token_id, device=self.device)
            ghost = ghost + 0.0 * self.heads[m](self.embeddings[m](pad)).sum()
        return ghost

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        music_codes: torch.Tensor | None = None,
        motion_codes: torch.Tensor | None = None,
        music_mask: torch.Tensor | None = None,
        motion_mask: torch.Tensor | None = None,
        music_caption_ids: torch.Tensor | None = None,
        music_caption_mask: torch.Tensor | None = None,
        motion_caption_ids: torch.Tensor | None = None,
        motion_caption_mask: torch.Tensor | None = None,
        task: str = "lm",
        return_dict: bool = True,
    ) -> MuMoOutput:
        """Teacher-forced forward with losses. See the class docstring for the arguments.

        ``task="caption"`` (stage 3) instead encodes each stream bidirectionally and returns the
        caption decoder's loss on that stream's caption (the ``*_caption_ids`` are the targets).
        """
        given = {
            "music": (music_codes, music_mask, music_caption_ids, music_caption_mask),
            "motion": (motion_codes, motion_mask, motion_caption_ids, motion_caption_mask),
        }
        streams = {m: v for m, v in given.items() if v[0] is not None}
        if not streams:
            raise ValueError("forward needs music_codes and/or motion_codes ([B, num_codebooks, T] integer codes)")
        missing = set(streams) - set(self.config.modalities)
        if missing:
            raise ValueError(f"this model has no {sorted(missing)} stream (config.modalities={self.config.modalities})")
        _check_inputs(streams)
        if task == "caption":
            return self._caption_forward(streams)
        if task != "lm":
            raise ValueError(f"task={task!r}: choose 'lm' or 'caption'")

        special = self.config.special_token_id
        inputs, labels, text = {}, {}, {}
        for m, (codes, frame_mask, caption_ids, caption_mask) in streams.items():
            delayed, real = self._delayed(m, codes, frame_mask)
            bos = torch.full_like(delayed[..., :1], special)
            inputs[m] = torch.cat([bos, delayed[..., :-1]], dim=-1)  # step s reads column s-1
            labels[m] = torch.where(real, delayed, IGNORE_INDEX)
            text[m] = self.encode_text(caption_ids, caption_mask, codes.shape[0], codes.device)

        logits = self.decode(inputs, text)

        out = MuMoOutput()
        total = weight = 0.0
        for m in logits:
            mean, per_codebook = codebook_cross_entropy(logits[m], labels[m])
            setattr(out, f"{m}_loss", mean)
            setattr(out, f"{m}_codebook_losses", per_codebook)
            setattr(out, f"{m}_logits", logits[m])
            w = self.config.loss_weights[m] * (labels[m] != IGNORE_INDEX).any()  # a stream without targets weighs 0
            total, weight = total + w * mean, weight + w
        # Weights are renormalised over the streams with targets, so a single-stream batch trains at full scale
        # (a tensor division: no host sync; a batch without any target has loss 0).
        out.loss = total / weight.clamp_min(1e-12) + self._ghost_loss(set(logits))
        return out if return_dict else out.to_tuple()

    # ------------------------------------------------------------- captioning
    def _caption_inputs(self, streams: dict) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], TextStates]:
        """Delayed grids (no shift: the whole grid is visible), real-position masks and null captions."""
        if not self.config.captioning:
            raise ValueError("this model has no captioning modules: load it with captioning=True and train stage 3")
        inputs, keys, text = {}, {}, {}
        for m, (codes, frame_mask, *_) in streams.items():
            inputs[m], real = self._delayed(m, codes, frame_mask)  # [B, K, T+K-1]
            keys[m] = real.any(dim=1)  # [B, T+K-1]: positions that hold any real code
            text[m] = self.encode_text(None, None, codes.shape[0], codes.device)  # the caption is the target
        return inputs, keys, text

    def _caption_forward(self, streams: dict) -> MuMoOutput:
        inputs, keys, text = self._caption_inputs(streams)
        hidden = self.backbone(inputs, text, caption_keys=keys)
        out, losses = MuMoOutput(), []
        for m, (_, _, ids, ids_mask) in streams.items():
            if ids is None:
                raise ValueError(f"task='caption' needs {m}_caption_ids (the target caption of the {m} stream)")
            loss = self.caption_decoder.loss(hidden[m], keys[m], ids, ids_mask if ids_mask is not None else torch.ones_like(ids))
            setattr(out, f"{m}_caption_loss", loss)
            losses.append(loss)
        out.loss = torch.stack(losses).mean()
        return out

    @torch.no_grad()
    @in_eval_mode
    def caption(
        self,
        music_codes: torch.Tensor | None = None,
        motion_codes: torch.Tensor | None = None,
        music_mask: torch.Tensor | None = None,
        motion_mask: torch.Tensor | None = None,
        num_beams: int = 4,
        max_new_tokens: int = 64,
        tokenizer=None,
    ) -> dict[str, list[str]]:
        """Describe each given stream in words: modality -> one caption per batch item.

        Beam search with ``num_beams`` > 1, greedy with 1. ``tokenizer`` defaults to the one saved
        with the model (or ``config.text_tokenizer``).
        """
        given = {"music": (music_codes, music_mask), "motion": (motion_codes, motion_mask)}
        streams = {m: v for m, v in given.items() if v[0] is not None}
        if not streams:
            raise ValueError("caption needs music_codes and/or motion_codes")
        inputs, keys, text = self._caption_inputs(streams)
        hidden = self.backbone(inputs, text, caption_keys=keys)
        tokenizer = tokenizer or self.saved_tokenizer()
        return {
            m: tokenizer.batch_decode(self.caption_decoder.generate(hidden[m], keys[m], num_beams, max_new_tokens),
                                      skip_special_tokens=True)
            for m in streams
        }

    def saved_tokenizer(self):
        """The caption tokenizer saved with this model's folder, else ``config.text_tokenizer``."""
        from .text import load_tokenizer

        folder = getattr(self, "name_or_path", "")
        try:
            return load_tokenizer(folder) if folder else load_tokenizer(self.config.text_tokenizer)
        except OSError:
            return load_tokenizer(self.config.text_tokenizer)

    def generate(self, num_frames: int, prompts: dict, text: dict | None = None, **options) -> dict[str, torch.Tensor]:
        """Sample codes for the streams named in ``prompts`` (KV-cached, CFG); see :func:`generation.generate`."""
        return generate(self, num_frames, prompts, text, **options)

    def _delayed(self, modality: str, codes: torch.Tensor, frame_mask: torch.Tensor | None):
        """Checked codes [B, K, T] -> (delayed grid [B, K, T+K-1], True where a cell holds a real frame).

        Padded frames (``frame_mask`` False) read as the pad id, so they are invisible to the real
        frames around them."""
        special = self.config.special_token_id
        if frame_mask is None:
            frame_mask = torch.ones(codes.shape[0], codes.shape[-1], dtype=torch.bool, device=codes.device)
        self._check_codes(modality, codes, frame_mask)
        codes = torch.where(frame_mask.bool()[:, None, :], codes.long(), special)
        return build_delay_pattern(codes, special), delayed_frame_mask(frame_mask.bool(), self.config.num_codebooks)

    def _check_codes(self, modality: str, codes: torch.Tensor, frame_mask: torch.Tensor | None = None) -> None:
        """Codes [B, K, T] of this model; only real frames (``frame_mask`` True) are range-checked: padding may
        hold any integer (the pad id, -100, ...), it is replaced by the pad id."""
        k, v = self.config.num_codebooks, self.config.codebook_size
        if codes.dim() != 3 or codes.shape[1] != k:
            raise ValueError(f"{modality}_codes: expected shape [B, {k}, T], got {list(codes.shape)}")
        if codes.dtype.is_floating_point:
            raise ValueError(f"{modality}_codes: expected integer codes, got {codes.dtype}")
        if frame_mask is not None:
            codes = codes.masked_fill(~frame_mask.bool()[:, None, :], 0)
        # the range check reads values (a sync, and a graph break under torch.compile, where it is skipped)
        if codes.numel() and not torch.compiler.is_compiling() and (int(codes.min()) < 0 or int(codes.max()) >= v):
            raise ValueError(
                f"{modality}_codes: codes must lie in 0..{v - 1}, got {int(codes.min())}..{int(codes.max())}"
            )
