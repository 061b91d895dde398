"""Feature splitting across widths, from decoders alone: for every latent of the wider SAE, its
nearest latent of the narrower one by decoder cosine; families (a narrow latent with the wide
latents that have it as nearest neighbour) and novel latents (best cosine below a threshold)."""

from __future__ import annotations

import torch
from torch import Tensor

from superposition.errors import SuperpositionError

CHUNK = 4096  # wide latents per block of the cosine matrix: memory O(CHUNK · d_sae_narrow)


def nearest(wide: Tensor, narrow: Tensor) -> tuple[Tensor, Tensor]:
    """For each row of `wide` (m_w, d), the index of the row of `narrow` (m_n, d) with the largest
    cosine, and that cosine. Zero rows have cosine 0 with everything."""
    w = wide / wide.norm(dim=1, keepdim=True).clamp(min=1e-12)
    n = narrow / narrow.norm(dim=1, keepdim=True).clamp(min=1e-12)
    best, idx = [], []
    for block in w.split(CHUNK):
        cos = block @ n.T
        v, i = cos.max(dim=1)
        best.append(v)
        idx.append(i)
    return torch.cat(idx), torch.cat(best)


def compare(a: Tensor, b: Tensor, threshold: float) -> dict:
    """The comparison's numbers for two decoders A and B (d_sae, d_in): nearest narrow latent and
    cosine per wide latent, families, and the summary (see the module docstring)."""
    if a.shape[1] != b.shape[1]:
        raise SuperpositionError(
            f"B: d_in {b.shape[1]} differs from A's {a.shape[1]}; compare-saes needs SAEs of the same d_in"
        )
    wide_is = "A" if a.shape[0] > b.shape[0] else "B"
    wide, narrow = (a, b) if wide_is == "A" else (b, a)
    with torch.no_grad():
        idx, cos = nearest(wide.float().cpu(), narrow.float().cpu())
    m_n = narrow.shape[0]
    sizes = torch.bincount(idx, minlength=m_n)
    novel = cos < threshold
    hist = torch.bincount(sizes)
    return {
        "nearest": idx,
        "cosine": cos,
        "novel": novel,
        "sizes": sizes,
        "summary": {
            "wide": wide_is,
            "d_in": a.shape[1],
            "d_sae_wide": wide.shape[0],
            "d_sae_narrow": m_n,
            "threshold": threshold,
            "frac_novel": novel.float().mean().item(),
            "mean_max_cosine": cos.mean().item(),
            "median_max_cosine": cos.median().item(),
            "frac_narrow_with_children": (sizes > 0).float().mean().item(),
            "frac_narrow_split": (sizes > 1).float().mean().item(),
            "largest_family": int(sizes.max()),
            "family_size_counts": {str(s): int(c) for s, c in enumerate(hist.tolist()) if c},
        },
    }
