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
