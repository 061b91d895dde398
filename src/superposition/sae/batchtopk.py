"""BatchTopK SAE (Bussmann et al. 2024): keep the k·batch largest ReLU pre-activations over the
whole batch (per instance), so examples can use more or fewer latents than k.

At inference it uses a fixed threshold θ, the running mean over training batches of the smallest
activation kept: z = pre ⊙ 1[pre > θ], so each example is encoded alone. Saved as a `threshold`
[d_sae] (θ repeated), the JumpReLU form that SAELens reads. Loss: ‖x − x̂‖² + AuxK (see topk.py).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from superposition.sae.base import architecture
from superposition.sae.sparse import Active, Encoded
from superposition.sae.topk import TopKFamily


def largest(flat: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """The n largest entries of each row of flat (rows, L): (values, indices), unordered; as
    flat.topk(n) but, for the long rows of a batch top-k, several times faster on a CPU: a strided
    sample (a prime stride, so no latent is favoured) gives a value τ that about 1.5·n entries
    exceed, and the top n is chosen among those. Falls back to topk if fewer than n do."""
    rows, L = flat.shape
    stride = next((p for p in (251, 127, 61, 31, 13, 7) if n // p >= 400), 0)
    if not stride or L < 16 * n:
        return flat.topk(n, dim=-1, sorted=False)
    sample = flat[:, ::stride]
    tau = sample.topk(min(sample.shape[1], 3 * n // (2 * stride) + 4), dim=-1, sorted=False).values
    above = flat >= tau.amin(-1, keepdim=True)
    counts = torch.count_nonzero(above, dim=-1)
    if bool((counts < n).any()):
        return flat.topk(n, dim=-1, sorted=False)
    row, col = above.nonzero().unbind(1)
    if rows == 1:
        vals, pick = flat[0, col].topk(n, sorted=False)
        return vals.unsqueeze(0), col[pick].unsqueeze(0)
    # rows of different lengths: pack each row's candidates left, padded with −inf
    pos = torch.arange(row.numel(), device=flat.device) - (counts.cumsum(0) - counts)[row]
    width = int(counts.max())
    packed = flat.new_full((rows, width), float("-inf")).index_put_((row, pos), flat[row, col])
    where = torch.zeros(rows, width, dtype=torch.long, device=flat.device).index_put_((row, pos), col)
    vals, pick = packed.topk(n, dim=-1, sorted=False)
    return vals, where.gather(1, pick)


@architecture
class BatchTopKSAE(TopKFamily):
    name = "batchtopk"
    optional_tensors = ("threshold",)  # a TopK file read as BatchTopK keeps θ = 0 until trained

    def __init__(self, cfg, generator: torch.Generator | None = None) -> None:
        super().__init__(cfg, generator)
        self.register_buffer("threshold", torch.zeros(cfg.n_instances))
        self.register_buffer("threshold_count", torch.zeros((), dtype=torch.long))

    def encode(self, x: Tensor) -> Tensor:
        """Inference form: a fixed per-instance threshold, so each example is encoded alone."""
        pre = self.pre_acts(x)
        return pre * (pre > self.threshold.view(1, -1, 1))

    def _choose(self, enc: Encoded) -> Active | None:
        """The k·batch largest positive pre-activations over the batch, per instance; updates θ."""
        batch, inst, m = enc.pre.shape
        flat = enc.pre.transpose(0, 1).reshape(inst, batch * m)
        if self.k == m:  # every latent kept
            vals, idx = flat, None
        else:
            vals, idx = largest(flat, self.k * batch)
        keep = vals > 0
        smallest = torch.where(keep, vals, torch.full_like(vals, float("inf"))).amin(-1).float()
        n = self.threshold_count.item()  # θ: the running mean of the smallest activation kept
        ok = torch.isfinite(smallest)
        self.threshold[ok] = (self.threshold[ok] * n + smallest[ok]) / (n + 1)
        self.threshold_count += 1
        if idx is None:
            return None
        # positions in the flattened (batch, inst, m) latents, sorted by example
        i = torch.arange(inst, device=idx.device).view(-1, 1)
        index = (idx // m * inst + i) * m + idx % m
        return Active.from_dense_index(index[keep].sort().values, (batch, inst, m))

    def saved_tensors(self, i: int) -> dict[str, Tensor]:
        return {**super().saved_tensors(i), "threshold": self.threshold[i].expand(self.cfg.d_sae)}

    @torch.no_grad()
    def load_saved(self, t: Mapping[str, Tensor]) -> None:
        super().load_saved(t)
        if "threshold" in t:
            self.threshold.copy_(t["threshold"].reshape(-1)[:1])
