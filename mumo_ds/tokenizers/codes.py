"""The one check of a code array before a decoder reads it (music codec and motion VQ-VAE alike)."""

from __future__ import annotations

import numpy as np


def check_codes(codes, num_codebooks: int, codebook_size: int, source: str, kind: str) -> np.ndarray:
    """``codes`` as an integer [num_codebooks, T] array in 0..codebook_size-1, else a ValueError naming ``source``.

    A decoder's embedding would read an out-of-range id as an IndexError (a device-side assert on GPU), and the
    language model's special ids (the delay pad) are not codes of any codec."""
    codes = np.asarray(codes)
    if codes.ndim != 2 or codes.shape[0] != num_codebooks or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{source}: {kind} codes must be an integer [{num_codebooks}, T] array, "
                         f"got {codes.dtype} {list(codes.shape)}")
    if codes.size and (codes.min() < 0 or codes.max() >= codebook_size):
        raise ValueError(f"{source}: {kind} codes must lie in 0..{codebook_size - 1}, got {codes.min()}..{codes.max()}; "
                         "decode codes of this tokenizer (special ids such as the model's pad are not codes)")
    return codes
