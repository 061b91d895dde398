"""Training on the active latents: after the encoder's forward product, every product of an SAE
training step involves only the (example, latent) pairs that are active, so its cost follows the
number of active latents instead of d_sae.

The pre-activations of a batch are computed once, densely and without a graph, to choose the
active pairs (the top k, those above a threshold). `encode_active` then gives the chosen
pre-activations with gradients to W_enc, b_enc and the encoder's input; `decode_active` decodes
values on those pairs. Each chooses, from the pairs per example against d_sae, whether its products
run on the pairs (gathers and `embedding_bag`, whose row sums are fused and multithreaded) or as
dense batched products (scattered into a (batch, inst, d_sae) tensor), which are faster when most
latents are active.

The pairs live in `Active`: flat indices into the (batch·inst) rows of the input and the
(inst·d_sae) rows of W_encᵀ and W_dec, sorted by row.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor

# Where a dense product over d_sae latents and products over p active pairs per example cost about
# the same: d_sae = SPARSE_BREAK_EVEN · p (measured on a 2-core CPU with TopK training steps at
# d_in 128 and 576, d_sae from 128 to 18432, k from 8 to 128: benchmarks/bench_sae_grid.py).
SPARSE_BREAK_EVEN = 4.0
_FORCED: str | None = None


@contextmanager
def force_path(path: str) -> Iterator[None]:
    """Make every product run "dense" or "sparse" (tests and benchmarks compare the two)."""
    global _FORCED
    if path not in ("dense", "sparse"):
        raise ValueError(f"path: dense or sparse, got {path!r}")
    before, _FORCED = _FORCED, path
    try:
        yield
    finally:
        _FORCED = before


def _pairs_pay(nnz: int, rows: int, m: int) -> bool:
    """Whether products on nnz pairs beat dense ones over rows × m latents."""
    return nnz * SPARSE_BREAK_EVEN < rows * m


class Active:
    """The active (example, latent) pairs of a batch of latents (batch, inst, d_sae).

    row: b·inst + i, lat: i·d_sae + j (both (nnz,), sorted by row); `offsets` where each row's
    pairs start, as `embedding_bag` takes them."""

    def __init__(self, row: Tensor, lat: Tensor, shape: tuple[int, int, int], per_row: int = 0) -> None:
        self.row, self.lat, self.shape = row, lat, shape
        self.per_row = per_row  # k when every row has exactly k pairs (TopK), else 0

    @classmethod
    def from_topk(cls, idx: Tensor, m: int) -> Active:
        """idx (batch, inst, k): each example's k chosen latents among m."""
        batch, inst, k = idx.shape
        row = torch.arange(batch * inst, device=idx.device).repeat_interleave(k)
        lat = idx + (torch.arange(inst, device=idx.device) * m).view(1, -1, 1) if inst > 1 else idx
        return cls(row, lat.reshape(-1), (batch, inst, m), per_row=k)

    @classmethod
    def from_mask(cls, mask: Tensor) -> Active:
        """mask (batch, inst, d_sae): the active pairs."""
        batch, inst, m = mask.shape
        flat = mask.reshape(-1).nonzero().squeeze(1)
        row = flat // m
        lat = (row % inst) * m + flat % m
        return cls(row, lat, (batch, inst, m))

    @classmethod
    def from_dense_index(cls, index: Tensor, shape: tuple[int, int, int]) -> Active:
        """index: sorted positions in the flattened (batch, inst, d_sae) tensor."""
        _, inst, m = shape
        row = index // m
        active = cls(row, (row % inst) * m + index % m, shape)
        active.__dict__["dense_index"] = index
        return active

    def on_columns(self, cols: Tensor, m: int) -> Active:
        """For pairs found among the columns `cols` of the latents: the same pairs, indexed among
        all m latents."""
        batch, inst, n = self.shape
        return Active(self.row, (self.lat // n) * m + cols[self.lat % n], (batch, inst, m))

    def where(self, keep: Tensor) -> Active:
        """The pairs where keep (nnz,) is true, still sorted by row."""
        return Active(self.row[keep], self.lat[keep], self.shape)

    @property
    def nnz(self) -> int:
        return self.row.numel()

    @property
    def n_rows(self) -> int:
        return self.shape[0] * self.shape[1]

    @property
    def n_latents(self) -> int:
        return self.shape[1] * self.shape[2]

    def sparse(self) -> bool:
        """Whether products on the pairs beat dense ones for this many pairs per row."""
        if _FORCED is not None:
            return _FORCED == "sparse"
        return _pairs_pay(self.nnz, self.n_rows, self.shape[2])

    @cached_property
    def row_offsets(self) -> Tensor:
        if self.per_row:
            return torch.arange(0, self.nnz, self.per_row, device=self.row.device)
        counts = torch.bincount(self.row, minlength=self.n_rows)
        return counts.cumsum(0) - counts

    @cached_property
    def by_latent(self) -> tuple[Tensor, Tensor]:
        """(order, offsets): the pairs sorted by latent, and where each latent's pairs start."""
        order = torch.argsort(self.lat)
        counts = torch.bincount(self.lat, minlength=self.n_latents)
        return order, counts.cumsum(0) - counts

    @cached_property
    def dense_index(self) -> Tensor:
        """Each pair's position in the flattened (batch, inst, d_sae) tensor."""
        m = self.shape[2]
        return self.row * m + (self.lat if self.shape[1] == 1 else self.lat % m)

    def gather(self, dense: Tensor) -> Tensor:
        return dense.reshape(-1)[self.dense_index]

    def scatter(self, values: Tensor) -> Tensor:
        """The (batch, inst, d_sae) tensor with `values` on the pairs and zeros elsewhere
        (values of a pair listed twice are added)."""
        out = values.new_zeros(self.n_rows * self.shape[2])
        return out.index_add_(0, self.dense_index, values).view(self.shape)

    def per_latent(self, values: Tensor) -> Tensor:
        """Σ of values over each latent's pairs: (inst, d_sae)."""
        out = values.new_zeros(self.n_latents)
        return out.index_add_(0, self.lat, values).view(self.shape[1], self.shape[2])

    def per_instance(self, values: Tensor) -> Tensor:
        """Σ of values over each instance's pairs: (inst,)."""
        inst = self.shape[1]
        if inst == 1:
            return values.sum().view(1)
        return values.new_zeros(inst).index_add_(0, self.row % inst, values)

    def counts(self, values: Tensor) -> Tensor:
        """(inst, d_sae): on how many pairs each latent is non-zero."""
        return self.per_latent((values != 0).to(values.dtype))


def _rows_by_latent(active: Active, rows: Tensor, weights: Tensor) -> Tensor:
    """(inst·d_sae, d): for each latent, Σ over its pairs of weight · rows[row] (the gradient of a
    weight matrix whose latent rows met `rows`)."""
    order, offsets = active.by_latent
    return F.embedding_bag(active.row[order], rows, offsets, mode="sum", per_sample_weights=weights[order])


def _latents_by_row(active: Active, W: Tensor, weights: Tensor) -> Tensor:
    """(batch·inst, d): for each row, Σ over its pairs of weight · W[lat]."""
    return F.embedding_bag(active.lat, W, active.row_offsets, mode="sum", per_sample_weights=weights)


def _pair_dots(active: Active, rows: Tensor, W: Tensor) -> Tensor:
    """(nnz,): rows[row] · W[lat] for every pair: the product rows Wᵀ sampled at the pairs (a
    sampled dense-dense product, several times faster than gathering both sides' rows)."""
    crow = torch.cat([active.row_offsets, active.row_offsets.new_tensor([active.nnz])])
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore")
        pattern = torch.sparse_csr_tensor(
            crow,
            active.lat,
            rows.new_zeros(active.nnz),
            (active.n_rows, active.n_latents),
            check_invariants=False,
        )
    return torch.sparse.sampled_addmm(pattern, rows, W.T, beta=0.0).values()


class _Encode(torch.autograd.Function):
    """pre = (x − b_sub) W_enc + b_enc, computed beforehand without a graph; its values on the
    active pairs (or all of it), with the gradients that only those pairs receive."""

    @staticmethod
    def forward(ctx, x, b_sub, W_encT, b_enc, pre, xc, active):
        ctx.save_for_backward(xc, W_encT)
        ctx.active = active
        ctx.sparse = active is not None and active.sparse()
        if active is None:
            return pre
        if pre.dtype == xc.dtype:
            return active.gather(pre)
        d = xc.shape[-1]
        return _pair_dots(active, xc.reshape(-1, d), W_encT.reshape(-1, d)) + b_enc.reshape(-1)[active.lat]

    @staticmethod
    def backward(ctx, g: Tensor):
        xc, W_encT = ctx.saved_tensors
        need_x, need_bsub, need_w, need_b = ctx.needs_input_grad[:4]
        batch, inst, d = xc.shape
        a: Active | None = ctx.active
        grad_x = grad_w = None
        if ctx.sparse:
            grad_b = a.per_latent(g)
            if need_w:
                grad_w = _rows_by_latent(a, xc.reshape(-1, d), g).view(W_encT.shape)
            if need_x:
                grad_x = _latents_by_row(a, W_encT.reshape(-1, d), g).view(batch, inst, d)
        else:
            G = (g if a is None else a.scatter(g)).transpose(0, 1)  # (inst, batch, d_sae)
            grad_b = G.sum(1)
            if need_w:
                grad_w = torch.bmm(G.transpose(1, 2), xc.transpose(0, 1))
            if need_x:
                grad_x = torch.bmm(G, W_encT).transpose(0, 1)
        # x − b_sub: b_sub's gradient is −Σ over the batch of the input's, = −(Σ_b G_b) W_encᵀ
        grad_bsub = -torch.bmm(grad_b.unsqueeze(1), W_encT).squeeze(1) if need_bsub else None
        return grad_x, grad_bsub, grad_w, grad_b if need_b else None, None, None, None


class _DecodeActive(torch.autograd.Function):
    @staticmethod
    def forward(ctx, values: Tensor, W_dec: Tensor, active: Active) -> Tensor:
        batch, inst, m = active.shape
        d = W_dec.shape[-1]
        ctx.active, ctx.sparse = active, active.sparse()
        if ctx.sparse:
            ctx.save_for_backward(values, W_dec)
            out = _latents_by_row(active, W_dec.reshape(-1, d), values)
            return out.view(batch, inst, d)
        z = active.scatter(values)
        ctx.save_for_backward(z, W_dec)
        return torch.bmm(z.transpose(0, 1), W_dec).transpose(0, 1)

    @staticmethod
    def backward(ctx, g: Tensor):
        values, W_dec = ctx.saved_tensors
        a: Active = ctx.active
        batch, inst, m = a.shape
        d = W_dec.shape[-1]
        grad_v = grad_w = None
        g = g.contiguous()
        if ctx.sparse:
            rows = g.view(-1, d)
            if ctx.needs_input_grad[0]:
                grad_v = _pair_dots(a, rows, W_dec.reshape(-1, d))
            if ctx.needs_input_grad[1]:
                grad_w = _rows_by_latent(a, rows, values).view(inst, m, d)
        else:
            gt = g.transpose(0, 1)  # (inst, batch, d)
            if ctx.needs_input_grad[0]:
                grad_v = a.gather(torch.bmm(gt, W_dec.transpose(1, 2)).transpose(0, 1))
            if ctx.needs_input_grad[1]:  # values holds the dense latents z here
                grad_w = torch.bmm(values.transpose(0, 1).transpose(1, 2), gt)
        return grad_v, grad_w, None


class Encoded:
    """The encoder's forward product for a batch, computed once without a graph: `pre` (batch,
    inst, d_sae) = (x − b_sub) W_enc + b_enc, which is all that choosing the active pairs needs,
    with what `encode_active` needs to give those pairs their gradients."""

    def __init__(
        self, x: Tensor, b_sub: Tensor | None, W_encT: Tensor, b_enc: Tensor, dtype: torch.dtype | None = None
    ) -> None:
        self.x, self.b_sub, self.b_enc = x, b_sub, b_enc
        self.W_encT = W_encT.contiguous()  # rows per latent: what gathers and embedding_bag read
        with torch.no_grad():
            self.xc = x if b_sub is None else x - b_sub
            # in a lower precision (dtype) `pre` only chooses the pairs; their values are then
            # computed in full precision from the pairs' rows
            b, xt, wt = b_enc.unsqueeze(1), self.xc.transpose(0, 1), self.W_encT.transpose(1, 2)
            if dtype is not None:
                b, xt, wt = b.to(dtype), xt.to(dtype), wt.to(dtype)
            self.pre = torch.baddbmm(b, xt, wt).transpose(0, 1)


def encode_active(enc: Encoded, active: Active | None) -> Tensor:
    """The pre-activations on the active pairs (nnz,), or all of them (batch, inst, d_sae) when
    `active` is None, with gradients to x (batch, inst, d_in), b_sub (inst, d_in), W_encT (inst,
    d_sae, d_in) and b_enc (inst, d_sae)."""
    return _Encode.apply(enc.x, enc.b_sub, enc.W_encT, enc.b_enc, enc.pre, enc.xc, active)


def decode_active(values: Tensor, W_dec: Tensor, active: Active) -> Tensor:
    """Σ over each example's active pairs of value · W_dec[latent]: (batch, inst, d_in)."""
    return _DecodeActive.apply(values, W_dec, active)


class Latents:
    """The latents of a batch as a training loss uses them: values on the active pairs (`active`),
    or all of them (batch, inst, d_sae) when most are active and dense products are cheaper."""

    def __init__(self, values: Tensor, active: Active | None, batch: int) -> None:
        self.values, self.active, self.batch = values, active, batch

    @classmethod
    def pre_activations(cls, enc: Encoded, mask: Tensor) -> Latents:
        """The pre-activations with gradients: on the pairs where mask (batch, inst, d_sae) is
        true, or all of them when that is most. The caller's activation must be zero, with zero
        gradient, wherever mask is false."""
        batch, inst, m = mask.shape
        dense = not _pairs_pay(int(torch.count_nonzero(mask)), batch * inst, m)
        if _FORCED == "dense" or (dense and _FORCED != "sparse"):
            return cls(encode_active(enc, None), None, batch)
        active = Active.from_mask(mask)
        return cls(encode_active(enc, active), active, batch)

    def map(self, values: Tensor) -> Latents:
        """The same pairs with new values (computed from self.values)."""
        return Latents(values, self.active, self.batch)

    def per_latent(self, p: Tensor) -> Tensor:
        """A per-latent tensor (inst, d_sae) laid out as the values."""
        return p.unsqueeze(0) if self.active is None else p.reshape(-1)[self.active.lat]

    def decode(self, W_dec: Tensor, b_dec: Tensor) -> Tensor:
        if self.active is None:
            z = self.values.transpose(0, 1)
            return torch.baddbmm(b_dec.unsqueeze(1), z, W_dec).transpose(0, 1)
        return decode_active(self.values, W_dec, self.active) + b_dec

    def mean_sum(self, values: Tensor | None = None) -> Tensor:
        """(inst,): the sum over latents of `values` (default: the latents), mean over the batch."""
        v = self.values if values is None else values
        if self.active is None:
            return v.sum(-1).mean(0)
        return self.active.per_instance(v) / self.batch

    def l0_and_fired(self) -> tuple[Tensor, Tensor]:
        """(inst,) mean non-zero latents per example, (inst, d_sae) bool: which were non-zero."""
        with torch.no_grad():
            if self.active is None:
                nonzero = self.values != 0
                return nonzero.sum(-1).to(self.values.dtype).mean(0), nonzero.any(0)
            counts = self.active.counts(self.values)
            return counts.sum(-1) / self.batch, counts > 0

    def to_dense(self) -> Tensor:
        """(batch, inst, d_sae), with gradients to the values."""
        return self.values if self.active is None else self.active.scatter(self.values)

    @property
    def dense(self) -> Tensor | None:
        return self.values if self.active is None else None
