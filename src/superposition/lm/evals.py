"""Evaluate an SAE spliced into its language model, on held-out sequences.

    ce_loss_clean           next-token cross-entropy of the unmodified model
    ce_loss_with_sae        ... with the activation at the hook replaced by the SAE's reconstruction
    ce_loss_zero_ablation   ... with the activation replaced by zeros
    ce_loss_recovered       (ce_zero − ce_sae) / (ce_zero − ce_clean): 1 for a perfect
                            reconstruction, 0 when the SAE is no better than zero-ablation
    kl_div                  mean over positions of KL(clean next-token distribution ‖ with SAE)

For a transcoder (hook `blocks.L.mlp`) the same metrics are by substitution: its prediction from
the MLP's input replaces the MLP's output, zero-ablation zeroes the MLP's output, and the
reconstruction metrics (`fvu` = 1 − explained variance, of the MLP output) compare ŷ with y.

Replacement (SAE or zeros) happens at the positions the SAE is trained on, i.e. not at special
tokens such as BOS, whose activations are outliers the SAE never sees. Reconstruction metrics
(L0, MSE, explained variance, densities) are over the same positions; frac_dead counts latents
whose density is at most `dead_threshold`, frac_dense those firing on more than 10% of tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from superposition.lm.data import special_mask
from superposition.lm.hooks import HookedModel, read_names, sae_inputs
from superposition.sae.base import BatchedSAE
from superposition.sae.metrics import Accumulator
from superposition.sae.single import as_batched


def ce_loss(logits: Tensor, ids: Tensor) -> Tensor:
    """Summed next-token cross-entropy over the batch: logits (b, pos, vocab), ids (b, pos)."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten(), reduction="sum")


def ce_loss_recovered(clean: float, with_sae: float, zero: float) -> float:
    return (zero - with_sae) / (zero - clean) if zero != clean else float("nan")


def capture_into(store: dict, key: str):
    """A hook that records the activation in store[key] and leaves it unchanged."""

    def fn(a: Tensor) -> None:
        store[key] = a

    return fn


def splice_at(keep: Tensor, values: Tensor):
    """A hook that writes `values` (n, d) into the activation at the positions `keep` (b, pos)."""

    def fn(a: Tensor) -> Tensor:
        out = sae_inputs(a).clone()
        out[keep] = values.to(out.dtype)
        return out.view(a.shape)

    return fn


def _ce_and_kl(logits: Tensor, ids: Tensor, logp_clean: Tensor | None, rows: int = 4) -> tuple[float, float]:
    """Summed next-token cross-entropy of `logits` and, given the clean log-probabilities, the summed
    KL(clean ‖ these), a few sequences at a time: a whole batch's vocabulary-wide temporaries are
    several times the logits (16 × 128 × 49,152 floats are 400 MB each)."""
    ce, kl = 0.0, 0.0
    for n, (lg, tok) in enumerate(zip(logits.split(rows), ids.split(rows))):
        ce += ce_loss(lg, tok).item()
        if logp_clean is not None:
            p = logp_clean[n * rows : (n + 1) * rows]
            q = F.log_softmax(lg[:, :-1].float(), -1)
            kl += (p.exp() * (p - q)).sum().item()
    return ce, kl


def spliced_ce(
    hooked: HookedModel, ids: Tensor, hook: str, keep: Tensor, values: Tensor, logp_clean: Tensor
) -> tuple[float, float, float]:
    """With `values` (n, d) written at `hook` on the positions `keep`: the summed next-token CE and
    KL(clean ‖ spliced); and the summed CE with zeros written there instead (zero ablation)."""
    ce, kl = _ce_written(hooked, ids, hook, keep, values, logp_clean)
    return ce, kl, _ce_written(hooked, ids, hook, keep, torch.zeros_like(values))[0]


def _ce_written(
    hooked: HookedModel,
    ids: Tensor,
    hook: str,
    keep: Tensor,
    values: Tensor,
    logp_clean: Tensor | None = None,
) -> tuple[float, float]:
    """_ce_and_kl of the model run with `values` written at `hook` on the positions `keep`."""
    return _ce_and_kl(hooked.logits(ids, {hook: splice_at(keep, values)}), ids, logp_clean)


@torch.no_grad()
def evaluate_saes(
    hooked: HookedModel,
    tokenizer,
    saes: dict[str, BatchedSAE],
    seqs: Tensor,
    batch_size: int = 8,
    dead_threshold: float = 1e-8,
    device: str = "cpu",
    depth: bool = False,
) -> dict[str, dict]:
    """Every metric of the module docstring for several SAEs (or transcoders), {hook name: SAE},
    on the same sequences (n, ctx). One clean forward pass per batch captures every hook and gives
    the clean CE and log-probabilities; each SAE then costs its spliced and its zero-ablated pass,
    so n hooks cost 1 + 2n passes per batch (one by one: 3n). With `depth`, each record also holds
    token_likeness and mean_abs_dla (lm/analysis.DepthStats), from the same latents."""
    named = [(hook, hook, sae) for hook, sae in saes.items()]
    return evaluate_named(hooked, tokenizer, named, seqs, batch_size, dead_threshold, device, depth)


