"""Residual vector quantisation with EMA codebooks and dead-code restart.

The forward pass is pure (no buffer changes): it returns the codes, the straight-through
quantised latent, the commitment loss and the statistics of this batch. The training loop sums
those statistics over ranks and then calls :meth:`ResidualVQ.update`, which moves each codebook
(EMA of assigned vectors) and restarts dead codes from this batch's encoder outputs. So the
model file stays single-device and every rank applies the same update.
"""

from __future__ import annotations

import torch
from torch import nn


class EMACodebook(nn.Module):
    """One codebook of ``size`` vectors of width ``dim``, learned by EMA of the vectors assigned to each code.

    Buffers (saved with the model): ``codebook [K, D]``, ``cluster_size [K]`` (EMA of assignments per
    step) and ``embed_sum [K, D]`` (EMA of the sum of assigned vectors). ``cluster_size`` starts at 0,
    so the first update restarts every code from data (data-dependent initialisation).
    """

    def __init__(self, size: int, dim: int, decay: float, eps: float, dead_code_threshold: float):
        super().__init__()
        self.size, self.dim = size, dim
        self.decay, self.eps, self.dead_code_threshold = decay, eps, dead_code_threshold
        self.register_buffer("codebook", torch.randn(size, dim))
        self.register_buffer("cluster_size", torch.zeros(size))
        self.register_buffer("embed_sum", torch.zeros(size, dim))

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """Vectors [N, D] -> nearest code ids [N] (squared Euclidean distance)."""
        cb = self.codebook
        dist = x.pow(2).sum(1, keepdim=True) - 2 * x @ cb.t() + cb.pow(2).sum(1)[None]  # [N, K]
        return dist.argmin(dim=1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Code ids [...] -> vectors [..., D]."""
        return nn.functional.embedding(codes, self.codebook)

    def statistics(self, x: torch.Tensor, codes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Vectors [N, D] and their codes [N] -> (assignments per code [K], sum of assigned vectors [K, D])."""
        onehot = nn.functional.one_hot(codes, self.size).to(x.dtype)  # [N, K]
        return onehot.sum(0), onehot.t() @ x

    @torch.no_grad()
    def update(self, counts: torch.Tensor, sums: torch.Tensor, candidates: torch.Tensor) -> int:
        """EMA step with this step's ``counts [K]`` and ``sums [K, D]``, then restart dead codes.

        A code is dead when its EMA cluster size is below ``dead_code_threshold``; it is replaced by a
        random row of ``candidates [M, D]`` (this step's encoder outputs at this level) and its
        statistics are reset to one assignment of that vector. Returns the number of codes restarted.
        """
        d = self.decay
        self.cluster_size.mul_(d).add_(counts, alpha=1 - d)
        self.embed_sum.mul_(d).add_(sums, alpha=1 - d)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.size * self.eps) * n  # [K], never 0
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = torch.nonzero(self.cluster_size < self.dead_code_threshold).squeeze(1)  # [n_dead]
        if dead.numel() > 0:
            pick = torch.randint(0, candidates.shape[0], (dead.numel(),))  # global RNG: saved in checkpoints
            fresh = candidates[pick].to(self.codebook.dtype)  # [n_dead, D]
            self.codebook[dead] = fresh
            self.embed_sum[dead] = fresh
            self.cluster_size[dead] = 1.0
        return int(dead.numel())


class ResidualVQ(nn.Module):
    """``num_levels`` EMA codebooks; level l quantises what levels < l left over."""

    def __init__(self, num_levels: int, size: int, dim: int, decay: float, eps: float, dead_code_threshold: float):
        super().__init__()
        self.levels = nn.ModuleList(EMACodebook(size, dim, decay, eps, dead_code_threshold) for _ in range(num_levels))

    def forward(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        """Latent [B, T, D] -> dict with

        - ``quantized`` [B, T, D]: sum of the levels' vectors, straight-through to ``z`` for gradients;
        - ``codes`` [B, L, T] int64;
        - ``commit_loss``: mean over levels of ``mse(residual_l, q_l)`` (gradient to the encoder only);
        - ``counts`` [L, K], ``sums`` [L, K, D], ``residuals`` [L, B*T, D]: detached statistics for :meth:`update`.
        """
        b, t, dim = z.shape
        residual = z.reshape(b * t, dim)  # [N, D]
        total = torch.zeros_like(residual)
        codes, commit, counts, sums, residuals = [], [], [], [], []
        for level in self.levels:
            r = residual.detach()
            idx = level.quantize(r)  # [N]
            q = level.lookup(idx)  # [N, D]
            commit.append(nn.functional.mse_loss(residual, q.detach()))
            c, s = level.statistics(r, idx)
            codes.append(idx), counts.append(c), sums.append(s), residuals.append(r)
            total = total + q
            residual = residual - q.detach()
        zf = z.reshape(b * t, dim)
        quantized = zf + (total - zf).detach()  # straight-through estimator
        return {
            "quantized": quantized.reshape(b, t, dim),
            "codes": torch.stack(codes).reshape(len(self.levels), b, t).transpose(0, 1),  # [B, L, T]
            "commit_loss": torch.stack(commit).mean(),
            "counts": torch.stack(counts),
            "sums": torch.stack(sums),
            "residuals": torch.stack(residuals),
        }

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, L, T] -> latent [B, T, D] (sum of the levels' vectors)."""
        return sum(level.lookup(codes[:, i]) for i, level in enumerate(self.levels))

    @torch.no_grad()
    def update(self, counts: torch.Tensor, sums: torch.Tensor, residuals: torch.Tensor) -> list[int]:
        """EMA update + dead-code restart of every level; returns the codes restarted per level."""
        return [level.update(counts[i], sums[i], residuals[i]) for i, level in enumerate(self.levels)]
