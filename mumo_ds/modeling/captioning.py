"""Captioning (stage 3): describe music or dance in words, BLIP-style.

In captioning mode every layer uses its ``caption_self_attn`` (initialised as a
copy of ``self_attn``) with a bidirectional mask inside each stream, the text
cross-attention gets the null caption (the caption is the target, never an
input), and the final hidden states of a stream are projected into a T5
decoder that is trained with teacher-forced cross-entropy on that stream's
caption, and decodes with greedy or beam search.

Mask for streams of lengths (2, 3), rows = queries, 1 = attend::

          m0 m1 n0 n1 n2
      m0   1  1  0  0  0
      m1   1  1  0  0  0
      n0   0  0  1  1  1
      n1   0  0  1  1  1
      n2   0  0  1  1  1

With ``caption_cross_stream=True`` every position attends every other one.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import T5Config, T5ForConditionalGeneration
from transformers.modeling_outputs import BaseModelOutput

from .losses import IGNORE_INDEX


def bidirectional_stream_mask(lengths: list[int], cross_stream: bool, device=None) -> torch.Tensor | None:
    """Boolean [L, L] mask (True = attend) for captioning, or None when everything attends everything."""
    if cross_stream or len(lengths) == 1:
        return None
    stream = torch.cat([torch.full((n,), i, device=device) for i, n in enumerate(lengths)])
    return stream.unsqueeze(0) == stream.unsqueeze(1)  # [L_query, L_key]


class CaptionDecoder(nn.Module):
    """Projection of MuMo hidden states into a T5 decoder (its encoder has no layers: MuMo is the encoder)."""

    def __init__(self, hidden_size: int, decoder_config: dict):
        super().__init__()
        ids = dict(decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # T5's conventions
        layers = decoder_config.get("num_decoder_layers", decoder_config.get("num_layers"))  # T5: num_layers for both
        if not layers:
            raise ValueError(f"caption_decoder={decoder_config}: give its depth as num_decoder_layers (> 0)")
        t5 = T5Config(**{**ids, **decoder_config, "num_layers": 0, "num_decoder_layers": layers})
        self.projection = nn.Linear(hidden_size, t5.d_model)
        self.t5 = T5ForConditionalGeneration(t5)

    def encoder_outputs(self, hidden: torch.Tensor) -> BaseModelOutput:
        return BaseModelOutput(last_hidden_state=self.projection(hidden))  # [B, S, D] -> [B, S, D_t5]

    def loss(self, hidden: torch.Tensor, positions_mask: torch.Tensor, ids: torch.Tensor, ids_mask: torch.Tensor):
        """Teacher-forced cross-entropy of caption ``ids`` [B, L] given stream states ``hidden`` [B, S, D]."""
        labels = ids.masked_fill(ids_mask == 0, IGNORE_INDEX)
        out = self.t5(encoder_outputs=self.encoder_outputs(hidden), attention_mask=positions_mask.long(), labels=labels)
        return out.loss

    @torch.no_grad()
    def generate(self, hidden: torch.Tensor, positions_mask: torch.Tensor, num_beams: int, max_new_tokens: int):
        """Token ids [B, L] of the best caption (greedy when ``num_beams`` is 1)."""
        return self.t5.generate(
            encoder_outputs=self.encoder_outputs(hidden),
            attention_mask=positions_mask.long(),
            num_beams=num_beams,
            max_new_tokens=max_new_tokens,
            do_sample=False,
        )
