"""What SAE latents on a language model mean: max-activating examples, quantile samples and
activation histograms; the logit lens of decoder directions; direct logit attribution, latent
ablation, attribution patching, latent-to-latent gradients; per-head attribution and source
tokens for attention (hook_z) SAEs.

Shapes: sequences (n_seq, ctx); latent activations are kept sparse as parallel arrays
(token index, latent, value) over the n_seq·ctx tokens, which is what lets thousands of latents
be analysed from one pass.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from superposition.lm.data import special_mask
from superposition.lm.hooks import HookedModel, read_names, sae_inputs
from superposition.sae.base import BatchedSAE
from superposition.sae.single import as_batched


# ---------------------------------------------------------------------- activations
@dataclass
class LatentActivations:
    """Sparse latent activations over a set of sequences."""

    seqs: Tensor  # (n_seq, ctx) token ids
    token: np.ndarray  # flat token index (seq * ctx + pos) of each nonzero
    latent: np.ndarray
    value: np.ndarray
    d_sae: int
    n_tokens: int  # tokens the SAE was applied to (non-special)
    order: np.ndarray = field(init=False)  # nonzeros sorted by latent, then by value (descending)
    starts: np.ndarray = field(init=False)  # latent j's nonzeros: order[starts[j]:starts[j + 1]]

    def __post_init__(self) -> None:
        self.order = np.lexsort((-self.value, self.latent))
        self.starts = np.searchsorted(self.latent[self.order], np.arange(self.d_sae + 1))

    def of(self, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Latent j's (flat token index, value), largest value first."""
        sel = self.order[self.starts[j] : self.starts[j + 1]]
        return self.token[sel], self.value[sel]

    def density(self) -> np.ndarray:
        return np.diff(self.starts) / max(self.n_tokens, 1)

    def max_activation(self) -> np.ndarray:
        out = np.zeros(self.d_sae, dtype=np.float32)
        has = np.diff(self.starts) > 0
        out[has] = self.value[self.order[self.starts[:-1][has]]]
        return out


@torch.no_grad()
def latent_activations(
    hooked: HookedModel,
    tokenizer,
    sae: BatchedSAE,
    hook_name: str,
    seqs: Tensor,
    batch_size: int = 16,
    device: str = "cpu",
    progress: bool = False,
) -> LatentActivations:
    sae = as_batched(sae)
    from superposition.progress import tqdm

    toks, lats, vals = [], [], []
    n_tokens = 0
    chunks = list(seqs.split(batch_size))
    offset = 0
    read = read_names(hook_name)[0]  # a transcoder's latents are read from the MLP's input
    for ids in tqdm(chunks, desc="latent activations", disable=not progress, leave=False):
        act = sae_inputs(hooked.run_with_cache(ids.to(device), [read])[read]).float()
        keep = ~special_mask(tokenizer, ids)
        z = sae.encode(act.reshape(-1, 1, act.shape[-1]))[:, 0].cpu()  # (b*ctx, d_sae)
        z[~keep.reshape(-1)] = 0
        t, j = z.nonzero(as_tuple=True)
        toks.append((t + offset).numpy()), lats.append(j.numpy()), vals.append(z[t, j].numpy())
        n_tokens += int(keep.sum())
        offset += ids.numel()

    def cat(xs, dt):
        return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

    return LatentActivations(
        seqs, cat(toks, np.int64), cat(lats, np.int64), cat(vals, np.float32), sae.cfg.d_sae, n_tokens
    )


def activation_scale(la: LatentActivations, latents: list[int]) -> list[dict]:
    """For each latent: how often it fires and how large it is when it does (max, 99th percentile and
    median of its nonzero activations), the numbers to choose a steering value by."""
    out = []
    for j in latents:
        _, v = la.of(j)
        row = {"tokens": int(la.n_tokens), "fires": int(v.size), "frequency": v.size / max(la.n_tokens, 1)}
        if v.size:
            row.update(max=float(v.max()), p99=float(np.quantile(v, 0.99)), median=float(np.median(v)))
        out.append(row)
    return out


@dataclass
class Example:
    """A context window around one token, with latent j's activation on every token of it."""

    seq: int
    pos: int  # position of the activating token in the sequence
    value: float
    token_ids: list[int]
    acts: list[float]
    focus: int  # index of the activating token within token_ids


