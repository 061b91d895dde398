"""sparsify side of bench_sae_grid.py: trains one TopK SparseCoder on the activations in a
safetensors file and prints one JSON line (seconds, samples, peak RSS, L0 and FVU on the held-out
rows). Runs in eai-sparsify's environment (not a dependency).

    python grid_sparsify_worker.py DATA OUT D_SAE K STEPS SEEDS

(SEEDS comma-separated: one run per seed, one JSON line each, the decoder of seed s in OUT.s.)

sparsify's Trainer runs a language model itself; on given activations its step is reproduced here
as its Trainer.fit does it: SparseCoder.forward with the dead-latent mask (AuxK), loss = FVU +
auxk_alpha · AuxK, backward, gradient parallel to the decoder rows removed, optimiser step, decoder
rows renormalised. With Adam (sparsify also offers signum and muon), as the other trainers.
"""

import sys
import time

import torch
from safetensors.torch import load_file
from sparsify import SparseCoder, SparseCoderConfig

from grid_common import BATCH, DEAD_WINDOW_STEPS, LR, held_out_fvu_l0, report_run

data, out, d_sae, k, steps, seeds = sys.argv[1:7]
d_sae, k, steps = int(d_sae), int(k), int(steps)
DEAD_WINDOW_TOKENS, AUXK_ALPHA = DEAD_WINDOW_STEPS * BATCH, 1 / 32
tensors = load_file(data)
x, held_out = tensors["train"], tensors["eval"]


def run(seed: int) -> None:
    torch.manual_seed(seed)
    sae = SparseCoder(x.shape[1], SparseCoderConfig(k=k, num_latents=d_sae))
    sae.b_dec.data = x[:BATCH].mean(0)  # as sparsify's Trainer: b_dec at the first batch's mean
    opt = torch.optim.Adam(sae.parameters(), lr=LR)
    since_fired = torch.zeros(d_sae, dtype=torch.long)
    start = time.perf_counter()
    for step in range(steps):
        b = x[(step * BATCH) % (x.shape[0] - BATCH + 1) :][:BATCH]
        dead = since_fired > DEAD_WINDOW_TOKENS
        outp = sae(b, dead_mask=dead if bool(dead.any()) else None)
        loss = outp.fvu + AUXK_ALPHA * outp.auxk_loss
        loss.backward()
        sae.remove_gradient_parallel_to_decoder_directions()
        opt.step()
        opt.zero_grad()
        sae.set_decoder_norm_to_unit_norm()
        since_fired += BATCH
        since_fired[outp.latent_indices.flatten()] = 0
    seconds = time.perf_counter() - start
    with torch.no_grad():

        def reconstruct(rows):
            enc = sae.encode(rows)
            return sae.decode(enc.top_acts, enc.top_indices), (enc.top_acts > 0).sum()

        fvu, l0 = held_out_fvu_l0(reconstruct, held_out)
    report_run(f"{out}.{seed}", sae.W_dec, seconds, steps * BATCH, fvu, l0)


for seed in seeds.split(","):
    run(int(seed))