@torch.no_grad()
def evaluate_named(
    hooked: HookedModel,
    tokenizer,
    saes: list[tuple[str, str, BatchedSAE]],
    seqs: Tensor,
    batch_size: int = 8,
    dead_threshold: float = 1e-8,
    device: str = "cpu",
    depth: bool = False,
) -> dict[str, dict]:
    """As `evaluate_saes`, for SAEs given as (name, hook, SAE), several of them at one hook if need
    be: SAEs that write the same hook share its zero-ablated pass, so n SAEs at one hook cost
    2 + n passes per batch. Returns {name: metrics}."""
    from superposition.lm.analysis import DepthStats

    saes = [(name, hook, as_batched(sae)) for name, hook, sae in saes]
    names = {name: read_names(hook) for name, hook, _ in saes}  # (read, write): the same hook for an SAE
    wanted = list(dict.fromkeys(n for pair in names.values() for n in pair))
    writes = list(dict.fromkeys(pair[-1] for pair in names.values()))
    acc = {name: Accumulator() for name, _, _ in saes}
    ce = dict.fromkeys(acc, 0.0)
    kl = dict.fromkeys(acc, 0.0)
    zero = dict.fromkeys(writes, 0.0)
    stats = {name: DepthStats(hooked, sae, hook) for name, hook, sae in saes} if depth else {}
    ce_clean, n_pred = 0.0, 0
    for ids in seqs.split(batch_size):
        ids = ids.to(device)
        keep = ~special_mask(tokenizer, ids.cpu()).to(device)
        seen: dict[str, Tensor] = {}
        clean = hooked.logits(ids, {n: capture_into(seen, n) for n in wanted})
        logp_clean = F.log_softmax(clean[:, :-1].float(), -1)
        ce_clean += _ce_and_kl(clean, ids, None)[0]
        del clean
        for write in writes:  # zeros where the SAEs writing this hook write: once per hook
            blank = torch.zeros(int(keep.sum()), sae_inputs(seen[write]).shape[-1], device=ids.device)
            zero[write] += _ce_written(hooked, ids, write, keep, blank)[0]
        for name, _, sae in saes:
            read, write = names[name][0], names[name][-1]
            x = sae_inputs(seen[read])[keep].float()
            y = sae_inputs(seen[write])[keep].float()
            z = sae.encode(x.unsqueeze(1))
            y_hat = sae.decode(z, x.unsqueeze(1))[:, 0]
            acc[name].add(y.unsqueeze(1), y_hat.unsqueeze(1), z)
            if depth:
                stats[name].add(ids, keep, z[:, 0])
            ce_sae, kl_sae = _ce_written(hooked, ids, write, keep, y_hat, logp_clean)
            ce[name] += ce_sae
            kl[name] += kl_sae
        n_pred += ids[:, 1:].numel()
    out = {}
    for name, _, _ in saes:
        m = acc[name].result()
        density = m["density"][0]
        clean_ce, sae_ce, zero_ce = ce_clean / n_pred, ce[name] / n_pred, zero[names[name][-1]] / n_pred
        out[name] = {
            "l0": m["l0"].item(),
            "l1": m["l1"].item(),
            "mse": m["mse"].item(),
            "explained_variance": m["explained_variance"].item(),
            "fvu": 1 - m["explained_variance"].item(),
            "shrinkage": m["shrinkage"].item(),
            "cossim": m["cossim"].item(),
            "relative_norm": m["relative_norm"].item(),
            "explained_variance_per_token": m["explained_variance_per_token"].item(),
            "ce_loss_clean": clean_ce,
            "ce_loss_with_sae": sae_ce,
            "ce_loss_zero_ablation": zero_ce,
            "ce_loss_recovered": ce_loss_recovered(clean_ce, sae_ce, zero_ce),
            "kl_div": kl[name] / n_pred,
            "frac_dead": (density <= dead_threshold).float().mean().item(),
            "frac_dense": (density > 0.10).float().mean().item(),
            "frac_dense_1pct": (density > 0.01).float().mean().item(),
            "eval_tokens": acc[name].n,
            "eval_predictions": n_pred,
            "density": density.tolist(),
            **(stats[name].result() if depth else {}),
        }
    return out