def example_at(la: LatentActivations, j: int, flat: int, value: float, before: int, after: int) -> Example:
    """The window of `before` tokens before and `after` after the flat token index `flat`, with latent
    j's activation on each of its tokens."""
    ctx = la.seqs.shape[1]
    s, p = divmod(int(flat), ctx)
    lo, hi = max(0, p - before), min(ctx, p + after + 1)
    tok_j, val_j = la.of(j)
    acts = np.zeros(hi - lo, dtype=np.float32)
    inside = (tok_j >= s * ctx + lo) & (tok_j < s * ctx + hi)
    acts[tok_j[inside] - s * ctx - lo] = val_j[inside]
    return Example(s, p, float(value), la.seqs[s, lo:hi].tolist(), acts.tolist(), p - lo)


def top_examples(
    la: LatentActivations, j: int, n: int = 10, before: int = 12, after: int = 4
) -> list[Example]:
    tok, val = la.of(j)
    return [example_at(la, j, t, v, before, after) for t, v in zip(tok[:n], val[:n])]


def quantile_examples(
    la: LatentActivations,
    j: int,
    n_bins: int = 4,
    per_bin: int = 3,
    before: int = 12,
    after: int = 4,
    seed: int = 0,
) -> list[tuple[str, list[Example]]]:
    """Random examples from equal-width activation intervals (0, max], highest interval first."""
    tok, val = la.of(j)
    if len(val) == 0:
        return []
    rng = np.random.default_rng(seed + j)
    edges = np.linspace(0, val[0], n_bins + 1)
    out = []
    for lo, hi in zip(edges[-2::-1], edges[:0:-1]):
        idx = np.nonzero((val > lo) & (val <= hi))[0]
        if len(idx):
            pick = np.sort(rng.choice(idx, size=min(per_bin, len(idx)), replace=False))
            out.append(
                (
                    f"{lo:.3g} – {hi:.3g} ({len(idx)} tokens)",
                    [example_at(la, j, tok[i], val[i], before, after) for i in pick],
                )
            )
    return out


