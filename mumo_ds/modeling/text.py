"""Caption tokenization for the T5 text encoder."""

from __future__ import annotations

import os

import torch
from transformers import AutoTokenizer, ByT5Tokenizer, PreTrainedTokenizerBase


def load_tokenizer(name_or_path: str) -> PreTrainedTokenizerBase:
    """The caption tokenizer: ``"byt5"`` (byte-level, needs no files) or a name/folder for ``AutoTokenizer``.

    A model folder written by ``export`` holds its tokenizer, so ``load_tokenizer(folder)`` works offline.
    """
    if name_or_path == "byt5":
        return ByT5Tokenizer()
    try:
        return AutoTokenizer.from_pretrained(name_or_path)
    except (OSError, ValueError) as err:
        where = "folder" if os.path.isdir(name_or_path) else "hub id"
        raise OSError(
            f"cannot load the caption tokenizer from {where} {name_or_path!r} ({err}). "
            "Set config.text_tokenizer to 'byt5' or to a local folder that holds a T5 tokenizer."
        ) from err


def tokenize_captions(
    tokenizer: PreTrainedTokenizerBase, captions: list[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions -> (input_ids [B, L], attention_mask [B, L]), padded to the longest, truncated to ``max_tokens``."""
    enc = tokenizer(list(captions), padding=True, truncation=True, max_length=max_tokens, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def tokenize_conditions(
    tokenizer: PreTrainedTokenizerBase, captions: list[str], max_tokens: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions that condition the music/motion streams -> (input_ids, attention_mask) as :func:`tokenize_captions`,
    with an all-zero mask for an empty caption: the model's null condition, which caption dropout trains and
    guidance subtracts (tokenized, "" would be a lone end-of-sequence token, a condition of its own). A sample
    without a caption, such as most dance clips, so trains and generates as "no caption"."""
    ids, mask = tokenize_captions(tokenizer, captions, max_tokens)
    empty = torch.tensor([not caption.strip() for caption in captions], dtype=torch.bool)
    return ids, mask.masked_fill(empty[:, None], 0)