def evaluate_sae(
    hooked: HookedModel,
    tokenizer,
    sae: BatchedSAE,
    hook_name: str,
    seqs: Tensor,
    batch_size: int = 8,
    dead_threshold: float = 1e-8,
    device: str = "cpu",
) -> dict:
    """Every metric of the module docstring, for one SAE or transcoder (n_instances = 1) on
    sequences (n, ctx)."""
    return evaluate_saes(hooked, tokenizer, {hook_name: sae}, seqs, batch_size, dead_threshold, device)[
        hook_name
    ]


@torch.no_grad()
def evaluate_substitution(
    hooked: HookedModel,
    tokenizer,
    replacement,
    layers: list[int],
    seqs: Tensor,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict:
    """Every MLP of `layers` replaced at once (at the non-special positions) by `replacement`: an
    object with `begin()` (a new pass), `read(L, x)` (layer L's input, recorded: the residual
    stream between attention and MLP, and the MLP's normalised input) and `write(L)` (layer L's
    predicted MLP output, from what was read at layers up to L). A cross-layer transcoder is one;
    per-layer transcoders are another (`PerLayer`).

    Returns ce_loss_clean / _with_replacement / _zero_ablation (every MLP of `layers` zeroed),
    ce_loss_recovered, kl_div, and per layer the FVU of the MLP output on the clean pass (each
    layer's prediction from the clean inputs)."""
    sse = torch.zeros(len(layers))
    sum_y = {L: 0.0 for L in layers}
    sum_y2 = torch.zeros(len(layers))
    n_tok, n_pred = 0, 0
    ce_clean = ce_rep = ce_zero = kl = 0.0
    kinds = ("hook_resid_mid", "ln2.hook_normalized", "hook_mlp_out")
    names = {L: tuple(f"blocks.{L}.{k}" for k in kinds) for L in layers}
    for ids in seqs.split(batch_size):
        ids = ids.to(device)
        keep = ~special_mask(tokenizer, ids.cpu()).to(device)
        seen: dict[str, Tensor] = {}
        clean = hooked.logits(ids, {n: capture_into(seen, n) for L in layers for n in names[L]})
        logp_clean = F.log_softmax(clean[:, :-1].float(), -1)
        ce_clean += _ce_and_kl(clean, ids, None)[0]
        del clean
        replacement.begin()
        for j, L in enumerate(layers):  # the clean pass's inputs: each layer's FVU
            replacement.read(L, seen[names[L][0]][keep].float(), seen[names[L][1]][keep].float())
            y = seen[names[L][2]][keep].float()
            sse[j] += (replacement.write(L) - y).square().sum()
            sum_y[L] = sum_y[L] + y.sum(0)
            sum_y2[j] += y.square().sum()
        n_tok += int(keep.sum())
        replacement.begin()
        ce, k = _ce_and_kl(_spliced(hooked, ids, layers, replacement, keep), ids, logp_clean)
        ce_rep += ce
        kl += k
        zero = hooked.logits(ids, {names[L][2]: splice_at(keep, torch.zeros(int(keep.sum()), hooked.d_model))
                                   for L in layers})  # fmt: skip
        ce_zero += _ce_and_kl(zero, ids, None)[0]
        n_pred += ids[:, 1:].numel()
    var = torch.stack([sum_y2[j] - (sum_y[L].square().sum() / n_tok) for j, L in enumerate(layers)])
    fvu = (sse / var.clamp(min=1e-12)).tolist()
    c, r, z = ce_clean / n_pred, ce_rep / n_pred, ce_zero / n_pred
    return {
        "ce_loss_clean": c,
        "ce_loss_with_replacement": r,
        "ce_loss_zero_ablation": z,
        "ce_loss_recovered": ce_loss_recovered(c, r, z),
        "kl_div": kl / n_pred,
        "fvu_per_layer": dict(zip(layers, fvu, strict=True)),
        "eval_tokens": n_tok,
    }


def _spliced(hooked: HookedModel, ids: Tensor, layers: list[int], replacement, keep: Tensor) -> Tensor:
    """Logits with every MLP of `layers` replaced, each layer's prediction made from what reaches it."""
    mids: dict[int, Tensor] = {}
    fns = {}
    for L in layers:
        fns[f"blocks.{L}.hook_resid_mid"] = lambda x, L=L: mids.__setitem__(L, x[keep].float())
        fns[f"blocks.{L}.ln2.hook_normalized"] = lambda x, L=L: replacement.read(L, mids[L], x[keep].float())
        # the prediction is made when the hook fires: it needs this pass's reads up to layer L
        fns[f"blocks.{L}.hook_mlp_out"] = lambda x, L=L: splice_at(keep, replacement.write(L))(x)
    return hooked.logits(ids, fns)


class PerLayer:
    """Per-layer transcoders ({layer: transcoder}, reading ln2.hook_normalized) as a replacement for
    `evaluate_substitution`."""

    def __init__(self, transcoders: dict) -> None:
        self.transcoders, self.inputs = transcoders, {}

    def begin(self) -> None:
        self.inputs = {}

    def read(self, layer: int, resid_mid: Tensor, normed: Tensor) -> None:
        self.inputs[layer] = normed

    def write(self, layer: int) -> Tensor:
        sae, x = self.transcoders[layer], self.inputs[layer]
        return sae.decode(sae.encode(x), x)


class CLTReplacement:
    """A cross-layer transcoder as a replacement: layer L's latents from its resid_mid, its
    prediction from the latents of layers 0..L of the same pass."""

    def __init__(self, clt) -> None:
        self.clt, self.z = clt, {}

    def begin(self) -> None:
        self.z = {}

    def read(self, layer: int, resid_mid: Tensor, normed: Tensor) -> None:
        self.z[layer] = self.clt.encode(resid_mid, layer)

    def write(self, layer: int) -> Tensor:
        return self.clt.decode_layer([self.z[i] for i in range(layer + 1)], layer)


@torch.no_grad()
def evaluate_crosscoder(
    cc, sources: list, seqs: Tensor, batch_size: int, device: str, scales: Tensor | None = None, on_batch=None
) -> dict:
    """A crosscoder (sae/crosscoder.py) over `sources` (lm/sources.py) on held-out sequences, per
    source: explained variance and MSE (in the units of `scales`, the per-source scales it was trained
    in; default raw), CE loss with that source's hook replaced by its reconstruction (and
    zero-ablated) and KL; L0 and each latent's density. `on_batch(z, x, x_hat)` sees every batch
    (model diffing sums its latent-scaling statistics there: interp/diffing.ScalingSums)."""
    from superposition.lm.sources import source_activations
    from superposition.progress import tqdm

    n = len(sources)
    scales = torch.ones(n, device=device) if scales is None else scales.to(device)
    tok = sources[0].lm.tokenizer
    sq_err, sum_x, sum_x2 = torch.zeros(n), torch.zeros(n, cc.d), torch.zeros(n)
    fires = torch.zeros(cc.d_sae)
    ce = {s.label: {"sae": 0.0, "zero": 0.0, "kl": 0.0} for s in sources}
    clean = {s.model_name: 0.0 for s in sources}
    tokens, n_pred, l0 = 0, 0, 0.0
    for ids in tqdm(seqs.split(batch_size), desc="evaluating", leave=False, disable=None):
        ids = ids.to(device)
        keep = ~special_mask(tok, ids.cpu()).to(device)
        acts, logits = source_activations(sources, ids, device)
        x = acts[keep] * scales.view(1, -1, 1)  # (tokens, n, d)
        z = cc.encode(x)
        x_hat = cc.decode(z)
        sq_err += (x - x_hat).square().sum(-1).sum(0).cpu()
        sum_x += x.sum(0).cpu()
        sum_x2 += x.square().sum(-1).sum(0).cpu()
        fires += (z > 0).sum(0).cpu()
        l0 += float((z > 0).sum())
        tokens += x.shape[0]
        if on_batch is not None:
            on_batch(z.cpu(), x.cpu(), x_hat.cpu())
        logp = {}
        for name, lg in logits.items():
            clean[name] += _ce_and_kl(lg, ids, None)[0]
            logp[name] = torch.log_softmax(lg[:, :-1].float(), -1)
        del logits
        raw_hat = x_hat / scales.view(1, -1, 1)
        for s, src in enumerate(sources):
            c, k, c0 = spliced_ce(src.hooked, ids, src.hook, keep, raw_hat[:, s], logp[src.model_name])
            ce[src.label]["sae"] += c
            ce[src.label]["kl"] += k
            ce[src.label]["zero"] += c0
        n_pred += ids[:, 1:].numel()
    var = sum_x2 - sum_x.square().sum(-1) / max(tokens, 1)
    per_source = {}
    for s, src in enumerate(sources):
        c0 = clean[src.model_name] / n_pred
        cs, cz = ce[src.label]["sae"] / n_pred, ce[src.label]["zero"] / n_pred
        per_source[src.label] = {
            "model_name": src.model_name,
            "hook_name": src.hook,
            "explained_variance": float(1 - sq_err[s] / var[s].clamp(min=1e-12)),
            "mse": float(sq_err[s] / max(tokens, 1)),
            "ce_loss_clean": c0,
            "ce_loss_with_sae": cs,
            "ce_loss_zero_ablation": cz,
            "ce_loss_recovered": ce_loss_recovered(c0, cs, cz),
            "kl_div": ce[src.label]["kl"] / n_pred,
        }
    return {
        "sources": per_source,
        "l0": l0 / max(tokens, 1),
        "density": fires / max(tokens, 1),
        "eval_tokens": tokens,
    }