def activation_histogram(la: LatentActivations, j: int, bins: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Counts and bin edges of latent j's nonzero activations."""
    _, val = la.of(j)
    if len(val) == 0:
        return np.zeros(bins, dtype=np.int64), np.linspace(0, 1, bins + 1)
    return np.histogram(val, bins=bins, range=(0.0, float(val[0])))


# ---------------------------------------------------------------------- directions and the unembedding
def unembedding(model) -> Tensor:
    """W_U (vocab, d_model)."""
    return model.get_output_embeddings().weight


def final_norm_gain(hooked: HookedModel) -> Tensor | None:
    """The elementwise weight of the final (RMS/Layer)Norm, if the model has one."""
    norm = hooked.final_norm()
    return getattr(norm, "weight", None)


def output_projection(hooked: HookedModel, layer: int) -> Tensor:
    """W_O as (n_heads * d_head, d_model): z (flattened heads) @ W_O is the attention output."""
    proj = hooked.out_proj(layer)
    return (
        proj.weight.T if isinstance(proj, torch.nn.Linear) else proj.weight
    )  # GPT-2's Conv1D stores (in, out)


def decoder_in_residual(hooked: HookedModel, sae: BatchedSAE, hook_name: str) -> Tensor:
    """Each latent's write into the residual stream (d_sae, d_model): W_dec, or W_dec W_O for hook_z
    (a transcoder writes where the MLP's output goes)."""
    sae = as_batched(sae)
    layer, kind = hooked.parse(read_names(hook_name)[-1])
    W_dec = sae.W_dec[0].detach()
    return W_dec @ output_projection(hooked, layer).detach() if kind == "attn.hook_z" else W_dec


@torch.no_grad()
def logit_lens(
    hooked: HookedModel,
    sae: BatchedSAE,
    hook_name: str,
    latents: list[int] | None = None,
    k: int = 10,
    fold_final_norm: bool = True,
    chunk: int = 256,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Top and bottom k tokens of each decoder direction through the unembedding:
    logits_j = (d_j ⊙ g) W_Uᵀ, with g the final norm's gain when `fold_final_norm`.
    Returns (top_ids, top_values, bottom_ids, bottom_values), each (n_latents, k)."""
    dirs = decoder_in_residual(hooked, sae, hook_name)
    if latents is not None:
        dirs = dirs[latents]
    g = final_norm_gain(hooked) if fold_final_norm else None
    if g is not None:
        dirs = dirs * g.detach()
    W_U = unembedding(hooked.model).detach().float()
    outs = [[], [], [], []]
    for part in dirs.float().split(chunk):
        logits = part @ W_U.T
        top, bot = logits.topk(k, dim=-1), logits.topk(k, dim=-1, largest=False)
        for lst, t in zip(outs, (top.indices, top.values, bot.indices, bot.values)):
            lst.append(t)
    return tuple(torch.cat(o) for o in outs)


def direct_logit_attribution(
    hooked: HookedModel, sae: BatchedSAE, hook_name: str, z: Tensor, token: int, fold_final_norm: bool = True
) -> Tensor:
    """Each latent's direct contribution to token's logit, z_j (d_j ⊙ g) · W_U[token], for
    latent activations z (…, d_sae); the final norm's division by the RMS is left out."""
    dirs = decoder_in_residual(hooked, sae, hook_name)
    g = final_norm_gain(hooked) if fold_final_norm else None
    u = unembedding(hooked.model)[token].detach()
    per_latent = dirs @ (u * g.detach() if g is not None else u)  # (d_sae,)
    return z * per_latent


def direct_attribution_per_head(
    hooked: HookedModel, sae: BatchedSAE, hook_name: str, z: Tensor, token: int, fold_final_norm: bool = True
) -> Tensor:
    """For an attention SAE (hook_z): latent j's direct logit contribution split over heads,
    z_j (W_dec[j, h] W_O[h] ⊙ g) · W_U[token]; (…, d_sae, n_heads). Sums over heads to
    `direct_logit_attribution`."""
    sae = as_batched(sae)
    layer, kind = hooked.parse(hook_name)
    if kind != "attn.hook_z":
        raise ValueError("direct_attribution_per_head needs an attn.hook_z SAE")
    H, dh = hooked.n_heads, hooked.d_head
    W_O = output_projection(hooked, layer).detach().reshape(H, dh, -1)
    W_dec = sae.W_dec[0].detach().reshape(-1, H, dh)
    g = final_norm_gain(hooked) if fold_final_norm else None
    u = unembedding(hooked.model)[token].detach()
    u = u * g.detach() if g is not None else u
    per_head = torch.einsum("jhd,hdm,m->jh", W_dec, W_O, u)  # (d_sae, heads)
    return z.unsqueeze(-1) * per_head


# ---------------------------------------------------------------------- causal effects
def spliced_logits(
    hooked: HookedModel, sae: BatchedSAE, hook_name: str, ids: Tensor, edit=None, keep_error: bool = True
):
    """Logits with the hook activation replaced by SAE(x) (+ the SAE's error, so that only the
    edit changes anything); edit(z) -> z' modifies latents. Returns (logits, z)."""
    sae = as_batched(sae)
    seen = {}

    def fn(a: Tensor) -> Tensor:
        x = sae_inputs(a)
        z = sae.encode(x.reshape(-1, 1, x.shape[-1])).reshape(*x.shape[:-1], -1)
        z = z.detach().requires_grad_(torch.is_grad_enabled())
        seen["z"] = z
        z2 = edit(z) if edit is not None else z
        xs = x.reshape(-1, 1, x.shape[-1])
        x_hat = sae.decode(z2.reshape(-1, 1, z2.shape[-1]), xs).reshape(x.shape)
        if keep_error:
            x_hat = x_hat + (x - sae.decode(z.reshape(-1, 1, z.shape[-1]), xs).reshape(x.shape)).detach()
        return x_hat.reshape(a.shape)

    logits = hooked.logits(ids, {hook_name: fn})
    return logits, seen["z"]


def next_token_loss(logits: Tensor, ids: Tensor) -> Tensor:
    """Per-position next-token loss (b, pos − 1)."""
    return F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), ids[:, 1:], reduction="none")


@torch.no_grad()
def ablation_effect(hooked: HookedModel, sae: BatchedSAE, hook_name: str, ids: Tensor, latent: int) -> Tensor:
    """Change in next-token loss at each position (b, pos − 1) when latent j is set to 0
    (the SAE's error is kept, so the SAE itself changes nothing)."""
    base, _ = spliced_logits(hooked, sae, hook_name, ids)

    def zero_j(z: Tensor) -> Tensor:
        z = z.clone()
        z[..., latent] = 0
        return z

    ablated, _ = spliced_logits(hooked, sae, hook_name, ids, zero_j)
    return next_token_loss(ablated, ids) - next_token_loss(base, ids)


def attribution_patching(hooked: HookedModel, sae: BatchedSAE, hook_name: str, ids: Tensor, metric) -> Tensor:
    """Gradient × activation, z_j · ∂metric/∂z_j, per position and latent (b, pos, d_sae): the
    linear estimate of how much metric(logits) would change if each latent were ablated (with a
    minus sign). `metric` maps logits (b, pos, vocab) to a scalar."""
    sae = as_batched(sae)
    with torch.enable_grad():
        logits, z = spliced_logits(hooked, sae, hook_name, ids)
        metric(logits).backward()
    return (z * z.grad).detach()


