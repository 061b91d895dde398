"""Attribution graphs on SmolLM2-135M with a transcoder at every one of its 30 layers: the time of
one graph and its parts, against the issue's target (a 16-token prompt in at most 5 minutes on 2
CPU cores), at more than one shape.

Transcoders: TopK, 576 -> d_sae -> 576 at every blocks.L.mlp, random encoders and decoders (the
cost depends on how many latents are active, k per token and layer, not on what they learned).
Shapes: (d_sae 4608, k 32, max_feature_nodes 4096) as circuit-tracer's defaults would size it for
this model, and the least favourable one we ran: every active latent given a row
(max_feature_nodes = all 15,360 = 16 tokens x 30 layers x k 32), and a batch of 64 against 32.

A cross-layer transcoder (shapes clt, clt-all-rows: TopK, d_sae 4608 per layer, k 32, its layer-L
latents writing to every layer from L on) costs more per row: each latent's edge sums over the
layers it writes to.

Printed per shape: active latents, latents given rows, backward passes, seconds (trace + rows +
influence), peak RSS.

    python benchmarks/bench_attribute.py [--shapes default,all-rows,batch64,narrow,clt,clt-all-rows] [--tokens 16]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time

import torch

from superposition.interp import attribution as at
from superposition.interp.replacement import ReplacementModel
from superposition.lm.hooks import HookedModel
from superposition.lm.model import load_model
from superposition.sae import SAEConfig, make_sae

SHAPES = {
    "default": dict(d_sae=4608, k=32, max_feature_nodes=4096, batch_size=32),
    "all-rows": dict(d_sae=4608, k=32, max_feature_nodes=None, batch_size=32),
    "batch64": dict(d_sae=4608, k=32, max_feature_nodes=4096, batch_size=64),
    "narrow": dict(d_sae=1152, k=16, max_feature_nodes=4096, batch_size=32),
    # one cross-layer transcoder over the 30 layers: layer L's latents write to layers L..29
    "clt": dict(d_sae=4608, k=32, max_feature_nodes=4096, batch_size=32, clt=True),
    "clt-all-rows": dict(d_sae=4608, k=32, max_feature_nodes=None, batch_size=32, clt=True),
}
PROMPT = "The capital of France is Paris, and the capital of Germany is the city of"


def transcoders(hooked: HookedModel, d_sae: int, k: int) -> dict:
    g = torch.Generator().manual_seed(0)
    out = {}
    for L in range(hooked.n_layers):
        sae = make_sae(SAEConfig(architecture="transcoder", sparsity="topk", d_in=576, d_sae=d_sae, k=k))
        sae.load_saved(
            {
                "W_enc": torch.randn(576, d_sae, generator=g) / 24,
                "b_enc": torch.zeros(d_sae),
                "W_dec": torch.randn(d_sae, 576, generator=g) / 24,
                "b_dec": torch.zeros(576),
            }
        )
        out[L] = sae.eval()
    return out


def clt(hooked: HookedModel, d_sae: int, k: int):
    """A TopK CLT with random weights on the scale of the per-layer transcoders above."""
    from superposition.sae.clt import CrossLayerTranscoder

    n = hooked.n_layers
    g = torch.Generator().manual_seed(0)
    c = CrossLayerTranscoder(n, 576, d_sae, k)
    with torch.no_grad():
        c.W_enc.copy_(torch.randn(n, 576, d_sae, generator=g) / 24)
        for i in range(n):
            c.W_dec[i].copy_(torch.randn(d_sae, n - i, 576, generator=g) / 24 / (n - i) ** 0.5)
    return c.eval().requires_grad_(False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", default="default,batch64,narrow,all-rows")
    ap.add_argument("--tokens", type=int, default=16)
    args = ap.parse_args()
    lm = load_model()
    hooked = HookedModel(lm.model)
    ids = lm.tokenizer(PROMPT, return_tensors="pt").input_ids[0]
    ids = torch.cat([torch.tensor([lm.tokenizer.bos_token_id]), ids])[: args.tokens]
    print(
        f"SmolLM2-135M, {hooked.n_layers} layers, {len(ids)}-token prompt, {torch.get_num_threads()} threads"
    )
    print(
        f"{'shape':>9} {'d_sae':>6} {'k':>3} {'batch':>5} {'active':>7} {'rows':>6} {'passes':>6} {'seconds':>8}"
    )
    worst = 0.0
    for name in args.shapes.split(","):
        s = SHAPES[name]
        made = clt(hooked, s["d_sae"], s["k"]) if s.get("clt") else transcoders(hooked, s["d_sae"], s["k"])
        rm = ReplacementModel(hooked, made)
        start = time.perf_counter()
        g = at.attribute(rm, ids, PROMPT, s["max_feature_nodes"], s["batch_size"], progress=False)
        nodes, edges = at.prune(g)
        at.scores(g)
        seconds = time.perf_counter() - start
        worst = max(worst, seconds)
        print(
            f"{name:>9} {s['d_sae']:>6} {s['k']:>3} {s['batch_size']:>5} {g.n_active:>7} {g.n_features:>6} "
            f"{g.cost['backward_passes']:>6} {seconds:>8.1f}",
            flush=True,
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MiB; slowest shape {worst:.1f} s against the target of 300 s")
    sys.exit(0 if worst <= 300 else 1)


if __name__ == "__main__":
    main()
