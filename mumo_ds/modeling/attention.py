"""Attention for MuMo: the frame-causal mask over concatenated streams, and the attention module.

Layout: the streams are concatenated along time, each carrying positions
0..S-1. With a 3-step music stream and a 3-step motion stream, query rows and
key columns ``m0 m1 m2 | n0 n1 n2``, the frame-causal mask is (1 = attend)::

          m0 m1 m2 n0 n1 n2
      m0   1  0  0  1  0  0
      m1   1  1  0  1  1  0
      m2   1  1  1  1  1  1
      n0   1  0  0  1  0  0
      n1   1  1  0  1  1  0
      n2   1  1  1  1  1  1

A query at position t sees every key at position <= t in either stream, so
both streams can be sampled together, one step each per forward. With a single
stream this is the ordinary causal mask, and SDPA's ``is_causal`` path is used
where it skips the masked half itself (:func:`causal_path_skips_masked_keys`).

With several streams, :class:`FrameCausal` computes the same attention in time
chunks: the queries of chunk c attend only the keys of chunks <= c, so about
(C + 1) / 2C of the full score matrix is computed (C chunks) instead of all of
it, close to what a causal kernel skips. A single stream is chunked the same way
where the kernel's own causal path would compute the masked half anyway.

The kernel follows HF's ``config._attn_implementation`` ("sdpa" by default; set it with
``from_pretrained(..., attn_implementation="eager")`` or ``model.set_attn_implementation``):
"sdpa" is ``F.scaled_dot_product_attention``, "eager" is :func:`eager_attention`, explicit
matmuls around a softmax. On CPU in bf16 the eager path is the faster one (torch's CPU flash
kernel runs far below the GEMM rate in bf16); everywhere else SDPA is.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn


def stream_positions(lengths: list[int] | tuple[int, ...], device=None) -> torch.Tensor:
    """Positions of the concatenated streams: ``[0..L0-1, 0..L1-1, ...]``."""
    return torch.cat([torch.arange(n, device=device) for n in lengths])


def frame_causal_mask(lengths: list[int] | tuple[int, ...], device=None) -> torch.Tensor | None:
    """Boolean [L, L] mask (True = attend) for concatenated streams, or None for one stream.

    None means "use the plain causal mask" (``is_causal=True``), which SDPA runs faster. The model
    computes the same pattern chunk by chunk (:class:`FrameCausal`); this dense form is its reference.
    """
    if len(lengths) == 1:
        return None
    pos = stream_positions(lengths, device)
    return pos.unsqueeze(0) <= pos.unsqueeze(1)  # [L] -> [L_query, L_key]


def eager_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    attn_mask: torch.Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> torch.Tensor:
    """``F.scaled_dot_product_attention`` as two matmuls around a softmax (HF's "eager").

    Same arguments and result as SDPA (boolean masks: True = attend; float masks are added). Masks
    enter as an additive 0 / -inf bias, whose backward is free: the softmax gradient is already 0
    where the probability is. The softmax kernels accumulate bf16/fp16 in fp32 on CPU and GPU alike,
    so the probabilities are the fp32 ones rounded to the input dtype. Unlike the fused kernels this
    keeps the [B, H, Lq, Lk] probabilities for backward.
    """
    if is_causal:
        attn_mask = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool, device=q.device).tril()
    if attn_mask is not None and attn_mask.dtype == torch.bool:
        attn_mask = _mask_bias(attn_mask, q.dtype)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)  # [B, H, Lq, Lk]
    if attn_mask is not None:
        scores += attn_mask  # in place: the matmul keeps its inputs, not its output
    probs = torch.softmax(scores, dim=-1)
    return F.dropout(probs, dropout_p) @ v if dropout_p > 0 else probs @ v


def _mask_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = attend) as an additive 0 / -inf bias."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, float("-inf"))


ATTENTION_FUNCTIONS = {"sdpa": F.scaled_dot_product_attention, "eager": eager_attention}


def fastest_attn_implementation(device, dtype: torch.dtype) -> str:
    """The kernel to train with on ``device`` in ``dtype``: "eager" for bf16/fp16 on CPU, where torch's flash
    kernel runs far below the matmul rate (bench/train_throughput.py), "sdpa" everywhere else."""
    low_precision = dtype in (torch.bfloat16, torch.float16)
    return "eager" if torch.device(device).type == "cpu" and low_precision else "sdpa"


def implementation_name(implementation: str | None) -> str:
    """``config._attn_implementation``, None (a config no model has resolved yet) read as HF's default "sdpa"."""
    return implementation or "sdpa"


CPU_FLASH_KEY_BLOCK = 512  # keys per block of torch's CPU flash-attention kernel (for 512 keys or more)


def causal_path_skips_masked_keys(implementation: str | None, device, length: int) -> bool:
    """Whether ``is_causal=True`` spares the kernel most of the masked half of a ``length``-position stream.

    SDPA's GPU kernels skip every masked tile. Torch's CPU flash kernel splits the keys into blocks of
    :data:`CPU_FLASH_KEY_BLOCK` and skips only whole blocks after a query block, so a stream that fits in
    one block gets no skip at all: the model chunks it instead (:class:`FrameCausal`), which at 500
    positions takes 0.8x the time of ``is_causal`` for the attention's forward + backward in fp32
    (measured: 0.79x at 512, 0.91x at 600, 1.0x at 800, 1.1x at 1000 positions). The eager kernel
    computes every score, so it is always chunked."""
    if implementation_name(implementation) != "sdpa":
        return False
    return torch.device(device).type != "cpu" or length > CPU_FLASH_KEY_BLOCK


def attention_function(implementation: str):
    """The kernel for ``config._attn_implementation`` (see :func:`implementation_name`); a clear error for
    one MuMo does not have."""
    implementation = implementation_name(implementation)
    if implementation not in ATTENTION_FUNCTIONS:
        raise ValueError(
            f"MuMo has no attn_implementation={implementation!r}; use one of {sorted(ATTENTION_FUNCTIONS)}"
        )
    return ATTENTION_FUNCTIONS[implementation]


class _Permute(torch.autograd.Function):
    """``x.index_select(1, order)`` for a permutation; its gradient is the inverse gather (no scatter-add)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(1, order)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(1, inverse), None, None


class FrameCausal:
    """Frame-causal self-attention over concatenated streams, computed chunk by chunk in time.

    The self-attention reorders its input rows chunk-major (chunk 0's times of every stream, then
    chunk 1's, ...) and back after the output projection. Chunk c's queries then attend a prefix
    of the keys (every stream's times before the end of chunk c) with the frame-causal mask of that
    window, so the score matrices cover (C + 1) / 2C of the dense one. The plan is built once per
    forward and shared by all layers; ``min_chunk`` keeps short inputs in one chunk (the dense
    masked attention, rows in their own order). With one stream this is block-causal attention, for
    kernels that would otherwise compute the masked half of the scores (see
    :func:`causal_path_skips_masked_keys`).
    """

    def __init__(self, lengths: list[int] | tuple[int, ...], device=None, chunks: int = 4, min_chunk: int = 64):
        span = max(lengths)
        size = max(min_chunk, math.ceil(span / chunks))
        offsets = [sum(lengths[:i]) for i in range(len(lengths))]
        rows, times, self.sizes = [], [], []
        for start in range(0, span, size):
            chunk = [torch.arange(min(start, n), min(start + size, n), device=device) for n in lengths]
            rows += [o + t for o, t in zip(offsets, chunk)]
            times += chunk
            self.sizes.append(sum(len(t) for t in chunk))
        self.order, times = torch.cat(rows), torch.cat(times)  # chunk-major row -> concatenated row, its time
        self.reorders = len(lengths) > 1 and len(self.sizes) > 1  # one stream's chunks are already in order
        self.inverse = torch.empty_like(self.order)
        self.inverse[self.order] = torch.arange(len(self.order), device=device)
        ends = list(itertools.accumulate(self.sizes))  # plain ints: no tensor read back (a graph break when compiled)
        self.masks = [  # [rows of chunk c, rows of chunks <= c], True = attend
            times[end - n : end, None] >= times[None, :end] for n, end in zip(self.sizes, ends)
        ]
        self._biases: dict[torch.dtype, list[torch.Tensor]] = {}

    def to_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] concatenated order -> chunk-major order."""
        return _Permute.apply(x, self.order, self.inverse) if self.reorders else x

    def from_chunks(self, x: torch.Tensor) -> torch.Tensor:
        """[B, L, D] chunk-major order -> concatenated order."""
        return _Permute.apply(x, self.inverse, self.order) if self.reorders else x

    def attend(
        self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0, kernel=F.scaled_dot_product_attention
    ) -> torch.Tensor:
        """q, k, v [B, H, L, Dh] in chunk-major order -> [B, H, L, Dh] in chunk-major order.

        The eager kernel without dropout runs every chunk in one autograd node (:class:`_ChunkedEager`).
        Other kernels are called per chunk; their key/value prefixes are concatenations of split pieces
        rather than slices: a slice's backward zero-fills a full-length gradient for every chunk, a
        piece's gradient is just summed. The last chunk's prefix is all of k and v, used as they are."""
        if kernel is eager_attention and not dropout_p:
            return _ChunkedEager.apply(q, k, v, self.sizes, self.biases(q.dtype))
        k_parts, v_parts = k.split(self.sizes, dim=2), v.split(self.sizes, dim=2)
        last = len(self.sizes) - 1

        def prefix(parts: tuple[torch.Tensor, ...], full: torch.Tensor, c: int) -> torch.Tensor:
            return full if c == last else torch.cat(parts[: c + 1], dim=2) if c else parts[0]

        outs = []
        for c, (q_chunk, mask) in enumerate(zip(q.split(self.sizes, dim=2), self.masks)):
            keys, values = prefix(k_parts, k, c), prefix(v_parts, v, c)
            outs.append(kernel(q_chunk, keys, values, attn_mask=mask, dropout_p=dropout_p))
        return torch.cat(outs, dim=2) if len(outs) > 1 else outs[0]

    def biases(self, dtype: torch.dtype) -> list[torch.Tensor]:
        """The chunk masks as additive 0 / -inf biases in ``dtype`` (made once per forward, for every layer)."""
        if dtype not in self._biases:
            self._biases[dtype] = [_mask_bias(m, dtype) for m in self.masks]
        return self._biases[dtype]


class _ChunkedEager(torch.autograd.Function):
    """Eager attention over :class:`FrameCausal`'s chunks as one autograd node, with its own backward.

    Queries are laid out chunk by chunk and keys/values once as [B * H, L, Dh]; each chunk reads its
    key/value prefix as a view, and its scores come from one ``baddbmm`` that also scales and adds the
    mask bias. The backward runs the chunks last to first: the last chunk's key/value gradients cover
    every key and become the buffers the earlier chunks' (shorter) gradients are added into, so no chunk
    concatenates a prefix or allocates a full-length gradient, and no batched GEMM writes into a strided view
    (on CPU that falls back to one GEMM per batch entry). Keeps the chunks' probabilities for backward,
    as :func:`eager_attention` does.
    """

    @staticmethod
    def forward(ctx, q, k, v, sizes: list[int], biases: list[torch.Tensor]):
        b, h, length, dh = q.shape
        k3, v3 = (x.reshape(b * h, length, dh) for x in (k, v))  # copies of the usual head-split views
        q_chunks = [x.reshape(b * h, -1, dh) for x in q.split(sizes, dim=2)]
        outs, probs, end = [], [], 0
        for q_chunk, n, bias in zip(q_chunks, sizes, biases):
            end += n
            scores = torch.baddbmm(bias, q_chunk, k3[:, :end].transpose(1, 2), alpha=dh**-0.5)
            probs.append(torch.softmax(scores, dim=-1))
            outs.append(torch.bmm(probs[-1], v3[:, :end]))
        ctx.save_for_backward(k3, v3, *q_chunks, *probs)
        ctx.sizes = sizes
        return torch.cat(outs, dim=1).view(b, h, length, dh)

    @staticmethod
    def backward(ctx, grad):
        k3, v3, *saved = ctx.saved_tensors
        chunks = len(ctx.sizes)
        q_chunks, probs = saved[:chunks], saved[chunks:]
        grad_chunks = [g.reshape(k3.shape[0], -1, k3.shape[2]) for g in grad.split(ctx.sizes, dim=2)]
        dq, dk, dv, end = [], None, None, k3.shape[1]
        for c in reversed(range(chunks)):
            p, g = probs[c], grad_chunks[c]
            dscores = torch._softmax_backward_data(torch.bmm(g, v3[:, :end].transpose(1, 2)), p, -1, p.dtype)
            dq.append(torch.bmm(dscores, k3[:, :end]))
            dk_c, dv_c = torch.bmm(dscores.transpose(1, 2), q_chunks[c]), torch.bmm(p.transpose(1, 2), g)
            if dk is None:  # the last chunk's prefix is every key
                dk, dv = dk_c, dv_c
            else:
                dk[:, :end] += dk_c
                dv[:, :end] += dv_c
            end -= ctx.sizes[c]
        scale = k3.shape[2] ** -0.5
        dq = torch.cat(dq[::-1], dim=1).mul_(scale)
        return dq.view(grad.shape), dk.mul_(scale).view(grad.shape), dv.view(grad.shape), None, None


class KVCache:
    """Preallocated self-attention keys and values of every layer, for incremental decoding.

    ``update`` writes the new keys/values of one layer after the cached ones and returns
    everything so far; ``advance`` moves the end once every layer has been updated. Writing
    into a fixed buffer keeps the per-step cost free of a growing concatenation.
    """

    def __init__(self, num_layers: int, batch: int, num_heads: int, head_dim: int, max_len: int, dtype, device):
        shape = (num_layers, batch, num_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        if end > self.keys.shape[3]:
            raise ValueError(f"KV cache overflow: {end} positions, allocated {self.keys.shape[3]}")
        self.keys[layer, :, :, self.length : end] = k
        self.values[layer, :, :, self.length : end] = v
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]

    def advance(self, n: int) -> None:
        self.length += n


class MuMoAttention(nn.Module):
    """Multi-head attention without biases (as MusicGen), with the kernel ``config._attn_implementation`` names.

    Self-attention when ``key_value_states`` is None, cross-attention otherwise. For
    incremental decoding, ``cache`` (a :class:`KVCache` and this layer's index) appends the
    new keys/values, and ``kv`` passes precomputed cross-attention keys/values (:meth:`project_kv`).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config  # read at call time: set_attn_implementation switches the kernel of every layer
        hidden_size = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.head_dim = hidden_size // self.num_heads
        self.dropout = config.attention_dropout
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.out_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # [B, L, D] -> [B, H, L, Dh]

    def project_kv(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values [B, H, L, Dh] of ``states`` [B, L, D]."""
        return self._heads(self.k_proj(states)), self._heads(self.v_proj(states))

    def project_qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Self-attention queries, keys and values [B, H, L, Dh] of ``x`` [B, L, D] from one GEMM over the three
        weights stacked: under autocast ``x`` is cast once, not three times, and the backward takes one
        input-gradient GEMM instead of three GEMMs and two sums. Under ZeRO-3 the training engine registers the
        three weights as this module's external parameters (DeepSpeed gathers a module's own parameters only);
        ``matmul``, not ``F.linear``, which ZeRO-3 replaces with a function meant for parameters."""
        weight = torch.cat(self.stacked_weights())
        q, k, v = torch.matmul(x, weight.t()).chunk(3, dim=-1)
        return self._heads(q), self._heads(k), self._heads(v)

    def stacked_weights(self) -> list[nn.Parameter]:
        """The child weights :meth:`project_qkv` reads itself rather than through the children's forwards."""
        return [self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        attn_mask: torch.Tensor | FrameCausal | None = None,
        is_causal: bool = False,
        cache: tuple[KVCache, int] | None = None,
        kv: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        chunked = attn_mask if isinstance(attn_mask, FrameCausal) else None
        if chunked is not None:
            hidden_states = chunked.to_chunks(hidden_states)
        if key_value_states is None and kv is None and torch.is_grad_enabled():
            q, k, v = self.project_qkv(hidden_states)  # pays off through the backward
        else:  # stacking the weights at every decoding step costs more than it saves (~14% of generation)
            q = self._heads(self.q_proj(hidden_states))
            k, v = kv if kv is not None else self.project_kv(
                hidden_states if key_value_states is None else key_value_states
            )
        if cache is not None:
            store, layer = cache
            k, v = store.update(layer, k, v)
        dropout = self.dropout if self.training else 0.0
        kernel = attention_function(self.config._attn_implementation)
        if chunked is not None:
            out = chunked.attend(q, k, v, dropout, kernel)
        else:
            out = kernel(q, k, v, attn_mask=attn_mask, is_causal=is_causal, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).flatten(2))  # [B, H, Lq, Dh] -> [B, Lq, D]
        return chunked.from_chunks(out) if chunked is not None else out