def latent_gradients(
    hooked: HookedModel,
    up: BatchedSAE,
    up_hook: str,
    down: BatchedSAE,
    down_hook: str,
    ids: Tensor,
    down_latents: list[int],
) -> Tensor:
    """∂z_down[j]/∂z_up summed over positions, for each chosen downstream latent j:
    (len(down_latents), d_sae_up). The upstream SAE is spliced in with its error term (so the
    model computes exactly what it did), the downstream one reads the activation at down_hook."""
    down = as_batched(down)
    up = as_batched(up)
    if down_hook == up_hook:
        raise ValueError("latent_gradients: use two different hook points")
    seen: dict[str, Tensor] = {}

    def splice(a: Tensor) -> Tensor:
        x = sae_inputs(a)
        xs = x.reshape(-1, 1, x.shape[-1])
        z = up.encode(xs).detach().requires_grad_(True)
        seen["z_up"] = z
        x_hat = up.decode(z, xs)[:, 0].reshape(x.shape)
        return (x_hat + (x - x_hat).detach()).reshape(a.shape)

    def read(a: Tensor) -> None:
        x = sae_inputs(a)
        seen["z_down"] = down.encode(x.reshape(-1, 1, x.shape[-1]))[:, 0]

    rows = []
    with torch.enable_grad(), hooked.hooks({up_hook: splice, down_hook: read}):
        hooked.model(input_ids=ids, use_cache=False)
        for n, j in enumerate(down_latents):
            (grad,) = torch.autograd.grad(
                seen["z_down"][:, j].sum(), seen["z_up"], retain_graph=n + 1 < len(down_latents)
            )
            rows.append(grad[:, 0].sum(0))
    return torch.stack(rows)


# ---------------------------------------------------------------------- attention SAEs
@torch.no_grad()
def source_token_contributions(
    hooked: HookedModel, sae: BatchedSAE, hook_name: str, ids: Tensor, latent: int, pos: int, seq: int = 0
) -> tuple[Tensor, Tensor]:
    """For an attention SAE: how much each source token k (and head h) contributes to latent j's
    pre-activation at query position `pos`. With z[h, q] = Σ_k A[h, q, k] v[h, k], the encoder
    pre-activation is linear in z, so contribution[h, k] = A[h, q, k] v[h, k] · W_enc[h-block, j].
    Returns (contributions (n_heads, pos + 1), the remaining constant b_enc[j] − b_dec · W_enc[:, j])."""
    sae = as_batched(sae)
    layer, kind = hooked.parse(hook_name)
    if kind != "attn.hook_z":
        raise ValueError("source_token_contributions needs an attn.hook_z SAE")
    pattern, values = attention_pattern_and_values(hooked, layer, ids[seq : seq + 1])
    H, dh = hooked.n_heads, hooked.d_head
    w = sae.encoder_weight()[0][:, latent].detach().reshape(H, dh)
    contrib = pattern[0, :, pos, : pos + 1] * torch.einsum("hkd,hd->hk", values[0, :, : pos + 1], w)
    const = sae.b_enc[0, latent] - sae.b_dec[0] @ sae.encoder_weight()[0][:, latent]
    return contrib, const.detach()


