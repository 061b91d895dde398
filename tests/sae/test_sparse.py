"""The products on active pairs (sae/sparse.py) against the dense computation they replace."""

import pytest
import torch

from superposition.sae.sparse import Active, Encoded, Latents, decode_active, encode_active, force_path

B, INST, D, M = 9, 3, 5, 11


def _mask(seed: int, p: float = 0.3) -> torch.Tensor:
    mask = torch.rand(B, INST, M, generator=torch.Generator().manual_seed(seed)) < p
    mask[2] = False  # an example with no active latent (an empty row)
    mask[:, :, 4] = False  # a latent active nowhere
    return mask


def _starts(row: torch.Tensor) -> torch.Tensor:
    """Where each of the B·INST rows' pairs start, for pairs sorted by row."""
    counts = row.bincount(minlength=B * INST)
    return torch.cat([torch.zeros(1, dtype=torch.long), counts.cumsum(0)[:-1]])


def test_the_ways_of_making_pairs_agree():
    mask = _mask(0)
    dense = torch.randn(B, INST, M, dtype=torch.float64)
    a = Active.from_mask(mask)
    assert a.nnz == int(mask.sum())
    assert torch.equal(a.scatter(torch.ones(a.nnz, dtype=torch.float64)), mask.double())
    assert torch.equal(a.gather(dense), dense[mask])  # row-major order, as boolean indexing
    assert torch.equal(a.row, torch.sort(a.row).values)
    # flat latent index i·M + j, row b·INST + i
    b, i, j = mask.nonzero().unbind(1)
    assert torch.equal(a.row, b * INST + i) and torch.equal(a.lat, i * M + j)
    assert torch.equal(a.row_offsets, _starts(a.row))
    same = Active.from_dense_index(mask.reshape(-1).nonzero().squeeze(1), (B, INST, M))
    assert torch.equal(same.row, a.row) and torch.equal(same.lat, a.lat)
    # top k: the same pairs as the mask of the top k
    idx = dense.topk(4, dim=-1).indices
    t = Active.from_topk(idx, M)
    topk_mask = torch.zeros(B, INST, M, dtype=torch.bool).scatter_(-1, idx, True)
    assert torch.equal(t.scatter(torch.ones(t.nnz, dtype=torch.float64)).bool(), topk_mask)
    assert torch.equal(t.row_offsets, torch.arange(0, B * INST * 4, 4))
    # pairs found among some columns, re-indexed among all
    cols = torch.tensor([1, 5, 6, 10])
    sub = Active.from_mask(mask[:, :, cols]).on_columns(cols, M)
    only = torch.zeros_like(mask)
    only[:, :, cols] = mask[:, :, cols]
    assert torch.equal(sub.scatter(torch.ones(sub.nnz, dtype=torch.float64)).bool(), only)
    # a subset keeps the row order and recounts offsets
    keep = torch.arange(a.nnz) % 2 == 0
    w = a.where(keep)
    assert torch.equal(w.row, a.row[keep]) and torch.equal(w.lat, a.lat[keep])
    assert torch.equal(w.row_offsets, _starts(w.row))
    # per-latent, per-instance sums and firing
    v = torch.randn(a.nnz, dtype=torch.float64)
    z = a.scatter(v)
    assert torch.allclose(a.per_latent(v), z.sum(0))
    assert torch.allclose(a.per_instance(v), z.sum((0, 2)))
    assert torch.equal(a.counts(v), (z != 0).sum(0).double())


def _weights(seed: int = 1):
    g = torch.Generator().manual_seed(seed)

    def p(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).requires_grad_()

    return p(B, INST, D), p(INST, D), p(INST, M, D), p(INST, M), p(INST, M, D)


