"""Sparse feature circuits (Marks et al. 2024, "Sparse Feature Circuits"), over the SAEs (or
transcoders) of a run at chosen hooks, each with an error node so the model is computed exactly.

Data: contrastive pairs (clean, patch, clean_answer, patch_answer) of the same token length. The
metric on a batch is m = mean over pairs of logit[clean_answer] − logit[patch_answer] at the last
position of the clean prompt.

Node effects: the indirect effect of patching a node (a latent, or a hook's error, summed over
positions) from its clean to its patch value, by integrated gradients along the straight line
between them:

    IE ≈ Σ_{k=0}^{N−1} ∇m(x_c + (k/N)(x_p − x_c)) · Δ / N      (left Riemann sum, N = ig_steps)

with Δ the node's change written at the hook (a latent: Δa · its decoder row; the error: Δe);
N = 1 is attribution patching, exact when m is linear in the hook. Edges: between circuit nodes
of consecutive hooks, e(u → d) = Σ ∂m/∂a_d · ∂a_d/∂x_u · Δx_u, a vector-Jacobian product per
downstream node.

Faithfulness of a circuit C under mean ablation: (m(C) − m(∅)) / (m(M) − m(∅)), where m(C) runs the
model with every node outside C replaced by its mean at that position over the clean and patch
prompts together (downstream latents recomputed from what reaches them), M is the model (every
node) and ∅ ablates them all;
completeness is the faithfulness of M \\ C (low when C holds what matters).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from superposition.errors import SuperpositionError
from superposition.lm.hooks import HookedModel, hook_position, read_names, sae_inputs
from superposition.progress import tqdm

FIELDS = ("clean", "patch", "clean_answer", "patch_answer")


@dataclass
class Pairs:
    """Tokenised pairs, grouped as tensors: clean and patch ids (n, P) and answer ids (n,)."""

    clean: Tensor
    patch: Tensor
    clean_answer: Tensor
    patch_answer: Tensor
    records: list[dict]

    def batches(self, size: int):
        for i in range(0, len(self.records), size):
            yield (self.clean[i : i + size], self.patch[i : i + size],
                   self.clean_answer[i : i + size], self.patch_answer[i : i + size])  # fmt: skip


def read_pairs(path: str | Path, limit: int = 100_000) -> list[dict]:
    """The pairs of a JSONL file (a regular file of bounded size, lines of bounded length: the limits
    of every text input, lm/data.read_text_input); a line that is not an object with the four text
    fields is a one-line error naming it."""
    from superposition.lm.data import read_text_input

    path = Path(path)
    lines = read_text_input(path, "dataset").splitlines()
    out = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise SuperpositionError(f"dataset {path}: line {n} is not JSON") from None
        if not isinstance(rec, dict):
            raise SuperpositionError(f"dataset {path}: line {n} is not a JSON object")
        missing = [f for f in FIELDS if not isinstance(rec.get(f), str) or not rec[f]]
        if missing:
            raise SuperpositionError(
                f"dataset {path}: line {n} lacks {', '.join(missing)} (each pair needs text fields "
                f"{', '.join(FIELDS)})"
            )
        out.append({f: rec[f] for f in FIELDS})
        if len(out) > limit:
            raise SuperpositionError(f"dataset {path}: more than {limit} pairs; give fewer")
    if not out:
        raise SuperpositionError(f"dataset {path}: holds no pairs")
    return out


def tokenize_pairs(tokenizer, records: list[dict], bos: bool, n_ctx: int) -> Pairs:
    """Token ids of each pair: clean and patch of one length (the pairs' lengths must agree too),
    answers of one token each."""

    def ids(text):
        t = tokenizer(text, add_special_tokens=False).input_ids
        return ([tokenizer.bos_token_id] if bos and tokenizer.bos_token_id is not None else []) + t

    def one(text, n, field):
        t = tokenizer(text, add_special_tokens=False).input_ids
        if len(t) != 1:
            raise SuperpositionError(
                f"dataset: pair {n}'s {field} {text[:30]!r} is {len(t)} tokens; answers are one token"
            )
        return t[0]

    clean, patch, ca, pa = [], [], [], []
    for n, r in enumerate(records, 1):
        c, p = ids(r["clean"]), ids(r["patch"])
        if len(c) != len(p):
            raise SuperpositionError(
                f"dataset: pair {n}'s clean and patch are {len(c)} and {len(p)} tokens; they must be as long"
            )
        if clean and len(c) != len(clean[0]):
            raise SuperpositionError(
                f"dataset: pair {n} is {len(c)} tokens, pair 1 is {len(clean[0])}; give pairs of one length "
                "(one template per file)"
            )
        if len(c) > n_ctx:
            raise SuperpositionError(f"dataset: pair {n} is {len(c)} tokens; the model reads at most {n_ctx}")
        clean.append(c)
        patch.append(p)
        ca.append(one(r["clean_answer"], n, "clean_answer"))
        pa.append(one(r["patch_answer"], n, "patch_answer"))
        if ca[-1] == pa[-1]:
            raise SuperpositionError(
                f"dataset: pair {n}'s clean_answer and patch_answer are the same token; the metric is their "
                "logit difference, 0 for such a pair"
            )
        if c == p:
            raise SuperpositionError(
                f"dataset: pair {n}'s clean and patch are the same tokens; nothing to patch"
            )
    return Pairs(torch.tensor(clean), torch.tensor(patch), torch.tensor(ca), torch.tensor(pa), records)


def logit_diff(logits: Tensor, clean_answer: Tensor, patch_answer: Tensor) -> Tensor:
    """m: mean of logit[clean_answer] − logit[patch_answer] at the last position."""
    last = logits[:, -1].float()
    rows = torch.arange(last.shape[0])
    return (last[rows, clean_answer] - last[rows, patch_answer]).mean()


def integrated_effect(f: Callable[[Tensor], Tensor], clean: Tensor, patch: Tensor, steps: int) -> Tensor:
    """Σ_k ∇f(clean + (k/N)(patch − clean)) / N for k = 0..N−1 (left Riemann; N = 1: the gradient at
    clean), the points batched along a new first axis: f maps (N, ...) to N values. Multiply by the
    change (and sum) for an effect."""
    alphas = torch.arange(steps, dtype=clean.dtype) / steps
    points = (clean + alphas.view(-1, *[1] * clean.ndim) * (patch - clean)).detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(f(points).sum(), points)
    return grad.mean(0)


class Circuits:
    """SAEs (or transcoders) at hooks of a model: node effects, edges and ablations."""

    def __init__(self, hooked: HookedModel, saes: dict[str, object]) -> None:
        self.hooked = hooked
        self.hooks = sorted(saes, key=lambda h: hook_position(h) or 0)
        self.saes = saes
        self.read = {h: read_names(h)[0] for h in self.hooks}
        self.write = {h: read_names(h)[-1] for h in self.hooks}
        self.dec = {h: saes[h].saved_tensors(0)["W_dec"].detach().float() for h in self.hooks}

    # ------------------------------------------------------------------ activations
    @torch.no_grad()
    def capture(self, ids: Tensor) -> dict[str, dict[str, Tensor]]:
        """Per hook: x (what is written, (B, P, d)), a (latents), e (error x − reconstruction)."""
        names = list(dict.fromkeys(n for h in self.hooks for n in (self.read[h], self.write[h])))
        cache = self.hooked.run_with_cache(ids, names)
        out = {}
        for h in self.hooks:
            x = sae_inputs(cache[self.write[h]]).float()
            r = sae_inputs(cache[self.read[h]]).float()
            a = self._encode(h, r)
            out[h] = {"x": x, "a": a, "e": x - self._decode(h, a, r)}
        return out

    def _encode(self, h: str, r: Tensor) -> Tensor:
        sae = self.saes[h]
        return sae.encode(r.reshape(-1, r.shape[-1])).reshape(*r.shape[:-1], -1)

    def _decode(self, h: str, a: Tensor, r: Tensor) -> Tensor:
        sae = self.saes[h]
        y = sae.decode(a.reshape(-1, a.shape[-1]), r.reshape(-1, r.shape[-1]) if sae.transcodes else None)
        return y.reshape(*a.shape[:-1], -1)

    def _set_write(self, h: str, value: Callable[[Tensor], Tensor]):
        """A hook that writes value(x) at h's write point (per-head z reshaped back)."""

        def fn(x):
            new = value(sae_inputs(x).float())
            return new.reshape(x.shape).to(x.dtype)

        return {self.write[h]: fn}

    # ------------------------------------------------------------------ node effects
    def node_effects(self, pairs: Pairs, steps: int = 10, batch_size: int = 8, progress: bool = True) -> dict:
        """Per hook: latent effects (d_sae,) and the error's effect, mean over pairs, summed over
        positions; also m on clean and patch prompts."""
        effects = {h: {"latents": torch.zeros(self.dec[h].shape[0]), "error": 0.0} for h in self.hooks}
        n_pairs, m_clean, m_patch = 0, 0.0, 0.0
        total = len(pairs.records) * len(self.hooks)
        bar = tqdm(total=total, desc="node effects", unit="pair-hook", disable=not progress, leave=False)
        for clean, patch, ca, pa in pairs.batches(batch_size):
            B = clean.shape[0]
            with torch.no_grad():
                m_clean += float(logit_diff(self.hooked.logits(clean), ca, pa)) * B
                m_patch += float(logit_diff(self.hooked.logits(patch), ca, pa)) * B
            c, p = self.capture(clean), self.capture(patch)
            for h in self.hooks:

                def f(points, h=h, B=B, clean=clean, ca=ca, pa=pa):  # points (N, B, P, d): x at h on the line
                    N = points.shape[0]
                    x = points.reshape(N * B, *points.shape[2:])
                    ids = clean.repeat(N, 1)
                    with self.hooked.hooks(self._set_write(h, lambda _, x=x: x)):
                        logits = self.hooked.logits(ids)
                    last = logits[:, -1].float().reshape(N, B, -1)
                    rows = torch.arange(B)
                    return (last[:, rows, ca] - last[:, rows, pa]).sum(1)  # per point: Σ over pairs

                g = integrated_effect(f, c[h]["x"], p[h]["x"], steps)  # (B, P, d)
                da = p[h]["a"] - c[h]["a"]
                effects[h]["latents"] += ((g @ self.dec[h].T) * da).sum((0, 1))
                effects[h]["error"] += float((g * (p[h]["e"] - c[h]["e"])).sum())
                bar.update(B)
            n_pairs += B
        bar.close()
        for h in self.hooks:
            effects[h]["latents"] /= n_pairs
            effects[h]["error"] /= n_pairs
        return {"effects": effects, "m_clean": m_clean / n_pairs, "m_patch": m_patch / n_pairs}

    # ------------------------------------------------------------------ ablation
    @torch.no_grad()
    def means(self, pairs: Pairs, batch_size: int = 8) -> dict[str, dict[str, Tensor]]:
        """Each latent's and each error's mean per position over the clean and the patch prompts
        together (pairs share one length, so position p is the same slot of the template in every
        prompt; clean and patch together, the means carry no answer either way)."""
        sums: dict[str, dict[str, Tensor]] = {}
        n = 0
        for clean, patch, _, _ in pairs.batches(batch_size):
            for ids in (clean, patch):
                c = self.capture(ids)
                for h in self.hooks:
                    s = sums.setdefault(h, {"a": 0.0, "e": 0.0})
                    s["a"] = s["a"] + c[h]["a"].sum(0)
                    s["e"] = s["e"] + c[h]["e"].sum(0)
                n += ids.shape[0]
        return {h: {"a": s["a"] / n, "e": s["e"] / n} for h, s in sums.items()}

    def ablated_logits(self, ids: Tensor, keep: dict[str, tuple[Tensor, bool]], means: dict) -> Tensor:
        """Logits with, at every hook, the latents outside keep[h][0] (a bool mask over latents) and
        the error unless keep[h][1] replaced by their means; downstream latents are recomputed from
        what reaches them. Everything kept: the model's logits, bit for bit."""
        seen: dict[str, Tensor] = {}
        fns = {}
        for h in self.hooks:
            mask, keep_error = keep[h]
            if self.read[h] != self.write[h]:
                fns[self.read[h]] = lambda x, h=h: seen.__setitem__(h, sae_inputs(x).float())

            def value(x, h=h, mask=mask, keep_error=keep_error):
                r = x if self.read[h] == self.write[h] else seen[h]
                a = self._encode(h, r)
                recon = self._decode(h, a, r)
                a2 = torch.where(mask, a, means[h]["a"])
                out = x
                if not bool(mask.all()):
                    out = out + (self._decode(h, a2, r) - recon)
                if not keep_error:
                    out = out + (means[h]["e"] - (x - recon))
                return out

            fns.update(self._set_write(h, value))
        with self.hooked.hooks(fns):
            return self.hooked.logits(ids)

    def metric_with(self, pairs: Pairs, keep: dict, means: dict, batch_size: int = 8) -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for clean, _, ca, pa in pairs.batches(batch_size):
                total += float(logit_diff(self.ablated_logits(clean, keep, means), ca, pa)) * clean.shape[0]
                n += clean.shape[0]
        return total / n

    def keep_top(self, effects: dict, n_nodes: int | None, threshold: float | None = None) -> dict:
        """The circuit of the n nodes (latents and errors) with the largest |effect|, or of those with
        |effect| above `threshold`."""
        scores = torch.cat(
            [
                torch.cat([effects[h]["latents"].abs(), torch.tensor([abs(effects[h]["error"])])])
                for h in self.hooks
            ]
        )
        if threshold is not None:
            chosen = scores > threshold
        else:
            chosen = torch.zeros_like(scores, dtype=torch.bool)
            if n_nodes:
                chosen[scores.topk(min(n_nodes, len(scores))).indices] = True
        keep, start = {}, 0
        for h in self.hooks:
            d = self.dec[h].shape[0]
            keep[h] = (chosen[start : start + d], bool(chosen[start + d]))
            start += d + 1
        return keep

    @staticmethod
    def complement(keep: dict) -> dict:
        return {h: (~mask, not err) for h, (mask, err) in keep.items()}

    # ------------------------------------------------------------------ edges
    def edges(self, pairs: Pairs, keep: dict, batch_size: int = 8) -> list[dict]:
        """Edges between circuit latents of consecutive hooks (clean → patch change of the upstream
        latent, through the model, onto the downstream latent, weighted by ∂m/∂a_down), mean over pairs."""
        out: dict[tuple, float] = {}
        n = 0
        for clean, patch, ca, pa in pairs.batches(batch_size):
            B = clean.shape[0]
            c, p = self.capture(clean), self.capture(patch)
            grads = self._metric_grads(clean, ca, pa)
            for up, down in zip(self.hooks, self.hooks[1:], strict=False):
                ups = keep[up][0].nonzero().flatten().tolist()
                downs = keep[down][0].nonzero().flatten().tolist()
                if not ups or not downs:
                    continue
                w = grads[down] @ self.dec[down].T  # ∂m/∂a_down (B, P, d_sae)
                for j in downs:
                    g = self._vjp(clean, up, down, j, w[..., j], c[up]["x"])  # ∂(Σ w a_j)/∂x_up
                    for i in ups:
                        dx = (p[up]["a"][..., i] - c[up]["a"][..., i]).unsqueeze(-1) * self.dec[up][i]
                        key = (up, i, down, j)
                        out[key] = out.get(key, 0.0) + float((g * dx).sum())
            n += B
        return [
            {"source": f"{u}/{i}", "target": f"{d}/{j}", "weight": v / n} for (u, i, d, j), v in out.items()
        ]

    def _metric_grads(self, ids: Tensor, ca: Tensor, pa: Tensor) -> dict[str, Tensor]:
        """∂(Σ over pairs of m) / ∂x at every hook's write point, at the clean prompts (total
        derivatives: the first hook's x is a leaf, the later ones are computed from it)."""
        seen: dict[str, Tensor] = {}

        def keep(h):
            def value(x):
                if not seen:
                    x = x.detach().requires_grad_(True)
                seen[h] = x
                return x

            return value

        fns = {}
        for h in self.hooks:
            fns.update(self._set_write(h, keep(h)))
        with torch.enable_grad(), self.hooked.hooks(fns):
            logits = self.hooked.logits(ids)
            m = logit_diff(logits, ca, pa) * ids.shape[0]
            grads = torch.autograd.grad(m, [seen[h] for h in self.hooks], allow_unused=True)
        return {
            h: (g if g is not None else torch.zeros_like(seen[h]))
            for h, g in zip(self.hooks, grads, strict=True)
        }

    def _vjp(self, ids: Tensor, up: str, down: str, j: int, weight: Tensor, x_up: Tensor) -> Tensor:
        """∂(Σ weight · a_j at `down`) / ∂x at `up`'s write point."""
        leaf = x_up.detach().clone().requires_grad_(True)
        seen: dict[str, Tensor] = {}

        def grab(x):
            seen["r"] = sae_inputs(x).float()

        fns = dict(self._set_write(up, lambda _: leaf))
        fns[self.read[down]] = grab
        with torch.enable_grad(), self.hooked.hooks(fns):
            self.hooked.logits(ids)
            a = self._encode(down, seen["r"])[..., j]
            (g,) = torch.autograd.grad((a * weight).sum(), leaf, allow_unused=True)
        return g if g is not None else torch.zeros_like(leaf)