def attention_pattern_and_values(hooked: HookedModel, layer: int, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Attention probabilities (b, heads, q, k) and value vectors (b, heads, k, d_head) of one
    layer, for Llama-style (v_proj, grouped KV heads repeated) and GPT-2-style (c_attn) models."""
    attn = hooked.attention(layer)
    H, dh = hooked.n_heads, hooked.d_head
    seen = {}
    if hasattr(attn, "v_proj"):
        handle = attn.v_proj.register_forward_hook(lambda m, a, o: seen.__setitem__("v", o))
    elif hasattr(attn, "c_attn"):
        handle = attn.c_attn.register_forward_hook(
            lambda m, a, o: seen.__setitem__("v", o.split(o.shape[-1] // 3, -1)[2])
        )
    else:
        raise ValueError(f"source tokens: no value projection found in {type(attn).__name__}")
    model = hooked.model
    previous = model.config._attn_implementation
    model.config._attn_implementation = "eager"  # the fused kernels do not return the pattern
    try:
        out = model(input_ids=ids, output_attentions=True, use_cache=False)
    finally:
        model.config._attn_implementation = previous
        handle.remove()
    pattern = out.attentions[layer]
    v = seen["v"]
    b, k = v.shape[:2]
    v = v.reshape(b, k, -1, dh).transpose(1, 2)  # (b, kv_heads, k, d_head)
    if v.shape[1] != H:
        v = v.repeat_interleave(H // v.shape[1], dim=1)
    return pattern, v


class DepthStats:
    """Two measured characterisations of what an SAE's latents are like at its depth, streamed over
    batches of latents (special tokens left out):

    token_likeness: for each latent that fires, the share of its activation mass that falls on the
        token it fires on most often, averaged over those latents (1: it fires on one token only).
    mean_abs_dla: the mean over active (position, latent) pairs of |z_j (d_j ⊙ g) · W_U[next token]|,
        the latent's direct effect on the logit of the token that comes next (the final norm's
        division by the RMS left out, as in direct_logit_attribution)."""

    CHUNK = 1 << 15  # active pairs per gather: (pairs, d_model) temporaries stay near 75 MB

    def __init__(self, hooked: HookedModel, sae: BatchedSAE, hook_name: str) -> None:
        sae = as_batched(sae)
        dirs = decoder_in_residual(hooked, sae, hook_name).float()
        g = final_norm_gain(hooked)
        self.dirs = dirs * g.detach().float() if g is not None else dirs
        self.W_U = unembedding(hooked.model).detach().float()
        self.keys: list[Tensor] = []
        self.mass: list[Tensor] = []
        self.dla_sum, self.dla_n = 0.0, 0

    def add(self, ids: Tensor, keep: Tensor, z: Tensor) -> None:
        """ids (b, ctx), keep (b, ctx) the positions z holds, z (kept tokens, d_sae)."""
        vocab = self.W_U.shape[0]
        tok = ids[keep]
        pos, lat = z.nonzero(as_tuple=True)
        val = z[pos, lat]
        self.keys.append(lat.long() * vocab + tok[pos].long())
        self.mass.append(val)
        nxt = torch.full_like(ids, -1)  # the next token of each kept position (none after the last)
        nxt[:, :-1] = ids[:, 1:]
        nxt = nxt[keep][pos]
        has = nxt >= 0
        v, la, nx = val[has], lat[has], nxt[has]
        for i in range(0, v.numel(), self.CHUNK):
            part = slice(i, i + self.CHUNK)
            contrib = v[part] * (self.dirs[la[part]] * self.W_U[nx[part]]).sum(-1)
            self.dla_sum += float(contrib.abs().sum())
        self.dla_n += int(has.sum())

    def result(self) -> dict:
        keys, mass = torch.cat(self.keys), torch.cat(self.mass)
        likeness = float("nan")
        if keys.numel():
            vocab = self.W_U.shape[0]
            uniq, inv = torch.unique(keys, return_inverse=True)
            count = torch.bincount(inv).double()
            pair_mass = torch.zeros(uniq.numel(), dtype=torch.float64).index_add_(0, inv, mass.double())
            latent = uniq // vocab
            # per latent, the token it fires on most often (ties: the one with the larger mass)
            n_lat = int(latent.max()) + 1
            score = count + pair_mass / (pair_mass.max() + 1.0) * 0.5
            top = torch.zeros(n_lat, dtype=torch.float64).scatter_reduce(
                0, latent, score, "amax", include_self=False
            )
            on_top = torch.where(score == top[latent], pair_mass, torch.zeros_like(pair_mass))
            top_mass = torch.zeros(n_lat, dtype=torch.float64).scatter_reduce(0, latent, on_top, "amax")
            total = torch.zeros(n_lat, dtype=torch.float64).index_add_(0, latent, pair_mass)
            fired = torch.unique(latent)
            likeness = float((top_mass[fired] / total[fired]).mean())
        return {"token_likeness": likeness, "mean_abs_dla": self.dla_sum / max(self.dla_n, 1)}


@torch.no_grad()
def depth_characteristics(
    hooked: HookedModel, tokenizer, sae: BatchedSAE, hook_name: str, seqs: Tensor, batch_size: int = 8,
    device: str = "cpu",
) -> dict:  # fmt: skip
    """DepthStats of one SAE on sequences (n, ctx), with a forward pass of its own (evaluate_saes
    with depth=True computes the same from the latents of its evaluation)."""
    stats = DepthStats(hooked, sae, hook_name)
    for ids in seqs.split(batch_size):
        ids = ids.to(device)
        act = sae_inputs(hooked.run_with_cache(ids, [hook_name])[hook_name]).float()
        keep = ~special_mask(tokenizer, ids.cpu()).to(device)
        stats.add(ids, keep, sae.encode(act[keep].unsqueeze(1))[:, 0])
    return stats.result()