@pytest.mark.parametrize("path", ["dense", "sparse"])
def test_encode_and_decode_on_pairs_equal_the_dense_products(path):
    """Values and gradients to every input (x, the subtracted b_dec, W_enc, b_enc, W_dec, the
    values), with empty rows and a latent with no pair."""
    x, b_dec, W_encT, b_enc, W_dec = _weights()
    mask = _mask(2)
    target = torch.randn(B, INST, D, dtype=torch.float64)
    scale = torch.randn(B, INST, M, dtype=torch.float64)

    def dense_loss():
        pre = torch.einsum("bid,imd->bim", x - b_dec, W_encT) + b_enc
        z = torch.where(mask, torch.tanh(pre) * scale, torch.zeros_like(pre))
        x_hat = torch.einsum("bim,imd->bid", z, W_dec)
        return (x_hat - target).square().sum() + (z * scale).sum()

    params = [x, b_dec, W_encT, b_enc, W_dec]
    expected = torch.autograd.grad(dense_loss(), params)
    with force_path(path):
        a = Active.from_mask(mask)
        enc = Encoded(x, b_dec, W_encT, b_enc)
        z = torch.tanh(encode_active(enc, a)) * a.gather(scale)
        x_hat = decode_active(z, W_dec, a)
        loss = (x_hat - target).square().sum() + (z * a.gather(scale)).sum()
        assert loss.item() == pytest.approx(dense_loss().item(), rel=1e-12)
        got = torch.autograd.grad(loss, params)
    for name, e, g in zip(["x", "b_dec", "W_enc", "b_enc", "W_dec"], expected, got, strict=True):
        assert torch.allclose(e, g, atol=1e-10), name


def test_values_from_a_lower_precision_product_are_exact():
    """With pairs chosen from a bfloat16 product, the values (and gradients) are float32's."""
    x, b_dec, W_encT, b_enc, _ = (t.detach().float() for t in _weights(3))
    exact = Encoded(x, b_dec, W_encT, b_enc)
    low = Encoded(x, b_dec, W_encT, b_enc, torch.bfloat16)
    assert low.pre.dtype == torch.bfloat16
    a = Active.from_mask(_mask(4))
    assert torch.allclose(encode_active(low, a), encode_active(exact, a), atol=1e-5)
    assert not torch.allclose(a.gather(low.pre).float(), encode_active(exact, a), atol=1e-4)


def _encoded(m: int, seed: int = 5):
    g = torch.Generator().manual_seed(seed)
    x, W_encT = torch.randn(B, INST, D, generator=g), torch.randn(INST, m, D, generator=g)
    b_dec, b_enc = torch.randn(INST, D, generator=g), torch.randn(INST, m, generator=g)
    return Encoded(x, b_dec, W_encT, b_enc), torch.randn(INST, m, D, generator=g)


def test_latents_choose_pairs_when_few_are_active_and_agree_either_way():
    enc, W_dec = _encoded(512)
    theta = enc.pre.quantile(0.95)
    few = enc.pre > theta
    assert Latents.pre_activations(enc, few).active is not None  # ~5% active: products on pairs
    assert Latents.pre_activations(enc, torch.ones_like(few)).active is None  # all active: dense
    assert Latents.pre_activations(enc, enc.pre > enc.pre.quantile(0.5)).active is None  # half: dense
    results = []
    for path in ("dense", "sparse"):
        with force_path(path):
            pre = Latents.pre_activations(enc, few)
            # an activation that is zero outside the mask, as Latents requires
            z = pre.map(torch.where(pre.values > theta, pre.values * pre.per_latent(enc.b_enc), 0.0))
            results.append((z.decode(W_dec, enc.b_sub), z.mean_sum(), *z.l0_and_fired()))
    for dense, sparse in zip(*results, strict=True):
        assert (
            torch.allclose(dense, sparse, atol=1e-5)
            if dense.is_floating_point()
            else torch.equal(dense, sparse)
        )


@pytest.mark.parametrize(
    "rows, length, n, shift",
    [(1, 1 << 20, 8192, 0.0), (3, 1 << 19, 16384, 0.0), (2, 1 << 19, 8192, 3.0), (2, 4096, 100, 0.0)],
)
def test_largest_is_topk(rows, length, n, shift):
    """The sampled-threshold selection of BatchTopK picks the same set as topk: on one row and on
    several, with fewer positive entries than n (ties at zero, as after a ReLU), and where it
    falls back to topk."""
    from superposition.sae.batchtopk import largest

    x = torch.relu(torch.randn(rows, length, generator=torch.Generator().manual_seed(rows)) - shift)
    vals, idx = largest(x, n)
    expected = x.topk(n, dim=-1).values
    assert torch.equal(vals.sort(-1).values, expected.sort(-1).values)
    assert torch.equal(x.gather(1, idx), vals)
    assert all(r.unique().numel() == n for r in idx)
