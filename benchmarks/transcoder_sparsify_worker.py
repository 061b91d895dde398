"""sparsify side of bench_transcoder.py: trains one TopK transcoder (SparseCoderConfig(transcode=True))
on MLP input/output rows from a safetensors file and prints one JSON line (seconds, samples, peak RSS,
held-out FVU of the MLP output, L0). Runs in eai-sparsify's environment (not a dependency).

    python transcoder_sparsify_worker.py DATA D_SAE K STEPS SEED

The step is sparsify's Trainer.fit for a transcoder on given rows: SparseCoder.forward(x, y) with the
dead-latent mask (AuxK), loss = FVU + auxk_alpha · AuxK, backward, optimiser step; no decoder
normalisation (sparsify leaves transcoder decoders free), b_dec at the first batch's target mean.
"""

import json
import sys
import time

import torch
from safetensors.torch import load_file
from sparsify import SparseCoder, SparseCoderConfig

from grid_common import BATCH, DEAD_WINDOW_STEPS, LR
from measure import peak_rss_mib

AUXK_ALPHA = 1 / 32
data, d_sae, k, steps, seed = sys.argv[1], *map(int, sys.argv[2:6])
t = load_file(data)
x, y = t["train_x"], t["train_y"]
torch.manual_seed(seed)
sae = SparseCoder(x.shape[1], SparseCoderConfig(k=k, num_latents=d_sae, transcode=True))
sae.b_dec.data = y[:BATCH].mean(0)
opt = torch.optim.Adam(sae.parameters(), lr=LR)
since_fired = torch.zeros(d_sae, dtype=torch.long)
start = time.perf_counter()
for step in range(steps):
    lo = (step * BATCH) % (x.shape[0] - BATCH + 1)
    dead = since_fired > DEAD_WINDOW_STEPS * BATCH
    out = sae(x[lo : lo + BATCH], y[lo : lo + BATCH], dead_mask=dead if bool(dead.any()) else None)
    (out.fvu + AUXK_ALPHA * out.auxk_loss).backward()
    opt.step()
    opt.zero_grad()
    since_fired += BATCH
    since_fired[out.latent_indices.flatten()] = 0
seconds = time.perf_counter() - start
err = nnz = 0.0
with torch.no_grad():
    for xs, ys in zip(t["eval_x"].split(BATCH), t["eval_y"].split(BATCH)):
        enc = sae.encode(xs)
        err += (ys - sae.decode(enc.top_acts, enc.top_indices)).square().sum().item()
        nnz += float((enc.top_acts > 0).sum())
ey = t["eval_y"]
fvu = err / (ey - ey.mean(0)).square().sum().item()
line = {
    "seconds": seconds,
    "samples": steps * BATCH,
    "fvu": fvu,
    "l0": nnz / ey.shape[0],
    "peak_rss_mib": peak_rss_mib(),
}
print(json.dumps(line), flush=True)
